"""What the import's speed-ups (issue 19) must not change: a first import
into an empty table builds the link index after its bulk insert, in the same
transaction, and ends with the same index and the same outcome as an import
that kept it; the deletion guard's count of the source's contacts, now taken
from the loaded links, still leaves out the non-`sync` contacts they hold."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from contactsync_agent.errors import SafetyLimitError
from contactsync_agent.mirror import Mirror


def link_index_sql(m: Mirror) -> str | None:
    row = m.store.conn.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'contacts_link'").fetchone()
    return None if row is None else str(row[0])


RECORDS = [{"external_id": f"E{i}", "given_name": f"Given{i}", "email": f"p{i}@example.org"}
           for i in range(50)]


def outcome(m: Mirror) -> list[tuple[object, ...]]:
    return m.store.conn.execute(
        "SELECT source, external_id, given_name, email, deleted_at IS NULL FROM contacts "
        "WHERE record_type = 'sync' ORDER BY external_id").fetchall()


def test_a_first_import_builds_the_same_link_index_after_its_insert(tmp_path: Path) -> None:
    with Mirror.open(tmp_path / "fresh.db") as fresh:
        want = link_index_sql(fresh)
    assert want is not None
    with Mirror.open(tmp_path / "m.db") as m:
        report = m.sync("xpm", RECORDS)
        assert report.counts["created"] == 50
        assert link_index_sql(m) == want
        plan = " ".join(str(r) for r in m.store.conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM contacts WHERE source = 'xpm' "
            "AND external_id = 'E7' AND deleted_at IS NULL"))
        assert "contacts_link" in plan
        with pytest.raises(sqlite3.IntegrityError), m.store.transaction():
            m.store.conn.execute(
                "INSERT INTO contacts (source, external_id, record_type, created_at, "
                "updated_at) VALUES ('xpm', 'E7', 'sync', 't', 't')")


def test_deferred_and_kept_index_give_the_same_outcome(tmp_path: Path) -> None:
    """The same snapshot, with a duplicated external id, into an empty table
    (index deferred) and into one holding a local contact (index kept)."""
    records = [*RECORDS, {**RECORDS[3], "given_name": "Again"}]
    results = []
    for name, local in (("empty.db", False), ("kept.db", True)):
        with Mirror.open(tmp_path / name) as m:
            if local:
                m.add_contact(name="Someone Else", email="else@example.org")
            report = m.sync("xpm", records)
            results.append((report.counts["created"], report.counts["updated"], outcome(m),
                            link_index_sql(m)))
    assert results[0] == results[1]


def test_a_dry_run_into_an_empty_table_leaves_the_index(tmp_path: Path) -> None:
    with Mirror.open(tmp_path / "m.db") as m:
        want = link_index_sql(m)
        report = m.sync("xpm", RECORDS, dry_run=True)
        assert report.counts["created"] == 50
        assert link_index_sql(m) == want
        assert m.count_contacts() == 0


def test_a_failed_first_import_leaves_the_index(tmp_path: Path) -> None:
    def records():  # the run fails after a batch was inserted
        yield from RECORDS
        raise RuntimeError("the source went away")

    with Mirror.open(tmp_path / "m.db") as m:
        want = link_index_sql(m)
        with pytest.raises(RuntimeError):
            m.sync("xpm", records(), chunk_size=10)
        assert link_index_sql(m) == want and m.count_contacts() == 0


def test_the_deletion_guard_counts_only_the_sources_sync_contacts(tmp_path: Path) -> None:
    """Eight external contacts carry the source's links too; removing 2 of
    its 5 `sync` contacts is 40 %, over the 20 % limit (2 of 13 would not be)."""
    with Mirror.open(tmp_path / "m.db") as m:
        for i in range(8):
            m.add_contact(name=f"External {i}", record_type="external", source="xpm",
                          external_id=f"X{i}")
        m.sync("xpm", RECORDS[:5])
        assert m.count_contacts(record_type="external") == 8
        with pytest.raises(SafetyLimitError):
            m.sync("xpm", RECORDS[:3])
        assert m.sync("xpm", RECORDS[:4]).counts["deleted"] == 1  # 20 %: allowed


def test_sigkill_inside_a_first_import_leaves_the_index_and_converges(tmp_path: Path) -> None:
    """A real `contactsync sync` into an empty mirror, killed once it has
    written batches (its link index dropped): the database is intact, empty,
    with the index; the same sync again ends as an uninterrupted one does."""
    import os
    import signal
    import subprocess
    import sys
    import time

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
    import exportgen
    import killpoints

    csv_path = tmp_path / "export.csv"
    exportgen.generate(csv_path, 60_000, seed=3)
    db = tmp_path / "mirror.db"
    with Mirror.open(db) as m:
        want = link_index_sql(m)
    cmd = [*killpoints.CLI, "--db", str(db), "sync", "--source", "xpm", str(csv_path),
           "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=killpoints.child_env(False))
    wal = Path(f"{db}-wal")
    deadline = time.monotonic() + 120
    # Batches written inside the run's transaction: the WAL grows past 2 MB.
    while proc.poll() is None and time.monotonic() < deadline:
        if wal.exists() and wal.stat().st_size > 2 << 20:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the import ended before it could be killed: make it bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT count(*) FROM contacts").fetchone()[0] == 0
        assert con.execute("SELECT sql FROM sqlite_master WHERE name = 'contacts_link'"
                           ).fetchone()[0] == want
    finally:
        con.close()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env=killpoints.child_env(False), timeout=600)
    assert done.returncode == 0, done.stderr
    with Mirror.open(db) as m:
        assert m.count_contacts() == 60_000 and link_index_sql(m) == want
        assert [r["status"] for r in m.runs("xpm")] == ["ok", "aborted"]


def test_a_first_import_runs_with_a_small_page_cache_then_restores_it(tmp_path: Path) -> None:
    """A first import appends, so 128 MiB of cached pages would only add to its
    peak memory: it runs with 32 MiB; later runs (which read pages again) and
    the rest of the session get the usual cache back."""

    def cache(m: Mirror) -> int:
        return int(m.store.conn.execute("PRAGMA cache_size").fetchone()[0])

    with Mirror.open(tmp_path / "m.db") as m:
        usual = cache(m)
        assert usual == -131072
        seen: list[int] = []
        m.sync("xpm", RECORDS, chunk_size=10, progress=lambda n: seen.append(cache(m)))
        assert seen and set(seen) == {-32768}
        assert cache(m) == usual
        seen.clear()
        m.sync("xpm", RECORDS[:49], chunk_size=10, allow_mass_delete=True,
               progress=lambda n: seen.append(cache(m)))  # not a first import
        assert seen and set(seen) == {usual}
    def stop(n: int) -> None:
        raise SafetyLimitError("stop")

    # A first import that fails restores it too.
    with pytest.raises(SafetyLimitError), Mirror.open(tmp_path / "m2.db") as m2:
        try:
            m2.sync("xpm", RECORDS, chunk_size=10, progress=stop)
        finally:
            assert cache(m2) == usual
