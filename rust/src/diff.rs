//! Change detection by (external id -> local id, source hash), and the index
//! of identity keys of local manual and external contacts. Pure Rust.

use ahash::AHashMap;

use crate::hash::key_hash;
use crate::model::{Derived, Record, F_DISPLAY, F_EMAIL, F_FAMILY, F_GIVEN, F_MOBILE, F_PHONE};
use crate::normalize::{email_key, identity_name, phone_digits, phone_e164};

pub const FLAG_ATTENTION: u8 = 1;
/// Internal flag: the link has a source hash (a `None` hash is never unchanged).
const FLAG_HASH: u8 = 2;

/// The links of a differ: those it was loaded with in a sorted array with a
/// radix directory (built without hashing: a load is a parse and a sort,
/// already sorted after the first), the links added later in a hash map.
/// A lookup reads the directory slot of the key's top bits, then about one key.
#[derive(Default)]
struct Links {
    keys: Vec<u128>,
    entries: Vec<Known>,
    /// dir[p]..dir[p + 1]: the entries whose key's top `bits` bits are p.
    dir: Vec<u32>,
    bits: u32,
    /// Loaded links still present.
    live: usize,
    added: AHashMap<u128, Known>,
}

impl Links {
    fn build(mut all: Vec<(u128, Known)>) -> Links {
        all.sort_unstable_by_key(|e| e.0);
        all.dedup_by_key(|e| e.0);
        let n = all.len();
        let bits = if n < 2 {
            1
        } else {
            (usize::BITS - (n - 1).leading_zeros()).min(30)
        };
        let (keys, entries): (Vec<u128>, Vec<Known>) = all.into_iter().unzip();
        let mut dir = Vec::with_capacity((1usize << bits) + 1);
        let mut i = 0usize;
        for p in 0..=(1u128 << bits) {
            while i < n && (keys[i] >> (128 - bits)) < p {
                i += 1;
            }
            dir.push(i as u32);
        }
        Links {
            keys,
            entries,
            dir,
            bits,
            live: n,
            added: AHashMap::new(),
        }
    }

    /// Slot of `k` among the loaded links (present or removed).
    fn slot(&self, k: u128) -> Option<usize> {
        if self.keys.is_empty() {
            return None;
        }
        let p = (k >> (128 - self.bits)) as usize;
        let (a, b) = (self.dir[p] as usize, self.dir[p + 1] as usize);
        (a..b).find(|&i| self.keys[i] == k)
    }

    fn get(&self, k: &u128) -> Option<&Known> {
        match self.slot(*k) {
            Some(i) if !self.entries[i].gone => Some(&self.entries[i]),
            Some(_) => None,
            None => self.added.get(k),
        }
    }

    fn get_mut(&mut self, k: &u128) -> Option<&mut Known> {
        match self.slot(*k) {
            Some(i) if !self.entries[i].gone => Some(&mut self.entries[i]),
            Some(_) => None,
            None => self.added.get_mut(k),
        }
    }

    /// The link of `k`, made by `make` when there is none.
    fn get_or_insert_with(&mut self, k: u128, make: impl FnOnce() -> Known) -> &mut Known {
        match self.slot(k) {
            Some(i) => {
                if self.entries[i].gone {
                    self.entries[i] = make();
                    self.live += 1;
                }
                &mut self.entries[i]
            }
            None => self.added.entry(k).or_insert_with(make),
        }
    }

    fn insert(&mut self, k: u128, v: Known) {
        match self.slot(k) {
            Some(i) => {
                if self.entries[i].gone {
                    self.live += 1;
                }
                self.entries[i] = v;
            }
            None => {
                self.added.insert(k, v);
            }
        }
    }

    fn remove(&mut self, k: &u128) {
        match self.slot(*k) {
            Some(i) => {
                if !self.entries[i].gone {
                    self.entries[i].gone = true;
                    self.live -= 1;
                }
            }
            None => {
                self.added.remove(k);
            }
        }
    }

    fn values(&self) -> impl Iterator<Item = &Known> {
        self.entries
            .iter()
            .filter(|k| !k.gone)
            .chain(self.added.values())
    }

    fn len(&self) -> usize {
        self.live + self.added.len()
    }
}

/// One link. Its external id lives in the differ's arena (`names`), not in a
/// string of its own: loading a million links allocates two buffers, not a
/// million strings (and dropping them frees two).
#[derive(Debug, Clone, Copy)]
struct Known {
    local_id: i64,
    hash: u64,
    seen_line: u64,
    /// Raw-row hash of the record last seen unchanged (0: unknown).
    raw: u64,
    ext_at: usize,
    ext_len: u32,
    /// FLAG_ATTENTION | FLAG_HASH.
    flags: u8,
    /// A quarantined row of this run named it: kept, neither updated nor an
    /// absence (per run, like `seen_line`).
    held: bool,
    /// Changed since the differ was loaded (goes into the next delta).
    dirty: bool,
    /// Removed (a loaded link's slot stays in the sorted array).
    gone: bool,
}

impl Known {
    fn hash(&self) -> Option<u64> {
        (self.flags & FLAG_HASH != 0).then_some(self.hash)
    }
}

/// What one incoming record is, against the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Unchanged,
    /// Linked by external id; the hash differs or the contact needs a rule's
    /// attention (not yet `sync`, or forced manual).
    Changed(i64),
    New,
    Delete(Option<i64>),
    Duplicate(u64),
}

/// The map key of an external id: its XXH3-128, so a probe compares two
/// integers instead of chasing a string (collision odds ~1e-27 at a million ids).
fn key(external_id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(external_id.as_bytes())
}

#[derive(Default)]
pub struct Differ {
    known: Links,
    /// The external ids of `known`, back to back.
    names: Vec<u8>,
    new_seen: AHashMap<u128, u64>,
    /// Raw hashes learned this run (the snapshot is worth saving again).
    learned: usize,
    /// External ids whose link was removed since the differ was loaded (the
    /// next delta's removals).
    removed: Vec<String>,
}

/// Appends `v` as an unsigned LEB128 varint.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A cursor over snapshot bytes; every read fails cleanly on truncation.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("link snapshot is truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("link snapshot holds a bad varint".into())
    }
    fn str(&mut self, len: usize) -> Result<&'a str, String> {
        std::str::from_utf8(self.take(len)?)
            .map_err(|_| "link snapshot holds invalid UTF-8".to_string())
    }
}

impl Differ {
    fn ext(&self, k: &Known) -> &str {
        // Only whole UTF-8 strings are ever pushed into `names`.
        std::str::from_utf8(&self.names[k.ext_at..k.ext_at + k.ext_len as usize])
            .unwrap_or_default()
    }

    fn push_name(&mut self, external_id: &str) -> (usize, u32) {
        let at = self.names.len();
        self.names.extend_from_slice(external_id.as_bytes());
        (at, external_id.len() as u32)
    }

    /// Puts a link (over any link of the same external id), seen nowhere yet.
    fn put(&mut self, external_id: &str, local_id: i64, hash: Option<u64>, flags: u8, raw: u64) {
        let (ext_at, ext_len) = self.push_name(external_id);
        self.known.insert(
            key(external_id),
            Known {
                local_id,
                hash: hash.unwrap_or(0),
                seen_line: 0,
                raw,
                ext_at,
                ext_len,
                flags: (flags & FLAG_ATTENTION) | if hash.is_some() { FLAG_HASH } else { 0 },
                held: false,
                dirty: false,
                gone: false,
            },
        );
    }

    pub fn insert(&mut self, external_id: String, local_id: i64, hash: Option<u64>, flags: u8) {
        self.put(&external_id, local_id, hash, flags, 0);
    }

    /// A quarantined row names `external_id`: if the mirror links it, the
    /// contact is kept (not an absence, not updated) and its local id returned.
    pub fn hold(&mut self, external_id: &str) -> Option<i64> {
        let k = self.known.get_mut(&key(external_id))?;
        k.held = true;
        Some(k.local_id)
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.len() == 0
    }

    /// Takes a row as unchanged by its raw hash alone (no cleaning needed) when
    /// it is a linked contact needing no rule's attention whose last unchanged
    /// row had these exact bytes; marks it seen at `line`.
    pub fn take_raw_unchanged(&mut self, external_id: &str, raw: u64, line: u64) -> bool {
        if raw == 0 {
            return false;
        }
        match self.known.get_mut(&key(external_id)) {
            Some(k) if k.raw == raw && k.seen_line == 0 && k.flags & FLAG_ATTENTION == 0 => {
                k.seen_line = line.max(1);
                true
            }
            _ => false,
        }
    }

    pub fn classify(&mut self, r: &Record) -> Class {
        let kx = key(&r.external_id);
        if let Some(k) = self.known.get_mut(&kx) {
            if k.seen_line != 0 {
                return Class::Duplicate(k.seen_line);
            }
            k.seen_line = r.line.max(1);
            if r.deleted {
                return Class::Delete(Some(k.local_id));
            }
            if k.flags & FLAG_ATTENTION == 0 && k.hash() == Some(r.hash) {
                if r.raw_hash != 0 && k.raw != r.raw_hash {
                    k.raw = r.raw_hash;
                    k.dirty = true;
                    self.learned += 1;
                }
                return Class::Unchanged;
            }
            return Class::Changed(k.local_id);
        }
        if let Some(first) = self.new_seen.get(&kx) {
            return Class::Duplicate(*first);
        }
        self.new_seen.insert(kx, r.line.max(1));
        if r.deleted {
            Class::Delete(None)
        } else {
            Class::New
        }
    }

    /// Local ids of known records not seen in this run (deletions of a full snapshot).
    pub fn absent(&self) -> Vec<(i64, String)> {
        let mut out: Vec<(i64, String)> = self
            .known
            .values()
            .filter(|k| k.seen_line == 0 && !k.held)
            .map(|k| (k.local_id, self.ext(k).to_string()))
            .collect();
        out.sort();
        out
    }

    pub fn seen(&self) -> usize {
        self.new_seen.len()
            + self
                .known
                .values()
                .filter(|k| k.seen_line != 0 || k.held)
                .count()
    }

    /// Records a link made during the run (a created or converted contact);
    /// `raw` is the raw hash of the row it was made from (0: unknown).
    pub fn upsert(
        &mut self,
        external_id: &str,
        local_id: i64,
        hash: Option<u64>,
        flags: u8,
        raw: u64,
    ) {
        let kx = key(external_id);
        let seen_line = self.new_seen.get(&kx).copied().unwrap_or(1);
        let flags = (flags & FLAG_ATTENTION) | if hash.is_some() { FLAG_HASH } else { 0 };
        let names = &mut self.names;
        // One lookup for a new link (a bulk import's creates come this way).
        let entry = self.known.get_or_insert_with(kx, || {
            let ext_at = names.len();
            names.extend_from_slice(external_id.as_bytes());
            Known {
                local_id,
                hash: hash.unwrap_or(0),
                seen_line: 0,
                raw: 0,
                ext_at,
                ext_len: external_id.len() as u32,
                flags,
                held: false,
                dirty: false,
                gone: false,
            }
        });
        if entry.local_id != local_id || entry.hash() != hash || entry.flags != flags {
            entry.raw = 0;
        }
        if raw != 0 {
            entry.raw = raw;
            self.learned += 1;
        }
        entry.local_id = local_id;
        entry.hash = hash.unwrap_or(0);
        entry.flags = flags;
        entry.seen_line = entry.seen_line.max(seen_line);
        entry.dirty = true;
    }

    pub fn learned(&self) -> usize {
        self.learned
    }

    /// Drops a link the run removed (deleted or unlinked), if it is still `local_id`'s.
    pub fn remove_if(&mut self, external_id: &str, local_id: i64) {
        let kx = key(external_id);
        if self.known.get(&kx).is_some_and(|k| k.local_id == local_id) {
            self.known.remove(&kx);
            self.removed.push(external_id.to_string());
        }
    }

    /// The links, sorted by external id: (external id, local id, hash, flags).
    pub fn entries(&self) -> Vec<(String, i64, Option<u64>, u8)> {
        let mut out: Vec<_> = self
            .known
            .values()
            .map(|k| {
                (
                    self.ext(k).to_string(),
                    k.local_id,
                    k.hash(),
                    k.flags & FLAG_ATTENTION,
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Links changed since the differ was loaded, and removals: what
    /// `serialize_delta` would write (0 and 0 for an untouched one).
    pub fn changes(&self) -> (usize, usize) {
        (
            self.known.values().filter(|k| k.dirty).count(),
            self.removed.len(),
        )
    }

    fn put_entry(&self, out: &mut Vec<u8>, k: &Known) {
        let ext = self.ext(k);
        put_varint(out, ((ext.len() as u64) << 2) | u64::from(k.flags & 3));
        out.extend_from_slice(ext.as_bytes());
        put_varint(out, k.local_id as u64);
        out.extend_from_slice(&k.hash.to_le_bytes());
        out.extend_from_slice(&k.raw.to_le_bytes());
    }

    /// Compact snapshot of the links (format "CSD3"): count as a varint
    /// (LEB128), then per link: (id length << 2 | flags) varint (flags bit 0
    /// attention, bit 1 hash present), id bytes, local id varint, hash u64 LE,
    /// raw-row hash u64 LE. About 37 bytes a link with 17-byte ids ("CSD2",
    /// still read, had fixed-width lengths and ids: 46).
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.known.len() * 40);
        out.extend_from_slice(b"CSD3");
        put_varint(&mut out, self.known.len() as u64);
        for k in self.known.values() {
            self.put_entry(&mut out, k);
        }
        out
    }

    /// What changed since the differ was loaded (format "CSDD"): the count of
    /// removed links as a varint, then each removed external id (length
    /// varint, bytes); then the count of changed or new links and each as in
    /// "CSD3". Applied in order over the snapshot it was loaded from
    /// (`apply_delta`), it gives these links.
    pub fn serialize_delta(&self) -> Vec<u8> {
        let (dirty, removed) = self.changes();
        let mut out = Vec::with_capacity(12 + removed * 20 + dirty * 40);
        out.extend_from_slice(b"CSDD");
        put_varint(&mut out, removed as u64);
        for ext in &self.removed {
            put_varint(&mut out, ext.len() as u64);
            out.extend_from_slice(ext.as_bytes());
        }
        put_varint(&mut out, dirty as u64);
        for k in self.known.values().filter(|k| k.dirty) {
            self.put_entry(&mut out, k);
        }
        out
    }

    /// Reads `count` links in the "CSD3" (or "CSD2") entry layout, their
    /// external ids into the arena.
    fn read_entries(
        &mut self,
        d: &mut Cursor<'_>,
        count: u64,
        v3: bool,
    ) -> Result<Vec<(u128, Known)>, String> {
        let mut out = Vec::with_capacity((count as usize).min(d.0.len() / 19));
        for _ in 0..count {
            let (len, mut flags) = if v3 {
                let lf = d.varint()?;
                ((lf >> 2) as usize, (lf & 3) as u8)
            } else {
                let len = u32::from_le_bytes(d.take(4)?.try_into().unwrap_or_default());
                (len as usize, 0)
            };
            let ext = d.str(len)?;
            let local_id = if v3 { d.varint()? } else { d.u64()? } as i64;
            let hash = d.u64()?;
            let raw = d.u64()?;
            if !v3 {
                flags = d.take(1)?[0];
            }
            let (ext_at, ext_len) = self.push_name(ext);
            out.push((
                key(ext),
                Known {
                    local_id,
                    hash,
                    seen_line: 0,
                    raw,
                    ext_at,
                    ext_len,
                    flags: flags & 3,
                    held: false,
                    dirty: false,
                    gone: false,
                },
            ));
        }
        Ok(out)
    }

    /// Reads a snapshot of either format ("CSD3", or "CSD2" of older versions).
    pub fn deserialize(data: &[u8]) -> Result<Differ, String> {
        let mut d = Cursor(data);
        let v3 = match d.take(4)? {
            b"CSD3" => true,
            b"CSD2" => false,
            _ => return Err("not a link snapshot".into()),
        };
        let count = if v3 { d.varint()? } else { d.u64()? };
        // A count is never more than the bytes could hold (no huge allocation).
        let cap = (count as usize).min(d.0.len() / 17);
        let mut out = Differ {
            names: Vec::with_capacity(d.0.len().saturating_sub(cap * 19)),
            ..Differ::default()
        };
        let all = out.read_entries(&mut d, count, v3)?;
        if !d.0.is_empty() {
            return Err("link snapshot has trailing bytes".into());
        }
        out.known = Links::build(all);
        Ok(out)
    }

    /// Applies a delta written by `serialize_delta` over the links it was
    /// made from: its removals, then its links. The result is as loaded
    /// (nothing dirty).
    pub fn apply_delta(&mut self, data: &[u8]) -> Result<(), String> {
        let mut d = Cursor(data);
        if d.take(4)? != b"CSDD" {
            return Err("not a link snapshot delta".into());
        }
        let removed = d.varint()?;
        for _ in 0..removed {
            let len = d.varint()? as usize;
            let ext = d.str(len)?;
            self.known.remove(&key(ext));
        }
        let count = d.varint()?;
        let links = self.read_entries(&mut d, count, true)?;
        if !d.0.is_empty() {
            return Err("link snapshot delta has trailing bytes".into());
        }
        for (k, v) in links {
            self.known.insert(k, v);
        }
        Ok(())
    }
}

/// Keys of name, e-mail and phone, normalised for an identity match.
pub struct IdentityKeys {
    pub name: String,
    pub email: String,
    pub phone: String,
}

impl IdentityKeys {
    pub fn of(fields: &[String], phone_e164_: &str, mobile_e164_: &str) -> Self {
        let name = identity_name(&fields[F_GIVEN], &fields[F_FAMILY], &fields[F_DISPLAY]);
        let email = email_key(&fields[F_EMAIL]);
        let phone = if !fields[F_PHONE].is_empty() {
            if phone_e164_.is_empty() {
                phone_digits(&fields[F_PHONE])
            } else {
                phone_e164_.to_string()
            }
        } else if !fields[F_MOBILE].is_empty() {
            if mobile_e164_.is_empty() {
                phone_digits(&fields[F_MOBILE])
            } else {
                mobile_e164_.to_string()
            }
        } else {
            String::new()
        };
        IdentityKeys { name, email, phone }
    }

    pub fn is_blank(&self) -> bool {
        self.name.is_empty() && self.email.is_empty() && self.phone.is_empty()
    }

    /// (full, [name+email, name+phone, email+phone])
    pub fn hashes(&self) -> (u64, [u64; 3]) {
        let (n, e, p) = (self.name.as_str(), self.email.as_str(), self.phone.as_str());
        (
            key_hash(&["id", n, e, p]),
            [
                key_hash(&["ne", n, e]),
                key_hash(&["np", n, p]),
                key_hash(&["ep", e, p]),
            ],
        )
    }
}

pub fn derive(fields: &[String], region: &str) -> Derived {
    derive_with(fields, region, true)
}

/// E.164 phones always; identity keys only when something will look them up.
pub fn derive_with(fields: &[String], region: &str, identity: bool) -> Derived {
    let phone_e = phone_e164(&fields[F_PHONE], region);
    let mobile_e = phone_e164(&fields[F_MOBILE], region);
    if !identity {
        return Derived {
            phone_e164: phone_e,
            mobile_e164: mobile_e,
            ..Default::default()
        };
    }
    let keys = IdentityKeys::of(fields, &phone_e, &mobile_e);
    let (identity, partial) = if keys.is_blank() {
        (0, [0; 3])
    } else {
        keys.hashes()
    };
    Derived {
        phone_e164: phone_e,
        mobile_e164: mobile_e,
        identity,
        partial,
        ..Default::default()
    }
}

/// The keys of many local contacts, in parallel: (contact id, kind, derived)
/// of (contact id, kind, field values), for `IdentityIndex::add`.
pub fn derive_rows<F: AsRef<[String]> + Sync>(
    rows: &[(i64, u8, F)],
    region: &str,
) -> Vec<(i64, u8, Derived)> {
    use rayon::prelude::*;
    rows.par_iter()
        .map(|(id, kind, f)| (*id, *kind, derive(f.as_ref(), region)))
        .collect()
}

/// Which local contact a partial key points at, and which field then differs.
pub const PARTIAL_DIFFERS: [&str; 3] = ["phone", "email", "name"];

#[derive(Default)]
pub struct IdentityIndex {
    /// full identity hash -> [(contact id, kind)]; kind 0 manual, 1 external
    full: AHashMap<u64, Vec<(i64, u8)>>,
    partial: [AHashMap<u64, Vec<i64>>; 3],
}

impl IdentityIndex {
    pub fn add(&mut self, contact_id: i64, kind: u8, d: &Derived) {
        if d.identity == 0 {
            return;
        }
        self.full
            .entry(d.identity)
            .or_default()
            .push((contact_id, kind));
        if kind == 0 {
            for (i, h) in d.partial.iter().enumerate() {
                self.partial[i].entry(*h).or_default().push(contact_id);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.full.is_empty()
    }

    pub fn len(&self) -> usize {
        self.full.values().map(Vec::len).sum()
    }

    pub fn lookup(&self, d: &Derived) -> Option<&Vec<(i64, u8)>> {
        if d.identity == 0 {
            return None;
        }
        self.full.get(&d.identity)
    }

    /// Manual contacts that agree on two of the three identity keys, with the
    /// name of the field that differs.
    pub fn near_misses(&self, d: &Derived) -> Vec<(i64, &'static str)> {
        let mut out = Vec::new();
        if d.identity == 0 {
            return out;
        }
        for (i, h) in d.partial.iter().enumerate() {
            if let Some(ids) = self.partial[i].get(h) {
                for id in ids {
                    out.push((*id, PARTIAL_DIFFERS[i]));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::record_hash;
    use crate::model::NFIELDS;

    fn rec(id: &str, line: u64, email: &str) -> Record {
        let mut r = Record {
            line,
            external_id: id.into(),
            built: true,
            ..Default::default()
        };
        r.fields[F_EMAIL] = email.into();
        r.hash = record_hash(&r);
        r
    }

    #[test]
    fn classifies() {
        let mut d = Differ::default();
        let a = rec("A", 2, "a@x");
        d.insert("A".into(), 1, Some(a.hash), 0);
        d.insert("B".into(), 2, Some(0), 0);
        d.insert("C".into(), 3, Some(0), FLAG_ATTENTION);
        d.insert("G".into(), 4, Some(0), 0);
        assert_eq!(d.classify(&a), Class::Unchanged);
        assert_eq!(d.classify(&rec("B", 3, "b@x")), Class::Changed(2));
        assert_eq!(d.classify(&rec("N", 4, "")), Class::New);
        assert_eq!(d.classify(&rec("N", 9, "")), Class::Duplicate(4));
        assert_eq!(d.classify(&rec("A", 10, "")), Class::Duplicate(2));
        let mut c = rec("C", 11, "");
        c.hash = 0;
        assert_eq!(
            d.classify(&c),
            Class::Changed(3),
            "attention flag forces a decision"
        );
        assert_eq!(d.absent(), vec![(4, "G".to_string())]);
        assert_eq!(d.hold("G"), Some(4));
        assert_eq!(d.hold("nobody"), None);
        assert!(d.absent().is_empty(), "a held contact is no absence");
    }

    #[test]
    fn an_old_csd2_snapshot_still_reads_and_csd3_is_smaller() {
        let mut b = b"CSD2".to_vec();
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&17u32.to_le_bytes());
        b.extend_from_slice(b"00000001-9e3779b1");
        b.extend_from_slice(&700_000i64.to_le_bytes());
        b.extend_from_slice(&9u64.to_le_bytes());
        b.extend_from_slice(&42u64.to_le_bytes());
        b.push(2); // hash present, no attention
        let mut d = Differ::deserialize(&b).unwrap();
        let want = vec![("00000001-9e3779b1".to_string(), 700_000, Some(9), 0)];
        assert_eq!(d.entries(), want);
        let v3 = d.serialize();
        assert_eq!(&v3[..4], b"CSD3");
        assert_eq!(
            v3.len(),
            4 + 1 + 1 + 17 + 3 + 8 + 8,
            "varints: 1 + 1 + 3 bytes"
        );
        assert!(v3.len() + 8 < b.len());
        assert_eq!(Differ::deserialize(&v3).unwrap().entries(), want);
        assert!(
            d.take_raw_unchanged("00000001-9e3779b1", 42, 2),
            "the raw hash came along"
        );
    }

    #[test]
    fn loaded_and_added_links_answer_like_a_map() {
        use std::collections::BTreeMap;
        // A seeded walk of links: loaded (sorted array), then removed,
        // re-added, changed and new (the map beside it), against a BTreeMap.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut d = Differ::default();
        let mut want: BTreeMap<String, (i64, Option<u64>, u8)> = BTreeMap::new();
        for i in 0..3000 {
            let (e, h) = (format!("L{i}"), Some(next() % 1000));
            d.insert(e.clone(), i, h, 0);
            want.insert(e, (i, h, 0));
        }
        let mut d = Differ::deserialize(&d.serialize()).unwrap();
        for step in 0..6000 {
            let e = format!("L{}", next() % 4000);
            let id = (next() % 5000) as i64;
            match step % 3 {
                0 => {
                    if want.get(&e).is_some_and(|w| w.0 == id) {
                        want.remove(&e);
                    }
                    d.remove_if(&e, id);
                    if let Some(w) = want.get(&e) {
                        d.remove_if(&e, w.0);
                        want.remove(&e);
                    }
                }
                _ => {
                    let h = (step % 5 != 0).then_some(next() % 1000);
                    d.upsert(&e, id, h, (step % 7 == 0) as u8, 0);
                    want.insert(e, (id, h, (step % 7 == 0) as u8));
                }
            }
        }
        let got: Vec<_> = d.entries();
        let exp: Vec<_> = want
            .iter()
            .map(|(e, &(id, h, f))| (e.clone(), id, h, f))
            .collect();
        assert_eq!(got, exp);
        assert_eq!(d.len(), want.len());
        for i in 0..4000 {
            let e = format!("L{i}");
            assert_eq!(d.hold(&e), want.get(&e).map(|w| w.0), "{e}");
        }
        let back = Differ::deserialize(&d.serialize()).unwrap();
        assert_eq!(back.entries(), exp);
    }

    #[test]
    fn a_delta_over_the_snapshot_it_was_loaded_from_gives_the_same_links() {
        let mut d = Differ::default();
        for i in 0..50 {
            d.insert(format!("E{i}"), i, Some(i as u64 * 7), (i % 5 == 0) as u8);
        }
        let base = d.serialize();
        let mut run = Differ::deserialize(&base).unwrap();
        assert_eq!(run.changes(), (0, 0), "nothing changed yet");
        run.upsert("E3", 3, Some(99), 0, 0); // changed
        run.remove_if("E4", 4); // deleted
        run.remove_if("E5", 77); // not its link: kept
        run.remove_if("E6", 6);
        run.upsert("E6", 600, Some(1), 0, 0); // removed, then linked again
        run.upsert("Ünew", 51, None, FLAG_ATTENTION, 0); // new
        run.upsert("E7", 700, Some(2), 0, 0);
        run.remove_if("E7", 700); // new link, then removed
        let r = Record {
            external_id: "E8".into(),
            hash: 56,
            raw_hash: 1234,
            line: 9,
            ..Default::default()
        };
        assert_eq!(run.classify(&r), Class::Unchanged); // learns a raw hash
        assert_eq!(run.changes(), (4, 3));
        let delta = run.serialize_delta();
        assert!(delta.len() < base.len() / 5, "a delta is small");
        let mut back = Differ::deserialize(&base).unwrap();
        back.apply_delta(&delta).unwrap();
        assert_eq!(back.entries(), run.entries());
        assert_eq!(back.changes(), (0, 0), "applied: as loaded");
        assert!(
            back.take_raw_unchanged("E8", 1234, 3),
            "the learned raw hash came along"
        );
        // Deltas chain: a second run over base + delta.
        back.upsert("E9", 9, Some(1), 0, 0);
        let second = back.serialize_delta();
        let mut again = Differ::deserialize(&base).unwrap();
        again.apply_delta(&delta).unwrap();
        again.apply_delta(&second).unwrap();
        assert_eq!(again.entries(), back.entries());
        assert!(again.apply_delta(b"CSDD\x01").is_err());
        assert!(again.apply_delta(&delta[..delta.len() - 1]).is_err());
        assert!(again.apply_delta(&base).is_err(), "a snapshot is no delta");
    }

    #[test]
    fn snapshot_round_trip() {
        let mut d = Differ::default();
        d.insert("A".into(), 1, Some(7), 0);
        d.insert("Bé".into(), 2, None, FLAG_ATTENTION);
        d.upsert("C", 3, Some(u64::MAX), 0, 42);
        d.remove_if("A", 99);
        let back = Differ::deserialize(&d.serialize()).unwrap();
        assert_eq!(back.entries(), d.entries());
        d.remove_if("A", 1);
        assert_eq!(d.len(), 2);
        assert!(Differ::deserialize(b"CSD2\x01").is_err());
        assert!(Differ::deserialize(b"CSD3\x01").is_err());
        assert!(Differ::deserialize(b"CSD3\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01").is_err());
        let mut back = back;
        assert!(!back.take_raw_unchanged("C", 41, 5));
        assert!(back.take_raw_unchanged("C", 42, 5));
        assert!(!back.take_raw_unchanged("C", 42, 6), "seen once only");
        assert!(Differ::deserialize(b"nope").is_err());
    }

    #[test]
    fn identity_matches_across_phone_formats() {
        let mut a: [String; NFIELDS] = Default::default();
        a[F_DISPLAY] = "John Smith".into();
        a[F_EMAIL] = "John@Smith.com ".into();
        a[F_PHONE] = "0400 000 001".into();
        let mut b = a.clone();
        b[F_GIVEN] = "john".into();
        b[F_FAMILY] = "SMITH".into();
        b[F_EMAIL] = "john@smith.com".into();
        b[F_PHONE] = "+61 400 000 001".into();
        let (da, db) = (derive(&a, "AU"), derive(&b, "AU"));
        assert_eq!(da.identity, db.identity);
        let mut idx = IdentityIndex::default();
        idx.add(7, 0, &da);
        assert_eq!(idx.lookup(&db), Some(&vec![(7, 0)]));
        let mut c = b.clone();
        c[F_PHONE] = String::new();
        let dc = derive(&c, "AU");
        assert_eq!(idx.lookup(&dc), None);
        assert_eq!(idx.near_misses(&dc), vec![(7, "phone")]);
    }

    #[test]
    fn seen_counts_each_incoming_record_once_and_held_ones_too() {
        // What the mass-deletion guard divides by: records this run saw (new or
        // linked, duplicates once) plus linked contacts a quarantined row named.
        let mut d = Differ::default();
        for (i, id) in ["A", "B", "C", "D"].iter().enumerate() {
            d.insert(id.to_string(), i as i64 + 1, Some(0), 0);
        }
        assert_eq!(d.seen(), 0);
        d.classify(&rec("A", 2, "a@x"));
        for (line, id) in [(3, "N"), (4, "M"), (5, "P"), (6, "N")] {
            d.classify(&rec(id, line, ""));
        }
        assert_eq!(d.hold("B"), Some(2));
        assert_eq!(d.seen(), 5, "A and held B, new N, M and P");
        assert_eq!(d.absent(), vec![(3, "C".to_string()), (4, "D".to_string())]);
    }

    #[test]
    fn delete_markers_name_the_linked_contact_or_nobody() {
        let mut d = Differ::default();
        d.insert("A".into(), 9, Some(0), 0);
        let mut a = rec("A", 2, "");
        a.deleted = true;
        let mut z = rec("Z", 3, "");
        z.deleted = true;
        assert_eq!(d.classify(&a), Class::Delete(Some(9)));
        assert_eq!(d.classify(&z), Class::Delete(None));
        assert!(
            d.absent().is_empty(),
            "a record marked deleted is no absence"
        );
    }

    #[test]
    fn raw_hashes_are_learned_from_unchanged_records_only_when_new() {
        let mut d = Differ::default();
        let mut a = rec("A", 2, "a@x");
        a.raw_hash = 77;
        d.insert("A".into(), 1, Some(a.hash), 0);
        assert_eq!(d.classify(&a), Class::Unchanged);
        assert_eq!(d.learned(), 1);
        let snapshot = d.serialize();
        // The next run: the raw bytes alone say unchanged.
        let mut next = Differ::deserialize(&snapshot).unwrap();
        assert_eq!(next.learned(), 0);
        assert!(next.take_raw_unchanged("A", 77, 2));
        // The same raw bytes classified again: nothing new to learn.
        let mut again = Differ::deserialize(&snapshot).unwrap();
        assert_eq!(again.classify(&a), Class::Unchanged);
        assert_eq!(again.learned(), 0);
        // A record without raw bytes (an API or JSON source) learns nothing and
        // does not forget what was learned.
        let mut b = a.clone();
        b.raw_hash = 0;
        let mut third = Differ::deserialize(&snapshot).unwrap();
        assert_eq!(third.classify(&b), Class::Unchanged);
        assert_eq!(third.learned(), 0);
        let mut fourth = Differ::deserialize(&third.serialize()).unwrap();
        assert!(fourth.take_raw_unchanged("A", 77, 2));
        // A contact needing a rule's attention is never taken by its raw bytes.
        let mut f = Differ::default();
        f.upsert("A", 1, Some(a.hash), FLAG_ATTENTION, 77);
        assert!(!f.take_raw_unchanged("A", 77, 2));
    }

    #[test]
    fn upsert_keeps_the_raw_hash_only_while_the_link_is_unchanged() {
        fn raw_unchanged(d: &Differ, raw: u64) -> bool {
            Differ::deserialize(&d.serialize())
                .unwrap()
                .take_raw_unchanged("A", raw, 3)
        }
        let mut d = Differ::default();
        d.upsert("A", 1, Some(5), 0, 77); // created this run
        assert_eq!(d.learned(), 1);
        assert_eq!(d.entries(), vec![("A".to_string(), 1, Some(5), 0)]);
        assert!(d.absent().is_empty(), "made this run: no absence");
        assert_eq!(d.seen(), 1);
        d.upsert("A", 1, Some(5), 0, 0); // the same link, no raw bytes
        assert_eq!(d.learned(), 1);
        assert!(raw_unchanged(&d, 77));
        d.upsert("A", 1, Some(6), 0, 0); // updated: new content hash
        assert!(
            !raw_unchanged(&d, 77),
            "the old bytes no longer say unchanged"
        );
        d.upsert("A", 1, Some(6), 0, 88);
        assert!(raw_unchanged(&d, 88));
        d.upsert("A", 2, Some(6), 0, 0); // another contact now
        assert!(!raw_unchanged(&d, 88));
        d.upsert("A", 2, Some(6), FLAG_ATTENTION, 88);
        d.upsert("A", 2, Some(6), 0, 0); // the attention flag cleared
        assert!(!raw_unchanged(&d, 88));
        assert_eq!(d.learned(), 3);
        d.remove_if("A", 99); // the link is contact 2's: kept
        assert_eq!(d.len(), 1);
        d.remove_if("A", 2);
        assert!(d.is_empty());
    }

    #[test]
    fn derive_keeps_the_e164_phones_with_or_without_identity_keys() {
        let mut f: [String; NFIELDS] = Default::default();
        f[F_DISPLAY] = "John Smith".into();
        f[F_EMAIL] = "john@smith.com".into();
        f[F_PHONE] = "0400 000 001".into();
        f[F_MOBILE] = "0400 000 002".into();
        for identity in [false, true] {
            let d = derive_with(&f, "AU", identity);
            assert_eq!(d.phone_e164, "+61400000001", "identity keys: {identity}");
            assert_eq!(d.mobile_e164, "+61400000002", "identity keys: {identity}");
            assert_eq!(d.identity != 0, identity);
            assert_eq!(d.partial.iter().all(|h| *h != 0), identity);
        }
    }
}
