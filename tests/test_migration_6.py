"""Schema 6 (issue 19): the change feed stored compactly in `change_log`, read
through the `changes` view with the old columns and meaning. A database
written by the schema-5 code (tests/data/schema5, made by its make.py) is
migrated and reads the same; new compact entries read as the old ones would
have; they keep saying what the contact was when created, whatever happens
to it later (updates, a conversion, a purge, a hard delete)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from contactsync_agent import _core, maintenance
from contactsync_agent.mapping import FIELDS
from contactsync_agent.mirror import Mirror
from contactsync_agent.store import SCHEMA_VERSION

DATA = Path(__file__).parent / "data" / "schema5"


def schema5_db(tmp_path: Path) -> Path:
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.executescript((DATA / "mirror.sql").read_text(encoding="utf-8"))
    con.close()
    return db


def rows(db: Path, sql: str) -> list[list[Any]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [list(r) for r in con.execute(sql)]
    finally:
        con.close()


def test_a_schema_5_database_with_data_migrates_and_reads_the_same(tmp_path: Path) -> None:
    db = schema5_db(tmp_path)
    expected = json.loads((DATA / "expected.json").read_text(encoding="utf-8"))
    assert rows(db, "PRAGMA user_version") == [[5]]
    assert rows(db, "SELECT * FROM changes ORDER BY seq") == expected["changes"]
    with Mirror.open(db) as m:
        assert m.store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert [c.seq for c in m.changes()] == [r[0] for r in expected["changes"]]
    # A reader's SQL is unchanged: same columns, same rows, same order.
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    cur = con.execute("SELECT * FROM changes ORDER BY seq")
    assert [d[0] for d in cur.description] == [
        "seq", "contact_id", "run_id", "op", "fields", "reason_code", "reason", "at",
        "entity_type", "object_id", "entity_id"]
    assert [list(r) for r in cur] == expected["changes"]
    con.close()
    assert rows(db, "SELECT * FROM contacts ORDER BY id") == expected["contacts"]
    assert rows(db, "SELECT type FROM sqlite_master WHERE name = 'changes'") == [["view"]]
    # The AUTOINCREMENT mark came along: seq never goes back.
    top = max(r[0] for r in expected["changes"])
    with Mirror.open(db) as m:
        m.sync("xpm2", [{"external_id": "N1", "given_name": "New"}])
        assert [c.seq for c in m.changes(since=top)] == [top + 1]
    # A backup checks the copy is a mirror (its `changes` is a view now).
    report = maintenance.backup(db, tmp_path / "backup.db")
    assert report.schema_version == SCHEMA_VERSION


def payload(fields_json: str) -> dict[str, Any]:
    return dict(json.loads(fields_json))


RECORDS = [
    {"external_id": "E1", "given_name": "Zoë", "family_name": "Quote\"s \\ back",
     "email": "zoe@example.org", "notes": "two\nlines\ttab", "Partner": "AB"},
    {"external_id": "E2", "given_name": "Ctl\u0001x", "mobile": "0400 000 001"},
    {"external_id": "E3", "organisation": "Only Org"},
]


def test_a_compact_create_reads_as_the_payload_the_import_wrote_before(
        tmp_path: Path) -> None:
    """Byte for byte: the view writes the JSON the Rust import wrote in schema 5."""
    with Mirror.open(tmp_path / "m.db") as m:
        m.sync("xpm", RECORDS)
        stored = m.store.conn.execute(
            "SELECT fields, reason, at FROM change_log ORDER BY seq").fetchall()
        assert stored == [("", "", "")] * 3, "bulk creates are stored by reference"
        got = m.store.conn.execute(
            "SELECT ch.contact_id, ch.fields, ch.reason, ch.at, c.created_at FROM changes ch "
            "JOIN contacts c ON c.id = ch.contact_id ORDER BY seq").fetchall()
    mapping = {f: f for f in ("external_id", *FIELDS)}
    batch = _core.Batch.from_dicts([dict(r) for r in RECORDS], mapping, _core.Differ())
    want = batch.create_feed(got[0][0], "xpm")
    assert [(cid, fields) for cid, fields, *_ in got] == want
    assert {r[2] for r in got} == {"created: no existing match"}
    assert all(r[3] == r[4] for r in got)


def test_a_compact_create_keeps_what_the_contact_was_when_created(tmp_path: Path) -> None:
    with Mirror.open(tmp_path / "m.db") as m:
        m.sync("xpm", RECORDS)
        before = {c.contact_id: (c.fields, c.at) for c in m.changes()}
        # An update, a local edit that converts nothing, a forced-manual flag,
        # a deletion by the source: the create entries still say the same.
        m.sync("xpm", [{**RECORDS[0], "email": "zoe@new.example.org"}, RECORDS[1]],
               allow_mass_delete=True)
        m.set_forced_manual(2)
        after = {c.contact_id: (c.fields, c.at) for c in m.changes() if c.op == "create"}
        assert after == before
        stored = dict(m.store.conn.execute(
            "SELECT contact_id, fields FROM change_log WHERE op = 'create'").fetchall())
        assert stored[1] != "", "written out before the update"
        assert stored[3] == "", "a soft delete changes no value: still by reference"
        # A hard delete of the row (what an auto-link does to a created contact)
        # writes it out too.
        with m.store.transaction():
            m.store.conn.execute("DELETE FROM contacts WHERE id = 2")
        assert {c.contact_id: (c.fields, c.at) for c in m.changes()
                if c.op == "create"} == before


def test_a_purge_blanks_a_compact_create_and_keeps_its_time(tmp_path: Path) -> None:
    with Mirror.open(tmp_path / "m.db") as m:
        m.sync("xpm", RECORDS)
        at = {c.contact_id: c.at for c in m.changes()}
        m.sync("xpm", RECORDS[1:], allow_mass_delete=True)  # E1 deleted by the source
        m.purge(0)
        [create] = [c for c in m.changes() if c.contact_id == 1 and c.op == "create"]
        assert create.fields == {} and create.at == at[1]
        text = "\n".join(str(v) for r in m.store.conn.execute("SELECT * FROM change_log")
                         for v in r)
        assert "zoe@example.org" not in text


def test_old_style_writes_through_the_view_still_work(tmp_path: Path) -> None:
    """Code written against the table (another branch, a script) can still
    insert, update and delete through the view."""
    with Mirror.open(tmp_path / "m.db") as m:
        m.sync("xpm", RECORDS[:1])
        conn = m.store.conn
        with m.store.transaction():
            conn.execute("INSERT INTO changes (contact_id, op, fields, reason_code, reason, at) "
                         "VALUES (1, 'update', '{}', 'x', 'why', 't')")
        seqs = [c.seq for c in m.changes()]
        assert seqs == [1, 2] and m.changes()[1].entity_type == "contact"
        with m.store.transaction():
            conn.execute("UPDATE changes SET reason = 'because' WHERE seq = 2")
            conn.execute("DELETE FROM changes WHERE seq = 1")
        assert [(c.seq, c.reason) for c in m.changes()] == [(2, "because")]


@pytest.mark.parametrize("n", [3000])
def test_compact_entries_take_a_fraction_of_the_space(tmp_path: Path, n: int) -> None:
    recs = [{"external_id": f"E{i}", "given_name": f"Given{i}", "family_name": "Family",
             "email": f"person{i}@example.org", "phone": "(02) 9123 4567"} for i in range(n)]
    with Mirror.open(tmp_path / "m.db") as m:
        m.sync("xpm", recs)
        conn = m.store.conn
        log = conn.execute("SELECT sum(pgsize) FROM dbstat WHERE name = 'change_log'"
                           ).fetchone()[0]
        contacts = conn.execute("SELECT sum(pgsize) FROM dbstat WHERE name = 'contacts'"
                                ).fetchone()[0]
        assert log < contacts / 3, (log, contacts)
