//! The nickname table (data compiled into the crate) and look-ups in it.
//! Read-only after first use; no I/O.
//!
//! Two sources: our hand-written groups (`nicknames.txt`, which decide the
//! blocking key of the names they hold) and the curated list of the
//! `nicknames` package by Carlton Northern and Nick Crews
//! (<https://github.com/carltonnorthern/nicknames>, Apache-2.0; its
//! `names.csv` 1.0.1 vendored unchanged as `nicknames_names.csv`, see
//! `NOTICE-nicknames.txt`), one group per formal name, added after ours.

use std::collections::HashMap;
use std::sync::OnceLock;

const TABLE: &str = include_str!("nicknames.txt");
const CURATED: &str = include_str!("nicknames_names.csv");

/// The curated list's groups: each `name1` with its `has_nickname` names.
fn curated_groups() -> Vec<Vec<&'static str>> {
    let mut out: Vec<Vec<&'static str>> = Vec::new();
    for line in CURATED.lines().skip(1) {
        let mut parts = line.trim().split(',');
        let (Some(a), Some(rel), Some(b)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if rel != "has_nickname" || a.is_empty() || b.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(g) if g[0] == a => {
                if !g.contains(&b) {
                    g.push(b)
                }
            }
            _ => out.push(vec![a, b]),
        }
    }
    out
}

struct Table {
    /// name → the groups it belongs to (indices into `canon`)
    groups: HashMap<&'static str, Vec<u16>, ahash::RandomState>,
    canon: Vec<&'static str>,
    /// per group, the group whose formal name stands for it in blocking keys:
    /// groups are joined when one lists another's formal name ("katherine"
    /// lists "catherine"), so "kate" and "katherine" share a key.
    rep: Vec<u16>,
}

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let mut groups: HashMap<&'static str, Vec<u16>, ahash::RandomState> =
            HashMap::with_hasher(ahash::RandomState::with_seeds(1, 2, 3, 4));
        let mut canon = Vec::new();
        for line in TABLE.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let g = canon.len() as u16;
            let mut names = line.split_whitespace();
            let Some(first) = names.next() else { continue };
            canon.push(first);
            for n in std::iter::once(first).chain(names) {
                let e = groups.entry(n).or_default();
                if !e.contains(&g) {
                    e.push(g);
                }
            }
        }
        let mut rep: Vec<u16> = (0..canon.len() as u16).collect();
        fn find(rep: &mut [u16], mut g: u16) -> u16 {
            while rep[g as usize] != g {
                rep[g as usize] = rep[rep[g as usize] as usize];
                g = rep[g as usize];
            }
            g
        }
        for line in TABLE
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            let mut names = line.split_whitespace();
            let Some(first) = names.next() else { continue };
            let g = groups[first][0];
            for n in names {
                if let Some(h) = canon.iter().position(|c| *c == n) {
                    let (a, b) = (find(&mut rep, g), find(&mut rep, h as u16));
                    rep[a.max(b) as usize] = a.min(b);
                }
            }
        }
        for g in 0..rep.len() as u16 {
            let r = find(&mut rep, g);
            rep[g as usize] = r;
        }
        // the curated groups widen equivalence; each is its own blocking key
        // (names our groups hold keep theirs: a name's first group decides)
        for names in curated_groups() {
            let g = canon.len() as u16;
            canon.push(names[0]);
            rep.push(g);
            for n in names {
                let e = groups.entry(n).or_default();
                if !e.contains(&g) {
                    e.push(g);
                }
            }
        }
        Table { groups, canon, rep }
    })
}

/// The groups a (normalised, lower-case) given name belongs to.
pub fn groups(name: &str) -> &'static [u16] {
    table().groups.get(name).map_or(&[], Vec::as_slice)
}

/// True when both names share a nickname group.
pub fn equivalent(a: &str, b: &str) -> bool {
    let (ga, gb) = (groups(a), groups(b));
    ga.iter().any(|g| gb.contains(g))
}

/// The formal name of the first group of `name`, or `name` itself: a blocking
/// key under which "bob" and "robert" meet.
pub fn canonical(name: &str) -> &str {
    let t = table();
    match groups(name).first() {
        Some(&g) => t.canon[t.rep[g as usize] as usize],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_loads_and_canonicalises() {
        assert_eq!(canonical("bob"), "robert");
        assert_eq!(canonical("bill"), "william");
        assert_eq!(canonical("robert"), "robert");
        assert_eq!(canonical("kate"), canonical("katherine"));
        assert_eq!(canonical("xyzzy"), "xyzzy");
        assert!(equivalent("liz", "elizabeth"));
        assert!(equivalent("al", "alfred"));
        assert!(!equivalent("liz", "william"));
        assert!(groups("al").len() >= 3);
    }

    #[test]
    fn curated_list_widens_equivalence() {
        // pairs only the curated `nicknames` list knows
        assert!(curated_groups().len() > 500);
        assert!(equivalent("aaron", "ronnie"));
        assert!(equivalent("abbigail", "nabby"));
        // our groups keep deciding the blocking key of their names
        assert_eq!(canonical("bob"), "robert");
    }
}
