"""Helpers for the tests that run the real agent as a subprocess.

Waits are on conditions with deadlines (`poll`), never fixed sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

CLI = [sys.executable, "-m", "contactsync_agent.cli"]
HEADER = "Client ID,First Name,Surname,Email Address,Mobile\n"


def poll(
    fn: Callable[[], T], timeout: float = 15.0, interval: float = 0.02, what: str = "condition"
) -> T:
    """Calls `fn` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def csv_rows(n: int, start: int = 0) -> str:
    return "".join(
        f"X{i},Given{i},Family{i},person{i}@example.com,0412{i % 1000000:06d}\n"
        for i in range(start, start + n)
    )


def write_csv(path: Path, n: int, start: int = 0) -> Path:
    path.write_text(HEADER + csv_rows(n, start), encoding="utf-8")
    return path


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTSYNC_")}
    e["PYTHONUNBUFFERED"] = "1"
    # No config file of the machine's user leaks into a test.
    e["XDG_CONFIG_HOME"] = "/nonexistent/contactsync-test-config"
    return e


def cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env(), timeout=timeout, check=False
    )


def config_text(
    tmp: Path,
    *,
    sources: dict[str, dict[str, Any]],
    agent: dict[str, Any] | None = None,
    alerts: dict[str, Any] | None = None,
) -> str:
    def val(v: Any) -> str:
        return json.dumps(v) if not isinstance(v, bool) else ("true" if v else "false")

    agent = {
        "database": str(tmp / "mirror.db"),
        "heartbeat": 0.3,
        "rescan": "5s",
        "retry_base": 0.5,
        **(agent or {}),
    }
    lines = ["[agent]", *(f"{k} = {val(v)}" for k, v in agent.items()), ""]
    for name, s in sources.items():
        s = {
            "enabled": True,
            "kind": "folder",
            "pattern": "*.csv",
            "format": "csv",
            "settle_seconds": 0.5,
            "interval": "1h",
            **s,
        }
        mapping = s.pop("mapping", None)
        lines += [f"[sources.{name}]", *(f"{k} = {val(v)}" for k, v in s.items()), ""]
        if mapping:
            lines += [
                f"[sources.{name}.mapping]",
                *(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in mapping.items()),
                "",
            ]
    if alerts:
        lines += ["[alerts]", *(f"{k} = {val(v)}" for k, v in alerts.items()), ""]
    return "\n".join(lines)


class Agent:
    """One `contactsync daemon` subprocess in a temporary directory."""

    def __init__(self, tmp: Path, config: Path) -> None:
        self.tmp = tmp
        self.config = config
        self.db = tmp / "mirror.db"
        self.log = tmp / "contactsync-agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.err_path = tmp / f"daemon-{time.monotonic_ns()}.err"

    def start(self, wait: bool = True) -> Agent:
        self._err = open(self.err_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [*CLI, "--config", str(self.config), "daemon"],
            stdout=subprocess.DEVNULL,
            stderr=self._err,
            env=env(),
        )
        if wait:
            poll(
                lambda: (
                    self.meta("daemon.pid") == str(self.proc.pid)
                    and self.meta("daemon.state") == "running"
                ),
                what="the agent to start",
            )
        return self

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._err.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        with contextlib.suppress(Exception):
            self._err.close()

    # ------------------------------------------------------------ read-only views

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Reads the mirror read-only, as any process but the agent must."""
        if not self.db.exists():
            return []
        try:
            conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        except sqlite3.OperationalError:
            return []
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError:  # not migrated yet
            return []
        finally:
            conn.close()

    def meta(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def runs(self, source: str | None = None) -> list[dict[str, Any]]:
        cols = [
            "id",
            "source",
            "status",
            "records",
            "created",
            "rejected",
            "error",
            "origin",
            "finished_at",
        ]
        sql = f"SELECT {', '.join(cols)} FROM runs"
        rows = self.query(
            sql + (" WHERE source = ?" if source else "") + " ORDER BY id",
            (source,) if source else (),
        )
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def contacts(self, source: str | None = None) -> int:
        sql = "SELECT count(*) FROM contacts WHERE deleted_at IS NULL"
        rows = self.query(sql + (" AND source = ?" if source else ""), (source,) if source else ())
        return rows[0][0] if rows else 0

    def heartbeats_after(self, t_iso: str, n: int = 2) -> None:
        """Waits until the agent has gone through its loop again after `t_iso`."""
        seen: list[str] = []

        def advanced() -> bool:
            beat = self.meta("daemon.heartbeat_at") or ""
            if beat > t_iso and beat not in seen:
                seen.append(beat)
            return len(seen) >= n

        poll(advanced, what="later heartbeats")


def now_iso() -> str:
    from contactsync_agent.store import now_iso as f

    return f()


@contextlib.contextmanager
def agent(tmp: Path, config: Path, *, wait: bool = True) -> Iterator[Agent]:
    a = Agent(tmp, config)
    a.start(wait=wait)
    try:
        yield a
    finally:
        a.kill()


class Webhook:
    """An HTTP server on 127.0.0.1 that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(n)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/contactsync"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
