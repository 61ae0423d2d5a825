//! The content hash: XXH3-64 (seed 0) over the canonical serialisation.
//!
//! Canonical serialisation, version 1 (documented in README "Content hash"):
//! each of the 14 canonical fields in `model::FIELDS` order, as UTF-8, each
//! followed by the byte 0x1F; then each unmapped column sorted by key as
//! key, 0x1D, value, 0x1E. Values are the cleaned stored values.

use crate::model::{Record, FIELDS};
use xxhash_rust::xxh3::xxh3_64;

pub const HASH_VERSION: u32 = 1;

pub fn canonical_bytes(fields: &[String], extra: &[(String, String)]) -> Vec<u8> {
    let mut cap = FIELDS.len();
    for f in fields {
        cap += f.len();
    }
    for (k, v) in extra {
        cap += k.len() + v.len() + 2;
    }
    let mut out = Vec::with_capacity(cap);
    for f in fields {
        out.extend_from_slice(f.as_bytes());
        out.push(0x1F);
    }
    for (k, v) in extra {
        out.extend_from_slice(k.as_bytes());
        out.push(0x1D);
        out.extend_from_slice(v.as_bytes());
        out.push(0x1E);
    }
    out
}

pub fn content_hash(fields: &[String], extra: &[(String, String)]) -> u64 {
    xxh3_64(&canonical_bytes(fields, extra))
}

pub fn record_hash(r: &Record) -> u64 {
    content_hash(&r.fields, &r.extra)
}

/// Hash of a tuple of keys (identity keys): parts joined by 0x1F.
pub fn key_hash(parts: &[&str]) -> u64 {
    let mut buf = Vec::with_capacity(64);
    for p in parts {
        buf.extend_from_slice(p.as_bytes());
        buf.push(0x1F);
    }
    xxh3_64(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<String> {
        let mut f: Vec<String> = vec![String::new(); FIELDS.len()];
        f[0] = "John".into();
        f[1] = "Smith".into();
        f[4] = "john@smith.com".into();
        f
    }

    #[test]
    fn canonical_layout() {
        let b = canonical_bytes(&sample(), &[("Client Code".into(), "JS1".into())]);
        assert!(b.starts_with(b"John\x1fSmith\x1f\x1f\x1fjohn@smith.com\x1f"));
        assert!(b.ends_with(b"Client Code\x1dJS1\x1e"));
    }

    #[test]
    fn pinned_vector() {
        // The same vector is pinned in tests/test_hash_parity.py against the
        // Python xxhash package.
        let all_empty: Vec<String> = vec![String::new(); FIELDS.len()];
        assert_eq!(content_hash(&all_empty, &[]), xxh3_64(&[0x1F; 14]));
        assert_eq!(content_hash(&all_empty, &[]), 0x2072_9f18_75ea_3d6a);
        assert_eq!(content_hash(&sample(), &[]), 0x0e9b_7571_14f5_40fa);
    }

    #[test]
    fn canonical_bytes_are_sized_in_one_allocation() {
        // The capacity is computed exactly (no growth, no slack): a bulk import
        // hashes millions of records.
        for extra in [
            vec![],
            vec![("Client Code".to_string(), "JS1".to_string())],
            vec![
                (
                    "a".to_string(),
                    "a much longer value than its key".to_string(),
                ),
                (
                    "a much longer key than its value".to_string(),
                    "b".to_string(),
                ),
            ],
        ] {
            let b = canonical_bytes(&sample(), &extra);
            assert_eq!(b.capacity(), b.len(), "{extra:?}");
        }
    }

    #[test]
    fn record_hash_covers_fields_and_unmapped_columns() {
        let mut r = Record::default();
        r.fields[0] = "John".into();
        r.extra = vec![("Client Code".into(), "JS1".into())];
        let h = record_hash(&r);
        assert_eq!(h, content_hash(&r.fields, &r.extra));
        let mut s = r.clone();
        s.extra[0].1 = "JS2".into();
        assert_ne!(record_hash(&s), h);
        let mut t = r.clone();
        t.fields[13] = "a note".into();
        assert_ne!(record_hash(&t), h);
    }

    #[test]
    fn key_hash_keeps_parts_apart() {
        assert_ne!(key_hash(&["ab", "c"]), key_hash(&["a", "bc"]));
        assert_eq!(key_hash(&["ab", "c"]), xxh3_64(b"ab\x1fc\x1f"));
    }
}
