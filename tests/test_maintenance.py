"""Erasure (`purge`), online backup while the daemon writes, and a `restore`
that checks a backup before it replaces anything."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from agent_helpers import HEADER, agent, cli, config_text, csv_rows, poll
from contactsync_agent import maintenance
from contactsync_agent.errors import ContactSyncError, LockedError
from contactsync_agent.mirror import Mirror
from contactsync_agent.store import SCHEMA_VERSION

pytestmark = pytest.mark.timeout(120)

SECRET_EMAIL = "erase.me.please@example.org"
SECRET_NAME = "Quillontine"


def rec(ext: str, name: str, email: str = "", phone: str = "") -> dict[str, str]:
    return {"external_id": ext, "name": name, "email": email, "phone": phone}


def five() -> list[dict[str, str]]:
    return [rec("A", f"Hester {SECRET_NAME}", SECRET_EMAIL, "0400 111 222"),
            *(rec(str(i), f"Person{i} Smith", f"p{i}@example.com") for i in range(1, 5))]


def file_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.iterdir()
                    if p.name.startswith(db.name) and p.is_file())


def query(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


# ---------------------------------------------------------------- purge


def test_purge_erases_deleted_contacts_and_their_payloads(db_path: Path) -> None:
    with Mirror.open(db_path) as m:
        m.sync("xpm", [*five(), rec("B", "Kept Smith")])
        m.sync("xpm", [*five()[1:], rec("B", "Kept Smith")])  # A leaves the source
        gone = m.contacts(include_deleted=True)[0]
        assert gone.external_id is None or gone.deleted_at is not None
        assert gone.deleted_at is not None and gone.email == SECRET_EMAIL
        last_seq = m.changes()[-1].seq
        # Not old enough yet: nothing happens.
        report = maintenance.purge(m.store, 30)
        assert report.contacts == 0
        later = datetime.now(UTC) + timedelta(days=31)
        report = maintenance.purge(m.store, 30, now=later)
        assert report.contacts == 1 and report.changes_blanked >= 1
        assert m.store.contacts.row(gone.id) is None
        feed = [c for c in m.changes() if c.contact_id == gone.id]
        assert [c.op for c in feed][-1] == "purge"
        assert all(c.fields == {} for c in feed)
        assert feed[-1].seq > last_seq  # the feed only moves forward
        # The purged id (and every id below the high-water mark) stays retired.
        new_id = m.add_contact(name="After Purge")
        assert new_id > max(c.id for c in m.contacts(include_deleted=True) if c.id != new_id)
        assert new_id > gone.id
    # Nothing of the erased person is left in the database files.
    raw = file_bytes(db_path)
    assert SECRET_EMAIL.encode() not in raw and SECRET_NAME.encode() not in raw


def test_purge_of_the_highest_id_never_lets_ids_go_back(db_path: Path) -> None:
    with Mirror.open(db_path) as m:
        m.sync("xpm", [rec(str(i), f"P{i} Smith") for i in range(10)])
        m.sync("xpm", [rec(str(i), f"P{i} Smith") for i in range(9)])  # id 10 deleted
        seq_before = m.changes()[-1].seq
        assert maintenance.purge(m.store, 0).contacts == 1
        assert m.store.contacts.row(10) is None
        assert m.add_contact(name="Next") == 11
        r = m.sync("xpm", [rec(str(i), f"P{i} Smith") for i in range(9)] + [rec("9", "P9 Smith")])
        assert r.counts["created"] == 1
        assert max(c.id for c in m.contacts()) == 12
        assert m.changes()[-1].seq > seq_before


def test_purge_keeps_contacts_in_use_and_blanks_old_quarantine(db_path: Path,
                                                               tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text(HEADER + csv_rows(5) + f"X9,{SECRET_NAME}\n")  # ragged row: quarantined
    with Mirror.open(db_path) as m:
        m.sync_file("xpm", f)
        assert SECRET_NAME in m.quarantine()[0]["raw"]
        f.write_text(HEADER + csv_rows(4, 1))  # X0 leaves (1 of 5)
        m.sync_file("xpm", f)
        m.add_reference(1, "case:77")  # registered as in use after its deletion
        report = maintenance.purge(m.store, 0)
        assert (report.contacts, report.kept_in_use, report.quarantine_blanked) == (0, 1, 1)
        assert m.store.contacts.row(1) is not None
        assert m.quarantine()[0]["raw"] == "" and m.quarantine()[0]["line"] == 7


def test_purge_cli(tmp_path: Path, db_path: Path) -> None:
    with Mirror.open(db_path) as m:
        m.sync("xpm", five())
        m.sync("xpm", five()[1:])
    p = cli("--db", str(db_path), "purge", "--older-than", "0", "--json")
    assert p.returncode == 0, p.stderr
    assert '"contacts": 1' in p.stdout
    p = cli("--db", str(db_path), "purge", "--older-than", "-1")
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_purge_waits_for_a_write_under_way(db_path: Path) -> None:
    with Mirror.open(db_path) as m:
        m.sync("xpm", five())
        with m.store.transaction():  # a write under way (an agent run, say)
            p = cli("--db", str(db_path), "--wait", "0.5", "purge", "--older-than", "0")
        assert p.returncode == 5 and "still locked by process" in p.stderr, p.stderr
        assert "waiting for" in p.stderr
        p = cli("--db", str(db_path), "purge", "--older-than", "0")  # between writes: fine
        assert p.returncode == 0, p.stderr


# ---------------------------------------------------------------- backup


def test_backup_is_a_consistent_private_copy(db_path: Path, tmp_path: Path) -> None:
    with Mirror.open(db_path) as m:
        m.sync("xpm", five())
        # Taken while the writer is open and holds the lock: backup only reads.
        report = maintenance.backup(db_path, tmp_path / "backups" / "one.db")
        # A folder that exists gets a time-stamped file.
        second = Path(maintenance.backup(db_path, tmp_path / "backups").path)
    out = Path(report.path)
    assert second.parent == out.parent and second.name.startswith("mirror-")
    second.unlink()
    assert out.parent == tmp_path / "backups" and out.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "backups").stat().st_mode & 0o077 == 0
    assert report.contacts == 5 and report.schema_version == SCHEMA_VERSION
    assert query(out, "PRAGMA integrity_check") == [("ok",)]
    assert query(out, "PRAGMA journal_mode") == [("delete",)]  # one self-contained file
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    with pytest.raises(ContactSyncError, match="already exists"):
        maintenance.backup(db_path, out)


def test_backup_while_the_daemon_imports(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={"xpm": {"path": str(inbox),
                                                          "settle_seconds": 0.2}}))
    n = 60_000
    with agent(tmp_path, cfg) as a:
        (tmp_path / "big.csv").write_text(HEADER + csv_rows(n))
        (tmp_path / "big.csv").rename(inbox / "big.csv")
        poll(lambda: any(r["status"] == "running" for r in a.runs()), timeout=30,
             interval=0.005, what="the import to start")
        during = cli("--config", str(cfg), "backup", str(tmp_path / "during.db"))
        poll(lambda: [r for r in a.runs() if r["status"] == "ok"], timeout=60,
             what="the import to finish")
        after = cli("--config", str(cfg), "backup", str(tmp_path / "after.db"))
        assert a.stop() == 0
    for p in (during, after):
        assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    for name in ("during.db", "after.db"):
        b = tmp_path / name
        assert b.stat().st_mode & 0o077 == 0
        assert query(b, "PRAGMA integrity_check") == [("ok",)]
        # One committed state: the run wholly in, or not at all.
        contacts = query(b, "SELECT count(*) FROM contacts")[0][0]
        feed = query(b, "SELECT count(*) FROM changes")[0][0]
        ok = query(b, "SELECT count(*) FROM runs WHERE status = 'ok'")[0][0]
        assert (contacts, feed, ok) in ((0, 0, 0), (n, n, 1)), (name, contacts, feed, ok)
    assert query(tmp_path / "after.db", "SELECT count(*) FROM contacts")[0][0] == n


# ---------------------------------------------------------------- restore


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    page = 4096
    for k in range(2, len(data) // page):
        data[k * page + 100 : k * page + 400] = b"\xa5" * 300
    path.write_bytes(bytes(data))


@pytest.fixture
def backed_up(db_path: Path, tmp_path: Path) -> Path:
    with Mirror.open(db_path) as m:
        m.sync("xpm", five())
    b = Path(maintenance.backup(db_path, tmp_path / "good.db").path)
    with Mirror.open(db_path) as m:
        m.sync("xpm", [*five(), rec("Z", "Later Person")])
    return b


def test_restore_refuses_a_damaged_backup_and_changes_nothing(backed_up: Path, db_path: Path,
                                                              tmp_path: Path) -> None:
    before = db_path.read_bytes()
    bad = tmp_path / "bad.db"
    shutil.copyfile(backed_up, bad)
    corrupt(bad)
    p = cli("--db", str(db_path), "restore", str(bad))
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert str(bad) in p.stderr and ("integrity" in p.stderr or "malformed" in p.stderr), p.stderr
    assert db_path.read_bytes() == before
    assert not list(tmp_path.glob("mirror.db.pre-restore*"))


def test_restore_refuses_a_newer_schema_or_a_foreign_file(backed_up: Path, db_path: Path,
                                                          tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    shutil.copyfile(backed_up, newer)
    con = sqlite3.connect(newer)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(ContactSyncError, match="newer than this agent"):
        maintenance.restore(db_path, newer)
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.close()
    with pytest.raises(ContactSyncError, match="not a contactsync mirror"):
        maintenance.restore(db_path, other)
    text = tmp_path / "notes.txt"
    text.write_text("hello " * 1000)
    with pytest.raises(ContactSyncError, match="not a usable SQLite database"):
        maintenance.restore(db_path, text)
    with Mirror.open(db_path, readonly=True) as m:
        assert len(m.contacts()) == 6


def test_restore_needs_the_writer_lock(backed_up: Path, db_path: Path) -> None:
    with Mirror.open(db_path) as m:
        with pytest.raises(LockedError):
            maintenance.restore(db_path, backed_up)
        assert len(m.contacts()) == 6


def test_restore_replaces_the_mirror_and_keeps_the_old_one(backed_up: Path,
                                                           db_path: Path) -> None:
    p = cli("--db", str(db_path), "restore", str(backed_up))
    assert p.returncode == 0, p.stderr
    [kept] = list(db_path.parent.glob("mirror.db.pre-restore-*"))
    assert kept.stat().st_mode & 0o077 == 0
    assert query(kept, "SELECT count(*) FROM contacts")[0][0] == 6
    assert not db_path.with_name("mirror.db-wal").exists()
    with Mirror.open(db_path) as m:
        assert sorted(c.external_id for c in m.contacts()) == ["1", "2", "3", "4", "A"]
        # Life goes on from the restored state: a sync works, ids continue.
        r = m.sync("xpm", [*five(), rec("Z", "Later Person")])
        assert r.counts["created"] == 1
    assert db_path.stat().st_mode & 0o077 == 0
