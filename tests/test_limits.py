"""Hostile servers and huge values (issue 13, defects 4 and 5): every wait has an
end, SIGTERM ends a run stuck anywhere, a stale heartbeat is reported, and no
source can make the agent hold more than its limits.

The servers are local (127.0.0.1) threads that end on their own within a bounded
time; memory is the peak RSS (VmHWM) of a real `contactsync` process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import CLI, agent, cli, config_text, env, poll
from contactsync_agent.config import SourceConfig
from contactsync_agent.errors import ContactSyncError
from contactsync_agent.mirror import Mirror
from contactsync_agent.source_runs import sync_source

pytestmark = pytest.mark.timeout(120)

MB = 1 << 20
SECRET = "s3cr3t-api-key"


# ---------------------------------------------------------------- local servers


@dataclass
class Served:
    """What a local server saw: requests and bytes sent, and when it began sending."""

    requests: int = 0
    sent: int = 0
    dripping: threading.Event = field(default_factory=threading.Event)


@contextlib.contextmanager
def server(respond: Callable[[BaseHTTPRequestHandler, Served], None]) -> Iterator[
    tuple[str, Served]
]:
    """A ThreadingHTTPServer on 127.0.0.1 whose GET handler is `respond`."""
    served = Served()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            served.requests += 1
            with contextlib.suppress(OSError):
                respond(self, served)

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/contacts", served
    finally:
        srv.shutdown()
        srv.server_close()


def drip(seconds: float = 40.0, every: float = 0.5) -> Callable[[BaseHTTPRequestHandler, Served],
                                                                None]:
    """A server that sends a valid header, then its body a byte at a time, `every`
    seconds apart, for at most `seconds` (so the thread always ends)."""
    body = json.dumps([{"id": f"D{i}", "name": f"Drip Person{i}"} for i in range(50)]).encode()

    def respond(h: BaseHTTPRequestHandler, served: Served) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.flush()
        end = time.monotonic() + seconds
        for b in body:
            if time.monotonic() > end:
                return
            h.wfile.write(bytes([b]))
            h.wfile.flush()
            served.sent += 1
            served.dripping.set()
            time.sleep(every)  # the hostile server's pace, not a wait in the test

    return respond


def huge(total: int, declare: bool) -> Callable[[BaseHTTPRequestHandler, Served], None]:
    """A body of `total` bytes made on the fly (never stored): a JSON array of one
    object with a long string, with or without a Content-Length."""
    head, tail = b'[{"id": "H1", "notes": "', b'"}]'
    chunk = b"x" * (1 << 16)

    def respond(h: BaseHTTPRequestHandler, served: Served) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        if declare:
            h.send_header("Content-Length", str(total))
        else:
            h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(head)
        left = total - len(head) - len(tail)
        while left > 0:
            n = min(left, len(chunk))
            h.wfile.write(chunk[:n])
            served.sent += n
            left -= n
        h.wfile.write(tail)

    return respond


def http_cfg(url: str, **options: Any) -> SourceConfig:
    max_duration = options.pop("max_duration", None)
    return SourceConfig(
        name="api", kind="http", max_duration=max_duration,
        options={"url": f"{url}?api_key={SECRET}", "id_field": "id", "max_retries": 0,
                 **options},
    )


# ---------------------------------------------------------------- peak memory of a process

_MEASURED = """
import atexit, sys
hwm_file = sys.argv.pop(1)
def _hwm():
    with open('/proc/self/status') as f:
        kb = next(line.split()[1] for line in f if line.startswith('VmHWM:'))
    with open(hwm_file, 'w') as f:
        f.write(kb)
atexit.register(_hwm)
sys.argv[0] = 'contactsync'
from contactsync_agent.cli import main
main()
"""


def measured_cli(*args: str, timeout: float = 60.0) -> tuple[subprocess.CompletedProcess[str],
                                                            int]:
    """`contactsync ARGS` in a child that reports its own peak RSS (bytes) at exit."""
    with tempfile.TemporaryDirectory() as d:
        hwm = Path(d) / "hwm"
        p = subprocess.run([CLI[0], "-c", _MEASURED, str(hwm), *args], capture_output=True,
                           text=True, env=env(), timeout=timeout, check=False)
        rss = int(hwm.read_text()) * 1024 if hwm.exists() else 0
    return p, rss


# ---------------------------------------------------------------- defect 4: deadlines


def test_a_slow_drip_page_is_cut_off_at_page_timeout_naming_url_and_limit(tmp_path: Path) -> None:
    with server(drip()) as (url, served), Mirror.open(tmp_path / "m.db") as m:
        cfg = http_cfg(url, timeout=3, page_timeout=2)
        t0 = time.monotonic()
        with pytest.raises(ContactSyncError) as e:
            sync_source(m, cfg)
        took = time.monotonic() - t0
        msg = str(e.value)
        assert served.sent >= 1  # it was cut off mid-body, not before
        assert took < 6, took  # 2 s and the time to notice, not the 40 s of the drip
        assert "page_timeout = 2s" in msg and "sources.api.page_timeout" in msg, msg
        assert "127.0.0.1" in msg and "/contacts" in msg, msg
        assert SECRET not in msg and "api_key=***" in msg, msg
        [run] = m.runs("api", 5)
        assert run["status"] == "failed" and SECRET not in run["error"]
        assert m.store.conn.execute("SELECT count(*) FROM contacts").fetchone()[0] == 0


def test_a_tls_handshake_that_never_comes_is_cut_off_at_page_timeout() -> None:
    """A server that accepts the connection and never answers the TLS hello."""
    from contactsync_agent.sources import HttpSource

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(5)
        url = f"https://127.0.0.1:{srv.getsockname()[1]}/contacts"
        src = HttpSource(http_cfg(url, timeout=30, page_timeout=1.5))
        t0 = time.monotonic()
        with pytest.raises(ContactSyncError) as e:
            list(src.read("full", None))
        assert time.monotonic() - t0 < 5
        assert "page_timeout = 1.5s" in str(e.value) and SECRET not in str(e.value)


def test_the_run_deadline_ends_a_run_of_many_slow_pages(tmp_path: Path) -> None:
    """Each page is quick enough for page_timeout, but the run is not: max_duration."""

    def paged(h: BaseHTTPRequestHandler, served: Served) -> None:
        page = int(h.path.rsplit("page=", 1)[-1].split("&")[0]) if "page=" in h.path else 1
        time.sleep(0.4)  # the slow server
        body = json.dumps([{"id": f"P{page}-{i}"} for i in range(2)]).encode()
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    with server(paged) as (url, _), Mirror.open(tmp_path / "m.db") as m:
        cfg = http_cfg(url, timeout=3, page_timeout=5, page_param="page", page_size=2,
                       max_duration=2)
        t0 = time.monotonic()
        with pytest.raises(ContactSyncError) as e:
            sync_source(m, cfg)
        assert time.monotonic() - t0 < 5
        msg = str(e.value)
        assert "max_duration = 2s" in msg and "sources.api.max_duration" in msg, msg
        assert SECRET not in msg
        assert m.runs("api", 5)[0]["status"] == "failed"


def test_sigterm_ends_the_agent_stuck_in_a_slow_drip_response(tmp_path: Path) -> None:
    """The issue's case: timeout = 3 and a byte a second never trips the socket
    timeout. SIGTERM mid-response: the agent exits 0 within the promised 10 s, the
    run rolled back and recorded as aborted."""
    with server(drip(seconds=60, every=1.0)) as (url, served):
        cfg = tmp_path / "config.toml"
        cfg.write_text(config_text(tmp_path, sources={"api": {
            "kind": "http", "url": url, "id_field": "id", "timeout": 3, "max_retries": 0,
            "interval": "1h"}}))
        with agent(tmp_path, cfg) as a:
            assert served.dripping.wait(20), "the agent never asked the drip server"
            poll(lambda: any(r["status"] == "running" for r in a.runs("api")),
                 what="the run to be open")
            sent = time.monotonic()
            a.signal(signal.SIGTERM)
            code = a.stop(timeout=15)
            took = time.monotonic() - sent
            assert code == 0, a.stderr
            print(f"SIGTERM to exit: {took:.2f}s")
            assert took < 10, f"the agent took {took:.1f}s to stop"
            [run] = a.runs("api")
            assert run["status"] == "aborted", run
            assert run["error"].startswith("stopped:"), run
            assert a.contacts() == 0
            assert served.sent < 50  # it really was mid-response
            assert "stopped (SIGTERM)" in a.log.read_text()


ENDLESS = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
           "SELECT x AS id, 'n' AS name FROM c WHERE x < 0")


def test_a_sql_query_that_never_ends_is_stopped_at_max_duration(tmp_path: Path) -> None:
    cfg = SourceConfig(name="pms", kind="sql", max_duration=1.0,
                       options={"url": f"sqlite:///{tmp_path / 'pms.db'}", "query": ENDLESS,
                                "id_column": "id"})
    with Mirror.open(tmp_path / "m.db") as m:
        t0 = time.monotonic()
        with pytest.raises(ContactSyncError) as e:
            sync_source(m, cfg)
        assert time.monotonic() - t0 < 6
        assert "max_duration = 1s" in str(e.value) and "sources.pms.max_duration" in str(e.value)
        assert m.runs("pms", 5)[0]["status"] == "failed"


def test_abort_interrupts_a_running_sql_query_and_the_run_is_aborted(tmp_path: Path) -> None:
    """What the agent's SIGTERM handler does, from another thread here."""
    from contactsync_agent.errors import RunAborted
    from contactsync_agent.sources import open_connector

    cfg = SourceConfig(name="pms", kind="sql",
                       options={"url": f"sqlite:///{tmp_path / 'pms.db'}", "query": ENDLESS,
                                "id_column": "id"})
    conn = open_connector(cfg)
    with Mirror.open(tmp_path / "m.db") as m:
        timer = threading.Timer(0.5, conn.abort, ("stopped: test",))
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(RunAborted):
            sync_source(m, cfg, connector=conn)
        timer.join()
        assert time.monotonic() - t0 < 5
        [run] = m.runs("pms", 5)
        assert run["status"] == "aborted" and run["error"] == "stopped: test"


def test_a_stuck_http_source_does_not_starve_a_folder_source(tmp_path: Path) -> None:
    """The drip source is served first; the folder's file still goes in within its
    page_timeout, not after the drip ends."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    with server(drip(seconds=60, every=1.0)) as (url, served):
        cfg = tmp_path / "config.toml"
        cfg.write_text(config_text(tmp_path, sources={
            "api": {"kind": "http", "url": url, "id_field": "id", "timeout": 3,
                    "page_timeout": 3, "max_retries": 0, "interval": "1h"},
            "xpm": {"path": str(inbox), "settle_seconds": 0.2},
        }))
        with agent(tmp_path, cfg) as a:
            assert served.dripping.wait(20)
            (inbox / "e.csv").write_text("Client ID,First Name\nX1,Ann\n")
            t0 = time.monotonic()
            poll(lambda: any(r["status"] == "ok" for r in a.runs("xpm")), timeout=30,
                 what="the folder source's run")
            assert time.monotonic() - t0 < 15
            failed = [r for r in a.runs("api") if r["status"] == "failed"]
            assert failed and "page_timeout = 3s" in failed[0]["error"], a.runs("api")
            assert a.stop() == 0


# ---------------------------------------------------------------- heartbeat


def test_a_stale_heartbeat_is_degraded_even_while_a_run_is_open(tmp_path: Path) -> None:
    """An agent stuck inside a run stops beating: an open run excuses nothing."""
    db = tmp_path / "mirror.db"
    with Mirror.open(db) as m:
        store = m.store
        run_id = store.runs.begin("api", "full", "http:x", None, False)  # left open
        old = "2020-01-01T00:00:00Z"
        with store.transaction():
            for k, v in {
                "daemon.pid": str(os.getpid()),  # alive: this process
                "daemon.state": "running",
                "daemon.host": socket.gethostname(),
                "daemon.started_at": old,
                "daemon.heartbeat_at": old,
                "daemon.heartbeat_interval": "15",
            }.items():
                store.set_meta(k, v)
    r = cli("--db", str(db), "status", "--json")
    data = json.loads(r.stdout)
    d = data["daemon"]
    assert d["health"] == "degraded", d
    assert f"run {run_id}" in d["why"] and "no heartbeat for" in d["why"], d
    assert data["health"] in ("degraded", "failing") and r.returncode >= 1
    # Fresh heartbeat, same open run: healthy (a run in progress is fine). Written
    # as the agent would, without opening the mirror as a writer (which would
    # mark the open run aborted).
    from contactsync_agent.store import now_iso

    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE meta SET value = ? WHERE key = 'daemon.heartbeat_at'", (now_iso(),))
    con.close()
    d = json.loads(cli("--db", str(db), "status", "--json").stdout)["daemon"]
    assert d["health"] == "healthy" and d["why"] == f"running run {run_id}", d


# ---------------------------------------------------------------- defect 5: sizes


def test_a_300_mb_http_response_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    for declare in (False, True):
        with server(huge(300 * MB, declare)) as (url, served):
            cfg = tmp_path / "config.toml"
            cfg.write_text(config_text(tmp_path, sources={"api": {
                "kind": "http", "url": url, "id_field": "id", "max_retries": 0}}))
            t0 = time.monotonic()
            p, rss = measured_cli("--config", str(cfg), "source", "test", "api")
            took = time.monotonic() - t0
        assert p.returncode != 0, p.stdout[:300]
        assert "max_response_bytes = 33554432" in p.stderr, p.stderr
        assert "sources.api.max_response_bytes" in p.stderr
        assert "Traceback" not in p.stderr
        assert rss < 200 * MB, f"peak RSS {rss / MB:.0f} MB"
        assert served.sent < 100 * MB  # it stopped reading
        assert took < 20, took


def test_an_http_item_with_a_value_over_the_field_limit_is_quarantined(tmp_path: Path) -> None:
    items = [{"id": "A1", "name": "Ann Able"}, {"id": "A2", "notes": "n" * (2 * MB)}]
    body = json.dumps(items).encode()

    def respond(h: BaseHTTPRequestHandler, served: Served) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    with server(respond) as (url, _), Mirror.open(tmp_path / "m.db") as m:
        report = sync_source(m, http_cfg(url))
        assert report.counts["created"] == 1 and report.counts["rejected"] == 1
        [q] = m.store.conn.execute("SELECT line, reason, raw FROM quarantine").fetchall()
        assert q[0] == 2 and '"notes"' in q[1] and "over the limit of 1048576 bytes" in q[1]
        assert len(q[2]) < 10_000


def test_a_sql_row_with_a_value_over_the_field_limit_is_quarantined(tmp_path: Path) -> None:
    src = tmp_path / "pms.db"
    con = sqlite3.connect(src)
    con.execute("CREATE TABLE clients (id TEXT, name TEXT, notes TEXT)")
    con.executemany("INSERT INTO clients VALUES (?, ?, ?)",
                    [("C1", "Cat Cole", "short"), ("C2", "Dan Dee", "d" * (3 * MB)),
                     ("C3", "Eve Eld", "")])
    con.commit()
    con.close()
    cfg = SourceConfig(name="pms", kind="sql",
                       options={"url": f"sqlite:///{src}", "table": "clients",
                                "id_column": "id"})
    with Mirror.open(tmp_path / "m.db") as m:
        report = sync_source(m, cfg)
        assert report.counts["created"] == 2 and report.counts["rejected"] == 1
        [q] = m.store.conn.execute("SELECT line, reason, length(raw) FROM quarantine").fetchall()
        assert q[0] == 2 and '"notes" holds 3145728 bytes' in q[1], q
        assert q[2] < 10_000


def _vcard_with_note(path: Path, note_bytes: int) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:ok-1\r\nFN:Ann Able\r\nN:Able;Ann;;;\r\n"
                "END:VCARD\r\n")
        f.write("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:big-2\r\nFN:Bob Big\r\nN:Big;Bob;;;\r\n")
        # Folded as an exporter would: 75-byte lines, continuations start with a space.
        f.write("NOTE:" + "n" * 70 + "\r\n")
        line = " " + "n" * 74 + "\r\n"
        for _ in range(note_bytes // 74):
            f.write(line)
        f.write("EMAIL:bob@example.com\r\nEND:VCARD\r\n")
        f.write("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:ok-3\r\nFN:Cid Calm\r\nEND:VCARD\r\n")
    return path


@pytest.mark.parametrize("folded", [True, False], ids=["folded", "one-line"])
def test_a_vcard_with_a_20_mb_note_is_quarantined_in_bounded_memory(
    tmp_path: Path, folded: bool
) -> None:
    f = tmp_path / "cards.vcf"
    if folded:
        _vcard_with_note(f, 20 * MB)
    else:
        f.write_text("BEGIN:VCARD\r\nVERSION:4.0\r\nUID:ok-1\r\nFN:Ann Able\r\nEND:VCARD\r\n"
                     "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:big-2\r\nFN:Bob Big\r\n"
                     f"NOTE:{'n' * (20 * MB)}\r\nEND:VCARD\r\n"
                     "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:ok-3\r\nFN:Cid Calm\r\nEND:VCARD\r\n",
                     encoding="utf-8", newline="")
    db = tmp_path / "m.db"
    t0 = time.monotonic()
    p, rss = measured_cli("--db", str(db), "sync", "--source", "cards", str(f), "--json")
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["counts"]["created"] == 2 and report["counts"]["rejected"] == 1, report
    assert rss < 300 * MB, f"peak RSS {rss / MB:.0f} MB"
    assert took < 20, took
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        [(reason, raw)] = con.execute("SELECT reason, raw FROM quarantine").fetchall()
        ids = {r[0] for r in con.execute("SELECT external_id FROM contacts")}
    finally:
        con.close()
    assert ids == {"ok-1", "ok-3"}
    assert f"card 2 (line {7 if folded else 6})" in reason, reason
    assert "property NOTE at line" in reason, reason
    assert "1048576 bytes" in reason and "UID=big-2" in raw, (reason, raw)
    assert len(raw) < 10_000


def test_a_vcard_photo_is_dropped_while_reading_and_the_card_imported(tmp_path: Path) -> None:
    """A 3 MB base64 picture (mapped to ignore) is not a reason to refuse a contact."""
    f = tmp_path / "photo.vcf"
    with open(f, "w", encoding="utf-8", newline="") as out:
        out.write("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:p-1\r\nFN:Pat Photo\r\n"
                  "PHOTO;ENCODING=b;TYPE=JPEG:" + "QUFB" * 18 + "\r\n")
        for _ in range(3 * MB // 74):
            out.write(" " + "QUFB" * 19 + "\r\n")
        out.write("NOTE:kept\r\nEND:VCARD\r\n")
    with Mirror.open(tmp_path / "m.db") as m:
        report = m.sync_file("cards", f)
        assert report.counts["created"] == 1 and report.counts["rejected"] == 0
        [(notes,)] = m.store.conn.execute("SELECT notes FROM contacts").fetchall()
        assert notes == "kept"


def test_an_ndjson_line_with_a_50_mb_value_is_quarantined_in_bounded_memory(
    tmp_path: Path
) -> None:
    f = tmp_path / "changes.ndjson"
    with open(f, "w", encoding="utf-8") as out:
        out.write('{"id": "N1", "name": "Nan North"}\n')
        out.write('{"id": "N2", "notes": "' + "z" * (50 * MB) + '"}\n')
        out.write('{"id": "N3", "name": "Ned Nash"}\n')
    db = tmp_path / "m.db"
    p, rss = measured_cli("--db", str(db), "sync", "--source", "feed", str(f), "--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["counts"]["created"] == 2 and report["counts"]["rejected"] == 1
    assert rss < 300 * MB, f"peak RSS {rss / MB:.0f} MB"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        [(line, reason)] = con.execute("SELECT line, reason FROM quarantine").fetchall()
    finally:
        con.close()
    assert line == 2 and '"notes" holds 52428800 bytes' in reason, reason
