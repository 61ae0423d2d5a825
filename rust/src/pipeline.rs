//! One chunk of a source, processed: hashed, classified against the mirror,
//! keyed for identity matching. Parallel with rayon; no Python, no I/O.

use std::sync::{Mutex, RwLock};

use rayon::prelude::*;

use crate::diff::{derive_with, Class, Differ, IdentityIndex};
use crate::hash::record_hash;
use crate::model::{Derived, Record};
use crate::sources::{Item, Rejected, RowId};

#[derive(Default)]
pub struct Processed {
    pub records: Vec<Record>,
    pub derived: Vec<Derived>,
    /// Plain creates: new records that no identity key links.
    pub creates: Vec<usize>,
    pub changed: Vec<(usize, i64)>,
    /// New records whose identity key hits local manual or external contacts.
    pub claims: Vec<(usize, Vec<(i64, u8)>)>,
    /// (record, manual contact, differing field) for untouched-contact reasons.
    pub near: Vec<(usize, i64, &'static str)>,
    pub deletes: Vec<(usize, Option<i64>)>,
    pub rejected: Vec<Rejected>,
    pub unchanged: usize,
    pub total: usize,
    /// Change-feed payloads of the plain creates (in `creates` order), made on
    /// the reader's cores when the source was known there; else empty.
    pub create_payloads: Vec<String>,
    /// The source the payloads were made for.
    pub payload_source: Option<String>,
    /// Built from an incremental batch: records say what they carried.
    pub partial: bool,
    /// (local id, external id, line) of linked contacts a quarantined row
    /// named: kept as they are (no update, no absence).
    pub held: Vec<(i64, String, u64)>,
    /// Quarantined rows that nothing tells apart (a full snapshot then
    /// deletes nothing).
    pub unidentified: usize,
    /// (field, heading) of what the file's header carries (CSV files only).
    pub columns: Option<std::sync::Arc<Vec<(String, String)>>>,
}

pub fn process(
    items: Vec<Item>,
    differ: &Mutex<Differ>,
    identity: Option<&RwLock<IdentityIndex>>,
    region: &str,
    source: Option<&str>,
) -> Processed {
    let total = items.len();
    let mut records = Vec::with_capacity(total);
    let mut rejected = Vec::new();
    for it in items {
        match it {
            Ok(r) => records.push(r),
            Err(e) => rejected.push(e),
        }
    }
    records
        .par_iter_mut()
        .filter(|r| r.built)
        .for_each(|r| r.hash = record_hash(r));

    let mut held = Vec::new();
    let mut unidentified = 0usize;
    let classes: Vec<Class> = {
        let mut d = differ.lock().unwrap_or_else(|e| e.into_inner());
        // A quarantined row is no absence: the contact it names is kept.
        for r in &rejected {
            match &r.id {
                RowId::Read(id) => {
                    if let Some(cid) = d.hold(id) {
                        held.push((cid, id.clone(), r.line));
                    }
                }
                RowId::Guess(id) => match d.hold(id) {
                    Some(cid) => held.push((cid, id.clone(), r.line)),
                    None => unidentified += 1,
                },
                RowId::Unreadable => unidentified += 1,
                RowId::NotARecord => {}
            }
        }
        // Unbuilt rows were taken as unchanged (and marked seen) by the reader.
        records
            .iter()
            .map(|r| {
                if r.built {
                    d.classify(r)
                } else {
                    Class::Unchanged
                }
            })
            .collect()
    };

    let mut out = Processed {
        total,
        held,
        unidentified,
        ..Default::default()
    };
    let mut need: Vec<usize> = Vec::new();
    for (i, c) in classes.iter().enumerate() {
        match *c {
            Class::Unchanged => out.unchanged += 1,
            Class::Changed(id) => {
                out.changed.push((i, id));
                need.push(i);
            }
            Class::New => need.push(i),
            Class::Delete(id) => out.deletes.push((i, id)),
            Class::Duplicate(first) => rejected.push(Rejected {
                line: records[i].line,
                reason: format!(
                    "duplicate external id {:?} (first seen at line {first})",
                    records[i].external_id
                ),
                raw: String::new(),
                id: RowId::NotARecord,
            }),
        }
    }
    let guard = identity.map(|l| l.read().unwrap_or_else(|e| e.into_inner()));
    let idx = guard.as_deref().filter(|g| !g.is_empty());
    let derived_needed: Vec<Derived> = need
        .par_iter()
        .map(|&i| {
            let mut d = derive_with(&records[i].fields, region, idx.is_some());
            d.extra_json = extra_json(&records[i].extra);
            d
        })
        .collect();
    let mut derived = vec![Derived::default(); records.len()];
    for (i, d) in need.into_iter().zip(derived_needed) {
        derived[i] = d;
    }
    for (i, c) in classes.iter().enumerate() {
        if *c != Class::New {
            continue;
        }
        match idx {
            Some(ix) => {
                if let Some(hits) = ix.lookup(&derived[i]) {
                    out.claims.push((i, hits.clone()));
                } else {
                    out.creates.push(i);
                    for (cid, field) in ix.near_misses(&derived[i]) {
                        out.near.push((i, cid, field));
                    }
                }
            }
            None => out.creates.push(i),
        }
    }
    rejected.sort_by_key(|r| r.line);
    if let Some(src) = source {
        out.create_payloads = out
            .creates
            .par_iter()
            .map(|&i| create_payload(&records[i], src))
            .collect();
        out.payload_source = Some(src.to_string());
    }
    out.records = records;
    out.derived = derived;
    out.rejected = rejected;
    out
}

impl Processed {
    /// Records the links of the plain creates in `differ`: local ids from
    /// `base_id` on, in create order (the ids `Batch.create_rows` writes), with
    /// the hash and raw-row hash each record was read with. The import calls
    /// it where it writes the creates (sync.py), not as a side effect.
    pub fn register_created(&self, differ: &mut Differ, base_id: i64) {
        for (k, &i) in self.creates.iter().enumerate() {
            let r = &self.records[i];
            differ.upsert(
                &r.external_id,
                base_id + k as i64,
                Some(r.hash),
                0,
                r.raw_hash,
            );
        }
    }

    /// The change-feed payloads of the plain creates for `source`: those made
    /// on the reader's cores when they were made for this source, else made
    /// now in parallel.
    pub fn feed_payloads(&self, source: &str) -> std::borrow::Cow<'_, [String]> {
        if self.payload_source.as_deref() == Some(source)
            && self.create_payloads.len() == self.creates.len()
        {
            // Made on the reader's cores while the previous batch was written.
            std::borrow::Cow::Borrowed(&self.create_payloads)
        } else {
            std::borrow::Cow::Owned(
                self.creates
                    .par_iter()
                    .map(|&i| create_payload(&self.records[i], source))
                    .collect(),
            )
        }
    }

    /// (local id, organisation_ref, location_ref, position) of the plain
    /// creates that carry an organisation or location key, ids from `base_id` on.
    pub fn create_relations(&self, base_id: i64) -> Vec<(i64, &str, &str, &str)> {
        let mut out = Vec::new();
        for (k, &i) in self.creates.iter().enumerate() {
            let mut rel = ["", "", ""];
            let mut any = false;
            for (key, value) in &self.records[i].extra {
                if let Some(p) = crate::mapping::RELATIONS.iter().position(|r| r == key) {
                    rel[p] = value.as_str();
                    // A link needs an organisation or a location (as the
                    // set-based relink decides); a position alone is no link.
                    any |= p < 2;
                }
            }
            if any {
                out.push((base_id + k as i64, rel[0], rel[1], rel[2]));
            }
        }
        out
    }
}

/// The change-feed payload of a created contact: {"field": [null, value], ...}
/// for the link and every non-empty field, written directly (no JSON tree).
pub fn create_payload(r: &Record, source: &str) -> String {
    fn push_str(out: &mut String, s: &str) {
        // serde_json's escaping of one string never fails.
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
    }
    let mut out = String::with_capacity(128 + r.fields.iter().map(String::len).sum::<usize>());
    out.push_str("{\"record_type\":[null,\"sync\"],\"source\":[null,");
    push_str(&mut out, source);
    out.push_str("],\"external_id\":[null,");
    push_str(&mut out, &r.external_id);
    out.push(']');
    for (i, f) in crate::model::FIELDS.iter().enumerate() {
        if !r.fields[i].is_empty() {
            out.push_str(",\"");
            out.push_str(f);
            out.push_str("\":[null,");
            push_str(&mut out, &r.fields[i]);
            out.push(']');
        }
    }
    if !r.extra.is_empty() {
        out.push_str(",\"extra\":[null,");
        out.push_str(&extra_json(&r.extra));
        out.push(']');
    }
    out.push('}');
    out
}

/// A contact's `extra` as stored and fed: compact JSON, columns in file order.
pub fn extra_json(extra: &[(String, String)]) -> String {
    json_object(extra.iter(), ",", ":")
}

/// A JSON object of string pairs in the given order, with the given
/// separators ("{}" when there are none).
pub fn json_object<'a>(
    pairs: impl Iterator<Item = &'a (String, String)> + Clone,
    item_sep: &str,
    kv_sep: &str,
) -> String {
    let cap = pairs
        .clone()
        .map(|(k, v)| k.len() + v.len() + 6)
        .sum::<usize>();
    let mut out = String::with_capacity(2 + cap);
    out.push('{');
    for (n, (k, v)) in pairs.enumerate() {
        if n > 0 {
            out.push_str(item_sep);
        }
        out.push_str(&serde_json::to_string(k).unwrap_or_default());
        out.push_str(kv_sep);
        out.push_str(&serde_json::to_string(v).unwrap_or_default());
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn new_record(id: &str, line: u64, extra: &[(&str, &str)]) -> crate::sources::Item {
        let mut r = Record {
            external_id: id.into(),
            line,
            built: true,
            raw_hash: 1000 + line,
            ..Default::default()
        };
        r.extra = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(r)
    }

    #[test]
    fn register_created_links_the_creates_from_base_id_on() {
        let differ = Mutex::new(Differ::default());
        differ.lock().unwrap().insert("OLD".into(), 1, Some(5), 0);
        let items = vec![
            new_record("N1", 2, &[]),
            new_record("OLD", 3, &[]),
            new_record("N2", 4, &[]),
        ];
        let b = process(items, &differ, None, "AU", None);
        assert_eq!(b.creates.len(), 2);
        assert_eq!(differ.lock().unwrap().len(), 1, "processing links nothing");
        let mut d = differ.into_inner().unwrap();
        b.register_created(&mut d, 100);
        let hash = |id: &str| b.records.iter().find(|r| r.external_id == id).unwrap().hash;
        assert_eq!(
            d.entries(),
            vec![
                ("N1".to_string(), 100, Some(hash("N1")), 0),
                ("N2".to_string(), 101, Some(hash("N2")), 0),
                ("OLD".to_string(), 1, Some(5), 0),
            ]
        );
        assert_eq!(d.learned(), 2, "the raw-row hashes are learned");
    }

    #[test]
    fn feed_payloads_are_reused_only_for_their_source() {
        let differ = Mutex::new(Differ::default());
        let b = process(
            vec![new_record("N1", 2, &[])],
            &differ,
            None,
            "AU",
            Some("xpm"),
        );
        assert!(matches!(
            b.feed_payloads("xpm"),
            std::borrow::Cow::Borrowed(_)
        ));
        let other = b.feed_payloads("crm");
        assert!(matches!(other, std::borrow::Cow::Owned(_)));
        assert_eq!(other[0], create_payload(&b.records[0], "crm"));
    }

    #[test]
    fn create_relations_need_an_organisation_or_a_location() {
        let differ = Mutex::new(Differ::default());
        let (org, loc, pos) = (
            crate::mapping::RELATIONS[0],
            crate::mapping::RELATIONS[1],
            crate::mapping::RELATIONS[2],
        );
        let items = vec![
            new_record("A", 2, &[(org, "o1"), (pos, "CEO")]),
            new_record("B", 3, &[(pos, "CFO")]),
            new_record("C", 4, &[(loc, "l1")]),
        ];
        let b = process(items, &differ, None, "AU", None);
        assert_eq!(
            b.create_relations(10),
            vec![(10, "o1", "", "CEO"), (12, "", "l1", "")]
        );
    }

    #[test]
    fn extra_json_is_a_sorted_escaped_object() {
        let extra = vec![
            ("A \"x\"".to_string(), "1\n".to_string()),
            ("B".to_string(), "é".to_string()),
        ];
        let v: Value = serde_json::from_str(&extra_json(&extra)).unwrap();
        assert_eq!(v, serde_json::json!({"A \"x\"": "1\n", "B": "é"}));
        assert_eq!(extra_json(&[]), "{}");
    }

    #[test]
    fn create_payload_lists_non_empty_fields() {
        let mut r = Record {
            external_id: "A".into(),
            ..Default::default()
        };
        r.fields[4] = "j@x.com".into();
        r.extra = vec![("Fax".into(), "1".into())];
        let v: Value = serde_json::from_str(&create_payload(&r, "xpm")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"record_type": [null, "sync"], "source": [null, "xpm"],
                "external_id": [null, "A"], "email": [null, "j@x.com"],
                "extra": [null, {"Fax": "1"}]})
        );
    }
}
