"""Writes while the agent runs (issue 12), and the writer lock keyed by the
database's real path (issue 13, defect 3).

Real processes throughout: a `contactsync daemon`, CLI commands, a local HTTP
source on 127.0.0.1 that the test holds mid-run. Waits are on conditions with
deadlines (a request reached the server, a run row says 'running', a CLI said
it is waiting), never on fixed sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from agent_helpers import CLI, agent, config_text, env, poll, write_csv
from contactsync_agent.errors import ContactSyncError, LockedError
from contactsync_agent.locking import AgentLock, WriterLock
from contactsync_agent.mirror import Mirror


def run_cli(*args: str, cwd: Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env(),
                          timeout=timeout, check=False, cwd=cwd)


def start_cli(tmp: Path, name: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    err = tmp / f"{name}.err"
    with open(err, "wb") as f:
        proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=f, env=env())
    return proc, err


# ---------------------------------------------------------------- keyed by the real path


def test_a_symlink_to_the_database_takes_the_same_writer_lock(
    holder: tuple[subprocess.Popen[str], Path], tmp_path: Path
) -> None:
    proc, db = holder
    link = tmp_path / "link.db"
    link.symlink_to(db)
    assert WriterLock(link).path == WriterLock(db).path == tmp_path / "m.db.lock"
    done = run_cli("--db", str(link), "--wait", "0.5", "contacts", "add", "--name", "Bo Link")
    assert done.returncode == 5, done.stdout + done.stderr
    assert f"still locked by process {proc.pid}" in done.stderr
    assert "waiting for process" in done.stderr  # it did wait, then gave up
    with Mirror.open(db, readonly=True) as ro:
        assert [c.name for c in ro.contacts()] == ["Ann Example"]  # nothing written


def test_relative_and_dotted_paths_take_the_same_writer_lock(
    holder: tuple[subprocess.Popen[str], Path], tmp_path: Path
) -> None:
    proc, _ = holder
    (tmp_path / "sub").mkdir()
    (tmp_path / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    for spelling in ("m.db", "./sub/../m.db", "dirlink/m.db"):
        assert WriterLock(tmp_path / spelling).path == tmp_path / "m.db.lock"
        done = run_cli("--db", spelling, "--wait", "0.3", "contacts", "add", "--name", "Cy",
                       cwd=tmp_path)
        assert done.returncode == 5, (spelling, done.stderr)
        assert f"process {proc.pid}" in done.stderr


def test_a_second_agent_through_a_symlink_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "mirror.db"
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={}))
    link = tmp_path / "link.db"
    link.symlink_to(db)
    with agent(tmp_path, cfg) as a:
        assert a.proc is not None
        second = run_cli("--db", str(link), "--config", str(cfg), "daemon")
        assert second.returncode == 5, second.stderr
        assert f"locked by process {a.proc.pid} (one agent per database)" in second.stderr
        assert AgentLock(link).holder() == a.proc.pid
        assert a.stop() == 0


def test_a_hard_link_to_the_database_is_refused(tmp_path: Path) -> None:
    """SQLite names the WAL after the path: two hard links would mean two WALs
    for one file. An inode-keyed lock would not help; the agent refuses."""
    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        m.add_contact(name="Ann Example")
    os.link(db, tmp_path / "h.db")
    for name in ("h.db", "m.db"):
        with pytest.raises(ContactSyncError, match="2 hard links"):
            Mirror.open(tmp_path / name)
        with pytest.raises(ContactSyncError, match="2 hard links"):
            Mirror.open(tmp_path / name, readonly=True)
    done = run_cli("--db", str(tmp_path / "h.db"), "contacts", "add", "--name", "Bo")
    assert done.returncode == 1 and "hard links" in done.stderr
    (tmp_path / "h.db").unlink()
    with Mirror.open(db) as m:  # one name again: fine
        assert len(m.contacts()) == 1


# ---------------------------------------------------------------- the lock per write


def test_a_write_waits_for_the_holder_and_then_goes_in(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    a = Mirror.open(db)
    b = Mirror.open(db, wait=30)  # two read-write mirrors may be open at once
    told: list[int | None] = []
    b.store.on_wait = told.append
    try:
        with a.store.transaction():
            a.store.set_meta("k", "a")
            t = threading.Thread(target=lambda: b.add_contact(name="Bo Waits"))
            t.start()
            poll(lambda: told, what="the second writer to wait")
            assert told == [os.getpid()]
            assert t.is_alive()  # still waiting while the first holds the lock
        t.join(30)
        assert not t.is_alive()
        assert [c.name for c in a.contacts()] == ["Bo Waits"]
        quick = Mirror.open(db, wait=0.2)
        with a.store.transaction(), pytest.raises(LockedError, match="after waiting"):
            quick.add_contact(name="Too Late")

        def no_wait(pid: int | None) -> None:
            raise AssertionError("close() waited for the writer lock")

        quick.store.on_wait = no_wait
        with a.store.transaction():
            quick.close()  # at once: the checkpoint is left to the lock's holder
    finally:
        b.close()
        a.close()


# ---------------------------------------------------------------- writes while the agent runs


@dataclass
class Gate:
    """An HTTP source whose second page is answered only when the test says so."""

    items: list[dict[str, Any]]
    page2_asked: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


def serve(gate: Gate) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            page = int(parse_qs(parts.query).get("page", ["1"])[0])
            size = 10
            if page == 2:
                gate.page2_asked.set()
                gate.release.wait(120)
            chunk = gate.items[(page - 1) * size : page * size]
            nxt = f"/contacts?page={page + 1}" if page * size < len(gate.items) else None
            body = json.dumps({"data": chunk, "links": {"next": nxt}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/contacts"


def _seed_queues(db: Path) -> tuple[int, int, int]:
    """A review item, a manual contact to edit and an open activity: (item, contact, activity)."""
    with Mirror.open(db) as m:
        local = m.add_contact(name="Jon Smith", email="jon.smith@example.com",
                              mobile="0400 000 001", street="12 George St", postcode="2000")
        other = m.add_contact(name="Unrelated Person", email="u@p.com", mobile="0400 999 999")
        m.sync("xpm", [{"external_id": "X1", "given_name": "John", "family_name": "SMITH",
                        "email": "jon.smith@example.com", "mobile": "+61400000001",
                        "street": "12 George Street", "postcode": "2000"},
                       {"external_id": "X2", "given_name": "Kim", "family_name": "Lee",
                        "email": "kim@example.com"}], mode="incremental")
        [item] = m.review.items()
        assert item.candidate_id == local
        kim = next(c.id for c in m.contacts() if c.external_id == "X2")
        m.set_forced_manual(kim)
        m.sync("xpm", [{"external_id": "X2", "given_name": "Kim", "family_name": "Lee",
                        "email": "kim@new.example.com"}], mode="incremental")
        [act] = m.activities()
    return item.id, other, act.id


def _integrity(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def test_cli_writes_while_the_agents_run_is_held_mid_way(tmp_path: Path) -> None:
    db = tmp_path / "mirror.db"
    item, other, act = _seed_queues(db)
    gate = Gate([{"id": f"H{i:03d}", "first_name": f"Given{i}", "last_name": f"Family{i}",
                  "email": f"h{i}@example.com"} for i in range(25)])
    httpd, url = serve(gate)
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={"api": {
        "kind": "http", "url": url, "items_field": "data", "next_field": "links.next",
        "id_field": "id", "timeout": 60, "mode": "full",
        "mapping": {"first_name": "given_name", "last_name": "family_name"}}}))
    try:
        with agent(tmp_path, cfg) as a:
            # The agent's run is under way, holding the writer lock, reading page 2.
            assert gate.page2_asked.wait(60), "the agent never asked for page 2"
            poll(lambda: [r for r in a.runs("api") if r["status"] == "running"],
                 what="the run row of the agent's run")
            procs = {
                "accept": start_cli(tmp_path, "accept", "--db", str(db), "review", "accept",
                                    str(item)),
                "edit": start_cli(tmp_path, "edit", "--db", str(db), "contacts", "edit",
                                  str(other), "--email", "changed@example.org"),
                "add": start_cli(tmp_path, "add", "--db", str(db), "contacts", "add",
                                 "--name", "Dee Added", "--email", "dee@example.org"),
                "resolve": start_cli(tmp_path, "resolve", "--db", str(db), "activity",
                                     str(act), "resolve", "--note", "checked"),
            }
            for name, (proc, err) in procs.items():
                poll(lambda err=err: "waiting for the agent's run to finish"  # type: ignore[misc]
                     in err.read_text(), timeout=60, what=f"{name} to wait for the run")
                assert proc.poll() is None, name  # waiting, not refused
            gate.release.set()
            for name, (proc, err) in procs.items():
                assert proc.wait(60) == 0, (name, err.read_text())
            poll(lambda: [r for r in a.runs("api") if r["status"] == "ok"],
                 what="the agent's run to commit")
            [run] = a.runs("api")
            assert (run["status"], run["records"], run["created"]) == ("ok", 25, 25)
            assert a.proc is not None and a.proc.poll() is None
            assert a.stop() == 0
    finally:
        gate.release.set()
        httpd.shutdown()
        httpd.server_close()
    assert _integrity(db) == "ok"
    with Mirror.open(db, readonly=True) as m:
        assert m.review.items(status="accepted")[0].id == item
        assert m.get(other).email == "changed@example.org"
        assert [c.id for c in m.contacts() if c.email == "dee@example.org"]
        assert [x.id for x in m.activities(status="resolved")] == [act]
        assert len(m.contacts(source="api")) == 25


def _stamp(db: Path) -> tuple[tuple[int, int], ...]:
    out = []
    for p in (db, db.with_name(db.name + "-wal")):
        try:
            st = p.stat()
            out.append((st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append((-1, -1))
    return tuple(out)


def test_nobody_writes_the_database_while_another_holds_the_writer_lock(
    tmp_path: Path,
) -> None:
    """A witness takes the writer lock again and again while the agent imports a
    large file and the CLI adds contacts: while it holds the lock, neither the
    database file nor the WAL changes and no run is half done."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={"drop": {"path": str(inbox),
                                                           "settle_seconds": 0.2}}))
    db = tmp_path / "mirror.db"
    n = 60_000
    with agent(tmp_path, cfg) as a:
        write_csv(inbox / "big.csv", n)
        poll(lambda: [r for r in a.runs("drop") if r["status"] == "running"], timeout=60,
             what="the agent's run to start")
        adds: list[subprocess.Popen[bytes]] = [
            start_cli(tmp_path, f"add{i}", "--db", str(db), "contacts", "add", "--name",
                      f"Added Person{i}")[0] for i in range(3)]
        witness = WriterLock(db)
        holds = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            witness.wait(60)
            try:
                before = _stamp(db)
                assert not a.query("SELECT id FROM runs WHERE status = 'running'")
                time.sleep(0.03)  # room for a writer that ignores the lock to show itself
                assert _stamp(db) == before
                holds += 1
            finally:
                witness.release()
            done = [p.poll() for p in adds]
            if all(rc is not None for rc in done) and a.contacts("drop") == n and holds >= 5:
                break
            time.sleep(0.05)  # let the others in
        assert [p.wait(60) for p in adds] == [0, 0, 0]
        assert a.contacts("drop") == n and holds >= 5
        assert a.stop() == 0
    assert _integrity(db) == "ok"
    with Mirror.open(db, readonly=True) as m:
        assert len([c for c in m.contacts(record_type="manual")
                    if c.name.startswith("Added Person")]) == 3


def test_a_cli_write_goes_in_between_two_runs_not_after_the_queue(tmp_path: Path) -> None:
    """Back-to-back runs do not starve a waiting write: the agent lets an announced
    waiter go first before it starts its next run."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={"drop": {
        "path": str(inbox), "settle_seconds": 0.2, "mode": "incremental"}}))
    db = tmp_path / "mirror.db"
    files, rows = 8, 20_000
    staging = tmp_path / "staging"
    staging.mkdir()
    for i in range(files):  # complete files, moved in at once
        write_csv(staging / f"part{i}.csv", rows, start=i * rows)
    with agent(tmp_path, cfg) as a:
        for p in sorted(staging.iterdir()):
            p.rename(inbox / p.name)
        poll(lambda: [r for r in a.runs("drop") if r["status"] == "running"], timeout=60,
             what="the first run to start")
        proc, err = start_cli(tmp_path, "add", "--db", str(db), "contacts", "add",
                              "--name", "Quick Add")
        assert proc.wait(120) == 0, err.read_text()
        done_when_added = len([r for r in a.runs("drop") if r["status"] == "ok"])
        poll(lambda: len([r for r in a.runs("drop") if r["status"] == "ok"]) == files,
             timeout=180, what="every file to be imported")
        assert done_when_added < files - 2, done_when_added
        assert a.contacts("drop") == files * rows
        assert a.stop() == 0
    assert _integrity(db) == "ok"


def test_restore_is_refused_while_an_agent_or_another_connection_has_the_mirror(
    tmp_path: Path,
) -> None:
    from contactsync_agent import maintenance

    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        m.add_contact(name="Ann Example")
    copy = maintenance.backup(db, tmp_path / "copy.db")
    agent_lock = AgentLock(db)
    agent_lock.acquire()  # as a running daemon holds it
    try:
        with pytest.raises(LockedError, match="one agent per database"):
            maintenance.restore(db, copy.path)
    finally:
        agent_lock.release()
    with Mirror.open(db), pytest.raises(LockedError, match="still open"):
        maintenance.restore(db, copy.path)  # an idle read-write mirror is open
    assert maintenance.restore(db, copy.path).contacts == 1


def test_a_write_through_a_connection_to_a_replaced_file_is_refused(tmp_path: Path) -> None:
    """A program that opened the mirror before its file was swapped (as restore
    does) would write into the old file: its next write is refused instead."""
    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        m.add_contact(name="Ann Example")
    other = tmp_path / "other.db"
    with Mirror.open(other) as m:
        m.add_contact(name="Bo Other")
    early = Mirror.open(db)
    try:
        os.replace(other, db)
        for suffix in ("-wal", "-shm"):
            db.with_name(db.name + suffix).unlink(missing_ok=True)
        with pytest.raises(ContactSyncError, match="was replaced"):
            early.add_contact(name="Lost Write")
    finally:
        early.close()
    with Mirror.open(db, readonly=True) as ro:
        assert [c.name for c in ro.contacts()] == ["Bo Other"]


def test_sigterm_ends_an_agent_that_waits_for_another_write(tmp_path: Path) -> None:
    """The agent waits as long as another process writes, but a stop request
    ends the wait: it exits 0 within the promised 10 s."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={"drop": {"path": str(inbox),
                                                           "settle_seconds": 0.2}}))
    db = tmp_path / "mirror.db"
    with agent(tmp_path, cfg) as a:
        lock = WriterLock(db)
        lock.wait(30)  # a long write of another process (a CLI sync, say)
        try:
            write_csv(inbox / "a.csv", 10)
            poll(lambda: f"waiting for process {os.getpid()}" in a.log.read_text(),
                 timeout=30, what="the agent to wait for the writer lock")
            assert a.proc is not None and a.proc.poll() is None
            t0 = time.monotonic()
            a.signal(signal.SIGTERM)
            assert a.proc.wait(10) == 0
            assert time.monotonic() - t0 < 10
        finally:
            lock.release()
    assert not [r for r in a.runs() if r["status"] == "running"]
    assert (inbox / "a.csv").exists()  # not taken: the next start imports it
