"""Schema 7 (issue 15): an index of the outbox by contact, whatever the status.

Each push asks, of every new local contact, whether an entry creates it
already (`create_candidates`), and each pull of a two-way contact reads its
latest confirmed updates (`delivered_for`). The outbox keeps every confirmed
entry, and its only index by contact had open entries alone: both lookups
scanned the whole history. SQLite's own query plan says which index they use.
A database the schema-6 code wrote (outbox rows of every kind) migrates with
its rows unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from contactsync_agent.config import SourceConfig, parse_config
from contactsync_agent.mirror import Mirror
from contactsync_agent.sources.writer import OutboundChange, PushResult
from contactsync_agent.store import SCHEMA_VERSION
from old_schema import old_code, rows


class Confirms:
    def push(self, changes: Sequence[OutboundChange]) -> list[PushResult]:
        return [PushResult(c.entry_id, "confirmed", external_id=f"NEW{c.entry_id}")
                for c in changes]

    def close(self) -> None:
        pass


def folder_source() -> SourceConfig:
    return parse_config({"sources": {"xpm": {
        "kind": "folder", "directions": {"email": "both"}, "push_new": "all",
    }}}).sources["xpm"]


def fill(m: Mirror, cfg: SourceConfig, n: int) -> None:
    """n synced contacts, each edited and pushed twice (confirmed history), one
    edit still pending, and a new local contact pushed (a confirmed create)."""
    m.ownership.set_sync_policy("xpm", cfg.sync_policy())
    m.sync("xpm", [{"id": f"A{i}", "name": f"Ann Lee{i}", "email": f"a{i}@x.example"}
                   for i in range(n)])
    m.add_contact(given_name="Dee", family_name="New", email="dee@x.example")
    for round_ in range(2):
        for c in m.contacts(record_type="sync"):
            m.ownership.edit_contact(c.id, email=f"r{round_}-{c.id}@x.example")
        m.push(cfg, writer=Confirms())
    first = m.contacts(record_type="sync")[0]
    m.ownership.edit_contact(first.id, email="pending@x.example")


def plans(m: Mirror, calls: Sequence[Any]) -> dict[str, list[str]]:
    """The SQL each call ran on the outbox, with SQLite's plan for it."""
    seen: list[str] = []
    conn = m.store.conn
    conn.set_trace_callback(seen.append)
    try:
        for call in calls:
            call()
    finally:
        conn.set_trace_callback(None)
    return {s: [str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + s)]
            for s in seen if s.startswith("SELECT") and "outbox" in s}


def lookups_use_the_index(m: Mirror) -> None:
    cid = m.contacts(record_type="sync")[0].id
    found = plans(m, [lambda: m.store.outbox.create_candidates("xpm", referenced_only=False),
                      lambda: m.store.outbox.delivered_for(cid)])
    assert len(found) == 2, found
    for sql, plan in found.items():
        assert any("USING INDEX outbox_by_contact" in p or
                   "USING COVERING INDEX outbox_by_contact" in p for p in plan), (sql, plan)
        assert not any(p.startswith(("SCAN outbox", "SCAN o")) for p in plan), (sql, plan)
    # delivered_for reads in the index's order: no sort of the contact's history.
    [(sql, plan)] = [(s, p) for s, p in found.items() if "confirmed" in s]
    assert not any("TEMP B-TREE" in p for p in plan), (sql, plan)


def test_a_new_mirror_looks_the_outbox_up_by_contact_through_the_index(tmp_path: Path) -> None:
    with Mirror.open(tmp_path / "m.db") as m:
        fill(m, folder_source(), 20)
        assert m.store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 7
        lookups_use_the_index(m)
        # What the lookups answer (the index changes how, not what).
        assert m.store.outbox.create_candidates("xpm", referenced_only=False) == []
        cid = m.contacts(record_type="sync")[0].id
        assert [e.fields["email"][1] for e in m.store.outbox.delivered_for(cid)] == [
            f"r0-{cid}@x.example", f"r1-{cid}@x.example"]


def test_a_schema_6_database_with_outbox_rows_migrates(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "old.db"
    cfg = folder_source()
    with monkeypatch.context() as patch:  # the schema-6 code: migrations 1 to 6 only
        old_code(patch, 6)
        with Mirror.open(db) as m:
            fill(m, cfg, 20)
    assert rows(db, "PRAGMA user_version") == [(6,)]
    assert rows(db, "SELECT name FROM sqlite_master WHERE name = 'outbox_by_contact'") == []
    before = rows(db, "SELECT * FROM outbox ORDER BY id")
    assert {(r[4], r[7]) for r in before} == {("update", "confirmed"), ("create", "confirmed"),
                                              ("update", "pending")}
    with Mirror.open(db) as m:
        assert m.store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        lookups_use_the_index(m)
        # The pending edit still goes out, after the history the migration kept.
        assert m.push(cfg, writer=Confirms()).counts["confirmed"] == 1
    after = rows(db, "SELECT * FROM outbox ORDER BY id")
    assert after[:-1] == before[:-1]  # the history as it was; the pending edit (last) sent
    assert (before[-1][7], after[-1][7]) == ("pending", "confirmed")
    assert len(after) == len(before)
    assert rows(db, "SELECT sql FROM sqlite_master WHERE name = 'outbox_by_contact'") == [
        ("CREATE INDEX outbox_by_contact ON outbox (contact_id, status, kind)",)]
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
