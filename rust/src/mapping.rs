//! Turning source columns into canonical fields. The table itself (built-in
//! headings plus the config's per-source entries) is built in Python
//! (`mapping.py`) and handed over as lower-cased column name -> target.

use std::collections::HashMap;

use crate::model::{field_index, Record, F_DISPLAY, F_FAMILY, F_GIVEN, F_NOTES, NFIELDS};
use crate::normalize::{clean, split_name};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Field(usize),
    ExternalId,
    /// A single full-name column, split into given and family names.
    Name,
    /// A delete marker (incremental feeds): truthy values mean "delete".
    Deleted,
    /// Kept verbatim in `extra`.
    Extra,
    Ignore,
    /// A reference to a related record (`RELATIONS[k]`): kept in `extra` under
    /// that fixed key, whatever the column is called, so SQL can find it.
    Relation(usize),
}

/// Targets that carry a contact's relations: the source's id of its
/// organisation and location, and its position there (a per-link field).
pub const RELATIONS: [&str; 3] = ["organisation_ref", "location_ref", "position"];

pub fn parse_target(t: &str) -> Result<Target, String> {
    Ok(match t {
        "external_id" => Target::ExternalId,
        "name" => Target::Name,
        "deleted" => Target::Deleted,
        "extra" => Target::Extra,
        "ignore" => Target::Ignore,
        other if RELATIONS.contains(&other) => {
            Target::Relation(RELATIONS.iter().position(|r| *r == other).unwrap_or(0))
        }
        other => {
            Target::Field(field_index(other).ok_or_else(|| format!("unknown field {other:?}"))?)
        }
    })
}

#[derive(Debug, Clone, Default)]
pub struct Mapping {
    table: HashMap<String, Target>,
}

impl Mapping {
    pub fn new(entries: &HashMap<String, String>) -> Result<Self, String> {
        let mut table = HashMap::new();
        for (k, v) in entries {
            table.insert(k.trim().to_lowercase(), parse_target(v)?);
        }
        Ok(Mapping { table })
    }

    pub fn resolve(&self, column: &str) -> Target {
        let key = column.trim().trim_start_matches('\u{feff}').to_lowercase();
        self.table.get(&key).copied().unwrap_or(Target::Extra)
    }

    pub fn resolve_all(&self, columns: &[String]) -> Vec<Target> {
        columns.iter().map(|c| self.resolve(c)).collect()
    }
}

pub fn is_truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "y" | "t" | "x" | "deleted" | "delete" | "d" | "removed"
    )
}

/// Builds a record from (target, column name, raw value) triples. Returns an
/// error string for a record that cannot be stored (quarantined by the caller).
pub fn build_record<'a, I>(line: u64, cells: I) -> Result<Record, String>
where
    I: IntoIterator<Item = (Target, &'a str, &'a str)>,
{
    let mut r = Record {
        line,
        built: true,
        ..Default::default()
    };
    let mut full_name: Option<String> = None;
    // The first column mapped to a target wins; later ones are kept in `extra`.
    let mut taken: u32 = 0;
    for (target, column, value) in cells {
        if value.contains('\0') {
            return Err(format!("NUL byte in column {column:?}"));
        }
        let bit = match target {
            Target::Field(i) => 1u32 << i,
            Target::ExternalId => 1 << 20,
            Target::Name => 1 << 21,
            Target::Deleted => 1 << 22,
            Target::Relation(k) => 1 << (23 + k),
            Target::Extra | Target::Ignore => 0,
        };
        let target = if bit != 0 && taken & bit != 0 {
            Target::Extra
        } else {
            taken |= bit;
            target
        };
        match target {
            Target::Field(i) => r.fields[i] = clean(value, i == F_NOTES),
            Target::ExternalId => r.external_id = clean(value, false),
            Target::Name => full_name = Some(clean(value, false)),
            Target::Deleted => r.deleted = is_truthy(value),
            Target::Extra => {
                if !value.is_empty() {
                    r.extra.push((column.to_string(), value.to_string()));
                }
            }
            Target::Relation(k) => {
                let v = clean(value, false);
                if !v.is_empty() {
                    r.extra.push((RELATIONS[k].to_string(), v));
                }
            }
            Target::Ignore => {}
        }
    }
    if let Some(full) = full_name {
        if !full.is_empty() {
            if r.fields[F_GIVEN].is_empty() && r.fields[F_FAMILY].is_empty() {
                let (g, f) = split_name(&full);
                r.fields[F_GIVEN] = g;
                r.fields[F_FAMILY] = f;
            }
            if r.fields[F_DISPLAY].is_empty() {
                r.fields[F_DISPLAY] = full;
            }
        }
    }
    r.extra.sort_by(|a, b| a.0.cmp(&b.0));
    r.extra.dedup_by(|a, b| a.0 == b.0);
    if r.external_id.is_empty() {
        return Err("empty external id".into());
    }
    debug_assert_eq!(r.fields.len(), NFIELDS);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> Mapping {
        let mut m = HashMap::new();
        m.insert("ID".to_string(), "external_id".to_string());
        m.insert("name".to_string(), "name".to_string());
        m.insert("E-mail".to_string(), "email".to_string());
        Mapping::new(&m).unwrap()
    }

    #[test]
    fn resolves_case_insensitively() {
        let m = mapping();
        assert_eq!(m.resolve("id"), Target::ExternalId);
        assert_eq!(m.resolve(" e-MAIL "), Target::Field(4));
        assert_eq!(m.resolve("Fax"), Target::Extra);
    }

    #[test]
    fn builds_and_splits_name() {
        let m = mapping();
        let cols = ["ID", "name", "Fax"];
        let vals = ["A", " John  Smith", "123"];
        let cells = cols
            .iter()
            .zip(vals.iter())
            .map(|(c, v)| (m.resolve(c), *c, *v));
        let r = build_record(2, cells).unwrap();
        assert_eq!(r.external_id, "A");
        assert_eq!(r.fields[F_GIVEN], "John");
        assert_eq!(r.fields[F_FAMILY], "Smith");
        assert_eq!(r.fields[F_DISPLAY], "John Smith");
        assert_eq!(r.extra, vec![("Fax".to_string(), "123".to_string())]);
    }

    #[test]
    fn first_column_for_a_target_wins() {
        let m = mapping();
        let cells = [
            (Target::ExternalId, "ID", "A"),
            (Target::ExternalId, "Code", "C1"),
        ];
        let r = build_record(2, cells).unwrap();
        assert_eq!(r.external_id, "A");
        assert_eq!(r.extra, vec![("Code".to_string(), "C1".to_string())]);
        let _ = m;
    }

    #[test]
    fn relations_go_to_extra_under_fixed_keys() {
        let mut t = HashMap::new();
        t.insert("id".to_string(), "external_id".to_string());
        t.insert("org id".to_string(), "organisation_ref".to_string());
        t.insert("job title".to_string(), "position".to_string());
        let m = Mapping::new(&t).unwrap();
        let cols = ["ID", "Org ID", "Job Title", "Fax"];
        let vals = ["A", " O-1 ", "Partner", ""];
        let cells = cols
            .iter()
            .zip(vals.iter())
            .map(|(c, v)| (m.resolve(c), *c, *v));
        let r = build_record(2, cells).unwrap();
        assert_eq!(
            r.extra,
            vec![
                ("organisation_ref".to_string(), "O-1".to_string()),
                ("position".to_string(), "Partner".to_string()),
            ]
        );
    }

    #[test]
    fn rejects_empty_id_and_nul() {
        let m = mapping();
        let e = build_record(3, [(m.resolve("ID"), "ID", " ")]).unwrap_err();
        assert!(e.contains("empty external id"));
        let e = build_record(3, [(m.resolve("ID"), "ID", "a\0b")]).unwrap_err();
        assert!(e.contains("NUL"));
    }
}
