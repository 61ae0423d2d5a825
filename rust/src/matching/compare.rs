//! Agreement levels of one pair of records, field by field, packed 4 bits per
//! field into a u64. Uses the comparators of `similarity`; no scoring here.

use super::config::FieldType;
use super::prepare::Prepared;
use super::similarity::{self as sim, DateAgreement};

/// At most one edit (substitution, insertion, deletion or adjacent
/// transposition) apart; allocation-free, for the hot path.
pub fn within_one_edit(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (la, lb) = (a.len(), b.len());
    if la.abs_diff(lb) > 1 {
        return false;
    }
    let p = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    if p == la && p == lb {
        return true;
    }
    let s = a[p..]
        .iter()
        .rev()
        .zip(b[p..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    if la == lb {
        let mid = la - p - s;
        mid == 1 || (mid == 2 && a[p] == b[p + 1] && a[p + 1] == b[p])
    } else {
        p + s >= la.min(lb)
    }
}

/// The text before the first space (all of it without one): what
/// `split(' ').next()` gives, without a searcher per call (a hot path).
#[inline]
fn first_word(s: &str) -> &str {
    match s.as_bytes().iter().position(|&c| c == b' ') {
        Some(k) => &s[..k],
        None => s,
    }
}

fn given_level(a: &str, b: &str) -> u8 {
    if a == b {
        return 6;
    }
    // compare the first word (given names often carry a middle name)
    let (fa, fb) = (first_word(a), first_word(b));
    if fa == fb {
        return 6;
    }
    if sim::nickname_match(fa, fb) {
        return 5;
    }
    if fa.len() == 1 || fb.len() == 1 {
        return if fa.as_bytes()[0] == fb.as_bytes()[0] {
            2
        } else {
            1
        };
    }
    if within_one_edit(fa, fb) {
        return 4;
    }
    let jw = sim::jaro_winkler(fa, fb);
    if jw >= 0.92 {
        4
    } else if jw >= 0.80 {
        3
    } else {
        1
    }
}

fn family_level(a: &str, b: &str) -> u8 {
    if a == b {
        return 4;
    }
    if within_one_edit(a, b) {
        return 3;
    }
    let jw = sim::jaro_winkler(a, b);
    if jw >= 0.92 {
        3
    } else if jw >= 0.80 {
        2
    } else if a.contains(' ') || b.contains(' ') {
        // double-barrelled or extra words: any word in common
        if a.split(' ').any(|w| b.split(' ').any(|x| x == w)) {
            2
        } else {
            1
        }
    } else {
        1
    }
}

fn name_level(a: &str, b: &str) -> u8 {
    if a == b {
        return 5;
    }
    if sim::token_set_ratio(a, b) >= 1.0 {
        return 4;
    }
    let s = sim::name_tokens_similarity(a, b);
    if s >= 0.92 {
        3
    } else if s >= 0.80 {
        2
    } else {
        1
    }
}

fn email_level(a: &str, b: &str) -> u8 {
    if a == b {
        return 4;
    }
    let (la, da) = sim::email_parts(a);
    let (lb, db) = sim::email_parts(b);
    if la == lb && la.len() >= 3 {
        return 3;
    }
    if da == db && (within_one_edit(la, lb) || sim::jaro_winkler(la, lb) >= 0.92) {
        return 2;
    }
    1
}

fn phone_level(a: &str, b: &str) -> u8 {
    if a == b {
        return 4;
    }
    if a.len() >= 8 && b.len() >= 8 && a[a.len() - 8..] == b[b.len() - 8..] {
        return 3;
    }
    if a.len() == b.len() && within_one_edit(a, b) {
        return 2;
    }
    1
}

fn date_level(a: u32, b: u32) -> u8 {
    if a == b {
        return 4;
    }
    let unpack = |p: u32| sim::Date {
        year: (p >> 16) as u16,
        month: (p >> 8) as u8,
        day: p as u8,
    };
    match sim::compare_dates(unpack(a), unpack(b)) {
        DateAgreement::Exact => 4,
        DateAgreement::DayMonthSwapped | DateAgreement::OneDigitOff => 3,
        DateAgreement::SameYear => 2,
        DateAgreement::Different => 1,
    }
}

/// A normalised date ("YYYY-MM-DD") packed as in `Date::packed`.
#[inline]
fn iso_packed(s: &str) -> u32 {
    let b = s.as_bytes();
    if b.len() != 10 {
        return 0;
    }
    let d = |x: &[u8]| {
        x.iter()
            .fold(0u32, |a, c| a * 10 + (c.wrapping_sub(b'0')) as u32)
    };
    (d(&b[0..4]) << 16) | (d(&b[5..7]) << 8) | d(&b[8..10])
}

fn postcode_level(a: &str, b: &str) -> u8 {
    if a == b {
        3
    } else if a.len() == b.len() && within_one_edit(a, b) {
        2
    } else {
        1
    }
}

fn address_level(a: &str, b: &str) -> u8 {
    if a == b {
        return 4;
    }
    // the house numbers must agree when both have one (a different number on
    // the same street is a neighbour); this also rejects most pairs cheaply
    fn num(s: &str) -> Option<&str> {
        s.split(' ').find(|w| w.bytes().any(|c| c.is_ascii_digit()))
    }
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        if x != y {
            return 1;
        }
    }
    let s = sim::name_tokens_similarity(a, b);
    if s >= 0.90 {
        3
    } else if s >= 0.75 {
        2
    } else {
        1
    }
}

fn text_level(a: &str, b: &str) -> u8 {
    if a == b {
        3
    } else if sim::jaro_winkler(a, b) >= 0.88 {
        2
    } else {
        1
    }
}

/// Level of two non-empty values of one field type.
pub fn level_of(kind: FieldType, a: &str, b: &str) -> u8 {
    match kind {
        FieldType::GivenName => given_level(a, b),
        FieldType::FamilyName => family_level(a, b),
        FieldType::Name => name_level(a, b),
        FieldType::Email => email_level(a, b),
        FieldType::Phone => phone_level(a, b),
        FieldType::Date => date_level(iso_packed(a), iso_packed(b)),
        FieldType::Postcode => postcode_level(a, b),
        FieldType::Address => address_level(a, b),
        FieldType::Id => {
            if a == b {
                2
            } else {
                1
            }
        }
        FieldType::Text => text_level(a, b),
    }
}

/// Best level over all value pairs of a (possibly multi-valued) field.
pub fn field_level(prep: &Prepared, field: usize, i: usize, j: usize) -> u8 {
    let f = &prep.fields[field];
    let kind = f.kind.expect("prepared field has a type");
    let top = (kind.nlevels() - 1) as u8;
    let mut best = 0u8;
    for si in 0..f.slots {
        let a = prep.value(field, i, si);
        if a.is_empty() {
            continue;
        }
        for sj in 0..f.slots {
            let b = prep.value(field, j, sj);
            if b.is_empty() {
                continue;
            }
            let l = if kind == FieldType::Date {
                date_level(iso_packed(a), iso_packed(b))
            } else {
                level_of(kind, a, b)
            };
            if l > best {
                best = l;
                if best == top {
                    return best;
                }
            }
        }
    }
    best
}

/// Flag bit: the names were compared swapped (given ↔ family).
pub const SWAPPED: u64 = 1 << 59;

#[inline]
pub fn get_level(levels: u64, field: usize) -> u8 {
    ((levels >> (4 * field)) & 0xF) as u8
}

#[inline]
pub fn set_level(levels: &mut u64, field: usize, l: u8) {
    *levels = (*levels & !(0xF << (4 * field))) | ((l as u64) << (4 * field));
}

/// Compares two records on every field; swapped given and family names (in
/// either record) count as agreeing when that fits better.
pub struct Comparer<'a> {
    pub prep: &'a Prepared,
    pub given: Option<usize>,
    pub family: Option<usize>,
    pub email: Option<usize>,
}

/// True when an e-mail local part is just the person's name ("john.smith",
/// "jsmith", "john84"): then the same local part at another domain says
/// little more than the names already do.
pub fn local_from_name(local: &str, given: &str, family: &str) -> bool {
    let l: String = local.chars().filter(|c| c.is_alphabetic()).collect();
    if l.is_empty() {
        return false;
    }
    let g: String = given
        .split(' ')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_alphabetic())
        .collect();
    let f: String = family.chars().filter(|c| c.is_alphabetic()).collect();
    let gi = &g[..g.chars().next().map_or(0, char::len_utf8)];
    let fi = &f[..f.chars().next().map_or(0, char::len_utf8)];
    // l equals a + b, without building the candidates (a hot path)
    let cat = |a: &str, b: &str| {
        !(a.is_empty() && b.is_empty())
            && l.len() == a.len() + b.len()
            && l.starts_with(a)
            && l.ends_with(b)
    };
    cat(&g, &f)
        || cat(&f, &g)
        || cat(gi, &f)
        || cat(&f, gi)
        || cat(&g, fi)
        || cat(&g, "")
        || cat(&f, "")
}

impl<'a> Comparer<'a> {
    pub fn new(prep: &'a Prepared) -> Comparer<'a> {
        let pos = |k| prep.fields.iter().position(|f| f.kind == Some(k));
        Comparer {
            prep,
            given: pos(FieldType::GivenName),
            family: pos(FieldType::FamilyName),
            email: pos(FieldType::Email),
        }
    }

    pub fn compare(&self, i: usize, j: usize) -> u64 {
        let mut levels = 0u64;
        for k in 0..self.prep.fields.len() {
            set_level(&mut levels, k, field_level(self.prep, k, i, j));
        }
        if let (Some(g), Some(fam)) = (self.given, self.family) {
            let (lg, lf) = (get_level(levels, g), get_level(levels, fam));
            if lg < 6 || lf < 4 {
                let p = self.prep;
                let (gi, fi, gj, fj) = (
                    p.value(g, i, 0),
                    p.value(fam, i, 0),
                    p.value(g, j, 0),
                    p.value(fam, j, 0),
                );
                let first = |x: &str| x.as_bytes().first().copied();
                if !gi.is_empty()
                    && !fi.is_empty()
                    && !gj.is_empty()
                    && !fj.is_empty()
                    && (first(gi) == first(fj) || first(fi) == first(gj))
                {
                    // which record is the swapped one decides which values
                    // are given names: try both, keep the better
                    let (a, b) = (
                        (given_level(gi, fj), family_level(fi, gj)),
                        (given_level(fi, gj), family_level(gi, fj)),
                    );
                    let score = |x: (u8, u8)| x.0 as f64 / 6.0 + x.1 as f64 / 4.0;
                    let (sg, sf) = if score(b) > score(a) { b } else { a };
                    // rank on a common scale: fraction of each field's top level
                    let straight = lg as f64 / 6.0 + lf as f64 / 4.0;
                    let swapped = sg as f64 / 6.0 + sf as f64 / 4.0;
                    // a real swap agrees both ways round, not one name only
                    if swapped > straight + 1e-9 && sg >= 3 && sf >= 2 {
                        set_level(&mut levels, g, sg);
                        set_level(&mut levels, fam, sf);
                        levels |= SWAPPED;
                    }
                }
            }
        }
        if let (Some(e), Some(g), Some(fam)) = (self.email, self.given, self.family) {
            if matches!(get_level(levels, e), 2 | 3) {
                let p = self.prep;
                let local = sim::email_parts(p.value(e, i, 0)).0;
                if local_from_name(local, p.value(g, i, 0), p.value(fam, i, 0))
                    || local_from_name(local, p.value(g, j, 0), p.value(fam, j, 0))
                {
                    set_level(&mut levels, e, 0);
                }
            }
        }
        levels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_edit() {
        assert!(within_one_edit("smith", "smith"));
        assert!(within_one_edit("smith", "smyth"));
        assert!(within_one_edit("smith", "smtih"));
        assert!(within_one_edit("smith", "smit"));
        assert!(within_one_edit("smith", "ssmith"));
        assert!(!within_one_edit("smith", "smiht2"));
        assert!(!within_one_edit("smith", "jones"));
        assert!(within_one_edit("", "a"));
    }

    #[test]
    fn levels_by_type() {
        use FieldType::*;
        assert_eq!(level_of(GivenName, "robert", "bob"), 5);
        assert_eq!(level_of(GivenName, "jon", "john"), 5); // john group lists jon
        assert_eq!(level_of(GivenName, "jhon", "john"), 4);
        assert_eq!(level_of(GivenName, "j", "john"), 2);
        assert_eq!(level_of(GivenName, "mary", "peter"), 1);
        assert_eq!(level_of(GivenName, "mary ann", "mary"), 6);
        assert_eq!(level_of(FamilyName, "smith", "smyth"), 3);
        assert_eq!(level_of(Name, "smith john", "john smith"), 4);
        assert_eq!(level_of(Email, "john@a.com", "john@b.com"), 3);
        assert_eq!(level_of(Email, "john@a.com", "jonh@a.com"), 2);
        assert_eq!(level_of(Email, "john@a.com", "mary@a.com"), 1);
        assert_eq!(level_of(Phone, "+61400000001", "+61400000001"), 4);
        assert_eq!(level_of(Phone, "+61400000001", "0400000001"), 3);
        assert_eq!(level_of(Phone, "+61400000001", "+61400000002"), 2);
        assert_eq!(level_of(Date, "1984-03-07", "1984-07-03"), 3);
        assert_eq!(level_of(Date, "1984-03-07", "1984-03-07"), 4);
        assert_eq!(level_of(Postcode, "2000", "2001"), 2);
        assert_eq!(level_of(Address, "12 smith street", "12 smith street"), 4);
        assert_eq!(level_of(Address, "12 smith street", "12 smiht street"), 3);
        assert_eq!(level_of(Address, "12 smith street", "14 smith street"), 1);
        assert_eq!(level_of(Id, "a", "b"), 1);
        assert_eq!(level_of(Text, "acme pty ltd", "acme pty ltd."), 2);
    }

    #[test]
    fn name_derived_locals() {
        assert!(local_from_name("john.smith", "john", "smith"));
        assert!(local_from_name("jsmith84", "john paul", "smith"));
        assert!(local_from_name("smith_john", "john", "smith"));
        assert!(!local_from_name("jsmith84", "mary", "jones"));
        assert!(!local_from_name("bigfish", "john", "smith"));
    }

    #[test]
    fn packing() {
        let mut l = 0u64;
        set_level(&mut l, 3, 5);
        set_level(&mut l, 15, 15);
        assert_eq!(get_level(l, 3), 5);
        assert_eq!(get_level(l, 15), 15);
        set_level(&mut l, 3, 1);
        assert_eq!(get_level(l, 3), 1);
    }
}
