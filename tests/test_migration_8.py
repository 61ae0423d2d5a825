"""Schema 8 (issue 19, re-imports): a source's link snapshot in parts.

Part 0 of `link_snapshot_parts` is a whole snapshot, parts 1.. the deltas of
the runs after it; `link_snapshots` keeps one row per source as the mark of
validity, which the triggers drop on any write to a contact's link. A run that
changed a few contacts appends a small delta instead of writing (and freeing)
the whole snapshot again. A database the schema-7 code wrote (a snapshot, a
feed, manual and local contacts) migrates with its snapshot still in use."""

from __future__ import annotations

from pathlib import Path

import pytest
from contactsync_agent import sync
from contactsync_agent.errors import SafetyLimitError
from contactsync_agent.mirror import Mirror
from contactsync_agent.store import SCHEMA_VERSION
from old_schema import old_code, rows


def records(n: int, changed: frozenset[int] | set[int] = frozenset(),
            tag: str = "x") -> list[dict[str, str]]:
    return [{"external_id": f"E{i:05d}", "name": f"Ann Lee{i}",
             "email": f"a{i}@{tag if i in changed else 'x'}.example"} for i in range(n)]


def parts(m: Mirror, source: str = "xpm") -> list[tuple[int, bytes]]:
    return [(int(p), bytes(d)) for p, d in m.store.conn.execute(
        "SELECT part, data FROM link_snapshot_parts WHERE source = ? ORDER BY part", (source,))]


def loaded_from_snapshot(m: Mirror, source: str = "xpm") -> bool:
    """The links the next run would load come from the saved parts and are the
    table's own (`_load_differ` checks them against the table in the tests)."""
    differ, loaded = sync._load_differ(m.store, source)
    assert differ.entries() == sync._differ_from_sql(m.store, source).entries()
    return loaded is not None


def test_a_schema_7_database_with_a_snapshot_migrates_and_its_snapshot_is_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "old.db"
    with monkeypatch.context() as patch:  # the schema-7 code: migrations 1 to 7 only
        old_code(patch, 7)
        with Mirror.open(db) as m:
            m.sync("xpm", records(300), mode="full")
            m.sync("xpm", records(300, {5, 6}, "y"), mode="full")
            m.add_contact(given_name="Dee", family_name="Local", email="dee@x.example")
    assert rows(db, "PRAGMA user_version") == [(7,)]
    assert rows(db, "SELECT name FROM sqlite_master WHERE name = 'link_snapshot_parts'") == []
    [(old_blob, entries)] = rows(db, "SELECT data, entries FROM link_snapshots")
    assert bytes(old_blob).startswith(b"CSD3") and entries == 300
    contacts = rows(db, "SELECT * FROM contacts ORDER BY id")
    feed = rows(db, "SELECT * FROM changes ORDER BY seq")
    with Mirror.open(db) as m:
        assert m.store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 8
        assert parts(m) == [(0, bytes(old_blob))]  # the old snapshot, moved as it was
        assert m.store.conn.execute("SELECT data, entries FROM link_snapshots").fetchall() == [
            (b"", 300)]
        assert loaded_from_snapshot(m)
        r = m.sync("xpm", records(300, {5, 6}, "y"), mode="full")
        assert r.counts["unchanged"] == 300 and r.counts["updated"] == 0
    assert rows(db, "SELECT * FROM contacts ORDER BY id") == contacts
    assert rows(db, "SELECT * FROM changes ORDER BY seq") == feed
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]


def test_a_run_that_changes_a_few_links_appends_a_delta_and_keeps_the_whole_part(
        tmp_path: Path) -> None:
    with Mirror.open(tmp_path / "m.db") as m:
        m.sync("xpm", records(400), mode="full")
        [(part, base)] = parts(m)
        assert part == 0
        r = m.sync("xpm", records(400, {1, 2, 3}, "y")[:-1], mode="full")  # 3 changed, 1 gone
        assert r.counts["updated"] == 3 and r.counts["deleted"] == 1
        now = parts(m)
        assert [p for p, _ in now] == [0, 1] and now[0][1] == base  # part 0 not rewritten
        assert now[1][1].startswith(b"CSDD") and len(now[1][1]) < len(base) / 20
        assert loaded_from_snapshot(m)
        # The next run loads part 0 and the delta: it sees what the last one wrote.
        r = m.sync("xpm", records(400, {1, 2, 3}, "y")[:-1], mode="full")
        assert r.counts["unchanged"] == 399 and r.counts["updated"] == 0
        r = m.sync("xpm", records(400, {7}, "z"), mode="full")  # back, and one changed
        assert r.counts["created"] == 1 and r.counts["updated"] == 4
        assert [p for p, _ in parts(m)] == [0, 1, 2]
        assert loaded_from_snapshot(m)
        assert m.store.conn.execute("SELECT entries FROM link_snapshots").fetchone()[0] == 400


def test_a_write_outside_a_run_drops_the_mark_and_the_next_run_saves_a_whole_snapshot(
        tmp_path: Path) -> None:
    with Mirror.open(tmp_path / "m.db") as m:
        m.sync("xpm", records(200), mode="full")
        m.sync("xpm", records(200, {1}, "y"), mode="full")
        assert len(parts(m)) == 2
        cid = m.contacts(record_type="sync")[10].id
        m.set_forced_manual(cid)  # a write to a link column, not by a run
        assert m.store.contacts.load_snapshot("xpm") is None  # the stale parts go unread
        assert not loaded_from_snapshot(m)
        r = m.sync("xpm", records(200, {1}, "y"), mode="full")
        assert r.counts["unchanged"] == 199  # the forced-manual contact wants a rule
        [(part, whole)] = parts(m)
        assert part == 0 and whole.startswith(b"CSD3")
        assert loaded_from_snapshot(m)


def test_deltas_grown_past_their_share_are_folded_into_a_whole_snapshot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync, "DELTA_SHARE", 0.05)
    with Mirror.open(tmp_path / "m.db") as m:
        m.sync("xpm", records(300), mode="full")
        counts = []
        for k in range(1, 8):
            m.sync("xpm", records(300, {k, k + 50}, f"t{k}"), mode="full")
            counts.append(len(parts(m)))
            assert loaded_from_snapshot(m)
        assert max(counts) > 1 and 1 in counts, counts  # deltas, then folded
    monkeypatch.setattr(sync, "MAX_SNAPSHOT_PARTS", 2)
    monkeypatch.setattr(sync, "DELTA_SHARE", 1.0)
    with Mirror.open(tmp_path / "m.db") as m:
        for k in range(3):
            m.sync("xpm", records(300, {k}, f"u{k}"), mode="full")
            assert len(parts(m)) <= 2
            assert loaded_from_snapshot(m)


def test_a_refused_run_leaves_the_parts_as_they_were(tmp_path: Path) -> None:
    with Mirror.open(tmp_path / "m.db") as m:
        m.sync("xpm", records(100), mode="full")
        m.sync("xpm", records(100, {1}, "y"), mode="full")
        before = parts(m)
        with pytest.raises(SafetyLimitError):  # the mass-deletion guard
            m.sync("xpm", records(100, {2}, "z")[:10], mode="full")
        assert parts(m) == before
        assert loaded_from_snapshot(m)
