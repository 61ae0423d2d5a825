//! Turning source columns into canonical fields. The table itself (built-in
//! headings plus the config's per-source entries) is built in Python
//! (`mapping.py`) and handed over as lower-cased column name -> target.

use std::collections::HashMap;

use crate::model::{field_index, Record, FIELDS, F_DISPLAY, F_FAMILY, F_GIVEN, F_NOTES, NFIELDS};
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
    /// The record's modification time at the source (two-way sync's
    /// last-write-wins): carried beside the record, never stored, never hashed.
    Modified,
}

/// Targets that carry a contact's relations: the source's id of its
/// organisation and location, and its position there (a per-link field).
pub const RELATIONS: [&str; 3] = ["organisation_ref", "location_ref", "position"];

impl Target {
    /// The target's name as a mapping table spells it (`parse_target`'s inverse).
    pub fn name(self) -> &'static str {
        match self {
            Target::Field(i) => FIELDS[i],
            Target::ExternalId => "external_id",
            Target::Name => "name",
            Target::Deleted => "deleted",
            Target::Extra => "extra",
            Target::Ignore => "ignore",
            Target::Relation(k) => RELATIONS[k],
            Target::Modified => "modified_at",
        }
    }
}

pub fn parse_target(t: &str) -> Result<Target, String> {
    Ok(match t {
        "external_id" => Target::ExternalId,
        "name" => Target::Name,
        "deleted" => Target::Deleted,
        "extra" => Target::Extra,
        "ignore" => Target::Ignore,
        "modified_at" => Target::Modified,
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
    /// Records of an incremental batch: collect the unmapped columns sent
    /// empty (`Record::cleared`), since there an absent column means "keep".
    pub partial: bool,
}

/// Number of `Record::present` bits: the canonical fields, then the relations.
pub const PRESENT_BITS: usize = NFIELDS + RELATIONS.len();

/// The field (or relation key) of a `Record::present` bit.
pub fn present_name(bit: usize) -> &'static str {
    if bit < NFIELDS {
        FIELDS[bit]
    } else {
        RELATIONS[bit - NFIELDS]
    }
}

/// The `Record::present` bits a column mapped to `target` sets.
pub fn target_bits(target: Target) -> u32 {
    match target {
        Target::Field(i) => 1 << i,
        Target::Name => (1 << F_GIVEN) | (1 << F_FAMILY) | (1 << F_DISPLAY),
        Target::Relation(k) => 1 << (NFIELDS + k),
        _ => 0,
    }
}

/// (field or relation key, heading of the first column that carries it) of a
/// header: what a snapshot with this header sends; an unmapped column (kept
/// in `extra`) is `extra:<heading>`.
pub fn mapped_columns(header: &[String], targets: &[Target]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut seen = 0u32;
    for (h, t) in header.iter().zip(targets.iter()) {
        if *t == Target::Extra {
            // An unmapped column, kept in `extra` under its heading: a full
            // snapshot without it would drop that key from every contact.
            let key = format!("extra:{h}");
            if !out.iter().any(|(k, _)| *k == key) {
                out.push((key, h.clone()));
            }
            continue;
        }
        let bits = target_bits(*t);
        for b in 0..PRESENT_BITS {
            if bits & (1 << b) != 0 && seen & (1 << b) == 0 {
                seen |= 1 << b;
                out.push((present_name(b).to_string(), h.clone()));
            }
        }
    }
    out
}

impl Mapping {
    pub fn new(entries: &HashMap<String, String>) -> Result<Self, String> {
        let mut table = HashMap::new();
        for (k, v) in entries {
            table.insert(k.trim().to_lowercase(), parse_target(v)?);
        }
        Ok(Mapping {
            table,
            partial: false,
        })
    }

    pub fn resolve(&self, column: &str) -> Target {
        let key = column.trim().trim_start_matches('\u{feff}').to_lowercase();
        self.table.get(&key).copied().unwrap_or(Target::Extra)
    }

    pub fn resolve_all(&self, columns: &[String]) -> Vec<Target> {
        columns.iter().map(|c| self.resolve(c)).collect()
    }
}

/// The bit a target takes in one record: one column only may give it (0 for
/// `extra` and `ignore`, which any number of columns share).
fn claim_bit(target: Target) -> u32 {
    match target {
        Target::Field(i) => 1u32 << i,
        Target::ExternalId => 1 << 20,
        Target::Name => 1 << 21,
        Target::Deleted => 1 << 22,
        Target::Relation(k) => 1 << (23 + k),
        Target::Modified => 1 << 26,
        Target::Extra | Target::Ignore => 0,
    }
}

/// The first column mapped to a target wins; later ones are kept in `extra`.
#[inline]
fn claim(taken: &mut u32, target: Target) -> Target {
    let bit = claim_bit(target);
    if bit != 0 && *taken & bit != 0 {
        Target::Extra
    } else {
        *taken |= bit;
        target
    }
}

/// The target each column of one record (in order) takes, as `build_record`
/// applies them: its mapped target, or `Extra` where an earlier column took it.
pub fn taken_targets(targets: &[Target]) -> Vec<Target> {
    let mut taken = 0u32;
    targets.iter().map(|t| claim(&mut taken, *t)).collect()
}

pub fn is_truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "y" | "t" | "x" | "deleted" | "delete" | "d" | "removed"
    )
}

/// A deleted marker's value: deleted, not deleted, or neither (None: a value
/// such as "archived" says something, but not which; the row is kept aside
/// rather than guessed).
pub fn deleted_marker(v: &str) -> Option<bool> {
    if is_truthy(v) {
        return Some(true);
    }
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "n" | "f" | "-" | "none" | "null" => Some(false),
        _ => None,
    }
}

/// Builds a record from (target, column name, raw value) triples. Returns an
/// error string for a record that cannot be stored (quarantined by the caller).
/// `partial` (incremental batches): unmapped columns sent empty are listed in
/// `Record::cleared`.
pub fn build_record<'a, I>(line: u64, cells: I, partial: bool) -> Result<Record, String>
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
        let target = claim(&mut taken, target);
        r.present |= target_bits(target);
        match target {
            Target::Field(i) => r.fields[i] = clean(value, i == F_NOTES),
            Target::ExternalId => r.external_id = clean(value, false),
            Target::Name => full_name = Some(clean(value, false)),
            Target::Deleted => match deleted_marker(value) {
                Some(d) => r.deleted = d,
                None => {
                    return Err(format!(
                        "column {column:?} is neither a deletion (yes, true, 1) nor its \
                         absence (no, false, 0, empty): the row is kept aside, not guessed"
                    ))
                }
            },
            Target::Extra => {
                if !value.is_empty() {
                    r.extra.push((column.to_string(), value.to_string()));
                } else if partial {
                    r.cleared.push(column.to_string());
                }
            }
            Target::Relation(k) => {
                let v = clean(value, false);
                if !v.is_empty() {
                    r.extra.push((RELATIONS[k].to_string(), v));
                } else if partial {
                    r.cleared.push(RELATIONS[k].to_string());
                }
            }
            Target::Modified => r.modified = clean(value, false),
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

    #[test]
    fn a_deleted_marker_that_says_neither_is_not_taken_as_either() {
        for v in ["yes", "TRUE", " 1 ", "x", "deleted"] {
            assert_eq!(deleted_marker(v), Some(true), "{v}");
        }
        for v in ["", "no", "False", "0", "n", " - "] {
            assert_eq!(deleted_marker(v), Some(false), "{v}");
        }
        for v in ["archived", "inactive", "2"] {
            assert_eq!(deleted_marker(v), None, "{v}");
            let cells = [
                (Target::ExternalId, "id", "C1"),
                (Target::Deleted, "Deleted", v),
            ];
            let err = build_record(2, cells, true).unwrap_err();
            assert!(err.contains("\"Deleted\"") && !err.contains(v), "{err}");
        }
    }

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
        let r = build_record(2, cells, false).unwrap();
        assert_eq!(r.external_id, "A");
        assert_eq!(r.fields[F_GIVEN], "John");
        assert_eq!(r.fields[F_FAMILY], "Smith");
        assert_eq!(r.fields[F_DISPLAY], "John Smith");
        assert_eq!(r.extra, vec![("Fax".to_string(), "123".to_string())]);
    }

    #[test]
    fn taken_targets_give_a_target_to_its_first_column_only() {
        let m = mapping();
        let cols: Vec<String> = ["e-mail", "ID", "E-Mail", "id", "Fax", "Fax"]
            .iter()
            .map(|c| c.to_string())
            .collect();
        let names: Vec<&str> = taken_targets(&m.resolve_all(&cols))
            .into_iter()
            .map(Target::name)
            .collect();
        assert_eq!(
            names,
            ["email", "external_id", "extra", "extra", "extra", "extra"]
        );
        for t in [
            "email",
            "external_id",
            "name",
            "deleted",
            "extra",
            "ignore",
            "position",
        ] {
            assert_eq!(parse_target(t).unwrap().name(), t);
        }
    }

    #[test]
    fn first_column_for_a_target_wins() {
        let m = mapping();
        let cells = [
            (Target::ExternalId, "ID", "A"),
            (Target::ExternalId, "Code", "C1"),
        ];
        let r = build_record(2, cells, false).unwrap();
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
        let r = build_record(2, cells, false).unwrap();
        assert_eq!(
            r.extra,
            vec![
                ("organisation_ref".to_string(), "O-1".to_string()),
                ("position".to_string(), "Partner".to_string()),
            ]
        );
    }

    #[test]
    fn present_fields_and_cleared_columns() {
        let m = mapping();
        let cells = [
            (m.resolve("ID"), "ID", "A"),
            (m.resolve("name"), "name", "Jo Lee"),
            (m.resolve("Fax"), "Fax", ""),
        ];
        let r = build_record(2, cells, true).unwrap();
        let names: Vec<&str> = (0..PRESENT_BITS)
            .filter(|b| r.present & (1 << b) != 0)
            .map(present_name)
            .collect();
        assert_eq!(names, ["given_name", "family_name", "display_name"]);
        assert_eq!(r.cleared, ["Fax"]);
        let r = build_record(2, cells, false).unwrap();
        assert!(r.cleared.is_empty(), "full snapshots collect nothing");
        let header: Vec<String> = ["ID", "E-mail", "name", "email", "Tier"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let cols = mapped_columns(&header, &m.resolve_all(&header));
        assert_eq!(
            cols.iter()
                .map(|(f, h)| (f.as_str(), h.as_str()))
                .collect::<Vec<_>>(),
            [
                ("email", "E-mail"),
                ("given_name", "name"),
                ("family_name", "name"),
                ("display_name", "name"),
                // A second column for a taken field is kept in `extra`.
                ("extra:email", "email"),
                ("extra:Tier", "Tier")
            ]
        );
    }

    #[test]
    fn rejects_empty_id_and_nul() {
        let m = mapping();
        let e = build_record(3, [(m.resolve("ID"), "ID", " ")], false).unwrap_err();
        assert!(e.contains("empty external id"));
        let e = build_record(3, [(m.resolve("ID"), "ID", "a\0b")], false).unwrap_err();
        assert!(e.contains("NUL"));
    }

    fn present(r: &Record) -> Vec<&'static str> {
        (0..PRESENT_BITS)
            .filter(|b| r.present & (1 << b) != 0)
            .map(present_name)
            .collect()
    }

    #[test]
    fn every_kind_of_target_takes_its_own_column_first_come() {
        // Each target has its own bit: a second column for the same target goes
        // to `extra`, a column for another target never does.
        let cells = [
            (Target::ExternalId, "ID", "A"),
            (Target::Field(F_GIVEN), "First", "Jo"),
            (Target::Name, "Full name", "Joanne Lee"),
            (Target::Deleted, "Gone", "no"),
            (Target::Relation(0), "Org", "O-1"),
            (Target::Relation(1), "Site", "L-1"),
            (Target::Relation(2), "Role", "Partner"),
            (Target::Field(4), "E-mail", "a@x.org"),
            (Target::Field(4), "E-mail 2", "b@x.org"),
            (Target::Relation(2), "Role 2", "Clerk"),
            (Target::Field(F_DISPLAY), "Shown as", "Jo L."),
            (Target::Name, "Full name 2", "Other Person"),
            (Target::Deleted, "Gone 2", "yes"),
        ];
        let r = build_record(2, cells, false).unwrap();
        assert_eq!(r.fields[4], "a@x.org");
        assert_eq!(
            r.fields[F_GIVEN], "Jo",
            "a given-name column beats the split"
        );
        assert_eq!(
            r.fields[F_FAMILY], "",
            "split only when both names are empty"
        );
        assert_eq!(
            r.fields[F_DISPLAY], "Jo L.",
            "a display-name column beats the full name"
        );
        assert!(!r.deleted);
        let extra: Vec<(&str, &str)> = r
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            extra,
            [
                ("E-mail 2", "b@x.org"),
                ("Full name 2", "Other Person"),
                ("Gone 2", "yes"),
                ("Role 2", "Clerk"),
                ("location_ref", "L-1"),
                ("organisation_ref", "O-1"),
                ("position", "Partner"),
            ]
        );
        assert_eq!(
            present(&r),
            [
                "given_name",
                "family_name",
                "display_name",
                "email",
                "organisation_ref",
                "location_ref",
                "position"
            ]
        );
    }

    #[test]
    fn target_bits_mark_what_a_column_carries() {
        assert_eq!(target_bits(Target::Field(0)), 1);
        assert_eq!(target_bits(Target::Field(13)), 1 << 13);
        assert_eq!(target_bits(Target::Name), 0b111);
        assert_eq!(target_bits(Target::Relation(0)), 1 << NFIELDS);
        assert_eq!(target_bits(Target::Relation(2)), 1 << (NFIELDS + 2));
        for t in [
            Target::ExternalId,
            Target::Deleted,
            Target::Extra,
            Target::Ignore,
        ] {
            assert_eq!(target_bits(t), 0, "{t:?}");
        }
    }

    #[test]
    fn an_incremental_record_marks_only_what_it_carried() {
        let cells = [
            (Target::ExternalId, "ID", "A"),
            (Target::Field(F_NOTES), "Notes", " line one\r\nline  two "),
            (Target::Field(7), "Street", " 1  High\tSt "),
            (Target::Relation(0), "Org", " "),
            (Target::Extra, "Fax", ""),
            (Target::Extra, "Code", "C1"),
            (Target::Ignore, "Internal", "x"),
        ];
        let r = build_record(5, cells, true).unwrap();
        assert_eq!(
            r.fields[F_NOTES], "line one\nline  two",
            "notes keep their lines"
        );
        assert_eq!(r.fields[7], "1 High St");
        assert_eq!(present(&r), ["street", "notes", "organisation_ref"]);
        assert_eq!(r.cleared, ["organisation_ref", "Fax"]);
        assert_eq!(r.extra, vec![("Code".to_string(), "C1".to_string())]);
        let full = build_record(5, cells, false).unwrap();
        assert!(full.cleared.is_empty());
        assert_eq!(full.present, r.present);
        let mut marked = cells;
        marked[6] = (Target::Deleted, "Deleted", "yes");
        assert!(build_record(5, marked, true).unwrap().deleted);
    }

    #[test]
    fn a_modification_time_is_carried_beside_the_record() {
        assert_eq!(parse_target("modified_at"), Ok(Target::Modified));
        assert_eq!(Target::Modified.name(), "modified_at");
        let cells = [
            (Target::ExternalId, "ID", "A"),
            (Target::Modified, "updated_at", " 2026-11-30T03:00:00Z "),
            (Target::Modified, "changed", "1796007600"),
        ];
        let r = build_record(1, cells, false).unwrap();
        assert_eq!(r.modified, "2026-11-30T03:00:00Z");
        // A second column mapped to it is kept in extra, as for any target.
        assert_eq!(
            r.extra,
            vec![("changed".to_string(), "1796007600".to_string())]
        );
        assert_eq!(
            r.present, 0,
            "not a field: an incremental record keeps nothing"
        );
    }
}
