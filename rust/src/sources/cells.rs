//! Records handed over as (key, value) cells rather than read from a file
//! (connectors and the API, through `Batch.from_dicts`): mapped, size-checked
//! and quarantined as the file readers do. No Python and no I/O here.

use super::{check_size, truncate_raw, Item, Limits, Rejected, RowId};
use crate::mapping::{build_record, Mapping, Target};

/// A mapping key a connector sets (to the reason) to have `Batch.from_dicts`
/// quarantine that record; no source can name a field so (it starts with NUL).
pub const REJECT_KEY: &str = "\u{0}rejected";
/// A mapping key a connector sets (to a line number) to have `Batch.from_dicts`
/// number that record by its own line in the file (a vCard's first line) rather
/// than by its position; never a field (it starts with NUL).
pub const LINE_KEY: &str = "\u{0}line";

/// One record from its cells, numbered `line` unless it holds `LINE_KEY`
/// (taken out of `cells`). A value over `max_field_bytes` quarantines it, as
/// does `REJECT_KEY` (its value is the reason); quarantined raw text is cut at
/// `max_raw_bytes`. Err: the `LINE_KEY` value is not a number.
pub fn item_of_cells(
    mut line: u64,
    cells: &mut Vec<(String, String)>,
    mapping: &Mapping,
    limits: &Limits,
    partial: bool,
) -> Result<Item, String> {
    if let Some(pos) = cells.iter().position(|(k, _)| k == LINE_KEY) {
        let (_, v) = cells.remove(pos);
        line = v
            .trim()
            .parse()
            .map_err(|_| format!("record {line}: line number {v:?} is not a number"))?;
    }
    let refused = cells
        .iter()
        .find(|(k, _)| k == REJECT_KEY)
        .map(|(_, v)| v.clone())
        .or_else(|| {
            cells
                .iter()
                .find_map(|(k, v)| check_size(k, v.len(), limits).err())
        });
    let raw = || {
        let mut raw = String::new();
        for (k, v) in cells.iter().filter(|(k, _)| k != REJECT_KEY) {
            if raw.len() > limits.max_raw_bytes {
                break;
            }
            if !raw.is_empty() {
                raw.push_str(", ");
            }
            raw.push_str(k);
            raw.push('=');
            // At most a little over the raw limit of each value: never a copy
            // of a value over the field limit.
            let mut end = v.len().min(limits.max_raw_bytes + 1);
            while !v.is_char_boundary(end) {
                end -= 1;
            }
            raw.push_str(&v[..end]);
        }
        truncate_raw(&raw, limits.max_raw_bytes)
    };
    // Which record a refused one was: its id cell, unless that cell is
    // itself over the field limit.
    let id_of = || {
        RowId::of_cell(
            cells
                .iter()
                .find(|(k, _)| mapping.resolve(k) == Target::ExternalId)
                .map(|(_, v)| v.as_str())
                .filter(|v| v.len() <= limits.max_field_bytes),
        )
    };
    Ok(match refused {
        Some(reason) => Err(Rejected {
            line,
            reason,
            raw: raw(),
            id: id_of(),
        }),
        None => build_record(
            line,
            cells
                .iter()
                .map(|(k, v)| (mapping.resolve(k), k.as_str(), v.as_str())),
            partial,
        )
        .map_err(|reason| Rejected {
            line,
            reason,
            raw: raw(),
            id: id_of(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn mapping() -> Mapping {
        let m: HashMap<String, String> = [("id", "external_id"), ("email", "email")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Mapping::new(&m).unwrap()
    }

    fn cells(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_record_is_numbered_by_position_or_by_its_own_line() {
        let (m, l) = (mapping(), Limits::default());
        let mut c = cells(&[("id", "A"), ("email", "a@x.org")]);
        let r = item_of_cells(5, &mut c, &m, &l, false).unwrap().unwrap();
        assert_eq!((r.line, r.external_id.as_str()), (5, "A"));
        let mut c = cells(&[("id", "A"), (LINE_KEY, " 42 ")]);
        let r = item_of_cells(5, &mut c, &m, &l, false).unwrap().unwrap();
        assert_eq!(r.line, 42);
        assert!(r.extra.is_empty(), "the line key is no column");
        let mut c = cells(&[("id", "A"), (LINE_KEY, "x")]);
        assert_eq!(
            item_of_cells(5, &mut c, &m, &l, false).unwrap_err(),
            "record 5: line number \"x\" is not a number"
        );
    }

    #[test]
    fn refused_records_are_quarantined_with_their_id_and_cut_raw_text() {
        let m = mapping();
        let l = Limits {
            max_field_bytes: 10,
            max_raw_bytes: 16,
        };
        let mut c = cells(&[("id", "A"), (REJECT_KEY, "too big a photo")]);
        let e = item_of_cells(3, &mut c, &m, &l, false)
            .unwrap()
            .unwrap_err();
        assert_eq!(e.reason, "too big a photo");
        assert_eq!(e.id, RowId::Read("A".into()));
        assert_eq!(e.raw, "id=A", "the reject key is not raw text");
        let long = "é".repeat(20);
        let mut c = cells(&[("id", "B"), ("email", &long)]);
        let e = item_of_cells(4, &mut c, &m, &l, false)
            .unwrap()
            .unwrap_err();
        assert_eq!(e.line, 4);
        assert_eq!(e.id, RowId::Read("B".into()));
        assert!(e.raw.starts_with("id=B, email=éé"), "{:?}", e.raw);
        assert!(e.raw.ends_with("bytes in all]"), "cut: {:?}", e.raw);
        let mut c = cells(&[("id", &long)]);
        let e = item_of_cells(6, &mut c, &m, &l, false)
            .unwrap()
            .unwrap_err();
        assert_eq!(
            e.id,
            RowId::Unreadable,
            "an id over the limit names nothing"
        );
    }
}
