"""Purge's edges: a mirror without the id high-water mark (as written before
the mark existed) still never hands a purged id out again, purge refuses a
read-only mirror and a negative age with messages that say why, a contact
deleted more recently than the cut-off stays whatever the machine's time
zone, the feed's purge entry names the cut-off date, and a purge a reader
keeps from emptying the WAL is recorded as pending, also when it only blanked
old quarantined rows (the API in this process, not only the CLI)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from agent_helpers import HEADER, env
from contactsync_agent import maintenance
from contactsync_agent.errors import ContactSyncError
from contactsync_agent.mirror import Mirror
from test_wal_erasure import _secret_everywhere, held_reader, wal_size


def forget_the_id_mark(db: Path) -> None:
    """What a mirror written before the high-water mark existed looks like."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("DELETE FROM meta WHERE key = 'contact_id_hwm'")
        conn.commit()
    finally:
        conn.close()


@pytest.mark.parametrize("n", [1, 3])
def test_purge_pins_the_id_mark_of_a_mirror_that_has_none(tmp_path: Path, n: int) -> None:
    """The highest contact is deleted and purged: the next contact gets a new
    id, not the purged one (n=1: the only contact, id 1)."""
    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        m.sync("xpm", [{"external_id": str(i), "name": f"Person Number{i}"}
                       for i in range(n)])
        m.sync("xpm", [{"external_id": str(i), "name": f"Person Number{i}"}
                       for i in range(n - 1)], allow_mass_delete=True)
        assert m.count_contacts(include_deleted=True) == n
    forget_the_id_mark(db)
    with Mirror.open(db) as m:
        report = maintenance.purge(m.store, 0, now=datetime.now(UTC) + timedelta(seconds=1))
        assert report.contacts == 1
        new = m.add_contact(name="Ann Example")
        assert new == n + 1, f"purged id {n} handed out again" if new == n else new


def test_a_second_purge_never_lowers_the_id_mark(tmp_path: Path) -> None:
    """Purge the highest contact (3), then the next highest (2): the mark stays
    at 3, so the next contact is 4, not a purged id."""
    db = tmp_path / "m.db"
    later = datetime.now(UTC) + timedelta(seconds=1)
    with Mirror.open(db) as m:
        rows = [{"external_id": str(i), "name": f"Person Number{i}"} for i in (1, 2, 3)]
        m.sync("xpm", rows)
        m.sync("xpm", rows[:2], allow_mass_delete=True)
        assert maintenance.purge(m.store, 0, now=later).contacts == 1
        m.sync("xpm", rows[:1], allow_mass_delete=True)
        assert maintenance.purge(m.store, 0, now=later).contacts == 1
        new = m.add_contact(name="Ann Example")
        assert new == 4, f"purged id {new} handed out again" if new in (2, 3) else new


def test_purge_refuses_a_read_only_mirror_and_a_negative_age(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        m.add_contact(name="Ann Example")
        with pytest.raises(ContactSyncError) as e:
            maintenance.purge(m.store, -1)
        assert str(e.value) == "--older-than must be 0 days or more"
    with Mirror.open(db, readonly=True) as r:
        with pytest.raises(ContactSyncError) as e:
            maintenance.purge(r.store, 0)
        assert str(e.value) == "purge needs the writer: the mirror is open read-only"


def test_the_cut_off_is_utc_whatever_the_time_zone(tmp_path: Path) -> None:
    """A contact deleted a day ago: `--older-than 1.2` (days) keeps it and
    `--older-than 0.8` purges it, on a machine 14 hours ahead of UTC too."""
    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        m.sync("xpm", [{"external_id": "1", "name": "Ann Example"},
                       {"external_id": "2", "name": "Bob Example"}])
        m.sync("xpm", [{"external_id": "1", "name": "Ann Example"}], allow_mass_delete=True)
        day_ago = (datetime.now(UTC) - timedelta(days=1)).isoformat(timespec="milliseconds")
        with m.store.transaction():
            m.store.conn.execute("UPDATE contacts SET deleted_at = ? WHERE external_id = '2'",
                                 (day_ago.replace("+00:00", "Z"),))
    for days, left in (("1.2", 2), ("0.8", 1)):
        p = subprocess.run([sys.executable, "-m", "contactsync_agent.cli", "--db", str(db),
                            "purge", "--older-than", days], capture_output=True, text=True,
                           env={**env(), "TZ": "Pacific/Kiritimati"}, timeout=60, check=False)
        assert p.returncode == 0, p.stderr
        with Mirror.open(db, readonly=True) as r:
            assert r.count_contacts(include_deleted=True) == left, days


def test_a_purge_a_reader_holds_up_is_recorded_pending_and_named_in_the_feed(
        tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        m.sync("xpm", [{"external_id": "1", "name": "Ann Example"},
                       {"external_id": "2", "name": "Bob Example"}])
        m.sync("xpm", [{"external_id": "1", "name": "Ann Example"}], allow_mass_delete=True)
        with held_reader(db):
            t0 = time.monotonic()
            report = maintenance.purge(m.store, 0, now=datetime.now(UTC) + timedelta(seconds=1),
                                       wait=2.0)
            took = time.monotonic() - t0
            assert took >= 1.8, f"gave up on the reader after {took:.2f}s, not the 2s asked"
            assert report.contacts == 1 and not report.complete
            assert report.wal_bytes == wal_size(db) > 0
            pending = m.store.erasure_pending()
            assert pending is not None and pending["contacts"] == 1 and pending["purges"] == 1
            assert report.pending_since == pending["since"]
        [entry] = [c for c in m.changes() if c.op == "purge"]
        assert entry.reason == f"purged: deleted before {report.cutoff[:10]} (erasure)"


def test_a_purge_that_only_blanked_old_quarantined_rows_is_pending_under_a_reader(
        tmp_path: Path) -> None:
    """Nothing purged, one quarantined row past the cut-off blanked: its old
    text is in the WAL as much as a contact's would be."""
    db = tmp_path / "m.db"
    f = tmp_path / "ragged.csv"
    f.write_text(HEADER + "X1,Sam,Jones,sam@example.org,0412000001,extra cell\n"
                 + "X2,Kim,Jones,kim@example.org,0412000002\n", encoding="utf-8")
    with Mirror.open(db) as m:
        m.sync_file("xpm", f)
        assert len(m.quarantine()) == 1
        long_ago = (datetime.now(UTC) - timedelta(days=100)).isoformat()
        with m.store.transaction():
            m.store.conn.execute("UPDATE quarantine SET created_at = ?", (long_ago,))
        with held_reader(db):
            report = maintenance.purge(m.store, 30, wait=0.3)
            assert (report.contacts, report.quarantine_blanked) == (0, 1)
            assert not report.complete and m.store.erasure_pending() is not None
        assert m.quarantine()[0]["raw"] == ""


def test_purge_reports_every_count_and_leaves_the_wal_empty(tmp_path: Path) -> None:
    """The report counts what was blanked in each table; afterwards the WAL is
    empty, also after a purge that had nothing to erase."""
    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        _secret_everywhere(m, tmp_path)
        report = maintenance.purge(m.store, 0, now=datetime.now(UTC) + timedelta(seconds=1))
        assert report.complete and report.contacts >= 1
        assert report.changes_blanked >= 1 and report.activities_blanked >= 1
        assert report.reviews_blanked >= 1 and report.quarantine_blanked >= 1
        assert report.run_errors_blanked >= 1
        assert report.wal_bytes == wal_size(db) == 0
        m.add_contact(name="Newly Added")
        assert wal_size(db) > 0
        again = maintenance.purge(m.store, 30)
        assert again.contacts == 0 and again.complete
        assert again.wal_bytes == wal_size(db) == 0
