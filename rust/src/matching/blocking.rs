//! Blocking: which pairs are worth comparing. Several rules at once; each
//! rule's key is hashed to a u64 per record, records are sorted by key and
//! every run of equal keys is a block. A pair is produced by the first rule
//! that finds it (the union, de-duplicated without a global set), so a pair
//! several rules find is compared once. A block larger than the cap (common
//! names, busy postcodes) is not dropped: its records are sorted by a
//! secondary key (the most telling field the rule does not read) and each is
//! compared with the next `window` records (a sorted neighbourhood), so its
//! cost grows linearly, not quadratically.

use rayon::prelude::*;

use super::config::{BlockRule, Config, FieldType};
use super::nicknames;
use super::prepare::{prefetch, Prepared};
use super::similarity::{email_parts, soundex};

const MAX_KEYS: usize = 4;

/// No rank: the key's block was compared whole (see `Blocker::ranks`).
const NO_RANK: u32 = u32::MAX;

/// Records of a block prefetched at once (the rest of an oversized block is
/// prefetched as its sorted-neighbourhood scan reaches them).
const PREFETCH_BLOCK: usize = 64;

#[derive(Debug, Clone, PartialEq)]
enum Transform {
    Nick,
    Soundex,
    /// Double Metaphone's primary code (rphonetic): non-Anglo spellings
    /// ("Nguyen"/"Nguen", "Schmidt"/"Smit") that Soundex splits
    Metaphone,
    Nysiis,
    Initial,
    Prefix(usize),
    First,
    Last,
    Local,
    Domain,
    Year,
    Last8,
}

#[derive(Debug, Clone)]
struct KeyPart {
    field: usize,
    transforms: Vec<Transform>, // applied innermost first
}

fn parse_part(expr: &str, cfg: &Config) -> Result<KeyPart, String> {
    let mut s = expr.trim();
    let mut outer = Vec::new();
    while let Some(open) = s.find('(') {
        if !s.ends_with(')') {
            return Err(format!("blocking key {expr:?}: unbalanced parentheses"));
        }
        let name = s[..open].trim();
        let t = match name {
            "nick" => Transform::Nick,
            "soundex" => Transform::Soundex,
            "metaphone" => Transform::Metaphone,
            "nysiis" => Transform::Nysiis,
            "initial" => Transform::Initial,
            "first" => Transform::First,
            "last" => Transform::Last,
            "local" => Transform::Local,
            "domain" => Transform::Domain,
            "year" => Transform::Year,
            "last8" => Transform::Last8,
            "exact" => {
                s = s[open + 1..s.len() - 1].trim();
                continue;
            }
            p if p.starts_with("prefix") => match p[6..].parse::<usize>() {
                Ok(n) if n > 0 => Transform::Prefix(n),
                _ => return Err(format!("blocking key {expr:?}: prefixN needs a number")),
            },
            other => {
                return Err(format!(
                    "blocking key {expr:?}: unknown function {other:?} (known: nick, soundex, \
                     metaphone, nysiis, initial, prefixN, first, last, local, domain, year, last8, exact)"
                ))
            }
        };
        outer.push(t);
        s = s[open + 1..s.len() - 1].trim();
    }
    let field = cfg
        .field_index(s)
        .ok_or_else(|| format!("blocking key {expr:?}: no field named {s:?}"))?;
    outer.reverse();
    Ok(KeyPart {
        field,
        transforms: outer,
    })
}

fn apply(t: &Transform, v: &str, out: &mut String) {
    out.clear();
    match t {
        Transform::Nick => out.push_str(nicknames::canonical(v)),
        Transform::Soundex => out.push_str(&soundex(v)),
        Transform::Metaphone => {
            use rphonetic::Encoder;
            out.push_str(&rphonetic::DoubleMetaphone::default().encode(v))
        }
        Transform::Nysiis => {
            use rphonetic::Encoder;
            out.push_str(&rphonetic::Nysiis::default().encode(v))
        }
        Transform::Initial => out.extend(v.chars().next()),
        Transform::Prefix(n) => out.extend(v.chars().filter(|c| *c != ' ').take(*n)),
        Transform::First => out.push_str(v.split(' ').next().unwrap_or("")),
        Transform::Last => out.push_str(v.rsplit(' ').next().unwrap_or("")),
        Transform::Local => out.push_str(email_parts(v).0),
        Transform::Domain => out.push_str(email_parts(v).1),
        Transform::Year => out.push_str(v.get(..4).unwrap_or("")),
        Transform::Last8 => {
            let d: Vec<char> = v.chars().filter(char::is_ascii_digit).collect();
            if d.len() >= 8 {
                out.extend(&d[d.len() - 8..]);
            }
        }
    }
}

/// A compiled blocking rule.
pub struct Rule {
    pub name: String,
    pub train: bool,
    parts: Vec<KeyPart>,
    unordered: bool,
}

impl Rule {
    pub fn compile(r: &BlockRule, cfg: &Config) -> Result<Rule, String> {
        if r.keys.is_empty() {
            return Err("blocking rule with no keys".into());
        }
        let parts = r
            .keys
            .iter()
            .map(|k| parse_part(k, cfg))
            .collect::<Result<Vec<_>, _>>()?;
        let name = r.name.clone().unwrap_or_else(|| {
            let j = r.keys.join(" + ");
            if r.unordered {
                format!("{{{j}}}")
            } else {
                j
            }
        });
        Ok(Rule {
            name,
            train: r.train,
            parts,
            unordered: r.unordered,
        })
    }

    /// The fields this rule's keys read.
    pub fn fields(&self) -> Vec<usize> {
        let mut f: Vec<usize> = self.parts.iter().map(|p| p.field).collect();
        f.sort_unstable();
        f.dedup();
        f
    }

    /// The fields an EM session on this rule's pairs leaves out: those its
    /// keys read and, for a key on an e-mail's local part, the name fields
    /// too. Local parts are mostly the person's names ("john.smith" at two
    /// providers is as often two namesakes as one person): the rule's pairs
    /// agree on names by construction, and EM left to count the names took
    /// namesakes for matches (on 200,000 realistic records it made m of
    /// "date of birth different" 0.47 against a true 0.0001).
    pub fn session_fields(&self, cfg: &Config) -> Vec<usize> {
        let mut f = self.fields();
        if self
            .parts
            .iter()
            .any(|p| p.transforms.contains(&Transform::Local))
        {
            f.extend((0..cfg.fields.len()).filter(|k| {
                matches!(
                    cfg.fields[*k].kind,
                    FieldType::GivenName | FieldType::FamilyName | FieldType::Name
                )
            }));
            f.sort_unstable();
            f.dedup();
        }
        f
    }

    /// The keys of record `rec` (0 = none), up to MAX_KEYS: the hash of each
    /// combination of the parts' values (the first MAX_KEYS in order), joined
    /// by U+001F (sorted first when unordered). `s` holds the buffers, reused
    /// from record to record.
    pub fn keys(&self, prep: &Prepared, rec: usize, s: &mut KeyScratch) -> [u64; MAX_KEYS] {
        let mut out = [0u64; MAX_KEYS];
        let np = self.parts.len();
        if s.values.len() < np {
            s.values.resize_with(np, Vec::new);
            s.counts.resize(np, 0);
        }
        for (pi, p) in self.parts.iter().enumerate() {
            let f = &prep.fields[p.field];
            let mut len = 0;
            for slot in 0..f.slots {
                s.value.clear();
                s.value.push_str(prep.value(p.field, rec, slot));
                for t in &p.transforms {
                    apply(t, &s.value, &mut s.tmp);
                    std::mem::swap(&mut s.value, &mut s.tmp);
                }
                let vs = &mut s.values[pi];
                if s.value.is_empty() || vs[..len].contains(&s.value) {
                    continue;
                }
                if len < vs.len() {
                    vs[len].clear();
                    vs[len].push_str(&s.value);
                } else {
                    vs.push(s.value.clone());
                }
                len += 1;
            }
            if len == 0 {
                return out;
            }
            s.counts[pi] = len;
        }
        // the cross product of the parts' values, in order (an odometer)
        s.at.clear();
        s.at.resize(np, 0);
        let at = &mut s.at;
        let mut combo: Vec<&str> = Vec::with_capacity(np);
        for key in out.iter_mut() {
            combo.clear();
            combo.extend((0..np).map(|pi| s.values[pi][at[pi]].as_str()));
            if self.unordered {
                combo.sort_unstable();
            }
            s.joined.clear();
            for (k, v) in combo.iter().enumerate() {
                if k > 0 {
                    s.joined.push('\u{1f}');
                }
                s.joined.push_str(v);
            }
            *key = xxhash_rust::xxh3::xxh3_64(s.joined.as_bytes()) | 1;
            // next combination: the last part turns fastest
            let mut pi = np;
            loop {
                if pi == 0 {
                    return out;
                }
                pi -= 1;
                at[pi] += 1;
                if at[pi] < s.counts[pi] {
                    break;
                }
                at[pi] = 0;
            }
        }
        out
    }
}

/// Buffers `Rule::keys` reuses from record to record.
#[derive(Default)]
pub struct KeyScratch {
    values: Vec<Vec<String>>,
    counts: Vec<usize>,
    at: Vec<usize>,
    value: String,
    tmp: String,
    joined: String,
}

/// Per rule, what blocking did.
#[derive(Debug, Clone, Default)]
pub struct RuleStats {
    pub name: String,
    pub blocks: u64,
    /// pairs this rule found that no earlier rule had
    pub pairs: u64,
    /// pairs in this rule's blocks before de-duplication
    pub pairs_raw: u64,
    pub capped_blocks: u64,
    pub capped_pairs: u64,
    pub largest_block: u64,
    /// oversized blocks scanned by sorted neighbourhood, and their pairs
    /// before the scan (the quadratic cost avoided)
    pub scanned_blocks: u64,
    pub scanned_block_pairs: u64,
}

/// Which field's value orders an oversized block: the most telling type the
/// rule does not read (a date of birth splits a common name best).
const SECONDARY_ORDER: [FieldType; 10] = [
    FieldType::Date,
    FieldType::Phone,
    FieldType::Email,
    FieldType::Id,
    FieldType::Postcode,
    FieldType::Address,
    FieldType::GivenName,
    FieldType::FamilyName,
    FieldType::Name,
    FieldType::Text,
];

/// The first 8 alphanumeric bytes of a value, big-endian: sorting by it
/// sorts by the value's start (empty values last).
fn sort_key(v: &str) -> u64 {
    let mut k = 0u64;
    let mut n = 0;
    for b in v.bytes().filter(u8::is_ascii_alphanumeric).take(8) {
        k = (k << 8) | b as u64;
        n += 1;
    }
    if n == 0 {
        return u64::MAX;
    }
    k << (8 * (8 - n))
}

/// Blocking keys of all records for all rules, plus which keys were capped.
pub struct Blocker {
    pub rules: Vec<Rule>,
    /// row-major: each record's keys for every rule side by side (one cache
    /// line for typical configurations), rule r at `offset[r]`, `width[r]` wide
    keys: Vec<u64>,
    stride: usize,
    offset: Vec<usize>,
    width: Vec<usize>,
    /// per rule: each record's secondary sort key
    secondary: Vec<Vec<u64>>,
    /// beside each key in `keys` (its first place in the record's keys of
    /// the rule): the record's position in the key's block sorted order when
    /// the block was oversized, else `NO_RANK`; a pair sharing only such a
    /// key is compared when its positions are at most `window` apart
    ranks: Vec<u32>,
    window: usize,
    /// records below this index are "left" (link mode); usize::MAX for dedupe
    pub split: usize,
}

impl Blocker {
    pub fn new(cfg: &Config, prep: &Prepared, split: Option<usize>) -> Result<Blocker, String> {
        Self::with_window(cfg, prep, split, cfg.window)
    }

    fn with_window(
        cfg: &Config,
        prep: &Prepared,
        split: Option<usize>,
        window: usize,
    ) -> Result<Blocker, String> {
        let rules = cfg
            .blocking
            .iter()
            .map(|r| Rule::compile(r, cfg))
            .collect::<Result<Vec<_>, _>>()?;
        let width: Vec<usize> = rules
            .iter()
            .map(|r| {
                r.parts
                    .iter()
                    .map(|p| prep.fields[p.field].slots)
                    .product::<usize>()
                    .clamp(1, MAX_KEYS)
            })
            .collect();
        let offset: Vec<usize> = width
            .iter()
            .scan(0, |acc, w| {
                let o = *acc;
                *acc += w;
                Some(o)
            })
            .collect();
        let stride: usize = width.iter().sum();
        let mut keys = vec![0u64; prep.n * stride];
        keys.par_chunks_mut(stride).enumerate().for_each_init(
            KeyScratch::default,
            |scratch, (i, row)| {
                for (r, rule) in rules.iter().enumerate() {
                    let k = rule.keys(prep, i, scratch);
                    row[offset[r]..offset[r] + width[r]].copy_from_slice(&k[..width[r]]);
                }
            },
        );
        let secondary: Vec<Vec<u64>> = rules
            .iter()
            .map(|rule| {
                let used = rule.fields();
                let field = SECONDARY_ORDER.iter().find_map(|t| {
                    (0..cfg.fields.len()).find(|f| cfg.fields[*f].kind == *t && !used.contains(f))
                });
                match field {
                    Some(f) => (0..prep.n)
                        .into_par_iter()
                        .map(|i| sort_key(prep.value(f, i, 0)))
                        .collect(),
                    None => vec![0; prep.n],
                }
            })
            .collect();
        Ok(Blocker {
            secondary,
            ranks: vec![NO_RANK; keys.len()],
            window: window.max(1),
            rules,
            keys,
            stride,
            offset,
            width,
            split: split.unwrap_or(usize::MAX),
        })
    }

    /// Where record `i`'s keys of `rule` start in `keys` (and `ranks`).
    #[inline]
    fn at(&self, rule: usize, i: usize) -> usize {
        i * self.stride + self.offset[rule]
    }

    #[inline]
    fn keys_of(&self, rule: usize, i: usize) -> &[u64] {
        let a = self.at(rule, i);
        &self.keys[a..a + self.width[rule]]
    }

    /// Some key of `rule` that records i and j share and that was not capped:
    /// the smallest such, or None.
    #[inline]
    fn shared_key(&self, rule: usize, i: usize, j: usize) -> Option<u64> {
        let (ki, kj) = (self.keys_of(rule, i), self.keys_of(rule, j));
        let mut best: Option<u64> = None;
        for &a in ki.iter().filter(|k| **k != 0) {
            let Some(pj) = kj.iter().position(|k| *k == a) else {
                continue;
            };
            let pi = ki.iter().position(|k| *k == a).unwrap_or(0);
            let ri = self.ranks[self.at(rule, i) + pi];
            if ri != NO_RANK {
                // an oversized block: only neighbours in its sorted order meet
                let rj = self.ranks[self.at(rule, j) + pj];
                if rj == NO_RANK || ri.abs_diff(rj) as usize > self.window {
                    continue;
                }
            }
            best = Some(best.map_or(a, |b: u64| b.min(a)));
        }
        best
    }

    /// Prefetches record `rec`'s keys (see `prepare::prefetch`).
    #[inline]
    pub fn prefetch_keys(&self, rec: usize) {
        let k = self.keys.as_ptr().wrapping_add(rec * self.stride);
        prefetch(k);
        prefetch(k.wrapping_add(self.stride.saturating_sub(1)));
        let r = self.ranks.as_ptr().wrapping_add(rec * self.stride);
        prefetch(r);
        prefetch(r.wrapping_add(self.stride.saturating_sub(1)));
    }

    /// Runs every rule; for each new pair calls `emit(rule, i, j)` (in parallel) and
    /// collects what `emit` returns. Pairs are (i < j), and in link mode
    /// i is left and j right. `warm(rec, text)` is told which records come
    /// next, ahead of `emit` (text false) and just before (text true), to
    /// prefetch what `emit` reads of them.
    pub fn run<T: Send>(
        &mut self,
        emit: impl Fn(usize, usize, usize, &mut Vec<T>) + Sync,
        warm: impl Fn(usize, bool) + Sync,
        sink: &mut Vec<T>,
        max_block: usize,
    ) -> Vec<RuleStats> {
        let mut stats = Vec::new();
        let link = self.split != usize::MAX;
        for r in 0..self.rules.len() {
            let this = &*self;
            let mut entries: Vec<(u64, u32)> = (0..self.keys.len() / self.stride.max(1))
                .into_par_iter()
                .flat_map_iter(|i| {
                    let ks = this.keys_of(r, i);
                    let mut seen = [0u64; MAX_KEYS];
                    let mut out = Vec::new();
                    for (n, &k) in ks.iter().enumerate() {
                        if k != 0 && !seen[..n].contains(&k) {
                            out.push((k, i as u32));
                        }
                        seen[n] = k;
                    }
                    out
                })
                .collect();
            entries.par_sort_unstable();
            let mut runs: Vec<(usize, usize)> = Vec::new();
            let mut sn_runs: Vec<(usize, usize)> = Vec::new();
            let mut st = RuleStats {
                name: self.rules[r].name.clone(),
                ..Default::default()
            };
            let mut a = 0;
            while a < entries.len() {
                let mut b = a + 1;
                while b < entries.len() && entries[b].0 == entries[a].0 {
                    b += 1;
                }
                let size = (b - a) as u64;
                let pairs = if link {
                    let left = entries[a..b]
                        .iter()
                        .filter(|e| (e.1 as usize) < self.split)
                        .count() as u64;
                    left * (size - left)
                } else {
                    size * (size - 1) / 2
                };
                if pairs > 0 {
                    st.blocks += 1;
                    st.largest_block = st.largest_block.max(size);
                    if (b - a) > max_block {
                        // sorted neighbourhood: order by the secondary key
                        let sec = &self.secondary[r];
                        entries[a..b].sort_unstable_by_key(|e| (sec[e.1 as usize], e.1));
                        st.scanned_blocks += 1;
                        st.scanned_block_pairs += pairs;
                        for (pos, e) in entries[a..b].iter().enumerate() {
                            let at = self.at(r, e.1 as usize);
                            let q = self.keys[at..at + self.width[r]]
                                .iter()
                                .position(|k| *k == e.0)
                                .unwrap_or(0);
                            self.ranks[at + q] = pos as u32;
                        }
                        sn_runs.push((a, b));
                    } else {
                        st.pairs_raw += pairs;
                        runs.push((a, b));
                    }
                }
                a = b;
            }
            let this = &*self;
            let entries = &entries;
            let emit = &emit;
            let window = self.window;
            // whole blocks, then the oversized ones' neighbourhoods
            let all_runs: Vec<(usize, usize, bool)> = runs
                .iter()
                .map(|&(a, b)| (a, b, false))
                .chain(sn_runs.iter().map(|&(a, b)| (a, b, true)))
                .collect();
            let warm = &warm;
            // a block's records are fetched while the previous block is
            // compared (an oversized block's as its scan goes along)
            let ahead = |rec: usize| {
                this.prefetch_keys(rec);
                warm(rec, false);
            };
            let results: Vec<(Vec<T>, u64)> = all_runs
                .par_iter()
                .enumerate()
                .fold(
                    || (Vec::new(), 0u64),
                    |(mut acc, mut count), (k, &(a, b, sn))| {
                        let key = entries[a].0;
                        let block = &entries[a..b];
                        // two blocks ahead: where the values are; the next
                        // block: the values; this block: in case it is the
                        // first of this worker's share
                        let members = |run: Option<&(usize, usize, bool)>| match run {
                            Some(&(na, nb, _)) => &entries[na..nb.min(na + PREFETCH_BLOCK)],
                            None => &entries[0..0],
                        };
                        members(all_runs.get(k + 2))
                            .iter()
                            .for_each(|e| ahead(e.1 as usize));
                        members(all_runs.get(k + 1))
                            .iter()
                            .for_each(|e| warm(e.1 as usize, true));
                        block[..block.len().min(PREFETCH_BLOCK)]
                            .iter()
                            .for_each(|e| warm(e.1 as usize, true));
                        for x in 0..block.len() {
                            if sn {
                                if let Some(e) = block.get(x + window + 8) {
                                    ahead(e.1 as usize);
                                }
                                if let Some(e) = block
                                    .get(x + window + 2)
                                    .filter(|_| x + window + 2 >= PREFETCH_BLOCK)
                                {
                                    warm(e.1 as usize, true);
                                }
                            }
                            let end = if sn {
                                (x + 1 + window).min(block.len())
                            } else {
                                block.len()
                            };
                            for y in x + 1..end {
                                let (mut i, mut j) = (block[x].1 as usize, block[y].1 as usize);
                                if i > j {
                                    std::mem::swap(&mut i, &mut j);
                                }
                                if link && !(i < this.split && j >= this.split) {
                                    continue;
                                }
                                if i == j {
                                    continue;
                                }
                                // produced by an earlier rule, or by another key of this one?
                                if (0..r).any(|p| this.shared_key(p, i, j).is_some()) {
                                    continue;
                                }
                                if this.shared_key(r, i, j) != Some(key) {
                                    continue;
                                }
                                count += 1;
                                emit(r, i, j, &mut acc);
                            }
                        }
                        (acc, count)
                    },
                )
                .collect();
            for (v, c) in results {
                st.pairs += c;
                sink.extend(v);
            }
            stats.push(st);
        }
        stats
    }

    /// Bit r set when rule r compares i and j (one block, or neighbours in
    /// an oversized block's sorted order).
    pub fn covering(&self, i: usize, j: usize) -> u32 {
        (0..self.rules.len())
            .filter(|&r| self.shared_key(r, i, j).is_some())
            .fold(0, |m, r| m | (1 << r))
    }

    /// True when some rule compares i and j: for measuring blocking recall
    /// against known true pairs.
    pub fn would_compare(&self, i: usize, j: usize) -> bool {
        (0..self.rules.len()).any(|r| self.shared_key(r, i, j).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: Transform, v: &str) -> String {
        let mut out = String::new();
        apply(&t, v, &mut out);
        out
    }

    #[test]
    fn phonetic_keys() {
        // Soundex keeps the first letter: these spellings never meet under it
        for (a, b) in [("philips", "filips"), ("knight", "night")] {
            assert_ne!(key(Transform::Soundex, a), key(Transform::Soundex, b));
            assert_eq!(key(Transform::Metaphone, a), key(Transform::Metaphone, b));
        }
        assert_eq!(
            key(Transform::Nysiis, "knight"),
            key(Transform::Nysiis, "night")
        );
        assert_ne!(
            key(Transform::Metaphone, "smith"),
            key(Transform::Metaphone, "jones")
        );
        assert!(!key(Transform::Nysiis, "smith").is_empty());
    }
}
