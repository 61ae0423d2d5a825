"""What opening the mirror promises, asserted on real files and real processes:
an up-to-date mirror opens without waiting for another process's write (only a
write waits, up to `wait`, telling `on_wait` who holds it and giving up when
`interrupt` raises), a file replaced under an open writer is never written, a run
left `running` by a killed process is recorded as aborted by the next write, the
writer keeps no SQLite transaction open between writes, a mirror may be used
from another thread than the one that opened it, and a read-only open of a
missing or too new mirror names the file.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from agent_helpers import env
from contactsync_agent.errors import ContactSyncError, LockedError
from contactsync_agent.mirror import Mirror

pytestmark = pytest.mark.timeout(60)


class Interrupted(Exception):
    pass


def test_an_up_to_date_mirror_opens_at_once_while_another_process_writes(
        holder: tuple[subprocess.Popen[str], Path]) -> None:
    """Opening does not wait for the writer lock when the file needs no set-up
    (schema current, already WAL): reads go on; the first write waits `wait`
    seconds, tells `on_wait` the holder's pid, then gives up naming the file."""
    proc, db = holder
    waited: list[int | None] = []
    t0 = time.monotonic()
    m = Mirror.open(db, wait=1.0, on_wait=waited.append)
    try:
        opened = time.monotonic() - t0
        assert opened < 0.9, f"the open waited {opened:.2f}s for the other process's write"
        assert waited == []
        assert m.count_contacts() == 1
        t1 = time.monotonic()
        with pytest.raises(LockedError) as e:
            m.add_contact(name="Bob Example")
        took = time.monotonic() - t1
        assert 0.9 <= took < 10, f"gave up after {took:.2f}s, not the 1s asked for"
        assert str(db) in str(e.value)
        assert waited == [proc.pid]
    finally:
        m.close()
    assert proc.poll() is None  # the holder really was holding all along


def test_interrupt_ends_the_wait_for_the_writer_lock(
        holder: tuple[subprocess.Popen[str], Path]) -> None:
    """What the agent uses to stop while another process writes: `interrupt`
    is called while waiting, and what it raises ends the wait (not `wait`)."""
    _, db = holder
    calls: list[float] = []

    def interrupt() -> None:
        calls.append(time.monotonic())
        if len(calls) >= 3:
            raise Interrupted()

    with Mirror.open(db, wait=60, interrupt=interrupt) as m:
        t0 = time.monotonic()
        with pytest.raises(Interrupted):
            m.add_contact(name="Bob Example")
        assert time.monotonic() - t0 < 10
        assert len(calls) == 3


def test_a_mirror_replaced_under_an_open_writer_is_never_written(tmp_path: Path) -> None:
    """A restore (or any copy) puts another file at the path while a program
    keeps the mirror open: its next write refuses, naming the file, and the file
    now at the path keeps exactly what it had."""
    db = tmp_path / "m.db"
    other = tmp_path / "other.db"
    with Mirror.open(other) as o:
        o.add_contact(name="Olive Other")
    m = Mirror.open(db)
    try:
        m.add_contact(name="Ann Example")
        staged = tmp_path / "staged.db"
        shutil.copy2(other, staged)
        os.replace(staged, db)
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        with pytest.raises(ContactSyncError, match="replaced") as e:
            m.add_contact(name="Bob Example")
        assert str(db) in str(e.value)
    finally:
        m.close()
    with Mirror.open(db, readonly=True) as r:
        assert [c.display_name for c in r.contacts()] == ["Olive Other"]


KILLED_MID_RUN = """
import os, signal, sys
from contactsync_agent.mirror import Mirror

def records():
    for i in range(5000):
        if i == 4000:  # well inside the run: its first batches are written
            os.kill(os.getpid(), signal.SIGKILL)
        yield {"external_id": str(i), "name": f"Person Number{i}"}

m = Mirror.open(sys.argv[1])
m.sync("xpm", records(), chunk_size=500)
"""


def test_a_run_left_running_by_a_killed_process_is_aborted_at_the_next_write(
        tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    proc = subprocess.run([sys.executable, "-c", KILLED_MID_RUN, str(db)], env=env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with Mirror.open(db) as m:
        [run] = m.runs("xpm", 5)
        assert run["status"] == "running"  # nothing has written since
        assert m.count_contacts() == 0
        m.add_contact(name="Ann Example")  # any write
        [run] = m.runs("xpm", 5)
        assert run["status"] == "aborted", run
        assert run["error"] == "the process ended before the run committed"
        assert m.count_contacts() == 1


def test_between_writes_the_writer_holds_no_sqlite_transaction(tmp_path: Path) -> None:
    """After each kind of write the connection is idle: another connection can
    take SQLite's write lock at once (no busy wait), and sees every write."""
    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        m.sync("xpm", [{"external_id": "1", "name": "Ann Smith"}])
        m.add_contact(name="Bob Example")
        other = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            assert other.execute("SELECT count(*) FROM contacts").fetchone()[0] == 2
            other.execute("ROLLBACK")
        finally:
            other.close()
    with Mirror.open(db, readonly=True) as r:
        assert r.count_contacts() == 2
        other = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
        finally:
            other.close()


@pytest.mark.parametrize("readonly", [False, True])
def test_a_mirror_can_be_used_from_another_thread(tmp_path: Path, readonly: bool) -> None:
    """A web app's worker pool: opened in one thread, used in another."""
    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        m.add_contact(name="Ann Example")
    m = Mirror.open(db, readonly=readonly)
    seen: list[object] = []

    def use() -> None:
        try:
            if not readonly:
                m.add_contact(name="Bob Example")
            seen.append(m.count_contacts())
        except Exception as e:  # reported below, in the test's thread
            seen.append(e)

    try:
        t = threading.Thread(target=use)
        t.start()
        t.join(30)
    finally:
        m.close()
    assert seen == [1 if readonly else 2]


def test_a_read_only_mirror_knows_its_path(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        m.add_contact(name="Ann Example")
    with Mirror.open(db, readonly=True) as r:
        assert r.path == db


def test_a_read_only_open_of_a_missing_mirror_names_the_file(tmp_path: Path) -> None:
    db = tmp_path / "nothing-here.db"
    with pytest.raises(ContactSyncError) as e:
        Mirror.open(db, readonly=True)
    assert str(db) in str(e.value) and "no mirror database here" in str(e.value)
    assert not db.exists()


@pytest.mark.parametrize("readonly", [False, True])
def test_a_mirror_of_a_newer_agent_is_refused_naming_file_and_versions(
        tmp_path: Path, readonly: bool) -> None:
    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        m.add_contact(name="Ann Example")
    conn = sqlite3.connect(db)
    ours = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.execute(f"PRAGMA user_version = {ours + 1}")
    conn.close()
    with pytest.raises(ContactSyncError) as e:
        Mirror.open(db, readonly=readonly)
    msg = str(e.value)
    assert str(db) in msg and f"schema version {ours + 1} is newer" in msg and f"({ours})" in msg
