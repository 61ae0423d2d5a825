"""Organisations and locations (seed 003): details stored once, so one change is
one update and one feed entry seen by every linked contact; per-link fields;
local ids never reused; full and incremental entity feeds; migration from v1."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from contactsync_agent import store as store_mod
from contactsync_agent.errors import SafetyLimitError
from contactsync_agent.mirror import Mirror

MAP = {"Company ID": "organisation_ref", "Location ID": "location_ref", "Position": "position"}

ORGS = [{"ID": "CO1", "Name": "CompanyName", "Phone": "02 9000 0000"},
        {"ID": "CO2", "Name": ""}, {"ID": "CO3", "Name": ""}]
LOCS = [{"ID": "L1", "Company ID": "CO1", "Name": "Head office", "Street": "1 George St",
         "City": "Sydney"},
        {"ID": "L2", "Company ID": "CO1", "Name": "Branch", "City": "Parramatta"},
        {"ID": "L3", "Company ID": "CO2"}, {"ID": "L4", "Company ID": "CO3"}]
CONTACTS = [
    {"id": "P1", "name": "Ann Lee", "email": "ann@co.example", "Company ID": "CO1",
     "Location ID": "L1", "Position": "Partner"},
    {"id": "P2", "name": "Ben Roe", "email": "ben@co.example", "Company ID": "CO1",
     "Location ID": "L1", "Position": "Accountant"},
    {"id": "P3", "name": "Cat Poe", "email": "cat@co.example", "Company ID": "CO1",
     "Location ID": "L2", "Position": "Receptionist"},
    {"id": "P4", "name": "Dan Fox", "Company ID": "CO2", "Location ID": "L3"},
    {"id": "P5", "name": "Eve Kim", "Location ID": "L4"},  # organisation via its location
]


@pytest.fixture
def company(mirror: Mirror) -> Mirror:
    mirror.entities.sync_organisations("xpm", ORGS)
    mirror.entities.sync_locations("xpm", LOCS)
    mirror.sync("xpm", CONTACTS, mapping=MAP)
    return mirror


def view(m: Mirror) -> dict[str, dict]:
    cur = m.store.conn.execute(
        "SELECT c.external_id, v.* FROM contacts_with_organisation v "
        "JOIN contacts c ON c.id = v.contact_id")
    cols = [d[0] for d in cur.description]
    return {r[0]: dict(zip(cols, r, strict=True)) for r in cur}


def test_contacts_link_to_organisation_and_location(company: Mirror) -> None:
    v = view(company)
    assert v["P1"]["organisation_name"] == "CompanyName"
    assert v["P1"]["location_name"] == "Head office"
    assert v["P3"]["location_city"] == "Parramatta"
    assert v["P4"]["organisation_external_id"] == "CO2"
    assert v["P5"]["organisation_external_id"] == "CO3"  # from its location
    orgs = {o["external_id"]: o["id"] for o in company.entities.organisations("xpm")}
    assert {v[p]["organisation_id"] for p in ("P1", "P2", "P3")} == {orgs["CO1"]}


def test_one_organisation_change_is_one_update_and_one_feed_entry(company: Mirror) -> None:
    last = company.changes()[-1].seq
    report = company.entities.sync_organisations(
        "xpm", [{**ORGS[0], "Name": "CompanyName Pty Ltd"}, *ORGS[1:]])
    assert report.counts["updated"] == 1 and report.counts["unchanged"] == 2
    new = company.changes(since=last)
    assert len(new) == 1
    ch = new[0]
    assert (ch.entity_type, ch.op, ch.contact_id) == ("organisation", "update", None)
    assert ch.fields == {"name": ["CompanyName", "CompanyName Pty Ltd"]}
    # ... and every linked contact shows it, through the view.
    v = view(company)
    assert {v[p]["organisation_name"] for p in ("P1", "P2", "P3")} == {"CompanyName Pty Ltd"}
    # No contact row was written.
    assert company.store.conn.execute(
        "SELECT count(*) FROM changes WHERE seq > ? AND contact_id IS NOT NULL", (last,)
    ).fetchone()[0] == 0


def test_one_location_change_reaches_only_its_contacts(company: Mirror) -> None:
    last = company.changes()[-1].seq
    company.entities.sync_locations("xpm", [{**LOCS[0], "Street": "2 George St"}, *LOCS[1:]])
    new = company.changes(since=last)
    assert [(c.entity_type, c.op) for c in new] == [("location", "update")]
    v = view(company)
    assert v["P1"]["location_street"] == v["P2"]["location_street"] == "2 George St"
    assert v["P3"]["location_street"] == ""


def test_per_link_fields_live_on_the_link(company: Mirror) -> None:
    rows = dict(company.store.conn.execute(
        "SELECT c.external_id, co.position FROM contact_organisations co "
        "JOIN contacts c ON c.id = co.contact_id"))
    assert rows["P1"] == "Partner" and rows["P2"] == "Accountant"
    # A position change is a change of that contact's link only.
    last = company.changes()[-1].seq
    company.sync("xpm", [{**CONTACTS[0], "Position": "Managing partner"}, *CONTACTS[1:]],
                 mapping=MAP)
    new = company.changes(since=last)
    assert len(new) == 1 and new[0].entity_type == "contact"
    assert view(company)["P1"]["position"] == "Managing partner"
    assert view(company)["P2"]["position"] == "Accountant"
    cid = new[0].contact_id
    assert company.entities.organisation_of(cid)["position"] == "Managing partner"


def test_moving_a_contact_and_dropping_its_link(company: Mirror) -> None:
    moved = [{**CONTACTS[1], "Location ID": "L2"},
             {**CONTACTS[2], "Company ID": "", "Location ID": "", "Position": ""},
             CONTACTS[0], *CONTACTS[3:]]
    company.sync("xpm", moved, mapping=MAP)
    v = view(company)
    assert v["P2"]["location_name"] == "Branch"
    assert v["P3"]["organisation_id"] is None and v["P3"]["location_id"] is None
    assert company.store.conn.execute(
        "SELECT count(*) FROM contact_organisations co JOIN contacts c ON c.id = co.contact_id "
        "WHERE c.external_id = 'P3'").fetchone()[0] == 0


def test_organisation_arriving_after_its_contacts(mirror: Mirror) -> None:
    mirror.sync("xpm", CONTACTS[:1], mapping=MAP)
    assert view(mirror)["P1"]["organisation_id"] is None
    mirror.entities.sync_organisations("xpm", ORGS[:1])
    assert view(mirror)["P1"]["organisation_name"] == "CompanyName"


def test_full_feed_deletes_absent_incremental_only_explicit(company: Mirror) -> None:
    r = company.entities.sync_organisations("xpm", [*ORGS[:2], {"ID": "CO4", "Name": "New"}],
                                            mode="incremental")
    assert r.counts["created"] == 1 and r.counts["deleted"] == 0
    r = company.entities.sync_organisations("xpm", [{"ID": "CO2", "Deleted": "yes"}],
                                            mode="incremental")
    assert r.counts["deleted"] == 1
    assert view(company)["P4"]["organisation_id"] is None  # deleted: gone from the view
    last = company.changes()[-1]
    assert (last.entity_type, last.op) == ("organisation", "delete")
    r = company.entities.sync_organisations("xpm", [*ORGS, {"ID": "CO4", "Name": "New"}],
                                            mode="full")
    assert r.counts["created"] == 1  # CO2 restored under its old local id
    r = company.entities.sync_organisations(
        "xpm", ORGS[:1] + ORGS[2:] + [{"ID": "CO4", "Name": "New"}], mass_delete_limit=0.5)
    assert r.counts["deleted"] == 1


def test_mass_deletion_guard_for_entities(company: Mirror) -> None:
    with pytest.raises(SafetyLimitError, match="organisation snapshot"):
        company.entities.sync_organisations("xpm", ORGS[:1])
    assert len(company.entities.organisations("xpm")) == 3
    with pytest.raises(SafetyLimitError):
        company.entities.sync_organisations("xpm", [])
    r = company.entities.sync_organisations("xpm", ORGS[:1], allow_mass_delete=True)
    assert r.counts["deleted"] == 2
    assert company.runs(limit=1)[0]["entity_type"] == "organisation"


def test_local_ids_never_reused(mirror: Mirror) -> None:
    mirror.entities.sync_organisations("xpm", ORGS)
    ids = {o["external_id"]: o["id"] for o in mirror.entities.organisations()}
    mirror.entities.sync_organisations("xpm", ORGS[:1], allow_mass_delete=True)
    mirror.store.conn.execute("DELETE FROM organisations WHERE external_id = 'CO3'")
    mirror.entities.sync_organisations("xpm", [*ORGS[:1], {"ID": "CO9", "Name": "Later"}])
    new = {o["external_id"]: o["id"] for o in mirror.entities.organisations()}
    assert new["CO9"] > max(ids.values())
    # Source ids are never local ids.
    mirror.entities.sync_organisations("other", [{"ID": "1", "Name": "One"}])
    one = next(iter(mirror.entities.organisations("other")))
    assert one["id"] == new["CO9"] + 1


def test_bad_rows_are_quarantined_not_fatal(mirror: Mirror) -> None:
    r = mirror.entities.sync_customer_links("xpm", [
        {"Contact ID": "P1", "Customer ID": "5001", "Bill To": "maybe"},
        {"Contact ID": "", "Customer ID": "5001"},
        {"Contact ID": "P1", "Customer ID": "6001", "Bill To": "Y"},
    ])
    assert r.counts["created"] == 1 and r.counts["rejected"] == 2
    reasons = [q["reason"] for q in mirror.quarantine(r.run_id)]
    assert any("not Y, N or NA" in x for x in reasons)
    assert any("empty contact ref" in x for x in reasons)
    r = mirror.entities.sync_organisations("xpm", [{"ID": "A", "Name": "x"},
                                                   {"ID": "A", "Name": "y"}])
    assert r.counts["created"] == 1 and r.counts["rejected"] == 1


def test_entity_file_and_cli(tmp_path: Path, db_path: Path) -> None:
    from click.testing import CliRunner
    from contactsync_agent.cli import _load_extensions, cli

    _load_extensions()
    f = tmp_path / "orgs.csv"
    f.write_text("Organisation ID,Name,Website\nCO1,CompanyName,=HYPERLINK(\"x\")\n")
    r = CliRunner().invoke(cli, ["--db", str(db_path), "entities", "sync", "organisations",
                                 str(f), "-s", "xpm"])
    assert r.exit_code == 0, r.output
    assert "1 created" in r.output
    r = CliRunner().invoke(cli, ["--db", str(db_path), "entities", "list", "organisations",
                                 "--json"])
    assert '"CompanyName"' in r.output


def test_v1_database_migrates(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    con = sqlite3.connect(db, isolation_level=None)
    for stmt in store_mod._split_sql(store_mod.MIGRATIONS[1]):
        con.execute(stmt)
    con.execute("PRAGMA user_version = 1")
    con.execute("INSERT INTO contacts (id, record_type, given_name, created_at, updated_at) "
                "VALUES (1, 'manual', 'Old', 't', 't')")
    for cid in (1, 1, 1):
        con.execute("INSERT INTO changes (contact_id, op, fields, reason_code, reason, at) "
                    "VALUES (?, 'update', '{}', 'x', 'x', 't')", (cid,))
    con.execute("DELETE FROM changes WHERE seq = 3")  # the feed's high-water mark is 3
    con.close()
    with Mirror.open(db) as m:
        assert m.store.conn.execute("PRAGMA user_version").fetchone()[0] == store_mod.SCHEMA_VERSION
        old = m.changes()
        assert [(c.seq, c.entity_type, c.entity_id) for c in old] == [
            (1, "contact", 1), (2, "contact", 1)]
        m.entities.sync_organisations("xpm", ORGS[:1])
        assert m.changes()[-1].seq == 4  # seq never goes back


def test_migration_3_drops_the_insert_trigger_and_inserts_still_drop_snapshots(
        tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        m.sync("xpm", [{"external_id": "A", "name": "Ann Lee"}], mode="full")
        triggers = {r[0] for r in m.store.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert "link_snapshot_insert" not in triggers
        assert m.store.contacts.load_snapshot("xpm") is not None
        m.add_contact(name="Left Behind", record_type="manual", source="xpm", external_id="B")
        assert m.store.contacts.load_snapshot("xpm") is None  # the insert path dropped it
        m.sync("xpm", [{"external_id": "C", "name": "Cy Dee"}], mode="incremental")
        assert m.store.contacts.load_snapshot("xpm") is not None
        m.sync("xpm", [{"external_id": "D", "name": "Di Eck"}], mode="incremental")
        snap = m.store.contacts.load_snapshot("xpm")
        assert snap is not None
        n = m.store.conn.execute("SELECT entries FROM link_snapshots").fetchone()[0]
        assert n == 4


def test_created_entity_payloads_written_by_sqlite_equal_the_python_payload(
        tmp_path: Path) -> None:
    import json

    from contactsync_agent import entities

    recs = [
        {"Organisation ID": "O1", "Name": 'Café "Zoë" & Søn\\', "Website": "",
         "Phone": "02 9000 0000", "ABN": "12 345", "Note": "line\u0001one"},
        {"Organisation ID": "O2", "Name": "日本語 株式会社", "Website": "https://x.example"},
        {"Organisation ID": "O3", "Name": "Plain"},
    ]
    with Mirror.open(tmp_path / "m.db") as m:
        m.entities.sync_organisations("xpm", recs)
        got = {row[0]: json.loads(row[1]) for row in m.store.conn.execute(
            "SELECT object_id, fields FROM changes WHERE entity_type = 'organisation'")}
        ids = {o["external_id"]: o["id"] for o in m.entities.organisations("xpm")}
    table = entities.build_table(entities.ORGANISATION, None, "t")
    incoming, rejected = entities.map_records(entities.ORGANISATION, recs, table)
    assert not rejected and len(got) == 3
    for rec in incoming:
        want = entities._created_payload(entities.ORGANISATION, "xpm", rec)
        assert got[ids[rec.external_id]] == json.loads(json.dumps(want))
    assert got[ids["O3"]] == {"source": [None, "xpm"], "external_id": [None, "O3"],
                              "name": [None, "Plain"]}


def test_links_written_with_the_bulk_creates_equal_the_set_based_relink(
        company: Mirror) -> None:
    """The bulk path hands the links over from the batch; the set-based pass
    (used for contacts created any other way) must write the very same rows."""
    m = company
    m.sync("xpm", [{"id": "P6", "name": "Fay Ng", "Position": ""},
                   {"id": "P7", "name": "Gus Ode"}], mode="incremental", mapping=MAP)
    q = ("SELECT contact_id, source, organisation_ref, location_ref, position "
         "FROM contact_organisations ORDER BY contact_id")
    bulk = m.store.conn.execute(q).fetchall()
    assert [r[2:] for r in bulk[:5]] == [
        ("CO1", "L1", "Partner"), ("CO1", "L1", "Accountant"), ("CO1", "L2", "Receptionist"),
        ("CO2", "L3", ""), ("", "L4", "")]
    with pytest.raises(LookupError), m.store.transaction():  # rolled back
        m.store.conn.execute("DELETE FROM contact_organisations")
        m.store.entities.relink_contacts("xpm", 1, [], "t")
        assert m.store.conn.execute(q).fetchall() == bulk
        raise LookupError
    assert m.store.conn.execute(q).fetchall() == bulk


@pytest.mark.parametrize("values,extra", [
    ({"name": "Plain"}, {}),
    ({"name": 'Café "Zoë" \\ Søn', "notes": "line\nnext\ttab\x01\x1f\x7f"},
     {"ABN": "12 345", "Ärger": "ü", "aa": "", "Z": "\u2028\u00e9"}),
    ({"name": "日本語 🙂", "website": "https://x.example/?a=1&b=<2>"}, {"k'ey": 'v"al'}),
])
def test_entity_hash_in_rust_equals_the_python_canonical_hash(
        values: dict[str, str], extra: dict[str, str]) -> None:
    import xxhash
    from contactsync_agent import entities

    spec = entities.ORGANISATION
    full = dict.fromkeys(spec.fields, "") | values
    want = xxhash.xxh3_64_intdigest(entities.entity_canonical(spec, full, extra))
    want = want - (1 << 64) if want >= 1 << 63 else want
    assert entities.entity_hash(spec, full, extra) == want
    # text the core cannot take is hashed by the Python serialisation
    odd = full | {"name": "lone \ud800 surrogate"}
    got = entities.entity_hash(spec, odd, extra)
    ref = xxhash.xxh3_64_intdigest(entities.entity_canonical(spec, odd, extra))
    assert got == (ref - (1 << 64) if ref >= 1 << 63 else ref)


ORG_CSV = (
    'ID,Name,Website,Note,ABN,Phone\n'
    'O1,"  Café ""Zoë""   Pty ",https://a.example,"line one\nline two",12 345,02 9000 0000\n'
    'O2,日本語 株式会社,,,,\n'
    ',No Id,,,,\n'
    'O4,  Spaces  ,,,"  keep  ",\n'
)
LINK_CSV = (
    'Contact ID,Customer,Customer Name,Bill To,Sold To,Ship To,Correspondence,Deleted\n'
    'P1,C1,Acme,Y,n,NA,yes,\n'
    'P2,C1,Acme,,,,,\n'
    'P3,C2,Beta,maybe,,,,\n'
    'P4,,Gamma,Y,,,,\n'
    'P5,C3,Delta,N,N,N,N,yes\n'
)


@pytest.mark.parametrize("kind,text", [("organisation", ORG_CSV), ("customer_link", LINK_CSV)])
def test_csv_mapped_by_the_core_equals_the_python_mapping(
        tmp_path: Path, kind: str, text: str) -> None:
    from contactsync_agent import entities
    from contactsync_agent.entities import read_records

    spec = entities.SPECS[kind]
    path = tmp_path / f"{kind}.csv"
    path.write_text(text, encoding="utf-8")
    table = entities.build_table(spec, None, "t")
    py_rows, py_rej = entities.map_records(spec, read_records(path), table)
    rs_rows, rs_rej = entities.map_csv(spec, str(path), table)
    strip = [(r.external_id, r.values, r.extra, r.deleted, r.hash) for r in py_rows]
    assert strip == [(r.external_id, r.values, r.extra, r.deleted, r.hash) for r in rs_rows]
    assert [why for _, why, _ in py_rej] == [why for _, why, _ in rs_rej]
    assert py_rej, "the examples hold rows to reject"
    # The core names the file's line (the header is line 1; a quoted newline counts).
    lines = text.split("\n")
    for line, _, raw in rs_rej:
        first_value = raw.split(", ")[0].split("=", 1)[1]
        assert lines[line - 1].startswith(first_value)


def test_entity_csv_in_windows_1252_is_read(tmp_path: Path) -> None:
    path = tmp_path / "orgs.csv"
    path.write_bytes("ID;Name\nO1;Société Générale\n".encode("cp1252"))
    with Mirror.open(tmp_path / "m.db") as m:
        r = m.entities.sync_file("organisation", "xpm", path)
        assert r.counts["created"] == 1
        assert m.entities.organisations("xpm")[0]["name"] == "Société Générale"


ORG_FILE = (
    'ID,Name,Website,ABN,Deleted\n'
    'O1,"Acme, ""The"" Co",https://a.example,12 345,\n'
    'O2,Beta,,,\n'
    'O1,Acme again,,,\n'          # a repeat: rejected, the first one wins
    'O9,Gone,,,yes\n'             # a delete of an id the mirror never had
    ',No id,,,\n'                 # unreadable: quarantined
    'O3,Gamma Pty,,98 765,\n'
)


def test_first_entity_file_import_equals_the_general_path(tmp_path: Path) -> None:
    """An entity CSV into an empty table takes the core's create-all path; the
    same records through the general path must leave the same mirror."""
    import json
    import re

    from contactsync_agent.entities import read_records

    path = tmp_path / "orgs.csv"
    path.write_text(ORG_FILE, encoding="utf-8")
    cols = "id, source, external_id, name, website, email, phone, extra, hash, deleted_at"

    def state(m: Mirror) -> tuple[object, ...]:
        q = m.store.conn.execute
        return (
            q(f"SELECT {cols} FROM organisations ORDER BY id").fetchall(),
            [(op, json.loads(f), code, reason, kind, oid) for op, f, code, reason, kind, oid in q(
                "SELECT op, fields, reason_code, reason, entity_type, object_id FROM changes "
                "ORDER BY seq")],
            # the general path counts records, the file path names lines
            [re.sub(r"line \d+", "line N", r) for (r,) in q(
                "SELECT reason FROM quarantine ORDER BY id")],
        )

    with Mirror.open(tmp_path / "fast.db") as fast, Mirror.open(tmp_path / "slow.db") as slow:
        r1 = fast.entities.sync_file("organisation", "xpm", path)
        r2 = slow.entities.sync_organisations("xpm", list(read_records(path)))
        assert r1.counts == r2.counts
        assert r1.counts["created"] == 3 and r1.counts["rejected"] == 2
        assert r1.counts["records"] == 6
        assert state(fast) == state(slow)
        lines = {line for line, _ in r1.rejected}
        assert lines == {4, 6}  # the file's lines (header is line 1)
        # A second file goes through the general path: an update and a delete.
        path.write_text("ID,Name,ABN\nO1,Acme Renamed,12 345\nO2,Beta,\n", encoding="utf-8")
        r3 = fast.entities.sync_file("organisation", "xpm", path, allow_mass_delete=True)
        assert (r3.counts["updated"], r3.counts["deleted"], r3.counts["unchanged"]) == (1, 1, 1)
        assert [o["name"] for o in fast.entities.organisations("xpm")] == ["Acme Renamed", "Beta"]


def test_a_position_without_organisation_or_location_is_no_link(mirror: Mirror) -> None:
    mirror.sync("xpm", [{"id": "A", "name": "Ann Lee", "Position": "CEO"},
                        {"id": "B", "name": "Bo Li", "Company ID": "CO1", "Position": "Clerk"}],
                mapping=MAP)
    rows = mirror.store.conn.execute(
        "SELECT organisation_ref, location_ref, position FROM contact_organisations").fetchall()
    assert rows == [("CO1", "", "Clerk")]
    with pytest.raises(LookupError), mirror.store.transaction():  # the set-based pass agrees
        mirror.store.conn.execute("DELETE FROM contact_organisations")
        mirror.store.entities.relink_contacts("xpm", 1, [], "t")
        assert mirror.store.conn.execute(
            "SELECT organisation_ref, location_ref, position FROM contact_organisations"
        ).fetchall() == rows
        raise LookupError


def test_entity_csv_lines_with_crlf_blank_lines_and_a_trailing_delimiter(
        tmp_path: Path) -> None:
    path = tmp_path / "orgs.csv"
    path.write_bytes(b"ID,Name\r\nO1,A\r\nO2,B,\r\n\r\n,NoId\r\nO1,Again\r\nO3,C,extra\r\n")
    with Mirror.open(tmp_path / "m.db") as m:
        r = m.entities.sync_file("organisation", "xpm", path)
        assert r.counts["created"] == 2  # O2's empty trailing cell loses nothing
        assert r.rejected == [
            (5, "empty external id"),
            (6, "duplicate external id 'O1' (first seen at line 2)"),
            (7, "3 fields where the header has 2 (is a ',' inside a value not quoted?)")]


def test_entity_messages_quote_like_python(tmp_path: Path) -> None:
    from contactsync_agent import entities
    from contactsync_agent.entities import read_records

    path = tmp_path / "links.csv"
    path.write_text("Link ID,Contact ID,Customer,Bill To\nL'1,P1,C1,Y\nL'1,P2,C1,Y\n"
                    "L2,P3,C2,it's\n", encoding="utf-8")
    spec = entities.CUSTOMER_LINK
    table = entities.build_table(spec, None, "t")
    py_rows, py_rej = entities.map_records(spec, read_records(path), table)
    py_dups = entities.plan_entities(py_rows, {}, "full").duplicates
    f = entities.read_csv(spec, str(path), table)
    assert [why for _, why, _ in f.rejected()] == [why for _, why, _ in py_rej]
    rs_dups = f.create_plan()[1]
    assert [why.replace("line 2", "line N") for _, why, _ in rs_dups] == [
        why.replace("line 1", "line N") for _, why, _ in py_dups]


def test_entity_reader_refuses_flags_that_are_not_fields(tmp_path: Path) -> None:
    from contactsync_agent import _core
    from contactsync_agent.errors import ContactSyncError

    path = tmp_path / "x.csv"
    path.write_text("ID\nA\n", encoding="utf-8")
    with pytest.raises((ValueError, ContactSyncError), match="not one of the fields"):
        _core.read_entity_csv(str(path), {"id": "external_id"}, ["name"], ["bill_to"], [],
                              False)


def test_entity_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    from contactsync_agent.errors import SafetyLimitError

    path = tmp_path / "orgs.csv"
    path.write_text("ID,Name\nO1,A\n", encoding="utf-8")
    with Mirror.open(tmp_path / "m.db") as m:
        with pytest.raises(SafetyLimitError, match="maximum file size of 10 bytes"):
            m.entities.sync_file("organisation", "xpm", path, max_file_bytes=10)
        assert m.entities.organisations("xpm") == []
