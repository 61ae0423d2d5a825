//! Columnar storage of the records to match and their normalised values.
//! One contiguous text buffer per column (no String per value); built in
//! parallel chunks. No comparison or scoring here.

use rayon::prelude::*;
use std::collections::HashMap;

use super::config::{Config, FieldType};
use super::similarity::parse_date;
use crate::normalize::{email_key, name_key, phone_digits, phone_e164, split_name};

/// A column of strings: value `i` is `text[offs[i]..offs[i + 1]]`.
#[derive(Debug, Clone, Default)]
pub struct StrCol {
    pub text: String,
    pub offs: Vec<u64>,
}

impl StrCol {
    pub fn new() -> StrCol {
        StrCol {
            text: String::new(),
            offs: vec![0],
        }
    }
    pub fn with_capacity(n: usize, bytes: usize) -> StrCol {
        let mut offs = Vec::with_capacity(n + 1);
        offs.push(0);
        StrCol {
            text: String::with_capacity(bytes),
            offs,
        }
    }
    pub fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.offs.push(self.text.len() as u64);
    }
    pub fn len(&self) -> usize {
        self.offs.len() - 1
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    #[inline]
    pub fn get(&self, i: usize) -> &str {
        &self.text[self.offs[i] as usize..self.offs[i + 1] as usize]
    }
    pub fn append(&mut self, other: &StrCol) {
        let base = self.text.len() as u64;
        self.text.push_str(&other.text);
        self.offs.extend(other.offs[1..].iter().map(|o| o + base));
    }
    pub fn from_strs<'a>(it: impl IntoIterator<Item = &'a str>) -> StrCol {
        let mut c = StrCol::new();
        for s in it {
            c.push(s);
        }
        c
    }
    /// Builds `n` values with `f`, in parallel chunks.
    pub fn par_build(n: usize, f: impl Fn(usize, &mut String) + Sync) -> StrCol {
        const CHUNK: usize = 1 << 15;
        let parts: Vec<StrCol> = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let lo = c * CHUNK;
                let hi = (lo + CHUNK).min(n);
                let mut col = StrCol::with_capacity(hi - lo, (hi - lo) * 12);
                let mut buf = String::new();
                for i in lo..hi {
                    buf.clear();
                    f(i, &mut buf);
                    col.push(&buf);
                }
                col
            })
            .collect();
        let total: usize = parts.iter().map(|p| p.text.len()).sum();
        let mut out = StrCol::with_capacity(n, total);
        for p in &parts {
            out.append(p);
        }
        out
    }
}

/// Raw input: record ids and the named columns the configuration reads.
#[derive(Debug, Default)]
pub struct RawTable {
    pub ids: StrCol,
    pub columns: Vec<(String, StrCol)>,
}

impl RawTable {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn column(&self, name: &str) -> Option<&StrCol> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }
    /// Left then right, as one table (columns missing on a side are empty).
    pub fn concat(left: &RawTable, right: &RawTable) -> RawTable {
        let mut ids = left.ids.clone();
        ids.append(&right.ids);
        let mut names: Vec<String> = left.columns.iter().map(|(n, _)| n.clone()).collect();
        for (n, _) in &right.columns {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        let columns = names
            .into_iter()
            .map(|n| {
                let mut col = match left.column(&n) {
                    Some(c) => c.clone(),
                    None => StrCol::from_strs(std::iter::repeat_n("", left.len())),
                };
                match right.column(&n) {
                    Some(c) => col.append(c),
                    None => col.append(&StrCol::from_strs(std::iter::repeat_n("", right.len()))),
                }
                (n, col)
            })
            .collect();
        RawTable { ids, columns }
    }
}

/// A field's layout in the row store and its term frequencies.
#[derive(Debug, Default)]
pub struct FieldData {
    pub kind: Option<FieldType>,
    /// values per record (one per source column)
    pub slots: usize,
    /// index of the field's first slot within a row
    pub base: usize,
    /// Term frequency of the first value (count of records holding it).
    pub tf: Vec<u32>,
}

/// Normalised values stored row by row: all of one record's values sit
/// together, so comparing a pair touches a few cache lines instead of two
/// per field (random pairs are memory-bound otherwise).
pub struct Prepared {
    pub n: usize,
    pub fields: Vec<FieldData>,
    /// Records with a non-empty first value, per field (for tf).
    pub nonempty: Vec<usize>,
    /// slots per row
    width: usize,
    text: String,
    start: Vec<u64>,
    /// end of each slot relative to its row start
    ends: Vec<u16>,
}

/// Asks the CPU to bring the cache line holding `p` closer (a hint: it never
/// faults, whatever the address, and does nothing where not supported).
/// Comparing the pairs of a block reads records scattered over the whole
/// input: fetching the next ones while this one is compared hides the wait
/// for memory, which was about half of the comparing and blocking time on a
/// million records.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint to the cache; it reads nothing the
    // program sees and cannot fault, even on an invalid address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl Prepared {
    /// Prefetches where record `rec`'s values are (its row start and ends):
    /// the first of two steps, some records ahead (see `prefetch_text`).
    #[inline]
    pub fn prefetch_row(&self, rec: usize) {
        prefetch(self.start.as_ptr().wrapping_add(rec));
        let e = self.ends.as_ptr().wrapping_add(rec * self.width);
        prefetch(e);
        prefetch(e.wrapping_add(self.width.saturating_sub(1)));
    }

    /// Prefetches record `rec`'s values (reads its row start: best after
    /// `prefetch_row`).
    #[inline]
    pub fn prefetch_text(&self, rec: usize) {
        let (a, b) = (self.start[rec] as usize, self.start[rec + 1] as usize);
        let p = self.text.as_ptr();
        let mut k = a;
        while k < b {
            prefetch(p.wrapping_add(k));
            k += 64;
        }
        prefetch(p.wrapping_add(b.saturating_sub(1)));
    }

    #[inline]
    pub fn value(&self, field: usize, rec: usize, slot: usize) -> &str {
        let at = self.fields[field].base + slot;
        let k = rec * self.width + at;
        let row = self.start[rec] as usize;
        // the row's first slot starts it (no division: this is per value read)
        let a = if at == 0 {
            0
        } else {
            self.ends[k - 1] as usize
        };
        &self.text[row + a..row + self.ends[k] as usize]
    }
}

const ADDRESS_WORDS: &[(&str, &str)] = &[
    ("st", "street"),
    ("rd", "road"),
    ("ave", "avenue"),
    ("av", "avenue"),
    ("dr", "drive"),
    ("ct", "court"),
    ("cres", "crescent"),
    ("cr", "crescent"),
    ("pl", "place"),
    ("ln", "lane"),
    ("hwy", "highway"),
    ("pde", "parade"),
    ("tce", "terrace"),
    ("bvd", "boulevard"),
    ("blvd", "boulevard"),
    ("cl", "close"),
    ("cct", "circuit"),
    ("gr", "grove"),
    ("sq", "square"),
    ("esp", "esplanade"),
    ("u", "unit"),
    ("apt", "unit"),
    ("n", "north"),
    ("s", "south"),
    ("e", "east"),
    ("w", "west"),
];

/// Name-like values: name key with punctuation dropped ("O'Brien" → "obrien")
/// and hyphens and commas as word breaks.
pub fn norm_name(v: &str, out: &mut String) {
    let k = name_key(v);
    let mut space = false;
    for c in k.chars() {
        if c.is_alphanumeric() {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(c);
        } else if c == ' ' || c == '-' || c == ',' || c == '/' || c == '&' {
            space = true;
        }
    }
}

pub fn norm_address(v: &str, out: &mut String) {
    let mut tmp = String::new();
    norm_name(&v.replace('/', " "), &mut tmp);
    for w in tmp.split(' ') {
        if w.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        match ADDRESS_WORDS.iter().find(|(a, _)| *a == w) {
            Some((_, full)) => out.push_str(full),
            None => out.push_str(w),
        }
    }
}

pub fn normalize(kind: FieldType, v: &str, region: &str, out: &mut String) {
    let v = v.trim();
    if v.is_empty() {
        return;
    }
    match kind {
        FieldType::Name | FieldType::GivenName | FieldType::FamilyName | FieldType::Text => {
            norm_name(v, out)
        }
        FieldType::Address => norm_address(v, out),
        FieldType::Email => out.push_str(&email_key(v)),
        FieldType::Phone => {
            let e = phone_e164(v, region);
            if e.is_empty() {
                let d = phone_digits(v);
                if d.len() >= 6 {
                    out.push_str(&d);
                }
            } else {
                out.push_str(&e);
            }
        }
        FieldType::Date => {
            if let Some(d) = parse_date(v) {
                out.push_str(&format!("{:04}-{:02}-{:02}", d.year, d.month, d.day));
            }
        }
        FieldType::Postcode => {
            for c in v.chars().filter(|c| c.is_alphanumeric()) {
                out.extend(c.to_uppercase());
            }
        }
        FieldType::Id => out.push_str(v),
    }
}

/// Normalises every configured field of `raw`. Missing columns are errors.
pub fn prepare(cfg: &Config, raw: &RawTable) -> Result<Prepared, String> {
    let n = raw.len();
    for col in cfg.columns() {
        if raw.column(&col).is_none() {
            return Err(format!(
                "column {col:?} is not in the records (have: {})",
                raw.columns
                    .iter()
                    .map(|(c, _)| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let name_src = cfg.name_source.as_deref().and_then(|c| raw.column(c));
    let given_idx = cfg
        .fields
        .iter()
        .position(|f| f.kind == FieldType::GivenName);
    let family_idx = cfg
        .fields
        .iter()
        .position(|f| f.kind == FieldType::FamilyName);
    let columns: Vec<(StrCol, Vec<u32>)> = cfg
        .fields
        .par_iter()
        .enumerate()
        .map(|(fi, spec)| {
            let cols: Vec<&StrCol> = spec
                .columns
                .iter()
                .map(|c| raw.column(c).expect("checked above"))
                .collect();
            let slots = cols.len();
            let is_given = Some(fi) == given_idx;
            let is_family = Some(fi) == family_idx;
            let values = StrCol::par_build(n * slots, |k, out| {
                let (rec, slot) = (k / slots, k % slots);
                let mut v = cols[slot].get(rec);
                let split;
                if v.trim().is_empty() && slot == 0 && (is_given || is_family) {
                    if let (Some(src), Some(g), Some(f)) = (name_src, given_idx, family_idx) {
                        // fill only when both given and family are empty
                        let gv = raw
                            .column(&cfg.fields[g].columns[0])
                            .map_or("", |c| c.get(rec));
                        let fv = raw
                            .column(&cfg.fields[f].columns[0])
                            .map_or("", |c| c.get(rec));
                        if gv.trim().is_empty() && fv.trim().is_empty() {
                            split = split_name(src.get(rec));
                            v = if is_given { &split.0 } else { &split.1 };
                        }
                    }
                }
                normalize(spec.kind, v, &cfg.region, out);
                // a value longer than a row can index is cut (never in practice)
                if out.len() > 1000 {
                    let mut cut = 1000;
                    while !out.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    out.truncate(cut);
                }
            });
            let tf = if spec.tf {
                term_frequencies(&values, n, slots, spec.kind == FieldType::GivenName)
            } else {
                Vec::new()
            };
            (values, tf)
        })
        .collect();
    let mut fields = Vec::with_capacity(cfg.fields.len());
    let mut base = 0;
    for (spec, (_, tf)) in cfg.fields.iter().zip(columns.iter()) {
        fields.push(FieldData {
            kind: Some(spec.kind),
            slots: spec.columns.len(),
            base,
            tf: tf.clone(),
        });
        base += spec.columns.len();
    }
    let width = base;
    // interleave the columns into rows, in parallel chunks of records
    const CHUNK: usize = 1 << 15;
    let parts: Vec<(String, Vec<u64>, Vec<u16>)> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let (lo, hi) = (c * CHUNK, ((c + 1) * CHUNK).min(n));
            let mut text = String::new();
            let mut starts = Vec::with_capacity(hi - lo);
            let mut ends = Vec::with_capacity((hi - lo) * width);
            for rec in lo..hi {
                let row = text.len();
                starts.push(row as u64);
                for (f, (vals, _)) in fields.iter().zip(columns.iter()) {
                    for s in 0..f.slots {
                        text.push_str(vals.get(rec * f.slots + s));
                        ends.push((text.len() - row) as u16);
                    }
                }
            }
            (text, starts, ends)
        })
        .collect();
    drop(columns);
    let total: usize = parts.iter().map(|p| p.0.len()).sum();
    let mut text = String::with_capacity(total);
    let mut start = Vec::with_capacity(n + 1);
    let mut ends = Vec::with_capacity(n * width);
    for (t, st, en) in parts {
        let b = text.len() as u64;
        text.push_str(&t);
        start.extend(st.into_iter().map(|x| x + b));
        ends.extend(en);
    }
    start.push(text.len() as u64);
    let mut prep = Prepared {
        n,
        fields,
        nonempty: Vec::new(),
        width,
        text,
        start,
        ends,
    };
    prep.nonempty = (0..prep.fields.len())
        .map(|f| {
            (0..n)
                .into_par_iter()
                .filter(|&r| !prep.value(f, r, 0).is_empty())
                .count()
        })
        .collect();
    Ok(prep)
}

/// Per record, how many records hold its (first) value; given names count
/// by their first word, as they are compared.
fn term_frequencies(values: &StrCol, n: usize, slots: usize, first_word: bool) -> Vec<u32> {
    let hashes: Vec<u64> = (0..n)
        .into_par_iter()
        .map(|r| {
            let mut v = values.get(r * slots);
            if first_word {
                v = v.split(' ').next().unwrap_or(v);
            }
            if v.is_empty() {
                0
            } else {
                xxhash_rust::xxh3::xxh3_64(v.as_bytes()) | 1
            }
        })
        .collect();
    let mut counts: HashMap<u64, u32, ahash::RandomState> =
        HashMap::with_capacity_and_hasher(n / 4, ahash::RandomState::with_seed(7));
    for &h in &hashes {
        if h != 0 {
            *counts.entry(h).or_insert(0) += 1;
        }
    }
    hashes
        .par_iter()
        .map(|h| if *h == 0 { 0 } else { counts[h] })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strcol_roundtrip() {
        let c = StrCol::par_build(100_000, |i, out| out.push_str(&i.to_string()));
        assert_eq!(c.len(), 100_000);
        assert_eq!(c.get(0), "0");
        assert_eq!(c.get(99_999), "99999");
        let mut a = StrCol::from_strs(["a", ""]);
        a.append(&StrCol::from_strs(["bc"]));
        assert_eq!((a.get(0), a.get(1), a.get(2)), ("a", "", "bc"));
    }

    #[test]
    fn normalisers() {
        let f = |k, v: &str| {
            let mut s = String::new();
            normalize(k, v, "AU", &mut s);
            s
        };
        assert_eq!(f(FieldType::FamilyName, " O'Brien-Smith "), "obrien smith");
        assert_eq!(f(FieldType::Address, "12/3 Smith St"), "12 3 smith street");
        assert_eq!(f(FieldType::Phone, "(04) 0000 0001"), "+61400000001");
        assert_eq!(f(FieldType::Date, "07/03/1984"), "1984-03-07");
        assert_eq!(f(FieldType::Postcode, " 2000 "), "2000");
        assert_eq!(f(FieldType::Email, " John@Smith.COM "), "john@smith.com");
        assert_eq!(f(FieldType::Date, "garbage"), "");
    }
}
