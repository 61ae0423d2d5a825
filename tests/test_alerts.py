"""Health verdicts and alerts: one alert per state change, to the log, webhook and command."""

from __future__ import annotations

import json
import shlex
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import Webhook, agent, config_text, now_iso, poll, write_csv
from contactsync_agent import health
from contactsync_agent.alerts import Alert, Alerter, should_alert
from contactsync_agent.config import AlertsConfig

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def run(
    status: str = "ok",
    *,
    ago: float = 60,
    rejected: int = 0,
    duration_ms: int = 100,
    error: str | None = None,
) -> dict[str, Any]:
    at = (NOW - timedelta(seconds=ago)).isoformat().replace("+00:00", "Z")
    return {
        "status": status,
        "finished_at": at,
        "rejected": rejected,
        "duration_ms": duration_ms,
        "error": error,
    }


@pytest.mark.parametrize(
    ("runs", "kwargs", "state"),
    [
        ([], {}, "healthy"),
        ([run()], {"interval": 600}, "healthy"),
        ([run(rejected=3)], {}, "degraded"),
        ([run("failed", error="disk"), run()], {}, "degraded"),
        ([run("failed"), run("failed"), run()], {}, "failing"),
        ([run("refused", error="bad header")], {}, "failing"),
        ([run(ago=1300)], {"interval": 600}, "degraded"),  # stale: over twice the interval
        ([run(duration_ms=400_000)], {"interval": 600}, "degraded"),  # slower than half of it
        ([run("failed", error="stopped: shutting down"), run()], {}, "healthy"),
        ([run("running"), run("refused")], {}, "failing"),
        ([], {"interval": 600, "expected_since": NOW - timedelta(hours=1)}, "degraded"),
        ([run()], {"problem": "watched folder missing"}, "failing"),
    ],
)
def test_health_verdicts(runs: list[dict[str, Any]], kwargs: dict[str, Any], state: str) -> None:
    verdict = health.evaluate(runs, now=NOW, **kwargs)
    assert verdict.state == state, verdict
    if state != "healthy":
        assert verdict.reasons


@pytest.mark.parametrize(
    ("last", "state", "alert"),
    [
        (None, "healthy", False),
        (None, "degraded", True),
        ("healthy", "failing", True),
        ("failing", "failing", False),
        ("failing", "degraded", True),
        ("failing", "healthy", True),
        ("healthy", "healthy", False),
    ],
)
def test_one_alert_per_state_change(last: str | None, state: str, alert: bool) -> None:
    assert should_alert(last, state) is alert


def test_alerter_posts_json_and_runs_the_command(tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    script = tmp_path / "hook.py"
    script.write_text(
        "import sys, os\n"
        f"with open({str(out)!r}, 'a') as f:\n"
        "    f.write(sys.stdin.read().strip() + '\\n')\n"
        "assert os.environ['CONTACTSYNC_ALERT_STATE']\n"
    )
    with Webhook() as hook:
        cmd = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"
        alerter = Alerter(AlertsConfig(webhook=hook.url, command=cmd, timeout=5))
        alerter.send(Alert("xpm", "failing", "healthy", ("last run refused: x",), "t"))
        poll(lambda: hook.received and out.exists(), what="both deliveries")
        alerter.close()
    body = hook.received[0]
    assert body["source"] == "xpm" and body["state"] == "failing"
    assert body["event"] == "failing" and "refused" in body["summary"]
    assert json.loads(out.read_text().splitlines()[0])["previous"] == "healthy"


def test_failing_source_alerts_once_and_once_on_recovery(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    with Webhook() as hook:
        cfg = tmp_path / "config.toml"
        cfg.write_text(
            config_text(
                tmp_path,
                sources={"xpm": {"path": str(inbox), "settle_seconds": 0.2}},
                alerts={"webhook": hook.url, "timeout": "5s"},
            )
        )
        with agent(tmp_path, cfg) as a:
            (inbox / "bad1.csv").write_text("Foo,Bar\n1,2\n")
            poll(lambda: hook.received, what="the failing alert")
            assert [h["state"] for h in hook.received] == ["failing"]
            # Still failing: another refused file and more health checks, no new alert.
            (inbox / "bad2.csv").write_text("Foo,Baz\n3,4\n")
            poll((inbox / "failed" / "bad2.csv.error.txt").exists, what="the second refusal")
            a.heartbeats_after(now_iso(), 3)
            assert [h["state"] for h in hook.received] == ["failing"]
            write_csv(inbox / "good.csv", 5)
            poll(lambda: len(hook.received) >= 2, what="the recovery alert")
            a.heartbeats_after(now_iso(), 3)
            assert [h["event"] for h in hook.received] == ["failing", "recovered"]
            assert a.meta("alert.xpm.state") == "healthy"
            assert a.stop() == 0
        log = a.log.read_text()
        assert log.count("ALERT ") == 2
        # A restart does not alert again: the last alerted state is in the database.
        with agent(tmp_path, cfg) as b:
            b.heartbeats_after(now_iso(), 3)
            assert b.stop() == 0
        assert len(hook.received) == 2


@pytest.mark.parametrize(
    ("origin", "error", "reason"),
    [
        # A guard's refusal through the API: recorded as `refused: ...`, no file.
        ("api", "refused: the snapshot would delete 9 of 10",
         "last run refused: the snapshot would delete 9 of 10"),
        # `contactsync sync FILE`: the file name, then the guard's `refused: ...`.
        ("t2.csv", "t2.csv: refused: the snapshot would delete 9 of 10",
         "last run refused: t2.csv: the snapshot would delete 9 of 10"),
        # The daemon records the whole path; the message names the file already.
        ("/in/bad.csv", "bad.csv, line 1: no column maps to external_id",
         "last run refused: bad.csv, line 1: no column maps to external_id"),
        # A message without the file gets it, escaped (a name cannot rewrite a terminal).
        ("ex\x1b[2J.csv", "refused: the file is too big",
         "last run refused: ex\\x1b[2J.csv: the file is too big"),
    ],
)
def test_a_refusal_reason_says_refused_once_and_names_the_file(
    origin: str, error: str, reason: str
) -> None:
    verdict = health.evaluate([{**run("refused", error=error), "origin": origin}], now=NOW)
    assert verdict.state == "failing"
    assert verdict.reasons == (reason,)


def test_a_refused_mass_deletion_alerts_once_with_the_file_name(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    with Webhook() as hook:
        cfg = tmp_path / "config.toml"
        cfg.write_text(
            config_text(
                tmp_path,
                sources={"xpm": {"path": str(inbox), "settle_seconds": 0.2}},
                alerts={"webhook": hook.url, "timeout": "5s"},
            )
        )
        with agent(tmp_path, cfg) as a:
            write_csv(inbox / "full.csv", 10)
            poll(lambda: not (inbox / "full.csv").exists(), what="the first import")
            write_csv(inbox / "small.csv", 1)
            poll(lambda: hook.received, what="the failing alert")
            assert a.stop() == 0
    [alert] = hook.received
    assert alert["state"] == "failing"
    [reason] = alert["reasons"]
    assert reason.startswith("last run refused: small.csv: "), reason
    assert reason.count("refused") == 1 and "small.csv" in alert["summary"], reason
