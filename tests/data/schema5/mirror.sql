BEGIN TRANSACTION;
CREATE TABLE activities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id INTEGER,
    run_id INTEGER,
    source TEXT,
    external_id TEXT,
    kind TEXT NOT NULL,
    fields TEXT NOT NULL DEFAULT '{}',
    reason TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved', 'dismissed')),
    created_at TEXT NOT NULL,
    closed_at TEXT,
    resolution TEXT
);
INSERT INTO "activities" VALUES(1,6,3,'xpm','A5','forced_manual','{"family_name": {"current": "Forced", "incoming": "Forced-changed"}}','forced manual: the source''s changes to family_name were not applied','open','2026-11-30T03:48:35.830Z',NULL,NULL);
CREATE TABLE "changes" (
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
INSERT INTO "changes" VALUES(1,1,NULL,'create','{"record_type": [null, "manual"], "given_name": [null, "Manu"], "family_name": [null, "Al"], "display_name": [null, "Manu Al"], "email": [null, "manual@example.org"]}','added_locally','created: added locally','2026-11-30T03:48:34.706Z','contact',NULL);
INSERT INTO "changes" VALUES(2,2,1,'create','{"record_type":[null,"sync"],"source":[null,"xpm"],"external_id":[null,"A1"],"given_name":[null,"Zoë"],"family_name":[null,"Ångström"],"organisation":[null,"Acme"],"email":[null,"zoe@example.org"],"phone":[null,"(02) 9123 4567"],"extra":[null,{"Partner":"AB"}]}','created','created: no existing match','2026-11-30T03:48:34.708Z','contact',NULL);
INSERT INTO "changes" VALUES(3,3,1,'create','{"record_type":[null,"sync"],"source":[null,"xpm"],"external_id":[null,"A2"],"given_name":[null,"Bob"],"family_name":[null,"Quote\"s"],"email":[null,"bob@example.org"],"mobile":[null,"0400 000 002"],"notes":[null,"line1\nline2"]}','created','created: no existing match','2026-11-30T03:48:34.708Z','contact',NULL);
INSERT INTO "changes" VALUES(4,4,1,'create','{"record_type":[null,"sync"],"source":[null,"xpm"],"external_id":[null,"A3"],"given_name":[null,"Cleo"],"family_name":[null,"Tab Name"]}','created','created: no existing match','2026-11-30T03:48:34.708Z','contact',NULL);
INSERT INTO "changes" VALUES(5,5,1,'create','{}','created','created: no existing match','2026-11-30T03:48:34.708Z','contact',NULL);
INSERT INTO "changes" VALUES(6,6,1,'create','{"record_type":[null,"sync"],"source":[null,"xpm"],"external_id":[null,"A5"],"given_name":[null,"Eve"],"family_name":[null,"Forced"],"email":[null,"eve@example.org"]}','created','created: no existing match','2026-11-30T03:48:34.708Z','contact',NULL);
INSERT INTO "changes" VALUES(7,1,1,'convert','{"record_type": ["manual", "sync"], "source": [null, "xpm"], "external_id": [null, "A6"], "display_name": ["Manu Al", ""]}','converted_identity','converted: name, e-mail and phone matched','2026-11-30T03:48:34.708Z','contact',NULL);
INSERT INTO "changes" VALUES(8,7,2,'create','{"record_type":[null,"sync"],"source":[null,"crm"],"external_id":[null,"C1"],"given_name":[null,"Api"],"email":[null,"api@x.org"]}','created','created: no existing match','2026-11-30T03:48:35.810Z','contact',NULL);
INSERT INTO "changes" VALUES(9,6,NULL,'update','{"forced_manual": [false, true]}','forced_manual_set','forced manual set locally','2026-11-30T03:48:35.811Z','contact',NULL);
INSERT INTO "changes" VALUES(10,2,3,'update','{"email": ["zoe@example.org", "zoe@new.example.org"]}','updated_external_id','updated: external id matched (email)','2026-11-30T03:48:35.830Z','contact',NULL);
INSERT INTO "changes" VALUES(11,5,3,'delete','{}','deleted','deleted: removed from the source','2026-11-30T03:48:35.830Z','contact',NULL);
INSERT INTO "changes" VALUES(12,5,NULL,'purge','{}','purged','purged: deleted before 2026-11-30 (erasure)','2026-11-30T03:48:35.878Z','contact',NULL);
INSERT INTO "changes" VALUES(13,8,4,'create','{"record_type":[null,"sync"],"source":[null,"xpm"],"external_id":[null,"A7"],"given_name":[null,"Gus"],"family_name":[null,"Late"],"email":[null,"gus@example.org"]}','created','created: no existing match','2026-11-30T03:48:35.988Z','contact',NULL);
CREATE TABLE contact_customers (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    external_id TEXT NOT NULL,
    contact_ref TEXT NOT NULL,
    customer TEXT NOT NULL,
    customer_name TEXT NOT NULL DEFAULT '',
    bill_to TEXT NOT NULL DEFAULT 'N' CHECK (bill_to IN ('Y', 'N', 'NA')),
    sold_to TEXT NOT NULL DEFAULT 'N' CHECK (sold_to IN ('Y', 'N', 'NA')),
    ship_to TEXT NOT NULL DEFAULT 'N' CHECK (ship_to IN ('Y', 'N', 'NA')),
    correspondence TEXT NOT NULL DEFAULT 'N' CHECK (correspondence IN ('Y', 'N', 'NA')),
    extra TEXT NOT NULL DEFAULT '{}',
    hash INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted_at TEXT
);
CREATE TABLE contact_organisations (
    contact_id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    organisation_ref TEXT NOT NULL DEFAULT '',
    location_ref TEXT NOT NULL DEFAULT '',
    position TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL
);
CREATE TABLE contact_references (
    contact_id INTEGER NOT NULL,
    ref TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    PRIMARY KEY (contact_id, ref)
);
CREATE TABLE contacts (
    id INTEGER PRIMARY KEY,
    record_type TEXT NOT NULL DEFAULT 'manual'
        CHECK (record_type IN ('manual', 'external', 'sync')),
    forced_manual INTEGER NOT NULL DEFAULT 0 CHECK (forced_manual IN (0, 1)),
    source TEXT,
    external_id TEXT,
    given_name TEXT NOT NULL DEFAULT '',
    family_name TEXT NOT NULL DEFAULT '',
    display_name TEXT NOT NULL DEFAULT '',
    organisation TEXT NOT NULL DEFAULT '',
    email TEXT NOT NULL DEFAULT '',
    phone TEXT NOT NULL DEFAULT '',
    mobile TEXT NOT NULL DEFAULT '',
    street TEXT NOT NULL DEFAULT '',
    city TEXT NOT NULL DEFAULT '',
    region TEXT NOT NULL DEFAULT '',
    postcode TEXT NOT NULL DEFAULT '',
    country TEXT NOT NULL DEFAULT '',
    date_of_birth TEXT NOT NULL DEFAULT '',
    notes TEXT NOT NULL DEFAULT '',
    extra TEXT NOT NULL DEFAULT '{}',
    phone_e164 TEXT NOT NULL DEFAULT '',
    mobile_e164 TEXT NOT NULL DEFAULT '',
    hash INTEGER,
    source_hash INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted_at TEXT
);
INSERT INTO "contacts" VALUES(1,'sync',0,'xpm','A6','Manu','Al','','','manual@example.org','','','','','','','','','','{}','','',-2572843767263733278,-2572843767263733278,'2026-11-30T03:48:34.706Z','2026-11-30T03:48:34.708Z',NULL);
INSERT INTO "contacts" VALUES(2,'sync',0,'xpm','A1','Zoë','Ångström','','Acme','zoe@new.example.org','(02) 9123 4567','','','','','','','','','{"Partner":"AB"}','+61291234567','',8762646827132840275,8762646827132840275,'2026-11-30T03:48:34.708Z','2026-11-30T03:48:35.830Z',NULL);
INSERT INTO "contacts" VALUES(3,'sync',0,'xpm','A2','Bob','Quote"s','','','bob@example.org','','0400 000 002','','','','','','','line1
line2','{}','','+61400000002',3667832880997648471,3667832880997648471,'2026-11-30T03:48:34.708Z','2026-11-30T03:48:34.708Z',NULL);
INSERT INTO "contacts" VALUES(4,'sync',0,'xpm','A3','Cleo','Tab Name','','','','','','','','','','','','','{}','','',-5079704342216691254,-5079704342216691254,'2026-11-30T03:48:34.708Z','2026-11-30T03:48:34.708Z',NULL);
INSERT INTO "contacts" VALUES(6,'sync',1,'xpm','A5','Eve','Forced','','','eve@example.org','','','','','','','','','','{}','','',8324357472215927855,-2160423741842479865,'2026-11-30T03:48:34.708Z','2026-11-30T03:48:35.811Z',NULL);
INSERT INTO "contacts" VALUES(7,'sync',0,'crm','C1','Api','','','','api@x.org','','','','','','','','','','{}','','',6481489408703323153,6481489408703323153,'2026-11-30T03:48:35.810Z','2026-11-30T03:48:35.810Z',NULL);
INSERT INTO "contacts" VALUES(8,'sync',0,'xpm','A7','Gus','Late','','','gus@example.org','','','','','','','','','','{}','','',5504719481917250476,5504719481917250476,'2026-11-30T03:48:35.988Z','2026-11-30T03:48:35.988Z',NULL);
CREATE TABLE field_bases (
    contact_id INTEGER NOT NULL,
    field TEXT NOT NULL,
    base TEXT NOT NULL,
    PRIMARY KEY (contact_id, field)
) WITHOUT ROWID;
CREATE TABLE held_values (
    contact_id INTEGER NOT NULL,
    field TEXT NOT NULL,
    source_value TEXT NOT NULL,
    PRIMARY KEY (contact_id, field)
) WITHOUT ROWID;
CREATE TABLE link_snapshots (
    source TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    entries INTEGER NOT NULL,
    saved_at TEXT NOT NULL
);
INSERT INTO "link_snapshots" VALUES('crm',X'435344320100000000000000020000004331070000000000000011DC37DD46E0F259000000000000000002',1,'2026-11-30T03:48:35.810Z');
INSERT INTO "link_snapshots" VALUES('xpm',X'4353443206000000000000000200000041370800000000000000AC9BD91B34B1644CB23FD8BFDD94324D02020000004132030000000000000057C85C7F92C2E6325CE4CCF336000F0D020200000041360100000000000000E2D9AAA5396C4BDC7895D3D58E6A10C9020200000041330400000000000000CA312A6ED04381B95CE076CBF40BC23502020000004131020000000000000053E974DFDC2C9B79304C30A9F5181B3F02020000004135060000000000000007A5289F0DA204E2000000000000000003',6,'2026-11-30T03:48:35.988Z');
CREATE TABLE locations (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    external_id TEXT NOT NULL,
    organisation_ref TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',
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
    deleted_at TEXT
);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO "meta" VALUES('contact_id_hwm','8');
INSERT INTO "meta" VALUES('source.xpm.columns','{"email": "email", "family_name": "family_name", "given_name": "given_name", "mobile": "mobile", "notes": "notes", "organisation": "organisation", "phone": "phone"}');
INSERT INTO "meta" VALUES('erasure.completed_at','2026-11-30T03:48:35.913Z');
CREATE TABLE organisations (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    external_id TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    website TEXT NOT NULL DEFAULT '',
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
    deleted_at TEXT
);
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
CREATE TABLE review_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER,
    source TEXT NOT NULL,
    external_id TEXT NOT NULL,
    contact_id INTEGER,
    candidate_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    score REAL,
    explanation TEXT NOT NULL DEFAULT '{}',
    reason TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'accepted', 'rejected')),
    created_at TEXT NOT NULL,
    decided_at TEXT
);
CREATE TABLE review_rejections (
    source TEXT NOT NULL,
    external_id TEXT NOT NULL,
    candidate_id INTEGER NOT NULL,
    rejected_at TEXT NOT NULL,
    PRIMARY KEY (source, external_id, candidate_id)
);
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
, entity_type TEXT NOT NULL DEFAULT 'contact', forced INTEGER NOT NULL DEFAULT 0, allow_column_drop INTEGER NOT NULL DEFAULT 0, deletions_skipped INTEGER NOT NULL DEFAULT 0);
INSERT INTO "runs" VALUES(1,'xpm','full','/tmp/tmp351rpvjx/a.csv','b7babc7391c47742a97d8976f0e30d86','2026-11-30T03:48:34.707Z','2026-11-30T03:48:35.796Z','ok',6,5,1,0,0,0,0,0,0,0,0,0,0,1089,NULL,'contact',0,0,0);
INSERT INTO "runs" VALUES(2,'crm','full','api',NULL,'2026-11-30T03:48:35.809Z','2026-11-30T03:48:35.810Z','ok',1,1,0,0,0,0,0,0,0,0,0,0,0,1,NULL,'contact',0,0,0);
INSERT INTO "runs" VALUES(3,'xpm','full','/tmp/tmp351rpvjx/b.csv','8077720783011ccb8b2a4e534f8be530','2026-11-30T03:48:35.817Z','2026-11-30T03:48:35.866Z','ok',5,0,0,1,3,1,0,0,1,0,1,0,0,48,NULL,'contact',0,0,0);
INSERT INTO "runs" VALUES(4,'xpm','full','/tmp/tmp351rpvjx/c.csv','6404acd68f29034c543a5904e2451fc1','2026-11-30T03:48:35.969Z','2026-11-30T03:48:36.006Z','ok',6,1,0,0,4,1,0,0,0,0,0,0,0,36,NULL,'contact',0,0,0);
CREATE TABLE source_policies (
    source TEXT PRIMARY KEY,
    ownership TEXT NOT NULL DEFAULT '{}',
    unique_fields TEXT NOT NULL DEFAULT '[]',
    updated_at TEXT NOT NULL
, sync TEXT NOT NULL DEFAULT '{}');
CREATE UNIQUE INDEX contacts_link ON contacts (source, external_id)
    WHERE external_id IS NOT NULL AND deleted_at IS NULL;
CREATE INDEX contacts_local ON contacts (record_type)
    WHERE record_type != 'sync' AND deleted_at IS NULL;
CREATE INDEX runs_source ON runs (source, id);
CREATE INDEX activities_open ON activities (status, contact_id);
CREATE INDEX review_open ON review_items (status);
CREATE INDEX quarantine_run ON quarantine (run_id);
CREATE TRIGGER link_snapshot_update
    AFTER UPDATE OF source, external_id, source_hash, record_type, forced_manual, deleted_at
    ON contacts
    BEGIN DELETE FROM link_snapshots WHERE source IN (OLD.source, NEW.source); END;
CREATE TRIGGER link_snapshot_delete AFTER DELETE ON contacts
    BEGIN DELETE FROM link_snapshots WHERE source = OLD.source; END;
CREATE INDEX changes_contact ON changes (contact_id);
CREATE INDEX changes_entity ON changes (entity_type, object_id) WHERE contact_id IS NULL;
CREATE UNIQUE INDEX organisations_link ON organisations (source, external_id);
CREATE UNIQUE INDEX locations_link ON locations (source, external_id);
CREATE INDEX locations_organisation ON locations (source, organisation_ref);
CREATE UNIQUE INDEX contact_customers_link ON contact_customers (source, external_id);
CREATE INDEX contact_customers_contact ON contact_customers (source, contact_ref);
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
    WHERE correspondence = 'Y';
CREATE INDEX outbox_open ON outbox (source, status, id) WHERE status IN ('pending', 'sent');
CREATE INDEX outbox_contact ON outbox (contact_id) WHERE status IN ('pending', 'sent');
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('changes',13);
INSERT INTO "sqlite_sequence" VALUES('runs',4);
INSERT INTO "sqlite_sequence" VALUES('activities',1);
COMMIT;
PRAGMA user_version = 5;
