"""Monitoring that plugs in (issue 18): `status`'s exit codes 0 / 1 / 2 / 3 (a
tool error is UNKNOWN, never WARNING or CRITICAL; a stopped agent with enabled
sources is degraded), `status --nagios` (one plugin line with perfdata),
`status --prometheus` (the text exposition format, parsed by prometheus_client's
own parser; `--output` written atomically), the agent's `/metrics` fetched from
a real daemon process, and its sd_notify messages received on a fake
NOTIFY_SOCKET (READY, WATCHDOG pings at the interval and none while the loop is
stuck, STOPPING on SIGTERM).

Every agent is a real `contactsync daemon` process; every wait is on a
condition with a deadline.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import CLI, Agent, cli, config_text, env, poll, write_csv
from click.testing import CliRunner
from contactsync_agent import cli_output, metrics
from contactsync_agent import status as status_mod
from contactsync_agent.cli import cli as cli_group
from contactsync_agent.config import parse_config
from contactsync_agent.errors import ConfigError, SafetyLimitError, SourceFormatError
from contactsync_agent.mirror import Mirror
from contactsync_agent.notify import Notifier
from prometheus_client.parser import text_string_to_metric_families
from test_limits import Served, server

pytestmark = pytest.mark.timeout(120)

#: The Nagios plugin line: `SERVICE STATE - text | perfdata` (monitoring-plugins
#: guidelines): one line, no `|` in the text.
NAGIOS = re.compile(r"^CONTACTSYNC (OK|WARNING|CRITICAL|UNKNOWN) - ([^|\n]+?)(?: \| (.+))?$")
#: One perfdata item: 'label'=value[UOM];[warn];[crit];[min];[max] (value may be U).
PERF = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(-?[0-9.]+|U)(s|ms|us|%|B|KB|MB|TB|c)?"
                  r"(;[-0-9.:~@]*){0,4}$")


def status(db: Path, *extra: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    args = ["--db", str(db)] + (["--config", str(config)] if config else [])
    return cli(*args, "status", *extra)


def nagios(db: Path, config: Path | None = None) -> tuple[int, str, str, dict[str, str]]:
    """(exit code, state, text, perfdata) of `status --nagios`, checked against the syntax."""
    r = status(db, "--nagios", config=config)
    assert r.stdout.count("\n") == 1, r.stdout  # exactly one line
    m = NAGIOS.match(r.stdout.rstrip("\n"))
    assert m, r.stdout
    perf: dict[str, str] = {}
    for item in (m.group(3) or "").split():
        p = PERF.match(item)
        assert p, f"perfdata item {item!r} does not follow the plugin guidelines"
        perf[p.group(1)] = p.group(2) + (p.group(3) or "")
    return r.returncode, m.group(1), m.group(2), perf


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The exposition text parsed by prometheus_client: name -> [(labels, value)]."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def value(fams: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    [v] = [v for lab, v in fams[name] if all(lab.get(k) == x for k, x in labels.items())]
    return v


def folder_config(tmp_path: Path, **agent_settings: Any) -> tuple[Path, Path]:
    inbox = tmp_path / "in"
    inbox.mkdir(exist_ok=True)
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={"xpm": {"path": str(inbox)}},
                               agent=agent_settings or None))
    return cfg, inbox


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "mirror.db"


# ---------------------------------------------------------------- exit codes


def test_exit_0_ok_with_the_nagios_line_and_its_perfdata(db: Path, tmp_path: Path) -> None:
    with Mirror.open(db) as m:
        m.sync_file("xpm", write_csv(tmp_path / "a.csv", 5))
    code, state, text, perf = nagios(db)
    assert (code, state) == (0, "OK")
    assert "5 contacts" in text
    assert list(perf) == ["contacts", "last_run_age", "run_duration", "outbox", "review",
                          "activities", "quarantine"]
    data = json.loads(status(db, "--json").stdout)
    run = data["sources"][0]["last_run"]
    assert perf["contacts"] == "5"
    assert perf["outbox"] == "0" and perf["review"] == "0" and perf["quarantine"] == "0"
    assert perf["activities"] == str(data["open_activities"])
    assert perf["last_run_age"].endswith("s") and 0 <= float(perf["last_run_age"][:-1]) < 60
    assert float(perf["run_duration"][:-1]) == pytest.approx(run["duration_ms"] / 1000, abs=1e-3)


def test_exit_1_warning_names_the_reason_and_counts_the_queue(db: Path, tmp_path: Path) -> None:
    bad_row = tmp_path / "b.csv"
    bad_row.write_text("Client ID,First Name\nX1,Ann\n,no id\n")
    with Mirror.open(db) as m:
        m.sync_file("xpm", bad_row)
    code, state, text, perf = nagios(db)
    assert (code, state) == (1, "WARNING")
    assert "xpm: last run rejected 1 row(s)" in text
    assert perf["quarantine"] == "1" and perf["contacts"] == "1"


def test_exit_2_critical_keeps_its_text_on_one_line_without_a_pipe(
    db: Path, tmp_path: Path
) -> None:
    """A refused file whose name holds `|` and a newline: the text stays one line
    and the `|` cannot start the perfdata early."""
    bad = tmp_path / "ex|port\nx.csv"
    bad.write_text("Foo,Bar\n1,2\n")
    with Mirror.open(db) as m, pytest.raises(SourceFormatError):
        m.sync_file("xpm", bad)
    code, state, text, perf = nagios(db)
    assert (code, state) == (2, "CRITICAL")
    assert "xpm: last run refused" in text and "ex/port\\nx.csv" in text, text
    assert perf["contacts"] == "0"


def test_an_agent_never_started_with_enabled_sources_is_degraded(
    db: Path, tmp_path: Path
) -> None:
    cfg, _ = folder_config(tmp_path)
    with Mirror.open(db) as m:
        m.sync_file("xpm", write_csv(tmp_path / "a.csv", 3))
    r = status(db, "--json", config=cfg)
    assert r.returncode == 1, r.stdout
    d = json.loads(r.stdout)["daemon"]
    assert d["health"] == "degraded" and "was never started" in d["why"], d
    assert "1 source(s) are enabled (xpm)" in d["why"] and "contactsync daemon" in d["why"]
    code, state, text, _ = nagios(db, cfg)
    assert (code, state) == (1, "WARNING") and "agent never started" in text
    # The table for a person says why too.
    r = status(db, "--format", "table", config=cfg)
    assert r.returncode == 1 and "was never started" in " ".join(r.stdout.split())
    # In a pipe, stdout is the sources' TSV and the verdict with its reason is on stderr.
    r = status(db, config=cfg)
    assert r.returncode == 1 and "was never started" in r.stderr, r.stderr
    # The same mirror without the config (no source enabled): no agent expected.
    assert status(db).returncode == 0


def test_a_stopped_agent_with_enabled_sources_is_degraded(tmp_path: Path) -> None:
    cfg, inbox = folder_config(tmp_path)
    a = Agent(tmp_path, cfg).start()
    try:
        write_csv(inbox / "a.csv", 4)
        poll(lambda: a.contacts() == 4, what="the file's run")
        assert cli("--config", str(cfg), "status").returncode == 0
    finally:
        assert a.stop() == 0
    r = cli("--config", str(cfg), "status", "--json")
    assert r.returncode == 1, r.stdout
    d = json.loads(r.stdout)["daemon"]
    assert d["state"] == "stopped" and d["health"] == "degraded", d
    assert d["why"].startswith("the agent stopped at "), d


@pytest.mark.parametrize("case", ["not a database", "bad toml", "unknown setting",
                                  "config file missing", "unknown option",
                                  "two formats", "output without prometheus", "bad mode",
                                  "output folder missing"])
def test_a_tool_error_is_unknown_exit_3_never_a_verdict(
    db: Path, tmp_path: Path, case: str
) -> None:
    """Whatever keeps status from answering exits 3 (Nagios UNKNOWN), with one
    stderr line; never 1 or 2, which a monitor reads as WARNING or CRITICAL."""
    with Mirror.open(db) as m:
        m.sync_file("xpm", write_csv(tmp_path / "a.csv", 2))
    cfg = tmp_path / "config.toml"
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not SQLite" * 100)
    args: list[str] = {
        "not a database": ["--db", str(garbage), "status", "--nagios"],
        "bad toml": ["--config", str(cfg), "--db", str(db), "status", "--nagios"],
        "unknown setting": ["--config", str(cfg), "--db", str(db), "status", "--nagios"],
        "config file missing": ["--config", str(tmp_path / "absent.toml"), "--db", str(db),
                                "status", "--nagios"],
        "unknown option": ["--db", str(db), "status", "--nagois"],
        "two formats": ["--db", str(db), "status", "--nagios", "--json"],
        "output without prometheus": ["--db", str(db), "status", "--output", "x.prom"],
        "bad mode": ["--db", str(db), "status", "--prometheus", "-o", str(tmp_path / "x.prom"),
                     "--output-mode", "0666"],
        "output folder missing": ["--db", str(db), "status", "--prometheus", "-o",
                                  str(tmp_path / "nope" / "x.prom")],
    }[case]
    if case == "bad toml":
        cfg.write_text("[agent\n")
    if case == "unknown setting":
        cfg.write_text("[agent]\nheartbeet = 5\n")
    r = cli(*args)
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.strip(), "an UNKNOWN says why on stderr"
    if "--nagios" in args and case not in ("two formats",):
        m = NAGIOS.match(r.stdout.rstrip("\n"))
        assert m and m.group(1) == "UNKNOWN", r.stdout
        assert "could not determine the status" in m.group(2)


def test_unknown_in_json_and_prometheus_forms(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"x" * 4096)
    r = status(garbage, "--json")
    assert r.returncode == 3
    data = json.loads(r.stdout)
    assert data["health"] == "unknown" and "could not determine" in data["why"]
    r = status(garbage, "--prometheus")
    assert r.returncode == 3
    fams = families(r.stdout)
    assert value(fams, "contactsync_health") == 3


def test_a_crash_inside_status_is_unknown(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A defect in status itself (in collecting, or in drawing the table) is exit 3."""
    with Mirror.open(db) as m:
        m.sync_file("xpm", write_csv(tmp_path / "a.csv", 2))

    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("boom")

    runner = CliRunner()
    monkeypatch.setattr(status_mod, "collect", boom)
    r = runner.invoke(cli_group, ["--db", str(db), "status", "--nagios"])
    assert r.exit_code == 3, r.output
    assert "CONTACTSYNC UNKNOWN - could not determine the status: RuntimeError: boom" in r.output
    monkeypatch.undo()
    monkeypatch.setattr(cli_output, "render_status", boom)
    r = runner.invoke(cli_group, ["--db", str(db), "status"])
    assert r.exit_code == 3, r.output
    assert "status unknown: cannot show it: boom" in r.output


def test_a_missing_database_stays_critical_not_unknown(tmp_path: Path) -> None:
    """No mirror at the path is a fact (nothing is mirrored there), not a failure to look."""
    code, state, text, perf = nagios(tmp_path / "none.db")
    assert (code, state) == (2, "CRITICAL") and "no mirror database at" in text
    assert perf == {}


# ---------------------------------------------------------------- Prometheus text


def test_prometheus_text_parses_and_says_what_json_says(db: Path, tmp_path: Path) -> None:
    bad_row = tmp_path / "b.csv"
    bad_row.write_text("Client ID,First Name\nX1,Ann\nX2,Bea\n,no id\n")
    with Mirror.open(db) as m:
        m.sync_file("xpm", write_csv(tmp_path / "a.csv", 5))
        m.sync_file("crm", bad_row)
        m.add_contact(name="Local Person", email="local@example.com", record_type="manual")
    data = json.loads(status(db, "--json").stdout)
    r = status(db, "--prometheus")
    assert r.returncode == 1, r.stderr  # degraded (a rejected row): the same exit code
    fams = families(r.stdout)
    assert value(fams, "contactsync_health") == 1
    assert value(fams, "contactsync_contacts", record_type="sync") == 7
    assert value(fams, "contactsync_contacts", record_type="manual") == 1
    assert value(fams, "contactsync_queue_depth", queue="quarantine") == 1
    assert value(fams, "contactsync_queue_depth", queue="review") == data["open_review_items"]
    assert value(fams, "contactsync_queue_depth", queue="outbox") == 0
    assert value(fams, "contactsync_agent_running") == 0
    assert value(fams, "contactsync_source_health", source="xpm") == 0
    assert value(fams, "contactsync_source_health", source="crm") == 1
    assert value(fams, "contactsync_source_contacts", source="xpm") == 5
    for kind, n in {"read": 5, "created": 5, "updated": 0, "deleted": 0, "rejected": 0}.items():
        assert value(fams, "contactsync_source_last_run_records", source="xpm", kind=kind) == n
    assert value(fams, "contactsync_source_last_run_records", source="crm", kind="rejected") == 1
    crm = next(s for s in data["sources"] if s["name"] == "crm")
    assert value(fams, "contactsync_source_last_run_duration_seconds", source="crm") == (
        pytest.approx(crm["last_run"]["duration_ms"] / 1000))
    assert 0 <= value(fams, "contactsync_source_last_run_age_seconds", source="crm") < 60
    assert value(fams, "contactsync_source_last_run_ok", source="crm") == 1
    assert abs(value(fams, "contactsync_status_timestamp_seconds") - time.time()) < 60
    # No personal data in the metrics: counts, ages and source names only.
    assert "local@" not in r.stdout and "Local Person" not in r.stdout
    # The API twin gives the same families.
    assert set(families(metrics.exposition(status_mod.report(db)).decode())) == set(fams)


def test_prometheus_output_file_is_replaced_whole_and_owner_only(
    db: Path, tmp_path: Path
) -> None:
    with Mirror.open(db) as m:
        m.sync_file("xpm", write_csv(tmp_path / "a.csv", 3))
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    out = textdir / "contactsync.prom"
    r = status(db, "--prometheus", "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert out.stat().st_mode & 0o777 == 0o600
    assert value(families(out.read_text()), "contactsync_contacts", record_type="sync") == 3
    first = out.stat().st_ino
    with Mirror.open(db) as m:
        m.sync_file("xpm", write_csv(tmp_path / "a.csv", 6))
    r = status(db, "--prometheus", "-o", str(out), "--output-mode", "0644")
    assert r.returncode == 0, r.stderr
    # A new file renamed over the old one (a reader sees one or the other, whole),
    # nothing left beside it for the textfile collector to pick up.
    assert out.stat().st_ino != first
    assert out.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in textdir.iterdir()] == ["contactsync.prom"]
    assert value(families(out.read_text()), "contactsync_contacts", record_type="sync") == 6


def test_metrics_listen_is_loopback_only() -> None:
    cfg = parse_config({"agent": {"metrics_listen": "127.0.0.1:9464"}})
    assert cfg.daemon.metrics_listen == ("127.0.0.1", 9464)
    assert parse_config({"agent": {"metrics_listen": "[::1]:0"}}).daemon.metrics_listen == (
        "::1", 0)
    for bad, why in (("0.0.0.0:9464", "not a loopback address"),
                     ("192.168.1.5:9464", "not a loopback address"),
                     ("127.0.0.1", "expected HOST:PORT"),
                     ("127.0.0.1:99999", "expected HOST:PORT")):
        with pytest.raises(ConfigError, match=why) as e:
            parse_config({"agent": {"metrics_listen": bad}}, "c.toml")
        assert "agent.metrics_listen" in str(e.value)


# ---------------------------------------------------------------- the agent: /metrics


def fetch(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
        assert resp.status == 200
        return resp.read().decode()


def test_the_agent_serves_metrics(tmp_path: Path) -> None:
    cfg, inbox = folder_config(tmp_path, metrics_listen="127.0.0.1:0")
    a = Agent(tmp_path, cfg).start()
    try:
        address = poll(lambda: a.meta("daemon.metrics_listen"), what="/metrics to be served")
        assert address.startswith("127.0.0.1:") and not address.endswith(":0")
        fams = families(fetch(address))
        assert value(fams, "contactsync_agent_running") == 1
        assert value(fams, "contactsync_health") == 0
        assert fams["process_cpu_seconds_total"]  # the agent process's own metrics
        write_csv(inbox / "a.csv", 8)

        def synced() -> dict[str, Any] | None:
            f = families(fetch(address))
            ok = f.get("contactsync_source_last_run_records") and value(
                f, "contactsync_contacts", record_type="sync") == 8
            return f if ok else None

        fams = poll(synced, what="the run to show in /metrics")
        assert value(fams, "contactsync_source_last_run_records", source="xpm",
                     kind="created") == 8
        assert value(fams, "contactsync_source_health", source="xpm") == 0
        assert 0 <= value(fams, "contactsync_agent_heartbeat_age_seconds") < 30
        data = json.loads(cli("--config", str(cfg), "status", "--json").stdout)
        assert data["daemon"]["metrics_listen"] == address
        assert a.stop() == 0
    finally:
        a.kill()
    with pytest.raises(OSError):  # gone with the agent
        fetch(address)
    assert json.loads(cli("--config", str(cfg), "status", "--json").stdout)["daemon"][
        "metrics_listen"] is None


def test_an_address_in_use_is_logged_and_the_agent_goes_on(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg, inbox = folder_config(tmp_path, metrics_listen=f"127.0.0.1:{port}")
        a = Agent(tmp_path, cfg).start()
        try:
            write_csv(inbox / "a.csv", 2)
            poll(lambda: a.contacts() == 2, what="the file's run")
            assert a.meta("daemon.metrics_listen") == ""
            assert f"metrics_listen 127.0.0.1:{port}: cannot listen" in a.log.read_text()
            assert a.stop() == 0
        finally:
            a.kill()


# ---------------------------------------------------------------- sd_notify


class NotifySocket:
    """A fake systemd: a unix datagram socket recording what it receives, with when."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.got: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._done.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.got.append((time.monotonic(), data.decode()))

    def messages(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.got)

    def lines(self, key: str) -> list[tuple[float, str]]:
        return [(t, line) for t, m in self.messages() for line in m.split("\n")
                if line.startswith(key)]

    def close(self) -> None:
        self._done.set()
        self._thread.join(2)
        self.sock.close()


@contextlib.contextmanager
def notify_socket(address: str) -> Iterator[NotifySocket]:
    s = NotifySocket(address)
    try:
        yield s
    finally:
        s.close()
        if not address.startswith("@"):
            with contextlib.suppress(OSError):
                os.unlink(address)


class NotifiedAgent(Agent):
    """The agent started the way systemd starts a Type=notify service with WatchdogSec=."""

    def __init__(self, tmp: Path, config: Path, extra: dict[str, str]) -> None:
        super().__init__(tmp, config)
        self.extra = extra

    def start(self, wait: bool = True) -> NotifiedAgent:
        self._err = open(self.err_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen([*CLI, "--config", str(self.config), "daemon"],
                                     stdout=subprocess.DEVNULL, stderr=self._err,
                                     env={**env(), **self.extra})
        return self


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def test_ready_watchdog_and_stopping_reach_a_fake_notify_socket(tmp_path: Path) -> None:
    cfg, inbox = folder_config(tmp_path)
    address = f"@contactsync-test-{os.getpid()}-{time.monotonic_ns()}"  # abstract socket
    with notify_socket(address) as ns:
        a = NotifiedAgent(tmp_path, cfg, {"NOTIFY_SOCKET": address,
                                          "WATCHDOG_USEC": "2000000"}).start()
        try:
            [(t_ready, ready)] = poll(lambda: [m for m in ns.messages() if "READY=1" in m[1]],
                                      what="READY=1")
            # Ready once the agent is up: its start is recorded, its sources watched.
            assert a.meta("daemon.state") == "running"
            assert a.meta("daemon.pid") == str(a.proc.pid)  # type: ignore[union-attr]
            assert "STATUS=idle; 1 source(s) watched" in ready.split("\n")
            # WATCHDOG=1 every half WatchdogSec (1 s here), never as far apart as
            # the timeout systemd would kill at (2 s), while the loop turns every
            # 0.3 s (the heartbeat).
            poll(lambda: len([t for t, _ in ns.lines("WATCHDOG=1") if t > t_ready]) >= 5,
                 timeout=20, what="watchdog pings")
            pings = [t for t, _ in ns.lines("WATCHDOG=1")]
            assert max(gaps(pings)) < 2.0, gaps(pings)
            assert min(gaps(pings)) > 0.6, gaps(pings)  # paced, not one per loop turn
            # A run between the pings: STATUS says so, and the pings go on.
            write_csv(inbox / "a.csv", 50)
            poll(lambda: a.contacts() == 50, what="the file's run")
            assert any(line == "STATUS=syncing source xpm" for _, line in ns.lines("STATUS="))
            poll(lambda: ns.lines("STATUS=")[-1][1].startswith("STATUS=idle"),
                 what="idle again")
            a.signal(signal.SIGTERM)
            assert a.stop() == 0
            stopping = ns.lines("STOPPING=1")
            assert len(stopping) == 1, ns.messages()
            assert ("STATUS=stopping (SIGTERM)" in
                    next(m for t, m in ns.messages() if "STOPPING=1" in m).split("\n"))
            # Nothing after STOPPING: no ping from a thread that outlives the loop.
            assert all(t <= stopping[0][0] for t, _ in ns.lines("WATCHDOG=1"))
        finally:
            a.kill()


def test_a_stuck_loop_stops_pinging_and_pings_again_when_it_moves(tmp_path: Path) -> None:
    """An http source whose server holds the request open: the run waits in a read,
    the loop with it, and no WATCHDOG=1 is sent (systemd would restart the agent at
    WatchdogSec); once the server answers, the run ends and the pings come back."""
    release = threading.Event()
    body = json.dumps([{"id": "H1", "name": "Held Person"}]).encode()

    def respond(h: BaseHTTPRequestHandler, served: Served) -> None:
        served.dripping.set()
        release.wait(30)
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    sock_dir = Path(os.environ.get("TMPDIR", "/tmp"))
    address = str(sock_dir / f"cs-notify-{os.getpid()}-{time.monotonic_ns()}.sock")
    with server(respond) as (url, served), notify_socket(address) as ns:
        cfg = tmp_path / "config.toml"
        cfg.write_text(config_text(tmp_path, sources={"api": {
            "kind": "http", "url": url, "id_field": "id", "timeout": 30, "max_retries": 0,
            "page_timeout": 60, "max_duration": 90, "interval": "1h"}}))
        a = NotifiedAgent(tmp_path, cfg, {"NOTIFY_SOCKET": address,
                                          "WATCHDOG_USEC": "1000000"}).start()
        try:
            poll(lambda: served.dripping.is_set(), what="the run's request")
            held = time.monotonic()
            # Held for 4 s (eight ping intervals); the first second is left out
            # for a ping already on its way when the request went out.
            poll(lambda: time.monotonic() - held > 4.0, timeout=10, interval=0.1,
                 what="four seconds of a held request")
            assert ns.lines("WATCHDOG=1")  # it did ping (at READY) before the run
            during = [t for t, _ in ns.lines("WATCHDOG=1") if held + 1.0 < t]
            assert during == [], f"pinged while the loop was stuck: {len(during)}"
            release.set()
            poll(lambda: a.contacts() == 1, what="the run to finish")
            poll(lambda: len([t for t, _ in ns.lines("WATCHDOG=1") if t > held + 4]) >= 3,
                 what="the pings to come back")
            assert a.stop() == 0
        finally:
            release.set()
            a.kill()


def test_the_notifier_outside_systemd_and_for_another_pid() -> None:
    assert not Notifier.from_env({}).enabled
    assert Notifier.from_env({"NOTIFY_SOCKET": "relative/path"}).address is None
    n = Notifier.from_env({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "4000000",
                           "WATCHDOG_PID": str(os.getpid() + 1)})
    assert n.enabled and n.ping_every is None  # the watchdog is another process's
    n = Notifier.from_env({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "4000000",
                           "WATCHDOG_PID": str(os.getpid())})
    assert n.address == "/run/x" and n.ping_every == 2.0
    # A socket nobody listens on: logged once, never raised.
    n = Notifier.from_env({"NOTIFY_SOCKET": "/nonexistent/notify.sock"})
    assert n.send("READY=1") is False
    n.ready("up")
    n.stopping()
    n.close()


@pytest.mark.parametrize("err", [SafetyLimitError("x"), OSError("disk")])
def test_unknown_keeps_the_reason_of_errors_it_expects(err: Exception) -> None:
    data = status_mod.unknown("m.db", err)
    assert data["health"] == "unknown" and data["why"].endswith(str(err))
    assert status_mod.HEALTH_CODES[data["health"]] == 3
    assert status_mod.nagios_line(data).startswith("CONTACTSYNC UNKNOWN - ")


# ---------------------------------------------------------------- docs and packaging

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "packaging" / "contactsync-agent.service"


def test_the_exit_code_tables_are_written_once() -> None:
    """README and `contactsync --help` both say errors.EXIT_CODES and
    STATUS_EXIT_CODES; status's codes are the ones it exits with."""
    from contactsync_agent.errors import EXIT_CODES, STATUS_EXIT_CODES

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for code, meaning in (*EXIT_CODES, *STATUS_EXIT_CODES):
        row = f"| {code} | {meaning.replace('|', chr(92) + '|')} |"
        assert row in readme, f"README lacks the row {row}"
    assert [c for c, _ in STATUS_EXIT_CODES] == sorted(status_mod.HEALTH_CODES.values())
    r = cli("--help")
    assert r.returncode == 0
    for code, meaning in (*EXIT_CODES, *STATUS_EXIT_CODES):
        first = meaning.replace("`", "").split()[0]
        assert re.search(rf"^ +{code} +{re.escape(first)}", r.stdout, re.M), (code, r.stdout)
    assert max(len(line) for line in r.stdout.splitlines()) <= 80


def unit_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_the_shipped_unit_uses_notify_and_the_watchdog(tmp_path: Path) -> None:
    from contactsync_agent.sources.http import DEFAULT_PAGE_TIMEOUT

    unit = unit_settings(UNIT.read_text())
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["Restart"] == ["on-failure"]  # a watchdog kill is a failure: restarted
    # The watchdog must outlast the longest wait of a run without progress.
    assert int(unit["WatchdogSec"][0]) >= 2 * DEFAULT_PAGE_TIMEOUT
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit's syntax is not checked")
    copy = tmp_path / UNIT.name  # verify wants ExecStart's program to exist
    copy.write_text(re.sub(r"(?m)^ExecStart=.*$", "ExecStart=/bin/true", UNIT.read_text()))
    r = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr

