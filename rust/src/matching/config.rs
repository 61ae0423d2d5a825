//! The matching configuration: typed fields, blocking rules and thresholds.
//! Parsed from JSON (the Python side fills the defaults); validation errors are
//! returned as messages, never panics.

use serde::{Deserialize, Serialize};

/// The kind of a field, which decides how it is normalised and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// A full name in one value ("John Smith", "SMITH, John"): word-order free.
    Name,
    /// A given name: nickname aware, initials agree weakly.
    GivenName,
    FamilyName,
    Email,
    Phone,
    Date,
    Postcode,
    /// Free-text street address: abbreviations folded, word-based similarity.
    Address,
    /// An identifier compared exactly (tax file number, customer number).
    Id,
    /// Any other text (organisation, suburb, state): Jaro–Winkler.
    Text,
}

impl FieldType {
    /// Labels of the agreement levels, index = level. Level 0 is "missing"
    /// (either side empty) and carries no weight; higher is closer. An
    /// e-mail local part that is only the person's name, at two different
    /// domains, also counts as level 0: it repeats the names' evidence.
    pub fn levels(self) -> &'static [&'static str] {
        match self {
            FieldType::GivenName => &[
                "missing",
                "different",
                "initial",
                "similar (jw>=0.80)",
                "very similar (jw>=0.92 or 1 edit)",
                "nickname",
                "exact",
            ],
            FieldType::FamilyName => &[
                "missing",
                "different",
                "similar (jw>=0.80)",
                "very similar (jw>=0.92 or 1 edit)",
                "exact",
            ],
            FieldType::Name => &[
                "missing",
                "different",
                "similar words (>=0.80)",
                "very similar words (>=0.92)",
                "same words (order, middle names ignored)",
                "exact",
            ],
            FieldType::Email => &[
                "missing or uninformative",
                "different",
                "local part similar",
                "local part exact, other domain",
                "exact",
            ],
            FieldType::Phone => &[
                "missing",
                "different",
                "one digit off",
                "same last 8 digits",
                "exact (E.164)",
            ],
            FieldType::Date => &[
                "missing",
                "different",
                "same year",
                "one digit off or day/month swapped",
                "exact",
            ],
            FieldType::Postcode => &["missing", "different", "one character off", "exact"],
            FieldType::Address => &[
                "missing",
                "different",
                "similar (>=0.75)",
                "very similar (>=0.90)",
                "exact",
            ],
            FieldType::Id => &["missing", "different", "exact"],
            FieldType::Text => &["missing", "different", "similar (jw>=0.88)", "exact"],
        }
    }

    pub fn nlevels(self) -> usize {
        self.levels().len()
    }

    /// Starting m probabilities (levels 1..) before EM: a true match mostly
    /// agrees exactly, sometimes fuzzily, rarely not at all.
    pub fn default_m(self) -> Vec<f64> {
        let n = self.nlevels() - 1;
        let mut m = vec![0.0; n];
        m[n - 1] = 0.85;
        let rest = 0.15;
        // remaining mass shared over the lower levels, "different" smallest
        let lower = n - 1;
        for (k, v) in m.iter_mut().take(lower).enumerate() {
            *v = if k == 0 {
                rest * 0.1
            } else {
                rest * 0.9 / (lower - 1).max(1) as f64
            };
        }
        if lower == 1 {
            m[0] = rest;
        }
        m
    }
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
pub struct FieldSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// Source columns; several make a multi-valued field (phone + mobile): the
    /// best agreement over all value pairs counts.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Term-frequency adjustment of exact agreement ("smith" weighs less than
    /// "zyzzyx").
    #[serde(default)]
    pub tf: bool,
    /// Fields in one group are correlated (street, suburb, postcode, landline):
    /// the group counts its strongest agreement and its strongest
    /// disagreement once, instead of adding every member.
    #[serde(default)]
    pub group: Option<String>,
    /// Fixed m / u per level 1.. (not estimated when given).
    #[serde(default)]
    pub m: Option<Vec<f64>>,
    #[serde(default)]
    pub u: Option<Vec<f64>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BlockRule {
    /// Key expressions over field names: `email`, `soundex(family_name)`,
    /// `initial(nick(given_name))`, `prefix3(family_name)`, `local(email)`,
    /// `year(date_of_birth)`, `last8(phone)`.
    pub keys: Vec<String>,
    /// Sort the parts before combining them, so swapped given and family
    /// names still meet.
    #[serde(default)]
    pub unordered: bool,
    #[serde(default)]
    pub name: Option<String>,
    /// Use this rule's pairs to estimate m by EM. Rules whose pairs share
    /// more than their keys by nature (a landline, a postcode + surname: a
    /// household) should not train, or EM learns "same household".
    #[serde(default = "default_true")]
    pub train: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub fields: Vec<FieldSpec>,
    pub blocking: Vec<BlockRule>,
    #[serde(default = "d_threshold")]
    pub threshold: f64,
    #[serde(default)]
    pub cluster_threshold: Option<f64>,
    /// Blocks with more records than this are scanned by sorted
    /// neighbourhood (each record against the next `window` in the order of
    /// a secondary key) instead of compared all against all.
    #[serde(default = "d_max_block")]
    pub max_block_size: usize,
    #[serde(default = "d_window")]
    pub window: usize,
    #[serde(default = "d_u_sample")]
    pub u_sample_pairs: usize,
    #[serde(default = "default_true")]
    pub em: bool,
    #[serde(default = "d_em_iter")]
    pub em_iterations: usize,
    /// Probability that two records taken at random match; estimated (from
    /// the compared pairs by EM) when absent.
    #[serde(default)]
    pub prior: Option<f64>,
    #[serde(default = "d_region")]
    pub region: String,
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// A full-name column used to fill empty given / family names.
    #[serde(default)]
    pub name_source: Option<String>,
}

fn d_threshold() -> f64 {
    0.5
}
fn d_max_block() -> usize {
    64
}
fn d_window() -> usize {
    10
}
fn d_u_sample() -> usize {
    1_000_000
}
fn d_em_iter() -> usize {
    25
}
fn d_region() -> String {
    "AU".into()
}
fn d_seed() -> u64 {
    42
}

/// Levels are packed 4 bits per field into a u64 (bits 0..56); bit 59 flags
/// swapped names and the top 4 bits hold the blocking rule that found the pair.
pub const MAX_FIELDS: usize = 14;
pub const MAX_RULES: usize = 15;

impl Config {
    pub fn from_json(text: &str) -> Result<Config, String> {
        let mut c: Config = serde_json::from_str(text).map_err(|e| format!("config: {e}"))?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&mut self) -> Result<(), String> {
        if self.fields.is_empty() {
            return Err("config: no fields to compare".into());
        }
        if self.fields.len() > MAX_FIELDS {
            return Err(format!(
                "config: at most {MAX_FIELDS} compared fields, got {}",
                self.fields.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for f in &mut self.fields {
            if !seen.insert(f.name.clone()) {
                return Err(format!("config: field {:?} listed twice", f.name));
            }
            if f.columns.is_empty() {
                f.columns.push(f.name.clone());
            }
            if f.columns.len() > 4 {
                return Err(format!(
                    "config: field {:?} has more than 4 columns",
                    f.name
                ));
            }
            let n = f.kind.nlevels() - 1;
            for (what, probs) in [("m", &f.m), ("u", &f.u)] {
                if let Some(p) = probs {
                    if p.len() != n {
                        return Err(format!(
                            "config: field {:?}: {what} needs {n} probabilities (levels {:?})",
                            f.name,
                            &f.kind.levels()[1..]
                        ));
                    }
                    if p.iter().any(|x| !(*x > 0.0 && *x <= 1.0)) {
                        return Err(format!(
                            "config: field {:?}: {what} probabilities must be in (0, 1]",
                            f.name
                        ));
                    }
                }
            }
        }
        if self.blocking.is_empty() {
            return Err("config: at least one blocking rule is needed".into());
        }
        if self.blocking.len() > MAX_RULES {
            return Err(format!("config: at most {MAX_RULES} blocking rules"));
        }
        for (what, v) in [
            ("threshold", Some(self.threshold)),
            ("cluster_threshold", self.cluster_threshold),
        ] {
            if let Some(v) = v {
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!(
                        "config: {what} must be a probability in [0, 1], got {v}"
                    ));
                }
            }
        }
        if let Some(p) = self.prior {
            if !(p > 0.0 && p < 1.0) {
                return Err(format!("config: prior must be in (0, 1), got {p}"));
            }
        }
        if self.max_block_size < 2 {
            return Err("config: max_block_size must be at least 2".into());
        }
        if self.window < 1 {
            return Err("config: window must be at least 1".into());
        }
        Ok(())
    }

    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// Every source column the configuration reads.
    pub fn columns(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for f in &self.fields {
            for c in &f.columns {
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
        }
        if let Some(c) = &self.name_source {
            if !out.contains(c) {
                out.push(c.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let c = Config::from_json(
            r#"{"fields":[{"name":"email","type":"email"}],"blocking":[{"keys":["email"]}]}"#,
        )
        .unwrap();
        assert_eq!(c.fields[0].columns, vec!["email".to_string()]);
        assert_eq!(c.threshold, 0.5);
        assert!(Config::from_json(r#"{"fields":[],"blocking":[]}"#).is_err());
        assert!(Config::from_json(
            r#"{"fields":[{"name":"x","type":"nonsense"}],"blocking":[{"keys":["x"]}]}"#
        )
        .is_err());
        assert!(Config::from_json(
            r#"{"fields":[{"name":"x","type":"id","m":[0.5]}],"blocking":[{"keys":["x"]}]}"#
        )
        .is_err());
    }

    #[test]
    fn default_m_sums_to_one() {
        for t in [
            FieldType::GivenName,
            FieldType::Id,
            FieldType::Email,
            FieldType::Postcode,
        ] {
            let m = t.default_m();
            let s: f64 = m.iter().sum();
            assert!((s - 1.0).abs() < 1e-9, "{t:?} {m:?}");
        }
    }
}
