"""The agent's one backoff (`daemon.jobs.Backoff`): delays, cap, attempt count.

The helper is pure, so it is called directly first; then the real agent (a
subprocess) retries a file run and a connector run with it, and gives up after
the last attempt allowed: the two places that wrote the backoff out before.
"""

from __future__ import annotations

import itertools
import socket
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from agent_helpers import agent, config_text, poll, write_csv
from contactsync_agent.config import DaemonConfig
from contactsync_agent.daemon import Backoff
from contactsync_agent.mirror import Mirror


def test_the_delay_doubles_from_the_base_up_to_the_cap() -> None:
    b = Backoff(base=30.0, cap=900.0, max_attempts=10)
    assert [b.delay(n) for n in range(1, 8)] == [30.0, 60.0, 120.0, 240.0, 480.0, 900.0, 900.0]


def test_a_cap_below_the_base_wins() -> None:
    assert Backoff(base=10.0, cap=4.0, max_attempts=3).delay(1) == 4.0


def test_no_jitter_the_same_attempt_waits_the_same() -> None:
    b = Backoff(base=0.5, cap=60.0, max_attempts=5)
    assert {b.delay(3) for _ in range(50)} == {2.0}


def test_failures_are_counted_per_key_until_the_last_allowed_one() -> None:
    b = Backoff(base=1.0, cap=3.0, max_attempts=4)
    attempts: dict[str, int] = {"other": 2}
    assert b.failed(attempts, "f") == (1, 1.0)
    assert b.failed(attempts, "f") == (2, 2.0)
    assert b.failed(attempts, "f") == (3, 3.0)  # capped
    assert attempts == {"other": 2, "f": 3}
    # The fourth failure is the last allowed: no delay, and the count starts over.
    assert b.failed(attempts, "f") == (4, None)
    assert attempts == {"other": 2}
    assert b.failed(attempts, "f") == (1, 1.0)


def test_one_attempt_allowed_means_no_retry() -> None:
    attempts: dict[str, int] = {}
    assert Backoff(base=1.0, cap=1.0, max_attempts=1).failed(attempts, "run") == (1, None)
    assert attempts == {}


def test_it_reads_the_agents_retry_settings() -> None:
    d = DaemonConfig(retry_base=5.0, retry_max=20.0, max_attempts=3)
    assert Backoff.of(d) == Backoff(base=5.0, cap=20.0, max_attempts=3)


# ---------------------------------------------------------------- the agent retrying

#: retry_base 1 s, retry_max 2 s: the delays are 1, 2, 2, ... seconds.
RETRIES = {"retry_base": 1.0, "retry_max": 2.0, "rescan": 0.3}


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def _times(log: str, needle: str) -> list[datetime]:
    """When each log line containing `needle` was written (the log's UTC stamps)."""
    return [
        datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")
        for line in log.splitlines()
        if needle in line
    ]


def _line(log: str, needle: str) -> str:
    """The one log line containing `needle`."""
    lines = [line for line in log.splitlines() if needle in line]
    assert len(lines) == 1, (needle, lines)
    return lines[0]


def _gaps(times: list[datetime]) -> list[float]:
    return [(b - a).total_seconds() for a, b in itertools.pairwise(times)]


def test_a_file_run_that_fails_is_retried_with_the_backoff_then_set_aside(
    tmp_path: Path,
) -> None:
    """A database error (a trigger refuses every run row) is worth another try:
    attempts 1 and 2 are retried after 1 s and 2 s, the third is the last, and
    the file goes to failed/ with a note naming the attempts and the error."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(
        tmp_path,
        sources={"xpm": {"path": str(inbox), "settle_seconds": 0.2}},
        agent={**RETRIES, "max_attempts": 3},
    ))
    Mirror.open(tmp_path / "mirror.db").close()
    con = sqlite3.connect(tmp_path / "mirror.db")
    con.execute("CREATE TRIGGER no_runs BEFORE INSERT ON runs "
                "BEGIN SELECT RAISE(ABORT, 'the disk says no'); END")
    con.commit()
    con.close()
    with agent(tmp_path, cfg) as a:
        write_csv(inbox / "x.csv", 2)
        note = inbox / "failed" / "x.csv.error.txt"
        poll(note.exists, timeout=30, what="the file set aside in failed/")
        log = a.log.read_text()
        assert a.proc is not None and a.proc.poll() is None
    assert "Failed 3 times; the last error:" in note.read_text()
    assert "the disk says no" in note.read_text()
    assert (inbox / "failed" / "x.csv").exists() and not (inbox / "x.csv").exists()
    assert _line(log, "attempt 1 of 3 for x.csv failed").endswith("; retrying in 1s")
    assert _line(log, "attempt 2 of 3 for x.csv failed").endswith("; retrying in 2s")
    assert "attempt 3 of 3" not in log
    assert "x.csv failed 3 times; giving up on it" in log
    starts = _times(log, "x.csv settled")
    assert len(starts) == 3
    gaps = _gaps(starts)
    assert gaps[0] >= 0.95 and gaps[1] >= 1.95, gaps


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 bound but not listening: every connection is refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def test_a_connector_run_that_fails_is_retried_with_the_backoff_up_to_the_cap(
    tmp_path: Path, refused_port: int
) -> None:
    """An unreachable server: each attempt records a failed run; the retries come
    after 1 s, 2 s and 2 s (the cap), and the fourth failure waits for the interval."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(
        tmp_path,
        sources={"api": {"kind": "http", "url": f"http://127.0.0.1:{refused_port}/contacts",
                         "max_retries": 0}},
        agent={**RETRIES, "max_attempts": 4},
    ))
    with agent(tmp_path, cfg) as a:
        poll(lambda: "api: 4 attempts failed" in a.log.read_text(), timeout=30,
             what="the fourth and last attempt")
        log = a.log.read_text()
        runs = a.runs("api")
    assert [r["status"] for r in runs] == ["failed"] * 4
    for n, delay in ((1, 1), (2, 2), (3, 2)):
        assert _line(log, f"attempt {n} of 4 failed").endswith(f"; retrying in {delay}s")
    assert "next try at the next interval" in log
    gaps = _gaps(_times(log, "api: http run starting"))
    assert len(gaps) == 3
    assert gaps[0] >= 0.95 and gaps[1] >= 1.95 and gaps[2] >= 1.95, gaps
    assert gaps[2] < 3.5, gaps  # capped at 2 s (4 s uncapped), plus a loop turn
