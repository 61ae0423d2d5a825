"""The environment around the mirror turned hostile: links in the watched folder, a
file replaced during its run, undecodable file names, a loose umask, odd
database paths, a looping API, a vCard full of errors (issue 13, items 1, 2, 6, 10).

The daemon cases run the real `contactsync daemon` on real folders.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import (
    CLI,
    HEADER,
    Agent,
    Webhook,
    agent,
    cli,
    config_text,
    csv_rows,
    env,
    now_iso,
    poll,
    write_csv,
)

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX links and modes"),
]

CANARY = "canary-4b1d-e7f3-env-secret"


def setup(tmp_path: Path, alerts: dict[str, Any] | None = None, **source: Any) -> tuple[Path, Path]:
    inbox = tmp_path / "in"
    inbox.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        config_text(
            tmp_path,
            sources={"xpm": {"path": str(inbox), "settle_seconds": 0.2, **source}},
            agent={"rescan": 0.3},
            alerts=alerts,
        )
    )
    return cfg, inbox


def ok_runs(a: Agent) -> list[dict[str, Any]]:
    return [r for r in a.runs() if r["status"] == "ok"]


def rescans_pass(a: Agent, n: int = 4) -> None:
    """Waits for a few turns of the loop (each heartbeat follows a rescan here)."""
    a.heartbeats_after(now_iso(), n)


def everything_written(a: Agent, tmp_path: Path) -> str:
    """The log, stderr, every run's error and origin, and every file under the inbox."""
    parts = [a.log.read_text(errors="replace"), a.stderr]
    parts += [f"{r['error']} {r['origin']}" for r in a.runs()]
    parts += [str(x) for row in a.query("SELECT * FROM quarantine") for x in row]
    for p in (tmp_path / "in").rglob("*"):
        if p.is_file() and not p.is_symlink():
            parts.append(p.read_text(errors="replace"))
    return "\n".join(parts)


# ---------------------------------------------------------------- 1. links


def test_a_link_to_proc_environ_is_never_read_nor_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTACTSYNC_TEST_TOKEN", CANARY)  # agent_helpers.env() passes it on
    monkeypatch.setenv("API_TOKEN", CANARY)
    assert CANARY in env().values()
    with Webhook() as hook:
        cfg, inbox = setup(tmp_path, alerts={"webhook": hook.url, "timeout": "5s"})
        link = inbox / "env.csv"
        link.symlink_to("/proc/self/environ")
        with agent(tmp_path, cfg) as a:
            # A real file beside the link goes in; meanwhile the folder is scanned
            # again and again with the link in it.
            write_csv(inbox / "real.csv", 3)
            poll(lambda: ok_runs(a), what="the real file's run")
            rescans_pass(a, 6)
            written = everything_written(a, tmp_path)
            assert a.proc is not None and a.proc.poll() is None
        assert CANARY not in written
        assert CANARY not in json.dumps(hook.received)
        assert link.is_symlink() and os.readlink(link) == "/proc/self/environ"
        assert not (inbox / "failed").exists()
        assert sorted(p.name for p in (inbox / "processed").iterdir()) == ["real.csv"]
        log = a.log.read_text()
        # Said once, not on every rescan.
        assert len([ln for ln in log.splitlines() if "env.csv" in ln]) == 1, log
        assert [r["origin"] for r in a.runs()] == [str(inbox / "real.csv")]


def test_a_link_to_a_readable_file_is_not_followed(tmp_path: Path) -> None:
    cfg, inbox = setup(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    target = write_csv(outside / "secret.csv", 5, start=500)
    before = target.read_bytes()
    (inbox / "export.csv").symlink_to(target)
    with agent(tmp_path, cfg) as a:
        write_csv(inbox / "real.csv", 1)
        poll(lambda: ok_runs(a), what="the run of the real file beside the link")
        rescans_pass(a, 6)
        assert len(a.runs()) == 1 and a.runs()[0]["origin"].endswith("real.csv")
        assert a.contacts() == 1
        log = a.log.read_text()
    assert (inbox / "export.csv").is_symlink()
    assert target.read_bytes() == before
    assert sorted(p.name for p in outside.iterdir()) == ["secret.csv"]
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == ["real.csv"]
    assert "Given500" not in log and "X500" not in log
    assert len([ln for ln in log.splitlines() if "export.csv" in ln]) == 1, log


def _posix_locks(pid: int) -> set[tuple[int, str, str]]:
    """(inode, kind, range) of the POSIX locks `pid` holds, from /proc/locks."""
    out: set[tuple[int, str, str]] = set()
    for line in Path("/proc/locks").read_text().splitlines():
        f = line.split()
        if "->" in f:  # a waiter
            continue
        if len(f) >= 8 and f[1] == "POSIX" and f[4] == str(pid):
            out.add((int(f[5].rsplit(":", 1)[1]), f[3], f"{f[6]}-{f[7]}"))
    return out


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs /proc/locks (Linux)")
def test_links_to_the_mirror_files_are_never_opened(tmp_path: Path) -> None:
    """Opening and closing a second descriptor on the database drops SQLite's POSIX
    locks (the precondition of the lost WAL in the issue): the daemon's locks on
    its database files must be the same before and after it met the links."""
    cfg, inbox = setup(tmp_path)
    with agent(tmp_path, cfg) as a:
        write_csv(inbox / "first.csv", 3)
        poll(lambda: ok_runs(a), what="a first run (the WAL exists)")
        poll(lambda: (inbox / "processed" / "first.csv").exists(), what="the move")
        assert a.proc is not None
        pid = a.proc.pid
        db_ino, shm_ino = a.db.stat().st_ino, os.stat(f"{a.db}-shm").st_ino

        def held() -> set[tuple[int, str, str]]:
            """The locks an idle connection keeps: its shared lock on the database
            file and the one on the -shm "DMS" byte (writes take others briefly)."""
            return {
                x
                for x in _posix_locks(pid)
                if x[0] == db_ino or (x[0] == shm_ino and x[2] == "128-128")
            }

        before = held()
        assert any(x[0] == db_ino for x in before), before
        names = ["db.csv", "wal.csv", "shm.csv", "lock.csv", "hard.csv"]
        (inbox / "db.csv").symlink_to(a.db)
        (inbox / "wal.csv").symlink_to(f"{a.db}-wal")
        (inbox / "shm.csv").symlink_to(f"{a.db}-shm")
        (inbox / "lock.csv").symlink_to(f"{a.db}.lock")
        os.link(a.db, inbox / "hard.csv")  # not a link by lstat: caught by its inode
        poll(
            lambda: all(n in a.log.read_text() for n in names),
            what="every link refused in the log",
        )
        rescans_pass(a)
        # Another run, so that the locks are looked at after more database work.
        write_csv(inbox / "second.csv", 5)  # the first's 3 people and 2 more
        poll(lambda: len(ok_runs(a)) == 2, what="a second run")
        poll(lambda: held() == before, timeout=5, what=f"the same locks as before {before}")
        log = a.log.read_text()
        assert len(a.runs()) == 2
        assert a.proc.poll() is None
    for n in names:
        assert (inbox / n).exists() or (inbox / n).is_symlink(), n
        assert len([ln for ln in log.splitlines() if n in ln]) == 1, (n, log)
    assert (inbox / "hard.csv").stat().st_ino == a.db.stat().st_ino
    assert not (inbox / "failed").exists()
    assert "mirror's own database" in log


def test_a_processed_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    cfg, inbox = setup(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (inbox / "processed").symlink_to(elsewhere)
    with agent(tmp_path, cfg) as a:
        write_csv(inbox / "export.csv", 4)

        def failing() -> dict[str, Any] | None:
            r = cli("--config", str(cfg), "status", "--json")
            doc = json.loads(r.stdout)
            src = next(s for s in doc["sources"] if s["name"] == "xpm")
            return src if src["health"] == "failing" else None

        src = poll(failing, what="the source to be failing")
        why = " ".join(src["reasons"])
        assert "processed/" in why and "symbolic link" in why, src
        rescans_pass(a)
        assert list(elsewhere.iterdir()) == []
        assert (inbox / "export.csv").exists()
        assert a.runs() == []  # not imported: it could not have been moved afterwards
        # Once the link is replaced by a real folder, the file goes through.
        (inbox / "processed").unlink()
        poll(lambda: ok_runs(a), what="the run once processed/ is a folder")
        poll(lambda: (inbox / "processed" / "export.csv").exists(), what="the move")
        log = a.log.read_text()
    assert list(elsewhere.iterdir()) == []
    said = [ln for ln in log.splitlines() if "symbolic link" in ln and " ERROR " in ln]
    assert len(said) == 1, log  # said once, though the folder was scanned many times


def test_a_failed_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    cfg, inbox = setup(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (inbox / "failed").symlink_to(elsewhere)
    with agent(tmp_path, cfg) as a:
        (inbox / "broken.csv").write_text("not,a,header\n")
        rescans_pass(a, 6)
        assert list(elsewhere.iterdir()) == []
        assert (inbox / "broken.csv").exists()
        log = a.log.read_text()
    assert "failed/" in log and "symbolic link" in log


# ---------------------------------------------------------------- 2. replaced mid-run


def test_a_file_replaced_during_its_run_is_left_for_the_next_run(tmp_path: Path) -> None:
    n = 60_000
    cfg, inbox = setup(tmp_path, chunk_size=2000)
    a_data = (HEADER + csv_rows(n)).encode()
    # B is A plus 100 more people: its run deletes nothing.
    b_data = (HEADER + csv_rows(n) + csv_rows(100, start=1_000_000)).encode()
    staged = inbox / ".staged-b.csv"  # a dot file: ignored by the agent
    staged.write_bytes(b_data)
    with agent(tmp_path, cfg) as a:
        (inbox / "export.csv").write_bytes(a_data)
        poll(
            lambda: any(r["status"] == "running" for r in a.runs()),
            what="the first run to start",
            interval=0.005,
        )
        os.replace(staged, inbox / "export.csv")
        replaced_at = now_iso()
        runs = poll(lambda: len(ok_runs(a)) >= 2 and ok_runs(a), timeout=120,
                    what="the second run (of B)")
        first, second = runs[0], runs[1]
        assert first["finished_at"] > replaced_at, "the swap came too late to test anything"
        assert first["records"] == n, "the first run must have read A, the file it took"
        assert second["records"] == n + 100 and second["created"] == 100
        assert a.contacts() == n + 100
        poll(lambda: not (inbox / "export.csv").exists(), what="B's move")
        moved = sorted((inbox / "processed").iterdir())
        contents = [p.read_bytes() for p in moved]
        assert b_data in contents
        assert all(c in (a_data, b_data) for c in contents)
        assert "another file took its name" in a.log.read_text()


# ---------------------------------------------------------------- 6. undecodable names


def test_an_undecodable_file_name_is_imported_and_shown_escaped(tmp_path: Path) -> None:
    cfg, inbox = setup(tmp_path)
    bad = os.fsencode(inbox) + b"/bad\xff\xfename.csv"
    forged = os.fsencode(inbox) + b"/two\nERROR forged line.csv"
    with agent(tmp_path, cfg) as a:
        with open(bad, "wb") as f:
            f.write((HEADER + csv_rows(3)).encode())
        poll(lambda: ok_runs(a), what="the run of the undecodable name")
        with open(forged, "wb") as f:
            f.write(b"no header at all\x00\n")  # refused: goes to failed/ with a note
        poll(lambda: len(a.runs()) >= 2 and a.runs()[-1]["status"] == "refused",
             what="the refusal of the second file")
        poll(lambda: os.path.exists(os.fsencode(inbox) + b"/failed/two\nERROR forged line.csv"),
             what="the move to failed/")
        rescans_pass(a)
        assert a.proc is not None and a.proc.poll() is None
        runs = a.runs()
        log = a.log.read_text()
    assert runs[0]["origin"] == f"{inbox}/bad\\xff\\xfename.csv"
    assert runs[1]["origin"] == f"{inbox}/two\\nERROR forged line.csv"
    assert os.path.exists(os.fsencode(inbox) + b"/processed/bad\xff\xfename.csv")
    assert "bad\\xff\\xfename.csv" in log
    assert not any(ln.startswith("ERROR forged") for ln in log.splitlines())
    assert "Traceback" not in a.stderr and "Logging error" not in a.stderr
    note = Path(os.fsdecode(os.fsencode(inbox) + b"/failed/two\nERROR forged line.csv.error.txt"))
    assert "two\\nERROR forged line.csv" in note.read_text(encoding="utf-8")


def test_the_daemon_survives_whatever_a_job_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The per-job guard: an error nobody foresaw is logged, the file is set
    aside while unchanged, and the loop goes on."""
    from contactsync_agent.config import load_config
    from contactsync_agent.daemon import Daemon

    cfg, inbox = setup(tmp_path)
    d = Daemon(load_config(cfg, required=True), tmp_path / "mirror.db")
    from contactsync_agent.mirror import Mirror

    d.mirror = Mirror.open(d.db_path)
    try:
        d.watcher.build()
        w = d.watches["xpm"]
        p = write_csv(inbox / "x.csv", 2)
        d.watcher.scan(w, time.monotonic() - 10)
        for s in w.pending.values():
            s.since -= 10

        def boom(*args: Any, **kw: Any) -> None:
            raise RuntimeError("something nobody foresaw")

        d.jobs.process = boom  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="contactsync_agent"):
            picked = d.watcher.pick(time.monotonic())
            assert picked is not None
            d.jobs.job(*picked)  # must not raise
        assert "something nobody foresaw" in caplog.text
        assert p in w.kept and p not in w.pending
    finally:
        for w in d.watches.values():
            d.watcher.stop_observer(w)
        d.mirror.close()
        d.signals.close()


# ---------------------------------------------------------------- 10. umask, URIs, loops, logs


def test_error_notes_and_the_agents_folders_are_owner_only(tmp_path: Path) -> None:
    cfg, inbox = setup(tmp_path)
    old = os.umask(0o022)
    try:
        with agent(tmp_path, cfg) as a:
            write_csv(inbox / "good.csv", 2)
            (inbox / "bad.csv").write_text("no header\n")
            poll(lambda: (inbox / "failed" / "bad.csv.error.txt").exists(), what="the note")
            poll(lambda: (inbox / "processed" / "good.csv").exists(), what="the good move")
            assert a.proc is not None
    finally:
        os.umask(old)
    for d in (inbox / "processed", inbox / "failed"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    note = inbox / "failed" / "bad.csv.error.txt"
    assert stat.S_IMODE(note.stat().st_mode) == 0o600


def test_exports_and_match_results_are_owner_only(tmp_path: Path) -> None:
    from contactsync_agent.matching import dedupe
    from contactsync_agent.mirror import Mirror

    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        m.sync_file("xpm", write_csv(tmp_path / "in.csv", 5))
    old = os.umask(0o022)
    try:
        for fmt in ("csv", "json"):
            out = tmp_path / f"export.{fmt}"
            r = cli("--db", str(db), "export", "--full", "--format", fmt, "--out", str(out))
            assert r.returncode == 0, r.stderr
            assert stat.S_IMODE(out.stat().st_mode) == 0o600, fmt
        recs = [
            {"id": "1", "given_name": "Ann", "family_name": "Lee", "email": "a@x.org"},
            {"id": "2", "given_name": "Ann", "family_name": "Lee", "email": "a@x.org"},
        ]
        result = dedupe(recs)
        result.to_csv(tmp_path / "pairs.csv")
        result.to_json(tmp_path / "pairs.json")
    finally:
        os.umask(old)
    for name in ("pairs.csv", "pairs.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


def test_the_configs_temp_file_is_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temp file `source enable` writes is owner-only from its creation (it
    holds the whole config), not only once it is renamed into place."""
    from contactsync_agent import config as config_mod

    cfg = tmp_path / "config.toml"
    config_mod.write_example_config(cfg, tmp_path / "m.db")
    modes: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(config_mod.os, "fsync", spy)
    old = os.umask(0o022)
    try:
        name = next(iter(config_mod.load_config(cfg, required=True).sources))
        config_mod.write_source_enabled(cfg, name, False)
    finally:
        os.umask(old)
    assert modes == [0o600]
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600


def test_a_database_path_with_hash_question_mark_and_percent(tmp_path: Path) -> None:
    from contactsync_agent.mirror import Mirror

    folder = tmp_path / "a#b?c%41d"
    folder.mkdir()
    db = folder / "mirror#1?x=%2e.db"
    with Mirror.open(db) as m:
        m.sync_file("xpm", write_csv(tmp_path / "in.csv", 4))
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".db") == [db.name]
    with Mirror.open(db, readonly=True) as ro:
        assert len(ro.contacts()) == 4
    # No stray database was created by a mis-read URI.
    assert not (tmp_path / "a").exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in folder.iterdir() if p.name.startswith("mirror#1?x=%2e.db")
    )
    r = cli("--db", str(db), "status", "--json")
    assert r.returncode in (0, 1, 2), r.stderr
    assert json.loads(r.stdout)
    r = cli("--db", str(db), "contacts", "list", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == 4
    copy = tmp_path / "copy?#%.db"
    r = cli("--db", str(db), "backup", str(copy))
    assert r.returncode == 0, r.stderr
    with Mirror.open(copy, readonly=True) as c:
        assert len(c.contacts()) == 4


class _Looping(BaseHTTPRequestHandler):
    """Page 1 links to page 2, page 2 links back to page 1: a loop."""

    hits: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.hits.append(self.path)
        page = 2 if "page=2" in self.path else 1
        body = {
            "data": [{"id": f"P{page}", "first_name": f"Given{page}"}],
            "links": {"next": "/contacts?page=1" if page == 2 else "/contacts?page=2"},
        }
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def looping_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    hits: list[str] = []
    handler = type("H", (_Looping,), {"hits": hits})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


def test_a_next_link_back_to_a_fetched_page_is_refused_at_once(
    tmp_path: Path, looping_server: tuple[str, list[str]]
) -> None:
    from contactsync_agent.config import SourceConfig
    from contactsync_agent.errors import ContactSyncError
    from contactsync_agent.mirror import Mirror
    from contactsync_agent.source_runs import sync_source

    base, hits = looping_server
    cfg = SourceConfig(
        name="api",
        kind="http",
        mode="full",
        options={
            "url": f"{base}/contacts?page=1",
            "items_field": "data",
            "next_field": "links.next",
            "id_field": "id",
            "timeout": 5,
            "max_retries": 0,
        },
    )
    with Mirror.open(tmp_path / "m.db") as m:
        with pytest.raises(ContactSyncError, match="already fetched"):
            sync_source(m, cfg)
        assert m.contacts() == []
    assert len(hits) == 2, hits


def test_a_vcard_full_of_bad_cards_logs_a_summary(tmp_path: Path) -> None:
    """20,000 broken cards (100,000 by hand: the same 7 lines, in 34 s) log the
    first five problems and one line counting all of them, not one line each."""
    card = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:No Uid\r\nN:Uid;No;;;\r\nEND:VCARD\r\n"
    broken = "BEGIN:VCARD\r\nVERSION:3.0\r\nN:;;;\r\nFN\r\nEND:VCARD\r\n"
    good = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:u1\r\nFN:Ann Lee\r\nN:Lee;Ann;;;\r\nEND:VCARD\r\n"
    n = 20_000
    path = tmp_path / "many.vcf"
    path.write_text(good + "stray text\r\n" * 50 + (card + broken) * (n // 2), newline="")
    r = cli("--db", str(tmp_path / "m.db"), "sync", "--source", "phone", str(path),
            timeout=600)
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) < 40, lines[:50]
    assert f"{n + 50} problems in all" in r.stderr, r.stderr
    got = subprocess.run(
        [*CLI, "--db", str(tmp_path / "m.db"), "runs", "--json"],
        capture_output=True, text=True, env=env(), check=False,
    )
    assert json.loads(got.stdout)[0]["rejected"] == n


def test_a_link_given_to_sync_that_is_the_mirror_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    r = cli("--db", str(db), "sync", "--source", "xpm", str(write_csv(tmp_path / "a.csv", 2)))
    assert r.returncode == 0, r.stderr
    (tmp_path / "sneaky.csv").symlink_to(db)
    r = cli("--db", str(db), "sync", "--source", "xpm", str(tmp_path / "sneaky.csv"))
    assert r.returncode == 3, r.stderr
    assert "mirror's own database" in r.stderr
    r = cli("--db", str(db), "entities", "sync", "organisations", str(tmp_path / "sneaky.csv"),
            "-s", "xpm")
    assert r.returncode == 3, r.stderr
    assert "mirror's own database" in r.stderr
    (tmp_path / "sneaky.vcf").symlink_to(f"{db}-wal" if Path(f"{db}-wal").exists() else db)
    r = cli("--db", str(db), "sync", "--source", "phone", str(tmp_path / "sneaky.vcf"))
    assert r.returncode == 3, r.stderr
    assert "mirror's own database" in r.stderr


def test_escape_name() -> None:
    from contactsync_agent.safetext import escape_name

    assert escape_name("café.csv") == "café.csv"
    assert escape_name(os.fsdecode(b"bad\xff\xfename.csv")) == "bad\\xff\\xfename.csv"
    assert escape_name(b"bad\xff.csv") == "bad\\xff.csv"
    assert escape_name("a\nb\tc\x1b[31m.csv") == "a\\nb\\tc\\x1b[31m.csv"
    assert escape_name("x\u2028y") == "x\\u2028y"
    escaped = escape_name(os.fsdecode(b"\xc3(\xed\xa0\x80.csv"))
    escaped.encode("utf-8")  # always encodable
    assert escaped == "\\xc3(\\xed\\xa0\\x80.csv"


def test_fifo_and_folder_named_like_exports_are_skipped(tmp_path: Path) -> None:
    cfg, inbox = setup(tmp_path)
    os.mkfifo(inbox / "pipe.csv")
    (inbox / "dir.csv").mkdir()
    with agent(tmp_path, cfg) as a:
        write_csv(inbox / "real.csv", 2)
        poll(lambda: ok_runs(a), what="the real run")
        rescans_pass(a)
        assert len(a.runs()) == 1
        assert a.proc is not None and a.proc.poll() is None
    assert (inbox / "pipe.csv").exists() and (inbox / "dir.csv").is_dir()
    shutil.rmtree(inbox / "dir.csv")
