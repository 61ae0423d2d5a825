//! Fellegi–Sunter scoring: m and u probabilities per field and agreement
//! level, u from random pairs of the data, m by EM over the blocked pairs'
//! comparison patterns (u held fixed), then a match weight, a probability
//! and each field's contribution per pair. No blocking or I/O here.

use rayon::prelude::*;
use std::collections::HashMap;

use super::compare::{get_level, Comparer, SWAPPED};
use super::config::{Config, FieldType};
use super::prepare::{prefetch, Prepared};

/// Below this many compared pairs EM has too little to estimate m from: the
/// reference population's m and duplicate rate are used instead.
pub const MIN_EM_PAIRS: u64 = 100;

/// Pseudo-pairs of the reference population's u mixed into the sampled u: it
/// decides u on tiny inputs and vanishes beside 300,000 sampled pairs.
const U_PSEUDO_PAIRS: f64 = 1000.0;

/// m and u per field type (levels 1..) measured on a labelled reference
/// population, and its duplicates per record: `reference.json`, written by
/// `benches/reference_model.py` (see its docstring for the population).
pub struct Reference {
    pub duplicates_per_record: f64,
    types: HashMap<String, (Vec<f64>, Vec<f64>)>,
}

impl Reference {
    pub fn load() -> Reference {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("reference.json")).unwrap_or_default();
        let mut types = HashMap::new();
        if let Some(obj) = v.get("types").and_then(|t| t.as_object()) {
            for (k, t) in obj {
                let arr = |key: &str| -> Vec<f64> {
                    t.get(key)
                        .and_then(|a| a.as_array())
                        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
                        .unwrap_or_default()
                };
                types.insert(k.clone(), (arr("m"), arr("u")));
            }
        }
        Reference {
            duplicates_per_record: v
                .get("duplicates_per_record")
                .and_then(|x| x.as_f64())
                .unwrap_or(0.25),
            types,
        }
    }

    fn key(kind: FieldType) -> String {
        serde_json::to_value(kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// m of levels 1.. for a field type (the type's starting m when absent).
    pub fn m(&self, kind: FieldType) -> Vec<f64> {
        match self.types.get(&Self::key(kind)) {
            Some((m, _)) if m.len() == kind.nlevels() - 1 => m.clone(),
            _ => kind.default_m(),
        }
    }

    /// u of levels 1.., if the reference has the type.
    pub fn u(&self, kind: FieldType) -> Option<Vec<f64>> {
        match self.types.get(&Self::key(kind)) {
            Some((_, u)) if u.len() == kind.nlevels() - 1 => Some(u.clone()),
            _ => None,
        }
    }
}

/// Counts of distinct comparison patterns (packed levels).
pub type Patterns = HashMap<u64, u64, ahash::RandomState>;

/// SplitMix64: a small, seeded, reproducible generator for sampling.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 11) as u128 * n as u128) >> 53) as usize
    }
}

/// Term frequencies kept for scoring after the values are dropped: per field
/// the count of records holding each record's value, and the records with a
/// value at all.
#[derive(Debug, Default)]
pub struct Tf {
    pub counts: Vec<Vec<u32>>,
    pub nonempty: Vec<usize>,
    /// the tf fields' counts again, record by record (scoring a pair reads
    /// them together: one cache line, not one per field), `width` per record
    rows: Vec<u32>,
    /// per field: its place in a record's `rows`, usize::MAX if not there
    col: Vec<usize>,
    width: usize,
}

impl Tf {
    pub fn new(counts: Vec<Vec<u32>>, nonempty: Vec<usize>) -> Tf {
        let tf_fields: Vec<usize> = (0..counts.len())
            .filter(|f| !counts[*f].is_empty())
            .collect();
        let width = tf_fields.len();
        let n = tf_fields.first().map_or(0, |f| counts[*f].len());
        let mut col = vec![usize::MAX; counts.len()];
        for (c, f) in tf_fields.iter().enumerate() {
            col[*f] = c;
        }
        let mut rows = vec![0u32; n * width];
        rows.par_chunks_mut(width.max(1))
            .enumerate()
            .for_each(|(i, row)| {
                for (c, f) in tf_fields.iter().enumerate() {
                    row[c] = counts[*f][i];
                }
            });
        Tf {
            counts,
            nonempty,
            rows,
            col,
            width,
        }
    }

    /// How many records hold record `i`'s value of field `f`.
    #[inline]
    pub fn count(&self, f: usize, i: usize) -> u32 {
        match self.col.get(f) {
            Some(&c) if c != usize::MAX => self.rows[i * self.width + c],
            _ => self.counts[f][i],
        }
    }

    /// Prefetches record `i`'s counts (see `prepare::prefetch`).
    #[inline]
    pub fn prefetch(&self, i: usize) {
        prefetch(self.rows.as_ptr().wrapping_add(i * self.width));
    }
}

/// Estimated parameters: per field, m and u per level (index 0 unused).
#[derive(Debug, Clone)]
pub struct Model {
    pub m: Vec<Vec<f64>>,
    pub u: Vec<Vec<f64>>,
    /// log2(m/u) per field and level (0 for level 0).
    pub w: Vec<Vec<f64>>,
    /// prior probability that two records taken at random match
    pub prior: f64,
    /// estimated share of matches among the compared pairs
    pub blocked_prior: f64,
    pub em_iterations_run: usize,
    pub u_pairs_sampled: u64,
    /// per field: top level index, whether tf applies, m of the top level
    pub tf: Vec<bool>,
    pub kinds: Vec<FieldType>,
    /// "em" (estimated from this input) or "reference" (too few pairs: the
    /// reference population's m and duplicate rate)
    pub source: &'static str,
    pub groups: Vec<Option<usize>>,
    pub group_members: Vec<Vec<usize>>,
    /// per field: a group member whose exact agreement few random pairs
    /// share (u of the top level <= `HOUSEHOLD_U`): a shared address,
    /// landline or e-mail; such an agreement puts a pair in the household
    /// context (see `household`)
    pub household_key: Vec<bool>,
    /// u per field and level among the non-matches of the household
    /// context (fields outside every group; index 0 unused), by EM with m
    /// fixed (`estimate_household_u`); equal to `u` until estimated
    pub u_household: Vec<Vec<f64>>,
    /// log2(u / u_household): what a field's weight gains (or loses) when
    /// the pair shares a household (0 for group members and level 0)
    pub household_shift: Vec<Vec<f64>>,
    /// non-matches and matches EM saw in the household context
    pub household_pairs: (f64, f64),
    /// per tf field: the top level's weight for a value held by `c` records,
    /// at index `c` (see `cache_tf`); empty until cached, and emptied when the
    /// weights change
    pub tf_top: Vec<Vec<f64>>,
    /// per field: the largest weight in `tf_top` (infinite when not cached)
    tf_top_max: Vec<f64>,
}

/// A group member's exact agreement marks a shared household when at most
/// one random pair in a thousand shares the value (street address, landline,
/// e-mail; not a city, a postcode or a family name).
pub const HOUSEHOLD_U: f64 = 1e-3;

/// Pseudo-pairs of the population's u mixed into the household context's u
/// (so a level the context's non-matches never show is not impossible).
const HOUSEHOLD_PSEUDO_PAIRS: f64 = 1000.0;

/// Random pairs drawn ahead of their comparison (see `estimate_u`).
const AHEAD: usize = 8;

/// u: level frequencies over `samples` random pairs (left × right in link
/// mode), with add-one smoothing so no level is impossible.
pub fn estimate_u(
    cfg: &Config,
    prep: &Prepared,
    cmp: &Comparer,
    split: Option<usize>,
) -> (Vec<Vec<f64>>, u64) {
    let n = prep.n;
    let nf = cfg.fields.len();
    let total_pairs: u128 = match split {
        Some(s) => s as u128 * (n - s) as u128,
        None => n as u128 * n.saturating_sub(1) as u128 / 2,
    };
    // Three random pairs per record (at least 300,000) estimate u as well as a
    // million at 100k records, for a third of the time; `u_sample_pairs` caps it.
    let wanted = (3 * n).max(300_000).min(cfg.u_sample_pairs);
    let samples = (wanted as u128).min(total_pairs) as usize;
    let chunks = 64usize;
    let per = samples.div_ceil(chunks.max(1));
    let counts: Vec<Vec<u64>> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let mut rng = Rng::new(cfg.seed.wrapping_add(c as u64 * 7919));
            let mut cnt = vec![0u64; nf * 16];
            let todo = per.min(samples.saturating_sub(c * per));
            let mut draw = || -> (usize, usize) {
                let pair = match split {
                    Some(s) => (rng.below(s), s + rng.below(n - s)),
                    None => {
                        let i = rng.below(n);
                        let mut j = rng.below(n - 1);
                        if j >= i {
                            j += 1;
                        }
                        (i, j)
                    }
                };
                prep.prefetch_row(pair.0);
                prep.prefetch_row(pair.1);
                pair
            };
            // pairs are drawn AHEAD before they are compared (the same
            // sequence), so their records are fetched meanwhile
            let mut ring = [(0usize, 0usize); AHEAD];
            for slot in ring.iter_mut().take(todo) {
                *slot = draw();
            }
            for t in 0..todo {
                let (i, j) = ring[t % AHEAD];
                if t + AHEAD < todo {
                    ring[t % AHEAD] = draw();
                }
                if t + AHEAD / 2 < todo {
                    let (a, b) = ring[(t + AHEAD / 2) % AHEAD];
                    prep.prefetch_text(a);
                    prep.prefetch_text(b);
                }
                let lv = cmp.compare(i, j);
                for f in 0..nf {
                    cnt[f * 16 + get_level(lv, f) as usize] += 1;
                }
            }
            cnt
        })
        .collect();
    let reference = Reference::load();
    let mut u = Vec::with_capacity(nf);
    for (f, spec) in cfg.fields.iter().enumerate() {
        let nl = spec.kind.nlevels();
        let c: Vec<u64> = (0..nl)
            .map(|l| counts.iter().map(|v| v[f * 16 + l]).sum())
            .collect();
        let nonnull: u64 = c[1..].iter().sum();
        let mut uf = vec![0.0; nl];
        // the reference population's u as pseudo-counts (add-one without one):
        // a six-row file has no random pairs to speak of
        // (a type the reference lacks: add-one smoothing, no level impossible)
        let (k, prior_u) = match reference.u(spec.kind) {
            Some(u) => (U_PSEUDO_PAIRS, u),
            None => ((nl - 1) as f64, vec![1.0 / (nl - 1) as f64; nl - 1]),
        };
        for l in 1..nl {
            uf[l] = ((c[l] as f64 + k * prior_u[l - 1]) / (nonnull as f64 + k)).max(1e-9);
        }
        if let Some(fixed) = &spec.u {
            uf[1..].copy_from_slice(fixed);
        }
        u.push(uf);
    }
    (u, samples as u64)
}

impl Model {
    pub fn new(cfg: &Config, u: Vec<Vec<f64>>, u_pairs: u64) -> Model {
        let reference = Reference::load();
        let m: Vec<Vec<f64>> = cfg
            .fields
            .iter()
            .map(|f| {
                let mut v = vec![0.0];
                v.extend(f.m.clone().unwrap_or_else(|| reference.m(f.kind)));
                v
            })
            .collect();
        let mut names: Vec<&str> = Vec::new();
        let groups: Vec<Option<usize>> = cfg
            .fields
            .iter()
            .map(|f| {
                f.group
                    .as_deref()
                    .map(|g| match names.iter().position(|x| *x == g) {
                        Some(k) => k,
                        None => {
                            names.push(g);
                            names.len() - 1
                        }
                    })
            })
            .collect();
        let group_members = (0..names.len())
            .map(|g| {
                (0..cfg.fields.len())
                    .filter(|f| groups[*f] == Some(g))
                    .collect()
            })
            .collect();
        let mut model = Model {
            w: Vec::new(),
            m,
            u,
            prior: cfg.prior.unwrap_or(1e-4),
            blocked_prior: f64::NAN,
            em_iterations_run: 0,
            u_pairs_sampled: u_pairs,
            tf: cfg.fields.iter().map(|f| f.tf).collect(),
            kinds: cfg.fields.iter().map(|f| f.kind).collect(),
            source: "em",
            household_key: Vec::new(),
            u_household: Vec::new(),
            household_shift: Vec::new(),
            household_pairs: (0.0, 0.0),
            tf_top: Vec::new(),
            tf_top_max: Vec::new(),
            groups,
            group_members,
        };
        model.household_key = (0..model.u.len())
            .map(|f| {
                let top = model.u[f].len() - 1;
                model.groups[f].is_some() && model.u[f][top] <= HOUSEHOLD_U
            })
            .collect();
        model.u_household = model.u.clone();
        model.update_weights();
        model
    }

    /// Whether the pair shares a household: an exact agreement on a
    /// household key (see `household_key`).
    #[inline]
    pub fn household(&self, levels: u64) -> bool {
        self.household_key
            .iter()
            .enumerate()
            .any(|(f, k)| *k && get_level(levels, f) as usize == self.u[f].len() - 1)
    }

    fn update_weights(&mut self) {
        self.tf_top.clear();
        self.tf_top_max.clear();
        self.w = self
            .m
            .iter()
            .zip(&self.u)
            .map(|(m, u)| {
                m.iter()
                    .zip(u)
                    .enumerate()
                    .map(|(l, (m, u))| {
                        if l == 0 {
                            0.0
                        } else {
                            (m.max(1e-12) / u.max(1e-12)).log2()
                        }
                    })
                    .collect()
            })
            .collect();
        // a nickname is an agreement: it may add little, never count against
        for (f, kind) in self.kinds.iter().enumerate() {
            if *kind == FieldType::GivenName {
                let w = &mut self.w[f][GIVEN_NICKNAME];
                *w = w.max(0.0);
            }
        }
        self.household_shift = self
            .u
            .iter()
            .zip(&self.u_household)
            .enumerate()
            .map(|(f, (u, uh))| {
                u.iter()
                    .zip(uh)
                    .enumerate()
                    .map(|(l, (u, uh))| {
                        if l == 0 || self.groups[f].is_some() {
                            0.0
                        } else {
                            (u.max(1e-12) / uh.max(1e-12)).log2()
                        }
                    })
                    .collect()
            })
            .collect();
        // the nickname floor holds in a household too
        for (f, kind) in self.kinds.iter().enumerate() {
            if *kind == FieldType::GivenName {
                let w = self.w[f][GIVEN_NICKNAME];
                let s = &mut self.household_shift[f][GIVEN_NICKNAME];
                *s = s.max(-w);
            }
        }
    }

    /// Weight of a comparison pattern (no term frequencies), groups counted
    /// as in `contributions`; field `skip` left out (leave-one-out).
    fn pattern_score(&self, p: u64, skip: Option<usize>) -> f64 {
        let nf = self.m.len();
        let mut buf = [0.0f64; 16];
        let hh = self.household(p);
        for (f, b) in buf.iter_mut().enumerate().take(nf) {
            let l = get_level(p, f) as usize;
            *b = if Some(f) == skip {
                0.0
            } else if hh {
                self.w[f][l] + self.household_shift[f][l]
            } else {
                self.w[f][l]
            };
        }
        self.apply_groups(&mut buf[..nf]);
        buf[..nf].iter().sum()
    }

    /// Group members count their strongest agreement and strongest
    /// disagreement once.
    fn apply_groups(&self, out: &mut [f64]) {
        for members in &self.group_members {
            let best_pos = members
                .iter()
                .copied()
                .filter(|f| out[*f] > 0.0)
                .max_by(|a, b| out[*a].total_cmp(&out[*b]));
            let worst_neg = members
                .iter()
                .copied()
                .filter(|f| out[*f] < 0.0)
                .min_by(|a, b| out[*a].total_cmp(&out[*b]));
            for &f in members {
                if Some(f) != best_pos && Some(f) != worst_neg {
                    out[f] = 0.0;
                }
            }
        }
    }

    /// Too few compared pairs to estimate anything: the reference
    /// population's m (already the starting m) and a prior of its duplicate
    /// rate, `prior` (expected matches over all pairs).
    pub fn use_reference(&mut self, cfg: &Config, prior: f64) {
        self.source = "reference";
        if cfg.prior.is_none() {
            self.prior = prior.clamp(1e-12, 0.5);
        }
        self.update_weights();
    }

    /// The prior from the compared pairs' weights without the prior (`base`,
    /// a sample of `compared` pairs), `total_pairs` the pairs of the input:
    /// see `prior_fixed_point`. `blocked_prior` is then the share of
    /// matches among the compared pairs.
    pub fn set_prior_from_scores(&mut self, base: &[f64], compared: f64, total_pairs: f64) {
        if base.is_empty() {
            return;
        }
        let scale = compared / base.len() as f64;
        let weighted: Vec<(f64, f64)> = base.iter().map(|b| (*b, scale)).collect();
        let (prior, matches) = prior_fixed_point(&weighted, total_pairs);
        self.prior = prior;
        self.blocked_prior = (matches / compared.max(1.0)).min(1.0);
    }

    /// One EM session over the distinct comparison patterns of one blocking
    /// rule's pairs, u fixed, the rule's own fields left out (they agree by
    /// construction). Returns the m estimates of the other fields and the
    /// iterations run.
    fn em_session(
        &self,
        cfg: &Config,
        patterns: &HashMap<u64, u64, ahash::RandomState>,
        masked: &[usize],
    ) -> (Vec<Option<Vec<f64>>>, usize, f64) {
        let mut model = self.clone();
        let nf = cfg.fields.len();
        let pats: Vec<(u64, f64)> = patterns.iter().map(|(p, c)| (*p, *c as f64)).collect();
        let total: f64 = pats.iter().map(|p| p.1).sum();
        let mut prior = 0.1f64;
        let mut estimated = vec![false; nf];
        let mut iterations = 0;
        for it in 0..cfg.em_iterations {
            let lp = (prior / (1.0 - prior)).log2();
            let mut acc: Vec<Vec<f64>> = model.m.iter().map(|m| vec![0.0; m.len()]).collect();
            let mut matched = 0.0;
            for &(p, c) in &pats {
                let s = lp + model.pattern_score(p, None);
                let post = 1.0 / (1.0 + (-s * std::f64::consts::LN_2).exp());
                let wc = post * c;
                matched += wc;
                for (f, a) in acc.iter_mut().enumerate() {
                    a[get_level(p, f) as usize] += wc;
                }
            }
            let mut delta: f64 = 0.0;
            for (f, spec) in cfg.fields.iter().enumerate() {
                if spec.m.is_some() || masked.contains(&f) {
                    continue;
                }
                let nl = model.m[f].len();
                let sum: f64 = acc[f][1..].iter().sum();
                if sum < 1.0 {
                    continue;
                }
                estimated[f] = true;
                for (m, a) in model.m[f].iter_mut().zip(&acc[f]).skip(1) {
                    let v = (a + 0.01) / (sum + 0.01 * (nl - 1) as f64);
                    delta = delta.max((v - *m).abs());
                    *m = v;
                }
            }
            prior = (matched / total).clamp(1e-6, 1.0 - 1e-6);
            model.update_weights();
            iterations = it + 1;
            if delta < 1e-5 {
                break;
            }
        }
        // A match agrees exactly more often than at any other level: an
        // estimate where it does not has taken a cluster of non-matches for
        // the matches (a session with next to no matches: 300 namesakes and
        // one duplicate made "same birth year" the matches' usual level).
        // That field keeps another session's m, or the starting m.
        let plausible = |m: &[f64]| {
            let top = m.len() - 1;
            m[1..top].iter().all(|x| *x <= m[top])
        };
        let out = (0..nf)
            .map(|f| (estimated[f] && plausible(&model.m[f])).then(|| model.m[f].clone()))
            .collect();
        (out, iterations, prior)
    }

    /// m by EM, one session per training rule (Splink's recipe), u fixed.
    /// Each field's m comes from the purest session that did not block on it
    /// (the highest share of matches; the mean of equally pure ones), not the
    /// mean of all: a rule whose pairs hold many non-matches that agree on a
    /// strong field (a shared family e-mail, namesakes' e-mail local part,
    /// twins' birthday) lends their disagreements to m, measured at 17 times
    /// the true m of "given name different" and 1,000 times that of "date of
    /// birth different" on the realistic bench population, and so
    /// underweights every disagreement. Then the prior share of matches
    /// among all compared pairs, m and u fixed.
    pub fn em(
        &mut self,
        cfg: &Config,
        sessions: &[(Vec<usize>, Patterns)],
        all: &HashMap<u64, u64, ahash::RandomState>,
        total_pairs: f64,
    ) {
        if cfg.em {
            let nf = cfg.fields.len();
            // per field: (purity, summed m, sessions)
            let mut best: Vec<Option<(f64, Vec<f64>, usize)>> = vec![None; nf];
            for (masked, patterns) in sessions {
                if patterns.is_empty() {
                    continue;
                }
                let (ms, it, purity) = self.em_session(cfg, patterns, masked);
                self.em_iterations_run += it;
                for (f, m) in ms.into_iter().enumerate() {
                    let Some(m) = m else { continue };
                    match &mut best[f] {
                        Some((p, acc, k)) if (purity - *p).abs() < 1e-3 => {
                            acc.iter_mut().zip(&m).for_each(|(a, x)| *a += x);
                            *k += 1;
                        }
                        Some((p, _, _)) if *p > purity => {}
                        _ => best[f] = Some((purity, m, 1)),
                    }
                }
            }
            for (f, s) in best.into_iter().enumerate() {
                if let Some((_, acc, k)) = s {
                    self.m[f] = acc.into_iter().map(|x| x / k as f64).collect();
                }
            }
            self.update_weights();
            self.estimate_household_u(cfg, all, cfg.em_iterations);
        }
        if all.is_empty() {
            return;
        }
        if cfg.prior.is_some() {
            return;
        }
        // the prior for any two records (see `prior_fixed_point`); the
        // engine estimates it again with term frequencies
        let pats: Vec<(f64, f64)> = all
            .iter()
            .map(|(p, c)| (self.pattern_score(*p, None), *c as f64))
            .collect();
        let total: f64 = pats.iter().map(|p| p.1).sum();
        let (prior, matches) = prior_fixed_point(&pats, total_pairs);
        self.prior = prior;
        self.blocked_prior = (matches / total.max(1.0)).min(1.0);
    }

    /// u of the fields outside every group among the non-matches that share
    /// a household (see `household`), by EM over the compared pairs'
    /// patterns in that context with m fixed (the share of matches there and
    /// these u estimated together). Members of one household rarely share a
    /// given name, so a given-name agreement, nickname, typo or initial there
    /// is strong evidence of one person; the population's u counts namesakes
    /// and strangers and says it is weak. (Twins share a birth date: EM
    /// learns that on some inputs, not on others, where a twin's shared
    /// birth date makes it a "match" and keeps it one.) Fields with a fixed u
    /// keep it.
    pub fn estimate_household_u(&mut self, cfg: &Config, all: &Patterns, iterations: usize) {
        let pats: Vec<(u64, f64)> = all
            .iter()
            .filter(|(p, _)| self.household(**p))
            .map(|(p, c)| (*p, *c as f64))
            .collect();
        let total: f64 = pats.iter().map(|p| p.1).sum();
        let free: Vec<usize> = (0..self.m.len())
            .filter(|f| self.groups[*f].is_none() && cfg.fields[*f].u.is_none())
            .collect();
        if total < MIN_EM_PAIRS as f64 || free.is_empty() {
            return;
        }
        let mut prior = 0.5f64;
        for _ in 0..iterations {
            let lp = (prior / (1.0 - prior)).log2();
            let mut acc: Vec<Vec<f64>> = self.u.iter().map(|u| vec![0.0; u.len()]).collect();
            let mut matched = 0.0;
            for &(p, c) in &pats {
                let post = probability(lp + self.pattern_score(p, None));
                matched += post * c;
                for &f in &free {
                    acc[f][get_level(p, f) as usize] += (1.0 - post) * c;
                }
            }
            let mut delta: f64 = 0.0;
            for &f in &free {
                let sum: f64 = acc[f][1..].iter().sum();
                let k = HOUSEHOLD_PSEUDO_PAIRS;
                let (u, uh) = (&self.u[f], &mut self.u_household[f]);
                for (l, a) in acc[f].iter().enumerate().skip(1) {
                    let v = ((a + k * u[l]) / (sum + k)).max(1e-9);
                    delta = delta.max((v.log2() - uh[l].log2()).abs());
                    uh[l] = v;
                }
            }
            prior = (matched / total).clamp(1e-6, 1.0 - 1e-6);
            self.update_weights();
            if delta < 1e-3 {
                break;
            }
        }
        self.household_pairs = (total * (1.0 - prior), total * prior);
    }

    /// The top level's weight of each tf field for every count a value has
    /// in `tf`, computed once (as `contributions` would per pair) for the
    /// scoring of millions of pairs. Call after the last change of m.
    pub fn cache_tf(&mut self, tf: &Tf) {
        self.tf_top = (0..self.m.len())
            .map(|f| {
                if !self.tf[f] {
                    return Vec::new();
                }
                let top = self.m[f].len() - 1;
                let most = tf.counts[f].iter().copied().max().unwrap_or(0);
                (0..=most).map(|c| self.tf_weight(tf, f, top, c)).collect()
            })
            .collect();
        self.tf_top_max = self
            .tf_top
            .iter()
            .map(|t| t.iter().copied().fold(f64::NEG_INFINITY, f64::max))
            .collect();
    }

    /// At least `weight` of any pair with the comparison pattern `levels`
    /// (the swapped flag aside), whatever its records: each tf field's exact
    /// agreement counted at its largest weight (infinite before `cache_tf`).
    /// Groups keep their strongest agreement and disagreement, which only
    /// grow when a member's weight does: the bound holds through them.
    pub fn weight_bound(&self, levels: u64) -> f64 {
        let nf = self.m.len();
        let mut out = [0.0f64; 16];
        let hh = self.household(levels);
        for (f, o) in out.iter_mut().enumerate().take(nf) {
            let l = get_level(levels, f) as usize;
            *o = self.w[f][l];
            if l == self.m[f].len() - 1 && self.tf[f] {
                *o = o.max(self.tf_top_max.get(f).copied().unwrap_or(f64::INFINITY));
            }
            if hh {
                *o += self.household_shift[f][l];
            }
        }
        self.apply_groups(&mut out[..nf]);
        self.prior_weight() + out[..nf].iter().sum::<f64>()
    }

    /// The weight of an exact agreement (level `top`) of tf field `f` on a
    /// value `count` records hold.
    #[inline]
    fn tf_weight(&self, tf: &Tf, f: usize, top: usize, count: u32) -> f64 {
        let cnt = count.max(1) as f64;
        let u_tf = (cnt / tf.nonempty[f].max(1) as f64).max(1e-9);
        // never let a common value weigh more than the average u says
        (self.m[f][top] / u_tf).log2().min(self.w[f][top] + 10.0)
    }

    /// Each field's counted weight for a pair; group members count their
    /// strongest agreement and strongest disagreement once.
    pub fn contributions(&self, tf: &Tf, levels: u64, i: usize, out: &mut [f64]) -> f64 {
        let nf = self.m.len();
        let hh = self.household(levels);
        for (f, o) in out.iter_mut().enumerate().take(nf) {
            let l = get_level(levels, f) as usize;
            let top = self.m[f].len() - 1;
            // swapped names: the value's frequency is for the wrong role
            *o = if l == top && self.tf[f] && levels & SWAPPED == 0 {
                let count = tf.count(f, i);
                match self.tf_top.get(f).and_then(|t| t.get(count as usize)) {
                    Some(w) => *w,
                    None => self.tf_weight(tf, f, top, count),
                }
            } else {
                self.w[f][l]
            };
            if hh {
                // inside one household: the same tf scaling, the household's u
                *o += self.household_shift[f][l];
            }
        }
        self.apply_groups(&mut out[..nf]);
        out[..nf].iter().sum()
    }

    /// log2 prior odds + the fields' weights.
    pub fn prior_weight(&self) -> f64 {
        (self.prior / (1.0 - self.prior)).log2()
    }

    pub fn weight(&self, tf: &Tf, levels: u64, i: usize) -> f64 {
        let mut buf = [0.0f64; 16];
        self.prior_weight() + self.contributions(tf, levels, i, &mut buf)
    }
}

/// The prior (probability that two records taken at random match) that
/// agrees with the scores: with it, the expected matches among the compared
/// pairs (each pair's posterior, `count` pairs per score) equal prior times
/// `total_pairs`, the pairs of the whole input (a pair blocking did not
/// compare is taken as a non-match). It is the EM update of the prior over
/// all pairs with m and u fixed; the weights count evidence against random
/// pairs (u is sampled from them), so the odds they are added to are those
/// of any two records, never the share of matches among the compared pairs
/// (blocked pairs agree on names by construction: that share taken as the
/// prior counted the names twice and, on 200,000 realistic records, put the
/// prior ten times above the truth). Returns (prior, expected matches).
/// Solved by bisection on log(prior): the expected matches over the prior
/// falls as the prior grows.
pub fn prior_fixed_point(scores: &[(f64, f64)], total_pairs: f64) -> (f64, f64) {
    let total_pairs = total_pairs.max(1.0);
    // a histogram of the weights (1/64 bit) keeps each step cheap on millions
    let mut hist: HashMap<i64, f64, ahash::RandomState> = HashMap::default();
    for &(b, c) in scores {
        if b.is_finite() {
            *hist.entry((b * 64.0).round() as i64).or_insert(0.0) += c;
        }
    }
    let bins: Vec<(f64, f64)> = hist
        .into_iter()
        .map(|(k, c)| (k as f64 / 64.0, c))
        .collect();
    let matches = |prior: f64| -> f64 {
        let lp = (prior / (1.0 - prior)).log2();
        bins.iter()
            .map(|&(b, c)| c / (1.0 + (-(lp + b) * std::f64::consts::LN_2).exp()))
            .sum()
    };
    let (mut lo, mut hi) = (1e-15f64.ln(), 0.5f64.ln());
    if matches(lo.exp()) <= lo.exp() * total_pairs {
        return (lo.exp(), matches(lo.exp()));
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if matches(mid.exp()) > mid.exp() * total_pairs {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let prior = (0.5 * (lo + hi)).exp();
    (prior, matches(prior))
}

/// Level index of "nickname" in a given name's levels.
pub const GIVEN_NICKNAME: usize = 5;

pub fn probability(weight: f64) -> f64 {
    1.0 / (1.0 + (-weight * std::f64::consts::LN_2).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_uniform_enough() {
        let mut r = Rng::new(1);
        let mut c = [0u32; 10];
        for _ in 0..100_000 {
            c[r.below(10)] += 1;
        }
        assert!(c.iter().all(|&x| (9_000..11_000).contains(&x)), "{c:?}");
    }

    #[test]
    fn probability_of_weights() {
        assert!((probability(0.0) - 0.5).abs() < 1e-12);
        assert!((probability(10.0) - 1024.0 / 1025.0).abs() < 1e-12);
        assert!(probability(-50.0) < 1e-12);
    }
}
