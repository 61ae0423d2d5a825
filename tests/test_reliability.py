"""Concurrency, privacy, safety limits and disk trouble, against the real CLI
and daemon where it matters.

- a downstream reader holding a long read transaction neither blocks a sync
  nor ever sees part of a run; the WAL does not grow from run to run; two
  writers are impossible;
- database, WAL, lock, log (rotated ones too) and backup files are owner-only;
  no e-mail, phone or name of the input appears in any log line at INFO or
  above, of the CLI or the daemon;
- a full disk (an 8 MB tmpfs) or an I/O error fails the run cleanly with a clear
  message, the mirror stays as it was, and the next run after the fault works.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import CLI, HEADER, agent, cli, config_text, csv_rows, env, poll, write_csv
from contactsync_agent.mirror import Mirror

pytestmark = pytest.mark.timeout(180)


def ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None, timeout=5)


def dump(db: Path) -> list[tuple]:
    con = ro(db)
    try:
        return [(t, *r) for t, sql in (
            ("c", "SELECT * FROM contacts ORDER BY id"),
            ("f", "SELECT * FROM changes ORDER BY seq"),
            ("a", "SELECT * FROM activities ORDER BY id"),
            ("q", "SELECT * FROM quarantine ORDER BY id"),
        ) for r in con.execute(sql)]
    finally:
        con.close()


def snapshot_counts(con: sqlite3.Connection) -> tuple[int, int, int, int]:
    """(contacts, updated ones, feed entries, ok runs) in one read transaction."""
    con.execute("BEGIN")
    try:
        return (
            con.execute("SELECT count(*) FROM contacts").fetchone()[0],
            con.execute("SELECT count(*) FROM contacts WHERE mobile LIKE '0499%'").fetchone()[0],
            con.execute("SELECT count(*) FROM changes").fetchone()[0],
            con.execute("SELECT count(*) FROM runs WHERE status = 'ok'").fetchone()[0],
        )
    finally:
        con.execute("COMMIT")


def changed_csv(path: Path, n: int, start: int = 0) -> Path:
    """The same people as `csv_rows`, each with a new mobile number."""
    rows = "".join(f"X{i},Given{i},Family{i},person{i}@example.com,0499{i:06d}\n"
                   for i in range(start, start + n))
    path.write_text(HEADER + rows)
    return path


# ---------------------------------------------------------------- concurrency


def test_a_long_reader_neither_blocks_a_sync_nor_sees_part_of_it(tmp_path: Path) -> None:
    db = tmp_path / "mirror.db"
    n = 10_000
    with Mirror.open(db) as m:
        m.sync_file("xpm", write_csv(tmp_path / "a.csv", n))
    reader = ro(db)
    reader.execute("BEGIN")
    held = reader.execute("SELECT count(*), max(id) FROM contacts").fetchone()
    before = snapshot_counts(ro(db))
    # The whole sync runs while the reader's transaction stays open.
    t0 = time.monotonic()
    p = cli("--db", str(db), "sync", "-s", "xpm", str(changed_csv(tmp_path / "b.csv", n)),
            timeout=120)
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    # The reader still sees its snapshot: nothing of the run.
    assert reader.execute("SELECT count(*), max(id) FROM contacts").fetchone() == held
    assert reader.execute("SELECT count(*) FROM contacts WHERE mobile LIKE '0499%'"
                          ).fetchone()[0] == 0
    reader.execute("COMMIT")
    after = snapshot_counts(reader)
    assert after == (n, n, 2 * n, 2)
    assert before == (n, 0, n, 1)
    reader.close()
    print(f"sync of {n} updates with a reader holding a snapshot: {took:.2f}s")


def test_readers_polling_during_a_run_see_before_or_after_only(tmp_path: Path) -> None:
    db = tmp_path / "mirror.db"
    n = 15_000
    with Mirror.open(db) as m:
        m.sync_file("xpm", write_csv(tmp_path / "a.csv", n))
    before = snapshot_counts(ro(db))
    seen: list[tuple[int, int, int, int]] = []
    stop = threading.Event()

    def poll_reader() -> None:
        con = ro(db)
        while not stop.is_set():
            seen.append(snapshot_counts(con))
        con.close()

    t = threading.Thread(target=poll_reader)
    t.start()
    try:
        f = changed_csv(tmp_path / "b.csv", n - 1000, 1000)  # 1000 deleted, the rest updated
        with open(f, "a") as fh:
            fh.write(csv_rows(2000, n))  # and 2000 new
        p = cli("--db", str(db), "sync", "-s", "xpm", str(f), timeout=120)
    finally:
        stop.set()
        t.join()
    assert p.returncode == 0, p.stderr
    after = snapshot_counts(ro(db))
    assert after == (n + 2000, n - 1000, n + (n - 1000) + 1000 + 2000, 2)
    assert len(seen) > 10
    assert set(seen) <= {before, after}, set(seen) - {before, after}


def wal_size(db: Path) -> int:
    w = db.with_name(db.name + "-wal")
    return w.stat().st_size if w.exists() else 0


def test_the_wal_does_not_grow_from_run_to_run(tmp_path: Path) -> None:
    db = tmp_path / "mirror.db"
    n = 6_000
    sizes = []
    with Mirror.open(db) as m:
        for k in range(8):
            f = changed_csv(tmp_path / "x.csv", n) if k % 2 else write_csv(tmp_path / "x.csv", n)
            m.sync_file("xpm", f)
            m.checkpoint()  # what the daemon does after each run
            sizes.append(wal_size(db))
        # A reader holding a snapshot across runs pins the WAL...
        reader = ro(db)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM contacts").fetchone()
        for k in range(2):
            m.sync_file("xpm", changed_csv(tmp_path / "x.csv", n) if k % 2
                        else write_csv(tmp_path / "x.csv", n))
            m.checkpoint()
        pinned = wal_size(db)
        reader.execute("COMMIT")
        reader.close()
        # ... and once it lets go, the WAL is reused from its start: it grows no more.
        for k in range(4):
            m.sync_file("xpm", changed_csv(tmp_path / "x.csv", n) if k % 2
                        else write_csv(tmp_path / "x.csv", n))
            m.checkpoint()
            sizes.append(wal_size(db))
    print(f"WAL after each run (bytes): {sizes}; with a pinned reader: {pinned}")
    # One run's worth, run after run. The first run (a full import into an
    # empty mirror, its create entries compact since schema 6) writes less
    # than the runs that update every contact: the WAL takes their size once.
    assert sizes[0] <= sizes[1], sizes
    assert len(set(sizes[1:8])) == 1, sizes
    assert pinned > sizes[7]  # the pin is real: the WAL had to grow meanwhile
    assert len(set(sizes[9:])) == 1, sizes  # released: no more growth
    assert wal_size(db) == 0  # close() truncates it


def test_a_writer_process_that_waits_too_long_gives_up_naming_the_holder(
    tmp_path: Path,
) -> None:
    db = tmp_path / "mirror.db"
    with Mirror.open(db) as m:
        m.sync_file("xpm", write_csv(tmp_path / "a.csv", 5))
        before = dump(db)
        with m.store.writing():  # a run under way in this process
            p = cli("--db", str(db), "--wait", "0.5", "sync", "-s", "xpm",
                    str(write_csv(tmp_path / "b.csv", 9)))
        assert p.returncode == 5
        assert f"still locked by process {os.getpid()} after waiting" in p.stderr
        assert "Traceback" not in p.stderr
        assert dump(db) == before


# ---------------------------------------------------------------- safety limits


def test_mass_delete_override_from_the_cli_is_recorded(tmp_path: Path) -> None:
    db = tmp_path / "mirror.db"
    assert cli("--db", str(db), "sync", "-s", "xpm",
               str(write_csv(tmp_path / "a.csv", 10))).returncode == 0
    before = dump(db)
    few = write_csv(tmp_path / "b.csv", 7)
    p = cli("--db", str(db), "sync", "-s", "xpm", str(few))
    assert p.returncode == 4
    assert f"{few}: refused: the snapshot would delete 3 of 10 contacts" in p.stderr
    assert "--allow-mass-delete" in p.stderr and dump(db) == before
    p = cli("--db", str(db), "sync", "-s", "xpm", "--allow-mass-delete", str(few), "--json")
    assert p.returncode == 0, p.stderr
    con = ro(db)
    runs = con.execute("SELECT status, allow_mass_delete, deleted FROM runs ORDER BY id").fetchall()
    con.close()
    assert runs == [("ok", 0, 0), ("refused", 0, 0), ("ok", 1, 3)]


# ---------------------------------------------------------------- privacy


def private_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if (p.is_file() and p.suffix != ".toml"
            and ("mirror" in p.name or "backups" in p.parts)) or p.suffix == ".log"
            or ".log." in p.name]


def test_every_file_the_agent_writes_is_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a permissive umask, as on most systems
    try:
        inbox = tmp_path / "in"
        inbox.mkdir()
        cfg = tmp_path / "config.toml"
        cfg.write_text(config_text(
            tmp_path, sources={"xpm": {"path": str(inbox), "settle_seconds": 0.2}},
            agent={"log_max_bytes": 400, "log_backups": 2, "log_level": "DEBUG"}))
        with agent(tmp_path, cfg) as a:
            for k in range(3):  # enough log lines to rotate the log twice
                write_csv(tmp_path / f"f{k}.csv", 20 * (k + 1)).rename(inbox / f"f{k}.csv")
                poll(lambda k=k: len([r for r in a.runs() if r["status"] == "ok"]) > k,
                     what=f"run {k + 1}")
            p = cli("--config", str(cfg), "backup", str(tmp_path / "backups" / "b.db"))
            assert p.returncode == 0, p.stderr
            assert a.stop() == 0
    finally:
        os.umask(old)
    files = private_files(tmp_path)
    names = {p.name for p in files}
    assert {"mirror.db", "mirror.db.lock", "contactsync-agent.log", "b.db"} <= names
    assert any(n.startswith("contactsync-agent.log.") for n in names), names  # rotated
    loose = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files
             if p.stat().st_mode & 0o077}
    assert not loose
    assert (tmp_path / "backups").stat().st_mode & 0o077 == 0


def people(n: int) -> list[dict[str, str]]:
    """Unmistakable values, so any of them in a log is found."""
    first = ["Wolfgang", "Perpetua", "Ignatius", "Clementine", "Bartholomew", "Euphemia"]
    last = ["Zabriskie", "Quattlebaum", "Featherstonehaugh", "Vandersloot", "Oyelaran"]
    return [{"id": f"P{i}", "given": f"{first[i % 6]}{chr(97 + i % 26)}",
             "family": f"{last[i % 5]}{chr(97 + i // 26 % 26)}",
             "email": f"{first[i % 6].lower()}.{i}@secret-{i}.example.org",
             "phone": f"04{17 + i % 80:02d} {300 + i:03d} {(i * 37) % 1000:03d}"}
            for i in range(n)]


def export(rows: list[dict[str, str]], extra: str = "") -> str:
    return HEADER + "".join(f"{r['id']},{r['given']},{r['family']},{r['email']},{r['phone']}\n"
                            for r in rows) + extra


def secrets(rows: list[dict[str, str]]) -> list[str]:
    out = []
    for r in rows:
        digits = re.sub(r"\D", "", r["phone"])
        out += [r["email"], r["email"].split("@")[0], f"{r['given']} {r['family']}",
                r["given"], r["family"], r["phone"], digits, "+61" + digits[1:]]
    return out


def test_no_personal_data_in_any_log_line(tmp_path: Path) -> None:
    rows = people(60)
    bad = (f"P90,{rows[0]['given']},{rows[0]['family']},{rows[0]['email']}\n"  # ragged
           f"P1,Dup,Licate,dup@secret.example.org,0400 999 888\n")  # duplicate id
    # The CLI: a sync with quarantined rows, a refused mass deletion, a forced-manual update.
    db = tmp_path / "cli" / "mirror.db"
    db.parent.mkdir()
    f = tmp_path / "cli" / "export.csv"
    f.write_text(export(rows, bad))
    out = [cli("--db", str(db), "sync", "-s", "xpm", str(f))]
    with Mirror.open(db) as m:
        m.set_forced_manual(1)
    changed = [{**r, "email": "new." + r["email"]} for r in rows]
    f.write_text(export(changed[:40]))
    out.append(cli("--db", str(db), "sync", "-s", "xpm", str(f)))  # refused: 33 % deleted
    out.append(cli("--db", str(db), "sync", "-s", "xpm", "--allow-mass-delete", str(f)))
    out.append(cli("--db", str(db), "status"))
    out.append(cli("--db", str(db), "quarantine"))  # shows rows on purpose: not a log
    cli_text = "\n".join(p.stderr for p in out)  # stderr is the CLI's log stream
    assert "line 62" in cli_text and "refused" in cli_text
    # The daemon, at INFO: the same story through the watched folder.
    inbox = tmp_path / "in"
    inbox.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={"xpm": {"path": str(inbox),
                                                          "settle_seconds": 0.2}},
                               agent={"log_level": "INFO"}))
    with agent(tmp_path, cfg) as a:
        for k, text in enumerate((export(rows, bad), export(changed[:40]),
                                  export(changed[:59]))):
            (tmp_path / "t.csv").write_text(text)
            (tmp_path / "t.csv").rename(inbox / f"e{k}.csv")
            poll(lambda k=k: len([r for r in a.runs() if r["status"] != "running"]) > k,
                 what=f"run {k + 1}")
        assert a.stop() == 0
        daemon_text = a.log.read_text() + a.stderr
    assert "refused" in daemon_text and "run 3 ok" in daemon_text
    for where, text in (("CLI", cli_text), ("daemon", daemon_text)):
        leaks = [s for s in secrets(rows + changed) if s in text]
        assert not leaks, f"{where} log shows {leaks[:5]}"
        assert not re.search(r"[\w.+-]+@[\w-]+\.[\w.]+", text), where


# ---------------------------------------------------------------- disk trouble


@contextlib.contextmanager
def tiny_filesystem(path: Path, size: str = "8m") -> Iterator[Path]:
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a size-limited tmpfs needs root (mount -t tmpfs); "
                    "test_io_error_mid_run_fails_cleanly covers the fault by injection")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                        str(path)], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here ({p.stderr.strip()}); "
                    "test_io_error_mid_run_fails_cleanly covers the fault by injection")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(fs: Path, leave: int) -> Path:
    """Fills the filesystem but `leave` bytes."""
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize
    filler = fs / "filler"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(free - leave, 0))
    return filler


def test_a_full_disk_fails_the_run_cleanly(tmp_path: Path) -> None:
    with tiny_filesystem(tmp_path / "fs") as fs:
        db = fs / "mirror.db"
        assert cli("--db", str(db), "sync", "-s", "xpm",
                   str(write_csv(tmp_path / "a.csv", 200))).returncode == 0
        before = dump(db)
        filler = fill(fs, 64 * 1024)
        big = write_csv(tmp_path / "b.csv", 2000)  # the export itself is elsewhere
        p = cli("--db", str(db), "sync", "-s", "xpm", "--mode", "incremental", str(big))
        assert p.returncode != 0
        assert "Traceback" not in p.stderr
        assert p.stderr.startswith("contactsync: ") and "disk is full" in p.stderr, p.stderr
        assert "the run was rolled back" in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
        con = ro(db)
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        con.close()
        assert dump(db) == before
        # Space again: the same run goes through, and the failed one is on record.
        filler.unlink()
        p = cli("--db", str(db), "sync", "-s", "xpm", "--mode", "incremental", str(big),
                "--json")
        assert p.returncode == 0, p.stderr
        con = ro(db)
        statuses = [r[0] for r in con.execute("SELECT status FROM runs ORDER BY id")]
        assert con.execute("SELECT count(*) FROM contacts").fetchone()[0] == 2000
        con.close()
        assert statuses[0] == "ok" and statuses[-1] == "ok"
        assert set(statuses[1:-1]) <= {"failed", "aborted"} and statuses[1:-1]


def test_a_mirror_closes_on_a_disk_with_no_byte_left(tmp_path: Path) -> None:
    """A first import onto a disk that fills up: the run fails with SQLite's
    own message, and closing the mirror afterwards does not raise (writing the
    lock file's pid failed with ENOSPC and replaced the error)."""
    with tiny_filesystem(tmp_path / "fs") as fs:
        db = fs / "mirror.db"
        m = Mirror.open(db)
        fill(fs, 256 * 1024)
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            m.sync_file("xpm", write_csv(tmp_path / "a.csv", 20_000))
        fill_rest = fs / "rest"
        with contextlib.suppress(OSError), open(fill_rest, "wb") as fh:
            fh.write(b"\0" * (1 << 20))
        assert os.statvfs(fs).f_bavail == 0
        m.close()  # must not raise
        p = cli("--db", str(db), "sync", "-s", "xpm", str(write_csv(tmp_path / "b.csv", 500)))
        assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
        assert p.stderr.startswith("contactsync: ") and "disk is full" in p.stderr, p.stderr


class FailingConnection:
    """A connection whose `fail_on`-th executemany raises an SQLite error."""

    def __init__(self, conn: sqlite3.Connection, fail_on: int, error: str) -> None:
        self._conn = conn
        self._left = fail_on
        self._error = error

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        self._left -= 1
        if self._left == 0:
            raise sqlite3.OperationalError(self._error)
        return self._conn.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@pytest.mark.parametrize("error", ["disk I/O error", "database or disk is full"])
def test_io_error_mid_run_fails_cleanly(tmp_path: Path, error: str) -> None:
    db = tmp_path / "mirror.db"
    with Mirror.open(db) as m:
        m.sync_file("xpm", write_csv(tmp_path / "a.csv", 100))
    before = dump(db)
    with Mirror.open(db) as m:
        real = m.store.conn
        m.store.conn = FailingConnection(real, 2, error)  # type: ignore[assignment]
        with pytest.raises(sqlite3.OperationalError, match=error):
            m.sync_file("xpm", changed_csv(tmp_path / "b.csv", 100, 50), mode="incremental",
                        chunk_size=40)
        m.store.conn = real
        run = m.runs("xpm", 1)[0]
        assert (run["status"], run["error"]) == ("failed", error)
    assert dump(db) == before
    con = ro(db)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()
    with Mirror.open(db) as m:
        r = m.sync_file("xpm", changed_csv(tmp_path / "b.csv", 100, 50), mode="incremental")
        assert (r.counts["updated"], r.counts["created"]) == (50, 50)


def test_cli_reports_an_io_error_in_one_line(tmp_path: Path) -> None:
    """The CLI turns an SQLite error into one line (no traceback), exit 1."""
    db = tmp_path / "mirror.db"
    db.write_bytes(b"SQLite format 3\0" + b"\xff" * 8000)  # a damaged database file
    p = subprocess.run([*CLI, "--db", str(db), "sync", "-s", "xpm",
                        str(write_csv(tmp_path / "a.csv", 3))],
                       capture_output=True, text=True, env=env(), timeout=30, check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.startswith("contactsync: database error:"), p.stderr
