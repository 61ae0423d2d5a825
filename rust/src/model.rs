//! The canonical contact record as the core sees it: cleaned field values in a
//! fixed order, the unmapped columns, and what is derived from them.

/// Canonical mirrored fields, in the order of the canonical serialisation.
/// Changing this order changes every content hash: bump `HASH_VERSION`.
pub const FIELDS: [&str; 14] = [
    "given_name",
    "family_name",
    "display_name",
    "organisation",
    "email",
    "phone",
    "mobile",
    "street",
    "city",
    "region",
    "postcode",
    "country",
    "date_of_birth",
    "notes",
];
pub const NFIELDS: usize = FIELDS.len();
pub const F_GIVEN: usize = 0;
pub const F_FAMILY: usize = 1;
pub const F_DISPLAY: usize = 2;
pub const F_EMAIL: usize = 4;
pub const F_PHONE: usize = 5;
pub const F_MOBILE: usize = 6;
pub const F_NOTES: usize = 13;

pub fn field_index(name: &str) -> Option<usize> {
    FIELDS.iter().position(|f| *f == name)
}

/// One incoming record after mapping and cleaning.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// 1-based line (CSV, NDJSON, JSON element start) the record came from.
    pub line: u64,
    pub external_id: String,
    pub deleted: bool,
    pub fields: [String; NFIELDS],
    /// Unmapped source columns, verbatim, sorted by key.
    pub extra: Vec<(String, String)>,
    pub hash: u64,
    /// XXH3 of the row's raw field bytes, seeded with the file's layout (0 when
    /// the source has none): equal raw hash, equal content.
    pub raw_hash: u64,
    /// False for a row the reader recognised as unchanged by its raw hash:
    /// only `line`, `external_id` and `raw_hash` are set.
    pub built: bool,
    /// What the record carried (see `mapping::present_name`): bit i < NFIELDS
    /// for canonical field i (a full-name column carries the given, family and
    /// display names), bits NFIELDS.. for the relation keys. A field whose bit
    /// is clear was not sent (an incremental record then keeps the mirror's value).
    pub present: u32,
    /// Unmapped columns (and relation keys) sent with an empty value: cleared.
    /// Collected only for incremental batches (`Mapping::partial`).
    pub cleared: Vec<String>,
    /// The source's modification time of the record, as sent (a column
    /// mapped to `modified_at`; empty when none): not a field, not hashed.
    pub modified: String,
}

/// Keys derived for matching; computed only for records that need them.
#[derive(Debug, Clone, Default)]
pub struct Derived {
    /// `extra` as stored (a JSON object), for records about to be written.
    pub extra_json: String,
    pub phone_e164: String,
    pub mobile_e164: String,
    pub identity: u64,
    pub partial: [u64; 3],
}
