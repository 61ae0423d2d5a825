"""The mirror's schema: the DDL of every version, the migrations between them,
and the columns a downstream reader may rely on.

Text only: it runs no statement (the store applies the migrations, under the
writer lock, in `Store.open`) and knows nothing of connections.
"""

from __future__ import annotations

from contactsync_agent.mapping import FIELDS

SCHEMA_VERSION = 8


# Every column of `contacts` a downstream app may read, in table order.
CONTACT_COLUMNS: tuple[str, ...] = (
    "id",
    "record_type",
    "forced_manual",
    "source",
    "external_id",
    *FIELDS,
    "extra",
    "phone_e164",
    "mobile_e164",
    "hash",
    "source_hash",
    "created_at",
    "updated_at",
    "deleted_at",
)

# The index of a contact's link (one live contact per source and external id),
# as migration 1 creates it; a first import into an empty table drops it and
# builds it again after its bulk insert, in the same transaction.
CONTACTS_LINK_INDEX = """CREATE UNIQUE INDEX contacts_link ON contacts (source, external_id)
    WHERE external_id IS NOT NULL AND deleted_at IS NULL"""

_FIELD_COLS = ",\n    ".join(f"{f} TEXT NOT NULL DEFAULT ''" for f in FIELDS)

MIGRATIONS: dict[int, str] = {
    1: f"""
CREATE TABLE contacts (
    id INTEGER PRIMARY KEY,
    record_type TEXT NOT NULL DEFAULT 'manual'
        CHECK (record_type IN ('manual', 'external', 'sync')),
    forced_manual INTEGER NOT NULL DEFAULT 0 CHECK (forced_manual IN (0, 1)),
    source TEXT,
    external_id TEXT,
    {_FIELD_COLS},
    extra TEXT NOT NULL DEFAULT '{{}}',
    phone_e164 TEXT NOT NULL DEFAULT '',
    mobile_e164 TEXT NOT NULL DEFAULT '',
    hash INTEGER,
    source_hash INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted_at TEXT
);
{CONTACTS_LINK_INDEX};
CREATE INDEX contacts_local ON contacts (record_type)
    WHERE record_type != 'sync' AND deleted_at IS NULL;

CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('full', 'incremental')),
    origin TEXT,
    origin_hash TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL
        CHECK (status IN ('running', 'ok', 'failed', 'refused', 'aborted')),
    records INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL DEFAULT 0,
    converted INTEGER NOT NULL DEFAULT 0,
    updated INTEGER NOT NULL DEFAULT 0,
    unchanged INTEGER NOT NULL DEFAULT 0,
    skipped_forced_manual INTEGER NOT NULL DEFAULT 0,
    ignored_external INTEGER NOT NULL DEFAULT 0,
    unlinked INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    review_items INTEGER NOT NULL DEFAULT 0,
    activities INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    allow_mass_delete INTEGER NOT NULL DEFAULT 0,
    duration_ms INTEGER,
    error TEXT
);
CREATE INDEX runs_source ON runs (source, id);

CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id INTEGER NOT NULL,
    run_id INTEGER,
    op TEXT NOT NULL,
    fields TEXT NOT NULL,
    reason_code TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX changes_contact ON changes (contact_id);

CREATE TABLE activities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id INTEGER,
    run_id INTEGER,
    source TEXT,
    external_id TEXT,
    kind TEXT NOT NULL,
    fields TEXT NOT NULL DEFAULT '{{}}',
    reason TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved', 'dismissed')),
    created_at TEXT NOT NULL,
    closed_at TEXT,
    resolution TEXT
);
CREATE INDEX activities_open ON activities (status, contact_id);

CREATE TABLE review_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER,
    source TEXT NOT NULL,
    external_id TEXT NOT NULL,
    contact_id INTEGER,
    candidate_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    score REAL,
    explanation TEXT NOT NULL DEFAULT '{{}}',
    reason TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'accepted', 'rejected')),
    created_at TEXT NOT NULL,
    decided_at TEXT
);
CREATE INDEX review_open ON review_items (status);

CREATE TABLE review_rejections (
    source TEXT NOT NULL,
    external_id TEXT NOT NULL,
    candidate_id INTEGER NOT NULL,
    rejected_at TEXT NOT NULL,
    PRIMARY KEY (source, external_id, candidate_id)
);

CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER,
    source TEXT NOT NULL,
    file TEXT,
    line INTEGER,
    reason TEXT NOT NULL,
    raw TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE INDEX quarantine_run ON quarantine (run_id);

CREATE TABLE contact_references (
    contact_id INTEGER NOT NULL,
    ref TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    PRIMARY KEY (contact_id, ref)
);

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE link_snapshots (
    source TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    entries INTEGER NOT NULL,
    saved_at TEXT NOT NULL
);
CREATE TRIGGER link_snapshot_insert AFTER INSERT ON contacts
    WHEN NEW.external_id IS NOT NULL
    BEGIN DELETE FROM link_snapshots WHERE source = NEW.source; END;
CREATE TRIGGER link_snapshot_update
    AFTER UPDATE OF source, external_id, source_hash, record_type, forced_manual, deleted_at
    ON contacts
    BEGIN DELETE FROM link_snapshots WHERE source IN (OLD.source, NEW.source); END;
CREATE TRIGGER link_snapshot_delete AFTER DELETE ON contacts
    BEGIN DELETE FROM link_snapshots WHERE source = OLD.source; END;
""",
}

# Migration 2 (issue 6): organisations, locations, the contact's link to them,
# contact-customer links with roles, field ownership and the entity-aware feed.
# Feed: `changes` gains `entity_type` ('contact', 'organisation', 'location',
# 'customer_link') and `entity_id`; `contact_id` is set on contact entries only
# (NULL for the others), so a reader that knows nothing of entities and asks
# for a contact's entries still gets exactly those. The table is rebuilt
# because SQLite cannot drop the NOT NULL of `contact_id` in place; seq values
# and the AUTOINCREMENT high-water mark are kept.
_ENTITY_FIELDS = """
    email TEXT NOT NULL DEFAULT '',
    phone TEXT NOT NULL DEFAULT '',
    street TEXT NOT NULL DEFAULT '',
    city TEXT NOT NULL DEFAULT '',
    region TEXT NOT NULL DEFAULT '',
    postcode TEXT NOT NULL DEFAULT '',
    country TEXT NOT NULL DEFAULT '',
    notes TEXT NOT NULL DEFAULT '',
    extra TEXT NOT NULL DEFAULT '{}',
    hash INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted_at TEXT"""
_ROLE = "TEXT NOT NULL DEFAULT 'N' CHECK ({0} IN ('Y', 'N', 'NA'))"

MIGRATION_2 = f"""
CREATE TABLE changes_v2 (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id INTEGER,
    run_id INTEGER,
    op TEXT NOT NULL,
    fields TEXT NOT NULL,
    reason_code TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL,
    entity_type TEXT NOT NULL DEFAULT 'contact'
        CHECK (entity_type IN ('contact', 'organisation', 'location', 'customer_link')),
    object_id INTEGER,
    entity_id INTEGER GENERATED ALWAYS AS (coalesce(contact_id, object_id)) VIRTUAL
);
INSERT INTO changes_v2 (seq, contact_id, run_id, op, fields, reason_code, reason, at)
    SELECT seq, contact_id, run_id, op, fields, reason_code, reason, at FROM changes;
DELETE FROM sqlite_sequence WHERE name = 'changes_v2';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'changes_v2', seq FROM sqlite_sequence WHERE name = 'changes';
DROP TABLE changes;
ALTER TABLE changes_v2 RENAME TO changes;
CREATE INDEX changes_contact ON changes (contact_id);
CREATE INDEX changes_entity ON changes (entity_type, object_id) WHERE contact_id IS NULL;

ALTER TABLE runs ADD COLUMN entity_type TEXT NOT NULL DEFAULT 'contact';

CREATE TABLE organisations (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    external_id TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    website TEXT NOT NULL DEFAULT '',{_ENTITY_FIELDS}
);
CREATE UNIQUE INDEX organisations_link ON organisations (source, external_id);

CREATE TABLE locations (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    external_id TEXT NOT NULL,
    organisation_ref TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',{_ENTITY_FIELDS}
);
CREATE UNIQUE INDEX locations_link ON locations (source, external_id);
CREATE INDEX locations_organisation ON locations (source, organisation_ref);

CREATE TABLE contact_organisations (
    contact_id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    organisation_ref TEXT NOT NULL DEFAULT '',
    location_ref TEXT NOT NULL DEFAULT '',
    position TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL
);
-- Contacts of an organisation (by location is rarer: scan, or join from the view).
CREATE INDEX contact_organisations_org ON contact_organisations (organisation_ref);

CREATE TABLE contact_customers (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    external_id TEXT NOT NULL,
    contact_ref TEXT NOT NULL,
    customer TEXT NOT NULL,
    customer_name TEXT NOT NULL DEFAULT '',
    bill_to {_ROLE.format("bill_to")},
    sold_to {_ROLE.format("sold_to")},
    ship_to {_ROLE.format("ship_to")},
    correspondence {_ROLE.format("correspondence")},
    extra TEXT NOT NULL DEFAULT '{{}}',
    hash INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted_at TEXT
);
CREATE UNIQUE INDEX contact_customers_link ON contact_customers (source, external_id);
CREATE INDEX contact_customers_contact ON contact_customers (source, contact_ref);

CREATE TABLE held_values (
    contact_id INTEGER NOT NULL,
    field TEXT NOT NULL,
    source_value TEXT NOT NULL,
    PRIMARY KEY (contact_id, field)
) WITHOUT ROWID;

CREATE TABLE source_policies (
    source TEXT PRIMARY KEY,
    ownership TEXT NOT NULL DEFAULT '{{}}',
    unique_fields TEXT NOT NULL DEFAULT '[]',
    updated_at TEXT NOT NULL
);

CREATE VIEW contacts_with_organisation AS
SELECT c.id AS contact_id, c.record_type, c.source, c.external_id,
       c.given_name, c.family_name, c.display_name, c.email, c.phone, c.mobile,
       co.position AS position,
       o.id AS organisation_id, o.external_id AS organisation_external_id,
       o.name AS organisation_name, o.email AS organisation_email,
       o.phone AS organisation_phone, o.website AS organisation_website,
       l.id AS location_id, l.external_id AS location_external_id,
       l.name AS location_name, l.street AS location_street, l.city AS location_city,
       l.region AS location_region, l.postcode AS location_postcode,
       l.country AS location_country, l.phone AS location_phone,
       l.email AS location_email
FROM contacts c
LEFT JOIN contact_organisations co ON co.contact_id = c.id
LEFT JOIN locations l ON l.source = co.source AND l.external_id = co.location_ref
    AND l.deleted_at IS NULL
LEFT JOIN organisations o ON o.source = co.source
    AND o.external_id = coalesce(nullif(co.organisation_ref, ''), l.organisation_ref)
    AND o.deleted_at IS NULL
WHERE c.deleted_at IS NULL;

CREATE VIEW contact_customer_roles AS
SELECT c.id AS contact_id, cc.id AS link_id, cc.source, cc.customer, cc.customer_name,
       cc.bill_to, cc.sold_to, cc.ship_to, cc.correspondence
FROM contact_customers cc
JOIN contacts c ON c.source = cc.source AND c.external_id = cc.contact_ref
    AND c.deleted_at IS NULL
WHERE cc.deleted_at IS NULL;

CREATE VIEW contact_customer_access AS
SELECT contact_id, customer, 'bill_to' AS role FROM contact_customer_roles WHERE bill_to = 'Y'
UNION ALL
SELECT contact_id, customer, 'sold_to' FROM contact_customer_roles WHERE sold_to = 'Y'
UNION ALL
SELECT contact_id, customer, 'ship_to' FROM contact_customer_roles WHERE ship_to = 'Y'
UNION ALL
SELECT contact_id, customer, 'correspondence' FROM contact_customer_roles
    WHERE correspondence = 'Y'
"""

MIGRATIONS[2] = MIGRATION_2

# Migration 3, for import speed:
# - a new linked contact drops its source's link snapshot through the two
#   insert paths below (once per bulk insert) instead of a per-row trigger,
#   which cost about 0.6 s per million created contacts (updates and deletes
#   keep their triggers);
# - `contact_organisations` loses its index on organisation_ref: nothing of
#   ours looks links up by organisation (the views join by contact id), and
#   keeping it cost about 0.15 s per 200,000 linked contacts; a reader that
#   wants every contact of one organisation scans the table (measured in
#   docs/organisations.md).
MIGRATIONS[3] = """
DROP TRIGGER IF EXISTS link_snapshot_insert;
DROP INDEX IF EXISTS contact_organisations_org;
"""

# Migration 4 (issue 12): a run records whether a column drop was confirmed
# (`--allow-column-drop`), how many deletions it skipped because rows of its
# snapshot could not be identified, and `forced` = 1 for a run started with
# `--force` into a source the config does not list or has disabled.
MIGRATIONS[4] = """
ALTER TABLE runs ADD COLUMN forced INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN allow_column_drop INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN deletions_skipped INTEGER NOT NULL DEFAULT 0;
"""

# Migration 5 (issue 15, two-way sync):
# - `source_policies.sync` holds the source's two-way policy (directions,
#   conflict strategies, priority table, push_new) as JSON ('{}' = in only);
# - `field_bases` holds the *base* of a field whose direction is out/both and
#   that was edited locally: the value the source last sent. A field with no
#   row has base == its current value (nothing local is pending), so a pull of
#   an in-only source (or of an unedited contact) reads and writes nothing
#   here: bases cost only what is edited;
# - `outbox`: local changes to push, recorded in the edit's own transaction.
#   `fields` is JSON {field: [base, new]}; `key` is the idempotency key a
#   writer hands to the target; `local_at` the local modification time
#   (last-write-wins compares it).
MIGRATIONS[5] = """
ALTER TABLE source_policies ADD COLUMN sync TEXT NOT NULL DEFAULT '{}';

CREATE TABLE field_bases (
    contact_id INTEGER NOT NULL,
    field TEXT NOT NULL,
    base TEXT NOT NULL,
    PRIMARY KEY (contact_id, field)
) WITHOUT ROWID;

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    contact_id INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('update', 'create')),
    external_id TEXT,
    fields TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'confirmed', 'rejected', 'conflict', 'superseded')),
    reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    local_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    sent_at TEXT,
    done_at TEXT
);
CREATE INDEX outbox_open ON outbox (source, status, id) WHERE status IN ('pending', 'sent');
CREATE INDEX outbox_contact ON outbox (contact_id) WHERE status IN ('pending', 'sent');
"""



# Migration 6 (issue 19, a third of the space): the change feed is stored
# compactly in `change_log`, and `changes` becomes a VIEW with the old
# columns and meaning, so a reader's `SELECT ... FROM changes` is unchanged.
# `change_log` holds the same columns, where three may be left empty (''),
# which SQLite stores in no bytes at all:
# - `fields` '' on the `create` entry of a contact made by a bulk import: its
#   payload ({field: [null, value]} of the link and every non-empty field)
#   is the contact row's own values, which the view writes out. Before any
#   change to those values (or the row's removal), the trigger below writes
#   the payload into the entry, so it always says what the contact was when
#   created (a purge blanks it to '{}' first, as it does any payload);
# - `reason` '': the text of its `reason_code` in `change_reasons`;
# - `at` '': the contact's `created_at` (a create entry is written with it).
# The table is the old `changes` renamed (no row is copied; its seq values,
# AUTOINCREMENT mark and index stay); entries written before keep their text.
# Writes go to `change_log` (store/feed.py); the view also takes INSERT,
# UPDATE and DELETE (INSTEAD OF triggers), for code written against the old
# table, though `lastrowid` and `rowcount` say nothing through a view.
def _create_payload_sql(row: str) -> str:
    """SQL of a bulk-created contact's create payload from its row `row`
    (`c` in the view, `OLD` in the trigger): the JSON the Rust import wrote
    before schema 6, key for key. `iif`, not CASE: `_split_sql` ends a
    trigger at its first END."""
    parts = [f"""'{{"record_type":[null,' || json_quote({row}.record_type) || """
             f"""'],"source":[null,' || json_quote({row}.source) || """
             f"""'],"external_id":[null,' || json_quote({row}.external_id) || ']'"""]
    for f in FIELDS:
        parts.append(f"""iif({row}.{f} != '', ',"{f}":[null,' || json_quote({row}.{f}) """
                     "|| ']', '')")
    parts.append(f"""iif({row}.extra != '{{}}', ',"extra":[null,' || {row}.extra || ']', '')""")
    parts.append("'}'")
    return " || ".join(parts)


_PAYLOAD_COLS = ", ".join(("record_type", "source", "external_id", *FIELDS, "extra",
                           "created_at"))
_LOG_COLS = ("contact_id, run_id, op, fields, reason_code, reason, at, entity_type, "
             "object_id")

MIGRATIONS[6] = f"""
ALTER TABLE changes RENAME TO change_log;

CREATE TABLE change_reasons (
    code TEXT PRIMARY KEY,
    text TEXT NOT NULL
) WITHOUT ROWID;

CREATE VIEW changes AS
SELECT ch.seq AS seq, ch.contact_id AS contact_id, ch.run_id AS run_id, ch.op AS op,
       iif(ch.fields != '', ch.fields, coalesce({_create_payload_sql("c")}, '{{}}')) AS fields,
       ch.reason_code AS reason_code,
       iif(ch.reason != '', ch.reason, coalesce(
           (SELECT r.text FROM change_reasons r WHERE r.code = ch.reason_code), '')) AS reason,
       iif(ch.at != '', ch.at, coalesce(c.created_at, '')) AS at,
       ch.entity_type AS entity_type, ch.object_id AS object_id, ch.entity_id AS entity_id
FROM change_log ch
LEFT JOIN contacts c ON c.id = ch.contact_id AND (ch.fields = '' OR ch.at = '');

CREATE TRIGGER change_log_keep_create AFTER UPDATE OF {_PAYLOAD_COLS} ON contacts
    BEGIN UPDATE change_log SET fields = iif(fields = '', {_create_payload_sql("OLD")}, fields),
        at = iif(at = '', OLD.created_at, at)
        WHERE contact_id = OLD.id AND (fields = '' OR at = ''); END;
CREATE TRIGGER change_log_keep_create_delete AFTER DELETE ON contacts
    BEGIN UPDATE change_log SET fields = iif(fields = '', {_create_payload_sql("OLD")}, fields),
        at = iif(at = '', OLD.created_at, at)
        WHERE contact_id = OLD.id AND (fields = '' OR at = ''); END;

CREATE TRIGGER changes_insert INSTEAD OF INSERT ON changes
    BEGIN INSERT INTO change_log (seq, {_LOG_COLS}) VALUES (NEW.seq, NEW.contact_id,
        NEW.run_id, NEW.op, NEW.fields, NEW.reason_code, NEW.reason, NEW.at,
        coalesce(NEW.entity_type, 'contact'), NEW.object_id); END;
CREATE TRIGGER changes_update INSTEAD OF UPDATE ON changes
    BEGIN UPDATE change_log SET contact_id = NEW.contact_id, run_id = NEW.run_id, op = NEW.op,
        fields = NEW.fields, reason_code = NEW.reason_code, reason = NEW.reason, at = NEW.at,
        entity_type = NEW.entity_type, object_id = NEW.object_id WHERE seq = OLD.seq; END;
CREATE TRIGGER changes_delete INSTEAD OF DELETE ON changes
    BEGIN DELETE FROM change_log WHERE seq = OLD.seq; END;
"""


# Migration 7 (issue 15): the outbox by contact, whatever the status. Each push
# asks, of every new local contact, whether an entry creates it already
# (`create_candidates`), and each pull of a two-way contact reads its latest
# confirmed updates (`delivered_for`); the partial index `outbox_contact` has
# open entries only, so both scanned every confirmed entry ever stored. The
# columns after `contact_id` let `delivered_for` (contact, 'confirmed',
# 'update', newest id first) read its rows in order without a sort.
MIGRATIONS[7] = """
CREATE INDEX outbox_by_contact ON outbox (contact_id, status, kind);
"""


# Migration 8 (issue 19, re-imports): a source's link snapshot is stored in
# parts, `link_snapshot_parts`: part 0 the whole snapshot ("CSD3"), parts 1..
# the deltas of the runs after it ("CSDD": the links each run changed, added
# or removed), applied in order when loaded; a run writes a whole snapshot
# again when its deltas would reach a quarter of the base. A run that changed
# 1 % of a million links wrote and freed a 37 MB blob; its delta is ~0.4 MB.
# `link_snapshots` keeps one row per source and stays the mark of validity:
# the triggers that drop it on any write to a contact's link columns are
# unchanged (now they drop a small row, `data` is empty), and the parts of a
# source without its row are never read (the next save replaces them).
MIGRATIONS[8] = """
CREATE TABLE link_snapshot_parts (
    source TEXT NOT NULL,
    part INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (source, part)
);
INSERT INTO link_snapshot_parts (source, part, data) SELECT source, 0, data FROM link_snapshots;
UPDATE link_snapshots SET data = x'';
"""


def _split_sql(script: str) -> list[str]:
    """Statements of a migration; a trigger's body keeps its inner semicolons."""
    out: list[str] = []
    buf = ""
    for part in script.split(";"):
        buf += part
        if buf.strip().upper().startswith("CREATE TRIGGER") and "END" not in part.upper():
            buf += ";"
            continue
        if buf.strip():
            out.append(buf.strip())
        buf = ""
    return out
