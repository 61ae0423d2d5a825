//! Cleaning of stored values and the match keys of names, e-mails and phones.
//! Pure functions: no I/O, no Python.

use std::collections::HashMap;
use std::sync::OnceLock;

use phonenumber::country::Id;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Cleans a value for storage: Unicode NFC, trimmed, and for single-line fields
/// every run of white space folded into one space. Notes keep their line breaks
/// (CRLF becomes LF) and only lose leading and trailing white space.
pub fn clean(value: &str, multiline: bool) -> String {
    let needs_nfc = !value.is_ascii();
    let s: std::borrow::Cow<str> = if needs_nfc {
        value.nfc().collect::<String>().into()
    } else {
        value.into()
    };
    if multiline {
        return s.trim().replace("\r\n", "\n");
    }
    let trimmed = s.trim();
    if !trimmed.contains(|c: char| c.is_whitespace() && c != ' ') && !trimmed.contains("  ") {
        return trimmed.to_string();
    }
    let mut out = String::with_capacity(trimmed.len());
    for word in trimmed.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Match key of a name: NFKC, accents stripped, case-folded, white space collapsed.
pub fn name_key(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut pending_space = false;
    if value.is_ascii() {
        for c in value.chars() {
            if c.is_whitespace() {
                pending_space = !out.is_empty();
            } else {
                if pending_space {
                    out.push(' ');
                    pending_space = false;
                }
                out.push(c.to_ascii_lowercase());
            }
        }
        return out;
    }
    // NFKD splits accents off their letters; NFKC afterwards recomposes the rest.
    let stripped: String = value.nfkd().filter(|c| !is_combining_mark(*c)).collect();
    for c in stripped.nfkc() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            for l in c.to_lowercase() {
                out.push(l);
            }
        }
    }
    out
}

/// Match key of an e-mail address: trimmed and lower-cased.
pub fn email_key(value: &str) -> String {
    value.trim().to_lowercase()
}

fn region_id(region: &str) -> Option<Id> {
    region.trim().to_ascii_uppercase().parse::<Id>().ok()
}

struct RegionInfo {
    country_code: u16,
    national_prefix: Option<String>,
}

fn region_info(region: &str) -> Option<&'static RegionInfo> {
    static CACHE: OnceLock<std::sync::Mutex<HashMap<String, Option<&'static RegionInfo>>>> =
        OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    let key = region.trim().to_ascii_uppercase();
    if let Some(found) = map.get(&key) {
        return *found;
    }
    let info = phonenumber::metadata::DATABASE.by_id(&key).map(|meta| {
        let leaked: &'static RegionInfo = Box::leak(Box::new(RegionInfo {
            country_code: meta.country_code(),
            national_prefix: meta.national_prefix().map(str::to_string),
        }));
        leaked
    });
    map.insert(key, info);
    info
}

/// Phone number in E.164 form (`+61400000001`), parsed with libphonenumber's
/// rules for `region` when the number carries no country code. Returns an empty
/// string for an empty or unparseable value.
///
/// A fast path handles the most common export shape (a national number written
/// with the region's trunk prefix, digits and separators only) from the
/// library's own metadata; everything else goes through the full parser. A unit
/// test holds the two to the same answers.
pub fn phone_e164(value: &str, region: &str) -> String {
    let value = value.trim();
    if value.is_empty() {
        return String::new();
    }
    if let Some(fast) = phone_fast(value, region) {
        return fast;
    }
    phone_full(value, region)
}

pub fn phone_full(value: &str, region: &str) -> String {
    match phonenumber::parse(region_id(region), value) {
        Ok(n) => {
            let s = n.format().mode(phonenumber::Mode::E164).to_string();
            if s.len() < 4 {
                String::new()
            } else {
                s
            }
        }
        Err(_) => String::new(),
    }
}

/// Regions whose trunk-prefix numbers the fast path is proven to format exactly
/// as the full parser does (test `fast_path_agrees_with_full_parser`). Other
/// regions (New Zealand, for one) have carrier and length rules it would miss.
const FAST_REGIONS: [&str; 1] = ["AU"];

fn phone_fast(value: &str, region: &str) -> Option<String> {
    if !FAST_REGIONS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(region.trim()))
    {
        return None;
    }
    let info = region_info(region)?;
    let prefix = info.national_prefix.as_deref()?;
    if prefix != "0" {
        return None;
    }
    let mut digits = String::with_capacity(16);
    let mut plus = false;
    for (i, c) in value.char_indices() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            '+' if i == 0 => plus = true,
            _ => return None,
        }
    }
    let cc = info.country_code.to_string();
    let rest = if plus {
        digits.strip_prefix(cc.as_str())?
    } else {
        digits.strip_prefix(prefix)?
    };
    // Plain 9-digit national significant numbers starting 2-9 only: 1xx
    // service numbers and carrier-selection prefixes (1831, 1832) are left to
    // the full parser, as is anything shorter or longer.
    if rest.len() != 9 || !matches!(rest.as_bytes()[0], b'2'..=b'9') {
        return None;
    }
    Some(format!("+{cc}{rest}"))
}

/// The digits of a phone value, for a key when it cannot be parsed.
pub fn phone_digits(value: &str) -> String {
    value.chars().filter(char::is_ascii_digit).collect()
}

/// Splits one `name` column into (given, family): "Smith, John" or "John Smith".
pub fn split_name(full: &str) -> (String, String) {
    let full = full.trim();
    if let Some((family, given)) = full.split_once(',') {
        return (clean(given, false), clean(family, false));
    }
    match full.rsplit_once(char::is_whitespace) {
        Some((given, family)) => (clean(given, false), clean(family, false)),
        None => (String::new(), clean(full, false)),
    }
}

/// The name an identity match compares: given + family when either is known,
/// else the display name.
pub fn identity_name(given: &str, family: &str, display: &str) -> String {
    if given.is_empty() && family.is_empty() {
        name_key(display)
    } else {
        name_key(&format!("{given} {family}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_collapses_and_trims() {
        assert_eq!(clean("  John \t Smith ", false), "John Smith");
        assert_eq!(clean(" a\r\nb ", true), "a\nb");
        assert_eq!(clean("Cafe\u{301}", false), "Caf\u{e9}");
    }

    #[test]
    fn name_keys() {
        assert_eq!(name_key("  JOHN   Smith "), "john smith");
        assert_eq!(name_key("Zoë Ångström"), "zoe angstrom");
        assert_eq!(name_key("ＪＯＨＮ"), "john");
    }

    #[test]
    fn phones_au() {
        for v in [
            "0400 000 001",
            "+61 400 000 001",
            "+61400000001",
            "0400-000-001",
        ] {
            assert_eq!(phone_e164(v, "AU"), "+61400000001", "{v}");
        }
        assert_eq!(phone_e164("(02) 9123 4567", "AU"), "+61291234567");
        assert_eq!(phone_e164("", "AU"), "");
        assert_eq!(phone_e164("garbage", "AU"), "");
    }

    #[test]
    fn fast_path_agrees_with_full_parser() {
        let mut checked = 0;
        for region in ["AU", "au", "GB", "NZ", "DE", "US"] {
            for i in 0..20_000u64 {
                let n = (i.wrapping_mul(2_654_435_761) + 123_456_789) % 1_000_000_000;
                for shape in [
                    format!("0{n:09}"),
                    format!("0{} {} {}", n / 1_000_000, (n / 1000) % 1000, n % 1000),
                    format!("0{}-{}", n / 10_000, n % 10_000),
                    format!("+61 {} {} {}", n / 1_000_000, (n / 1000) % 1000, n % 1000),
                    format!("+61{n:09}"),
                    format!(
                        "(0{}) {} {}",
                        n / 100_000_000,
                        (n / 10_000) % 10_000,
                        n % 10_000
                    ),
                    format!("+61 (0) {n:09}"),
                    format!("01831 {n:09}"),
                ] {
                    if let Some(fast) = phone_fast(&shape, region) {
                        assert_eq!(fast, phone_full(&shape, region), "{region} {shape}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 50_000, "fast path exercised {checked} times");
    }

    #[test]
    fn split_names() {
        assert_eq!(split_name("John Smith"), ("John".into(), "Smith".into()));
        assert_eq!(split_name("Smith, John"), ("John".into(), "Smith".into()));
        assert_eq!(
            split_name("Mary Ann Smith"),
            ("Mary Ann".into(), "Smith".into())
        );
        assert_eq!(split_name("Cher"), ("".into(), "Cher".into()));
    }
}
