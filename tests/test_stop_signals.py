"""Stopping by signal, each path a real process: the agent on SIGINT as on SIGTERM,
an idle agent woken at once, a run deaf to its abort cut off after the grace
period (and recorded as aborted by the next start), and a `contactsync sync`
interrupted (SIGINT) or terminated (SIGTERM) in the middle of its run: nothing of
the run is committed and the run is never left looking like it is still going.

The signal always goes once the run is proven open (its row says `running` and
the local server is mid-response), never after a fixed sleep.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_helpers import CLI, Agent, agent, config_text, env, poll, write_csv
from contactsync_agent.mirror import Mirror
from test_limits import drip, server

pytestmark = pytest.mark.timeout(120)

#: What the agent promises after SIGTERM (README): gone within 10 s.
PROMISED_STOP = 10.0


def ro_runs(db: Path) -> list[tuple[str, str | None]]:
    """(status, error) of every run, read-only as any other process reads."""
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT status, error FROM runs ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # not migrated yet
        return []
    finally:
        conn.close()


def ro_count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def http_config(tmp_path: Path, url: str) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={"api": {
        "kind": "http", "url": url, "id_field": "id", "timeout": 3, "max_retries": 0,
        "page_timeout": 100, "max_duration": 200, "interval": "1h"}}))
    return cfg


# ---------------------------------------------------------------- the agent


def test_sigint_mid_import_stops_the_agent_as_sigterm_does(tmp_path: Path) -> None:
    """Ctrl-C in a terminal (SIGINT) is a stop like SIGTERM: exit 0, the run in
    progress rolled back whole and recorded as aborted, the file left in place.
    (Without the SIGINT handler Python raises KeyboardInterrupt wherever the
    agent is, and the process ends with a traceback instead.)"""
    inbox = tmp_path / "in"
    inbox.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(
        tmp_path,
        sources={"xpm": {"path": str(inbox), "settle_seconds": 0.2, "chunk_size": 500}},
        agent={"log_level": "DEBUG"},
    ))
    mark = re.compile(r"source xpm: run in progress, (\d+) records so far")
    n = 100_000
    with agent(tmp_path, cfg) as a:
        write_csv(inbox / "big.csv", n)
        seen = poll(lambda: a.log.exists() and mark.search(a.log.read_text()),
                    timeout=60, what="the run's first progress mark", interval=0.005)
        sent = time.monotonic()
        a.signal(signal.SIGINT)
        assert a.stop(timeout=PROMISED_STOP) == 0, a.stderr
        assert time.monotonic() - sent < PROMISED_STOP
        assert 0 < int(seen.group(1)) < n
        [run] = a.runs()
        assert run["status"] == "aborted" and run["error"].startswith("stopped:"), run
        assert a.query("SELECT count(*) FROM contacts")[0][0] == 0
        assert a.query("SELECT count(*) FROM changes")[0][0] == 0
        assert (inbox / "big.csv").exists()
        log = a.log.read_text()
        assert "rolled back (stopping)" in log and "stopped (SIGINT)" in log
        assert "Traceback" not in a.stderr
        assert a.meta("daemon.state") == "stopped"


def asleep_in_select(pid: int, after: float = 0.0) -> bool:
    """The process's main thread waits in select()/poll() (Linux: its wchan)."""
    if after:
        time.sleep(after)  # seen asleep twice, `after` apart: not passing through
    try:
        return any(w in Path(f"/proc/{pid}/wchan").read_text() for w in ("select", "poll"))
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/wchan").exists(), reason="needs Linux /proc wchan")
def test_an_idle_agent_stops_at_once_not_at_its_next_wake_up(tmp_path: Path) -> None:
    """Nothing due for a minute (heartbeat and rescan 60 s): SIGTERM still ends
    the agent within a couple of seconds, its sleep woken by the signal."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={"xpm": {"path": str(inbox)}},
                               agent={"heartbeat": 60, "rescan": "60s"}))
    with agent(tmp_path, cfg) as a:
        assert a.proc is not None
        pid = a.proc.pid
        # Past start-up: the main thread sleeps in its select() for the minute.
        poll(lambda: asleep_in_select(pid) and asleep_in_select(pid, after=0.3),
             what="the agent's main thread to sleep in select()")
        sent = time.monotonic()
        a.signal(signal.SIGTERM)
        assert a.stop(timeout=PROMISED_STOP) == 0, a.stderr
        took = time.monotonic() - sent
        assert took < 5, f"the idle agent took {took:.1f}s to stop"
        assert a.meta("daemon.state") == "stopped"


# A run stuck where no abort reaches: the agent with its HTTP connector made deaf
# to `abort` (the one change this child makes), so only the grace timer ends it.
DEAF = """\
import sys
from contactsync_agent.sources.http import HttpSource
HttpSource._interrupt = lambda self: None
from contactsync_agent.cli import main
main()
"""


# The stop lands after the run's connector is opened and before the agent knows
# it (a window of a few instructions, made certain here): the agent must abort
# the connector itself as soon as it learns of it.
STOP_BEFORE_CONNECTOR = """\
import os, signal
from contactsync_agent import sources
_open = sources.open_connector
def open_then_stop(*args, **kwargs):
    conn = _open(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)
    return conn
sources.open_connector = open_then_stop
from contactsync_agent.cli import main
main()
"""


class ChildAgent(Agent):
    """The agent run by a small script that changes one thing first."""

    def __init__(self, tmp: Path, config: Path, script: str) -> None:
        super().__init__(tmp, config)
        self.script = script

    def start(self, wait: bool = True) -> Agent:
        self._err = open(self.err_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.script, "--config", str(self.config), "daemon"],
            stdout=subprocess.DEVNULL, stderr=self._err, env=env())
        if wait:
            poll(lambda: self.meta("daemon.state") == "running", what="the agent to start")
        return self


def test_a_run_deaf_to_its_abort_is_cut_off_after_the_grace_period(tmp_path: Path) -> None:
    """SIGTERM while the run's read cannot be interrupted: the agent gives the run
    its grace period (about 8 s), then exits as a kill would, within the promised
    10 s: status 1, the transaction never committed, the run left `running`
    until the next write to the mirror records it as aborted."""
    with server(drip(seconds=60, every=1.0)) as (url, served):
        cfg = http_config(tmp_path, url)
        a = ChildAgent(tmp_path, cfg, DEAF)
        a.start()
        try:
            assert served.dripping.wait(20), "the agent never asked the drip server"
            poll(lambda: ("running", None) in ro_runs(a.db), what="the run to be open")
            sent = time.monotonic()
            a.signal(signal.SIGTERM)
            assert a.proc is not None
            code = a.proc.wait(PROMISED_STOP + 5)
            took = time.monotonic() - sent
        finally:
            a.kill()
        print(f"SIGTERM to exit (run deaf to abort): {took:.2f}s")
        assert code == 1, a.stderr
        assert 6.0 < took < PROMISED_STOP, f"cut off after {took:.1f}s"
        assert served.sent < 50  # still mid-response when it was cut off
        assert "did not end within 8s; exiting without it" in a.log.read_text()
        assert ro_runs(a.db) == [("running", None)]
        assert ro_count(a.db, "SELECT count(*) FROM contacts") == 0
    with Mirror.open(a.db) as m:
        m.checkpoint()  # the next write (the next start writes at once)
        [run] = m.runs("api", 5)
        assert run["status"] == "aborted", run
        assert m.count_contacts() == 0


def test_a_stop_before_the_agent_knows_the_runs_connector_still_aborts_it(
        tmp_path: Path) -> None:
    """SIGTERM between opening the connector and handing it to the stop handler:
    the run is aborted at once (exit 0 in well under the grace period), not left
    reading the drip until the cut-off."""
    with server(drip(seconds=60, every=1.0)) as (url, served):
        cfg = http_config(tmp_path, url)
        a = ChildAgent(tmp_path, cfg, STOP_BEFORE_CONNECTOR)
        a.start(wait=False)
        try:
            assert a.proc is not None
            code = a.proc.wait(PROMISED_STOP + 5)
        finally:
            a.kill()
        log = a.log.read_text()
        assert code == 0, a.stderr
        assert "stopped (SIGTERM)" in log and "did not end within" not in log
        assert served.sent <= 1  # the request, if sent at all, was never read on
        assert [s for s, _ in ro_runs(a.db)] in ([], ["aborted"])
        assert ro_count(a.db, "SELECT count(*) FROM contacts") == 0


EMBEDDED = """\
import sys, time
from contactsync_agent.daemon import run_daemon
code = run_daemon(sys.argv[1], None)
print("returned", code, flush=True)
# The program that ran the agent goes on for longer than the grace period.
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    time.sleep(0.1)
print("still alive", flush=True)
"""


def test_a_stopped_agent_leaves_the_program_that_ran_it_alone(tmp_path: Path) -> None:
    """`run_daemon` returns after a clean stop, and its grace timer goes with it:
    a program that ran the agent in-process lives on past the grace period."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={"xpm": {"path": str(inbox)}}))
    db = tmp_path / "mirror.db"
    proc = subprocess.Popen([sys.executable, "-c", EMBEDDED, str(cfg), "10"], env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        poll(lambda: ro_meta(db, "daemon.state") == "running", what="the agent to start")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert out.split("\n")[:2] == ["returned 0", "still alive"], (out, err)
    assert proc.returncode == 0, err


def ro_meta(db: Path, key: str) -> str | None:
    if not db.exists():
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    except sqlite3.OperationalError:  # not migrated yet
        return None
    finally:
        conn.close()
    return row[0] if row else None


# ---------------------------------------------------------------- contactsync sync


def start_pull(tmp_path: Path, url: str) -> tuple[subprocess.Popen[str], Path]:
    cfg = http_config(tmp_path, url)
    proc = subprocess.Popen([*CLI, "--config", str(cfg), "sync", "--source", "api"], env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, tmp_path / "mirror.db"


def test_ctrl_c_in_contactsync_sync_rolls_the_run_back_and_exits_130(tmp_path: Path) -> None:
    """SIGINT mid-response: exit 130 with one line saying so, nothing of the run
    committed, and the run recorded as ended (not `ok`, not still `running`)."""
    with server(drip(seconds=60, every=0.5)) as (url, served):
        proc, db = start_pull(tmp_path, url)
        try:
            assert served.dripping.wait(20), "the sync never asked the drip server"
            poll(lambda: ("running", None) in ro_runs(db), what="the run to be open")
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=PROMISED_STOP)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert time.monotonic() - sent < PROMISED_STOP
        assert served.sent < 100
    assert proc.returncode == 130, (out, err)
    assert "contactsync: interrupted; the run was rolled back" in err
    assert "Traceback" not in err
    [(status, error)] = ro_runs(db)
    assert status == "failed" and error == "KeyboardInterrupt", (status, error)
    assert ro_count(db, "SELECT count(*) FROM contacts") == 0
    assert ro_count(db, "SELECT count(*) FROM changes") == 0


def test_sigterm_to_contactsync_sync_commits_nothing_and_the_next_open_says_aborted(
        tmp_path: Path) -> None:
    """`contactsync sync` keeps SIGTERM's default (the process ends at once): the
    open transaction is never committed, and the next write to the mirror
    records the run it left `running` as aborted."""
    with server(drip(seconds=60, every=0.5)) as (url, served):
        proc, db = start_pull(tmp_path, url)
        try:
            assert served.dripping.wait(20), "the sync never asked the drip server"
            poll(lambda: ("running", None) in ro_runs(db), what="the run to be open")
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=PROMISED_STOP)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == -signal.SIGTERM
    assert ro_runs(db) == [("running", None)]
    assert ro_count(db, "SELECT count(*) FROM contacts") == 0
    with Mirror.open(db) as m:
        m.checkpoint()  # the next write
        [run] = m.runs("api", 5)
        assert run["status"] == "aborted", run
        assert "ended before the run committed" in run["error"], run
        assert m.count_contacts() == 0
