"""Health of a source (healthy / degraded / failing) judged from its latest runs.

Pure: takes run rows and the time, returns a verdict with reasons. The daemon
(for alerts) and `status` (for its exit code) share it so they never disagree.
"""

from __future__ import annotations

import ntpath
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from contactsync_agent.safetext import escape_name

HEALTHY, DEGRADED, FAILING = "healthy", "degraded", "failing"
STATES = (HEALTHY, DEGRADED, FAILING)
CODES = {HEALTHY: 0, DEGRADED: 1, FAILING: 2}

#: How the daemon marks a run it rolled back because it was asked to stop. Such a
#: run is neither a failure of the source nor a success.
STOPPED_PREFIX = "stopped:"

UNSUCCESSFUL = ("failed", "refused", "aborted")


@dataclass(frozen=True)
class Health:
    state: str
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def why(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "reasons": list(self.reasons)}


def worst(states: Iterable[str]) -> str:
    return max(states, key=CODES.__getitem__, default=HEALTHY)


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def duration_text(seconds: float) -> str:
    """A run's duration: milliseconds under a second, one decimal under a minute."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return _age(seconds)


def counted(runs: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Runs that say something about the source: not in progress, not stopped by us."""
    return [
        r
        for r in runs
        if r["status"] != "running" and not (r["error"] or "").startswith(STOPPED_PREFIX)
    ]


def _origin_name(run: Mapping[str, Any]) -> str | None:
    """The file a run read (its name only: the daemon records whole paths) or
    its other origin, escaped; None for an API call."""
    origin = run.get("origin")
    if not origin or origin == "api":
        return None
    if posixpath.isabs(origin):  # (an escaped name keeps its `\xNN`: not a separator)
        origin = posixpath.basename(origin)
    elif ntpath.splitdrive(origin)[0]:  # C:\... or \\server\share\... on Windows
        origin = ntpath.basename(origin)
    return escape_name(origin)


def run_outcome(run: Mapping[str, Any]) -> str:
    """`last run refused: FILE: why`: the status said once (refusals are recorded
    as `refused: ...`, sometimes after the file name), naming the run's file when
    the message does not already."""
    msg = escape_name(run["error"] or "no message")
    name = _origin_name(run)
    if name and msg.startswith(f"{name}: "):
        msg = msg[len(name) + 2:]
    msg = msg.removeprefix(f"{run['status']}: ")
    if name and name not in msg:
        msg = f"{name}: {msg}"
    return f"last run {run['status']}: {msg}"


def evaluate(
    runs: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    interval: float | None = None,
    expected_since: datetime | None = None,
    max_duration: float | None = None,
    problem: str | None = None,
) -> Health:
    """The health of one source.

    `runs` are its latest runs, newest first. `interval` (seconds) enables the
    staleness check: no successful run for twice the interval is degraded;
    `expected_since` is when runs started being expected (the daemon's start),
    so a source that never ran is not stale before then. `problem` is something
    the daemon saw outside any run (a missing folder): failing.
    """
    failing: list[str] = []
    degraded: list[str] = []
    if problem:
        failing.append(problem)
    done = counted(runs)
    streak = 0
    for r in done:
        if r["status"] not in UNSUCCESSFUL:
            break
        streak += 1
    if done and streak:
        last = done[0]
        msg = run_outcome(last)
        if last["status"] == "refused" or streak >= 2:
            failing.append(msg if streak == 1 else f"{streak} runs in a row unsuccessful; {msg}")
        else:
            degraded.append(msg)
    elif done:
        last = done[0]
        if last["rejected"]:
            degraded.append(f"last run rejected {last['rejected']} row(s) (see `quarantine`)")
        limit = max_duration if max_duration is not None else (interval / 2 if interval else None)
        if limit and last["duration_ms"] is not None and last["duration_ms"] > limit * 1000:
            degraded.append(f"last run took {duration_text(last['duration_ms'] / 1000)} "
                            f"(over {duration_text(limit)})")
    if interval:
        last_ok = next((r for r in done if r["status"] == "ok"), None)
        since = parse_time(last_ok["finished_at"]) if last_ok else expected_since
        if since is not None:
            age = (now - since).total_seconds()
            if age > 2 * interval:
                what = "no successful run" if last_ok else "no successful run yet"
                degraded.append(f"{what} for {_age(age)} (interval {_age(interval)})")
    if failing:
        return Health(FAILING, tuple(failing + degraded))
    if degraded:
        return Health(DEGRADED, tuple(degraded))
    return Health(HEALTHY, ("no runs yet",) if not done else ())
