//! One matching run, start to end: normalise, sample u, block and compare,
//! EM for m, score, keep the pairs above threshold, cluster. Pure Rust (no
//! Python); the bindings in `py` call `run` with the GIL released.

use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Instant;

use super::blocking::{Blocker, RuleStats};
use super::cluster::{clusters, Cluster};
use super::compare::{get_level, Comparer, SWAPPED};
use super::config::{Config, FieldType};
use super::prepare::{prepare, RawTable, StrCol};
use super::scoring::{estimate_u, probability, Model, Reference, Tf, MIN_EM_PAIRS};

/// Most compared pairs EM looks at (a systematic sample beyond that).
const EM_SAMPLE: usize = 2_000_000;

/// Pairs per piece of the scoring loops, and how far ahead in its piece a
/// pair's term frequencies are prefetched (pairs come in block order: their
/// records are scattered over the input).
const SCORE_CHUNK: usize = 1 << 14;
const SCORE_AHEAD: usize = 16;

/// Bits added to a pattern's weight bound before it rules its pairs out:
/// far above the rounding of a sum of a few weights, far below anything
/// the threshold could tell apart.
const BOUND_MARGIN: f64 = 1e-6;

/// Levels plus the swapped-names flag, without the rule id.
const LEVEL_BITS: u64 = (1 << 60) - 1;

#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub records_left: usize,
    pub records_right: usize,
    pub rules: Vec<RuleStats>,
    pub pairs_compared: u64,
    pub capped_blocks: u64,
    pub capped_pairs: u64,
    pub pairs_above_threshold: u64,
    /// blocking recall estimated without labels (see `estimate_recall`)
    pub estimated_recall: Option<f64>,
    pub distinct_patterns: usize,
    pub u_pairs_sampled: u64,
    pub em_iterations: usize,
    pub prior: f64,
    pub blocked_prior: f64,
    /// with a label column: true pairs, and how many blocking produced
    pub true_pairs: Option<u64>,
    pub true_pairs_blocked: Option<u64>,
    pub seconds: Vec<(String, f64)>,
}

pub struct Output {
    pub ids: StrCol,
    /// index of the first right record (link); None for dedupe
    pub split: Option<usize>,
    pub field_names: Vec<String>,
    pub field_kinds: Vec<FieldType>,
    pub pairs: Vec<(u32, u32)>,
    pub weights: Vec<f64>,
    pub probs: Vec<f64>,
    pub levels: Vec<u64>,
    pub model: Model,
    pub tf: Tf,
    pub clusters: Vec<Cluster>,
    pub stats: Stats,
    pub cluster_threshold: f64,
}

impl Output {
    /// Per field: (name, level label, counted weight) for pair `k`.
    pub fn explain(&self, k: usize) -> Vec<(String, String, f64)> {
        let mut buf = [0.0f64; 16];
        let lv = self.levels[k];
        self.model
            .contributions(&self.tf, lv, self.pairs[k].0 as usize, &mut buf);
        self.field_names
            .iter()
            .enumerate()
            .map(|(f, name)| {
                let l = get_level(lv, f) as usize;
                (
                    name.clone(),
                    self.field_kinds[f].levels()[l].to_string(),
                    buf[f],
                )
            })
            .collect()
    }
}

/// Blocking recall without labels, from the pairs above the threshold: for
/// each rule, the share of the pairs the *other* rules found that it finds
/// too (its recall, as capture-recapture estimates it); the union misses a
/// pair only when every rule does, taken as independent: 1 - prod(1 - r).
/// Optimistic when rules miss the same pairs (a record with no e-mail, phone
/// or birth date escapes all but the name rules). None with no pairs or a
/// single rule.
fn estimate_recall(blocker: &super::blocking::Blocker, pairs: &[(u32, u32)]) -> Option<f64> {
    let nr = blocker.rules.len();
    if nr < 2 || pairs.is_empty() {
        return None;
    }
    let covers: Vec<u32> = pairs
        .par_iter()
        .map(|&(i, j)| blocker.covering(i as usize, j as usize))
        .collect();
    let mut miss_all = 1.0f64;
    let mut any = false;
    for r in 0..nr {
        let bit = 1u32 << r;
        let (mut others, mut both) = (0u64, 0u64);
        for &c in &covers {
            if c & !bit != 0 {
                others += 1;
                if c & bit != 0 {
                    both += 1;
                }
            }
        }
        if others > 0 {
            any = true;
            miss_all *= 1.0 - both as f64 / others as f64;
        }
    }
    any.then_some(1.0 - miss_all)
}

/// The phases a run reports through `Progress::phase` (reading is the
/// caller's, before the run starts).
pub const PHASE_READING: u8 = 0;
pub const PHASE_BLOCKING: u8 = 1;
pub const PHASE_COMPARING: u8 = 2;
pub const PHASE_SCORING: u8 = 3;
pub const PHASE_DONE: u8 = 4;

/// Pairs compared between two updates of `Progress::pairs` by one worker.
const PAIRS_STEP: usize = 4096;

/// How far a run is, for a display polled from another thread: the phase
/// and, while comparing, the pairs compared so far (a worker adds its count
/// every `PAIRS_STEP` pairs; exact at the end of the phase).
#[derive(Debug, Default)]
pub struct Progress {
    pub phase: AtomicU8,
    pub pairs: AtomicU64,
}

impl Progress {
    fn set_phase(&self, phase: u8) {
        self.phase.store(phase, Ordering::Relaxed);
    }
}

/// Matches `left` against `right` (link), or `left` against itself (dedupe).
pub fn run(
    cfg: &Config,
    left: &RawTable,
    right: Option<&RawTable>,
    label: Option<&str>,
) -> Result<Output, String> {
    run_with_progress(cfg, left, right, label, None)
}

/// `run`, telling `progress` (when given) its phase and the pairs compared.
pub fn run_with_progress(
    cfg: &Config,
    left: &RawTable,
    right: Option<&RawTable>,
    label: Option<&str>,
    progress: Option<&Progress>,
) -> Result<Output, String> {
    let quiet = Progress::default();
    let progress = progress.unwrap_or(&quiet);
    progress.set_phase(PHASE_BLOCKING);
    let mut seconds = Vec::new();
    let mut t = Instant::now();
    let mut lap = |name: &str, t: &mut Instant| {
        seconds.push((name.to_string(), t.elapsed().as_secs_f64()));
        *t = Instant::now();
    };
    let combined;
    let (raw, split) = match right {
        Some(r) => {
            combined = RawTable::concat(left, r);
            (&combined, Some(left.len()))
        }
        None => (left, None),
    };
    let n = raw.len();
    if n > u32::MAX as usize - 1 {
        return Err("too many records (at most 4 billion)".into());
    }
    let prep = prepare(cfg, raw)?;
    lap("prepare", &mut t);
    let cmp = Comparer::new(&prep);
    let mut blocker = Blocker::new(cfg, &prep, split)?;
    lap("blocking keys", &mut t);
    let (u, sampled) = if n >= 2 && split.is_none_or(|s| s > 0 && s < n) {
        estimate_u(cfg, &prep, &cmp, split)
    } else {
        (
            cfg.fields
                .iter()
                .map(|f| {
                    let nl = f.kind.nlevels();
                    let mut v = vec![1.0 / (nl - 1) as f64; nl];
                    v[0] = 0.0;
                    v
                })
                .collect(),
            0,
        )
    };
    lap("u sampling", &mut t);
    progress.set_phase(PHASE_COMPARING);
    let mut compared: Vec<(u32, u32, u64)> = Vec::new();
    // the rule that found a pair rides in the top 4 bits of its levels
    let rules = blocker.run(
        |r, i, j, acc: &mut Vec<(u32, u32, u64)>| {
            acc.push((i as u32, j as u32, cmp.compare(i, j) | ((r as u64) << 60)));
            if acc.len() % PAIRS_STEP == 0 {
                progress
                    .pairs
                    .fetch_add(PAIRS_STEP as u64, Ordering::Relaxed);
            }
        },
        |rec, text| {
            if text {
                prep.prefetch_text(rec)
            } else {
                prep.prefetch_row(rec)
            }
        },
        &mut compared,
        cfg.max_block_size,
    );
    progress
        .pairs
        .store(compared.len() as u64, Ordering::Relaxed);
    progress.set_phase(PHASE_SCORING);
    lap("block + compare", &mut t);

    // blocking recall against known labels
    let (mut true_pairs, mut true_blocked) = (None, None);
    if let Some(label) = label {
        let col = raw
            .column(label)
            .ok_or_else(|| format!("label column {label:?} is not in the records"))?;
        let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
        for i in 0..n {
            let v = col.get(i);
            if !v.is_empty() {
                groups.entry(v).or_default().push(i);
            }
        }
        let gs: Vec<&Vec<usize>> = groups.values().filter(|g| g.len() > 1).collect();
        let (tp, tb) = gs
            .par_iter()
            .map(|g| {
                let (mut a, mut b) = (0u64, 0u64);
                for x in 0..g.len() {
                    for y in x + 1..g.len() {
                        let (i, j) = (g[x], g[y]);
                        if let Some(s) = split {
                            if (i < s) == (j < s) {
                                continue;
                            }
                        }
                        a += 1;
                        if blocker.would_compare(i.min(j), i.max(j)) {
                            b += 1;
                        }
                    }
                }
                (a, b)
            })
            .reduce(|| (0, 0), |x, y| (x.0 + y.0, x.1 + y.1));
        true_pairs = Some(tp);
        true_blocked = Some(tb);
        lap("blocking recall", &mut t);
    }

    // EM sessions: each training rule's pairs (also those an earlier rule
    // found first), without that rule's own fields
    let trains: Vec<usize> = (0..blocker.rules.len())
        .filter(|r| blocker.rules[*r].train)
        .collect();
    let session_fields: Vec<Vec<usize>> = blocker
        .rules
        .iter()
        .map(|r| r.session_fields(cfg))
        .collect();
    let masks: Vec<u64> = session_fields
        .iter()
        .map(|fs| !fs.iter().fold(0u64, |m, f| m | (0xF << (4 * f))))
        .collect();
    type Counts = HashMap<u64, u64, ahash::RandomState>;
    // EM needs the pattern frequencies, not every pair: a systematic sample
    // of at most EM_SAMPLE pairs keeps the rule-coverage checks cheap
    let step = compared.len().div_ceil(EM_SAMPLE).max(1);
    let sample: Vec<(u32, u32, u64)> = if step == 1 {
        Vec::new()
    } else {
        compared.iter().step_by(step).copied().collect()
    };
    let training: &[(u32, u32, u64)] = if step == 1 { &compared } else { &sample };
    let (sessions, patterns): (Vec<Counts>, Counts) = training
        .par_chunks(1 << 15)
        .map(|ch| {
            let mut per: Vec<Counts> = vec![Counts::default(); trains.len()];
            let mut all = Counts::default();
            for (k, &(i, j, lv)) in ch.iter().enumerate() {
                if let Some(a) = ch.get(k + SCORE_AHEAD) {
                    blocker.prefetch_keys(a.0 as usize);
                    blocker.prefetch_keys(a.1 as usize);
                }
                let lv = lv & LEVEL_BITS & !SWAPPED;
                *all.entry(lv).or_insert(0) += 1;
                let cov = blocker.covering(i as usize, j as usize);
                for (k, &r) in trains.iter().enumerate() {
                    if cov & (1 << r) != 0 {
                        *per[k].entry(lv & masks[r]).or_insert(0) += 1;
                    }
                }
            }
            (per, all)
        })
        .reduce(
            || (vec![Counts::default(); trains.len()], Counts::default()),
            |(mut pa, mut aa), (pb, ab)| {
                for (x, y) in pa.iter_mut().zip(pb) {
                    for (k, v) in y {
                        *x.entry(k).or_insert(0) += v;
                    }
                }
                for (k, v) in ab {
                    *aa.entry(k).or_insert(0) += v;
                }
                (pa, aa)
            },
        );
    let sessions: Vec<(Vec<usize>, Counts)> = trains
        .iter()
        .map(|&r| session_fields[r].clone())
        .zip(sessions)
        .collect();
    let mut model = Model::new(cfg, u, sampled);
    let total_pairs = match split {
        Some(s) => s as f64 * (n - s) as f64,
        None => n as f64 * (n as f64 - 1.0) / 2.0,
    };
    if (compared.len() as u64) < MIN_EM_PAIRS {
        // too little to estimate from: the reference population's m and its
        // duplicate rate (expected matches over all pairs)
        let records = split.map_or(n, |s| s.min(n - s)) as f64;
        let expected = Reference::load().duplicates_per_record * records;
        model.use_reference(cfg, expected / total_pairs.max(1.0));
    } else {
        // the sample stands for all compared pairs when the prior is scaled
        let sampled_total = total_pairs * training.len() as f64 / compared.len().max(1) as f64;
        model.em(cfg, &sessions, &patterns, sampled_total);
    }
    let tf = Tf::new(
        prep.fields.iter().map(|f| f.tf.clone()).collect(),
        prep.nonempty.clone(),
    );
    drop(prep);
    model.cache_tf(&tf);
    if cfg.prior.is_none() && model.source == "em" {
        // the share of matches among the compared pairs again, now with the
        // weights the pairs will be scored with (term frequencies included):
        // patterns alone score common namesakes as rare names and, on a
        // million records, overstated the share tenfold
        let base: Vec<f64> = training
            .par_chunks(SCORE_CHUNK)
            .flat_map_iter(|ch| {
                ch.iter().enumerate().map(|(k, &(i, _, lv))| {
                    if let Some(a) = ch.get(k + SCORE_AHEAD) {
                        tf.prefetch(a.0 as usize);
                    }
                    let mut buf = [0.0f64; 16];
                    model.contributions(&tf, lv & LEVEL_BITS, i as usize, &mut buf)
                })
            })
            .collect();
        model.set_prior_from_scores(&base, compared.len() as f64, total_pairs);
    }
    drop(sample);
    lap("em", &mut t);
    let threshold = cfg.threshold;
    // the patterns no pair can score above the threshold with, whatever its
    // term frequencies (a margin for rounding): their pairs go unscored (58 %
    // of the pairs of 200,000 realistic records at threshold 0.01)
    let hopeless: Counts = patterns
        .keys()
        .filter(|p| probability(model.weight_bound(**p) + BOUND_MARGIN) < threshold)
        .map(|p| (*p, 0))
        .collect();
    let kept: Vec<(u32, u32, f64, u64)> = compared
        .par_chunks(SCORE_CHUNK)
        .flat_map_iter(|ch| {
            let (tf, model, hopeless) = (&tf, &model, &hopeless);
            ch.iter().enumerate().filter_map(move |(k, &(i, j, lv))| {
                if let Some(a) = ch.get(k + SCORE_AHEAD) {
                    tf.prefetch(a.0 as usize);
                }
                let lv = lv & LEVEL_BITS;
                if hopeless.contains_key(&(lv & !SWAPPED)) {
                    return None;
                }
                let w = model.weight(tf, lv, i as usize);
                (probability(w) >= threshold).then_some((i, j, w, lv))
            })
        })
        .collect();
    let pairs_compared = compared.len() as u64;
    drop(compared);
    let cluster_threshold = cfg.cluster_threshold.unwrap_or(threshold);
    let mut pairs = Vec::with_capacity(kept.len());
    let mut weights = Vec::with_capacity(kept.len());
    let mut probs = Vec::with_capacity(kept.len());
    let mut levels = Vec::with_capacity(kept.len());
    for (i, j, w, lv) in kept {
        pairs.push((i, j));
        weights.push(w);
        probs.push(probability(w));
        levels.push(lv);
    }
    // on the probable matches only, even when the caller asked for less
    let probable: Vec<(u32, u32)> = pairs
        .iter()
        .zip(&probs)
        .filter(|(_, p)| **p >= threshold.max(0.5))
        .map(|(x, _)| *x)
        .collect();
    let estimated_recall = estimate_recall(&blocker, &probable);
    drop(probable);
    drop(blocker);
    lap("score", &mut t);
    let cl = if split.is_none() {
        let tri: Vec<(u32, u32, f64)> = pairs
            .iter()
            .zip(&weights)
            .map(|(&(i, j), &w)| (i, j, w))
            .collect();
        clusters(n, &tri, |k| probs[k] >= cluster_threshold)
    } else {
        Vec::new()
    };
    lap("cluster", &mut t);
    progress.set_phase(PHASE_DONE);

    let stats = Stats {
        records_left: split.unwrap_or(n),
        records_right: split.map_or(0, |s| n - s),
        capped_blocks: rules.iter().map(|r| r.capped_blocks).sum(),
        capped_pairs: rules.iter().map(|r| r.capped_pairs).sum(),
        rules,
        pairs_compared,
        pairs_above_threshold: pairs.len() as u64,
        estimated_recall,
        distinct_patterns: patterns.len(),
        u_pairs_sampled: model.u_pairs_sampled,
        em_iterations: model.em_iterations_run,
        prior: model.prior,
        blocked_prior: model.blocked_prior,
        true_pairs,
        true_pairs_blocked: true_blocked,
        seconds,
    };
    Ok(Output {
        ids: raw.ids.clone(),
        split,
        field_names: cfg.fields.iter().map(|f| f.name.clone()).collect(),
        field_kinds: cfg.fields.iter().map(|f| f.kind).collect(),
        pairs,
        weights,
        probs,
        levels,
        model,
        tf,
        clusters: cl,
        stats,
        cluster_threshold,
    })
}
