"""The agent's one backoff (`daemon.jobs.Backoff`): delays, cap, attempt count.

It is pure, so it is called directly here; the daemon tests (test_daemon.py,
test_pull.py) show it at work on real files and a real server.
"""

from __future__ import annotations

from contactsync_agent.config import DaemonConfig
from contactsync_agent.daemon import Backoff


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
