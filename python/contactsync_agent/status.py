"""What `contactsync status` reports, read from the mirror opened read-only.

Collects facts (daemon, sources, queues, size, the WAL, a pending erasure)
through the store's reads (no SQL here) and judges health with `health.py`;
says so (health "unknown", exit 3) when it cannot determine them, and writes
the one-line Nagios form (`nagios_line`). Never writes and never waits on the
writer; the Prometheus form is `metrics.py`'s.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from contactsync_agent import health
from contactsync_agent.config import AgentConfig
from contactsync_agent.errors import ContactSyncError
from contactsync_agent.safetext import escape, escape_name
from contactsync_agent.store import ERASURE_PENDING_KEY, Store

#: The status could not be determined (the mirror unreadable, a bad config, a
#: crash inside status): never reported as degraded or failing.
UNKNOWN = "unknown"
#: `contactsync status`'s exit code for each health (Nagios: OK, WARNING, CRITICAL, UNKNOWN).
HEALTH_CODES = {**health.CODES, UNKNOWN: 3}
NAGIOS_STATES = {health.HEALTHY: "OK", health.DEGRADED: "WARNING", health.FAILING: "CRITICAL",
                 UNKNOWN: "UNKNOWN"}
#: The longest text before the perfdata of the Nagios line (NRPE's buffer is small).
NAGIOS_TEXT_MAX = 400
RUN_HISTORY = 20
#: A heartbeat older than this many heartbeat intervals (and 30 s) means a hung agent.
HEARTBEAT_GRACE = 3


def source_health(runs: list[dict[str, Any]]) -> tuple[str, str]:
    """(health, why) of one source from its latest runs, newest first (no staleness)."""
    verdict = health.evaluate(runs, now=datetime.now(UTC))
    if not runs:
        return verdict.state, "no runs yet"
    if any(r["status"] == "running" for r in runs[:1]):
        return verdict.state, "a run is in progress"
    return verdict.state, verdict.why if verdict.reasons else "last run ok"


def _pid_alive(pid: int) -> bool | None:
    """None when this platform cannot tell (on Windows os.kill would end the process)."""
    if os.name != "posix":
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _age(now: datetime, text: str | None) -> float | None:
    t = health.parse_time(text)
    return None if t is None else round((now - t).total_seconds(), 1)


def daemon_status(
    meta: dict[str, str], running_run: dict[str, Any] | None, now: datetime
) -> dict[str, Any]:
    """The agent as recorded in `meta`: alive, stopped, hung or dead, and its health."""
    out: dict[str, Any] = {
        "state": meta.get("daemon.state", "never started"),
        "running": False,
        "pid": int(meta["daemon.pid"]) if meta.get("daemon.pid", "").isdigit() else None,
        "host": meta.get("daemon.host"),
        "version": meta.get("daemon.version"),
        "config": meta.get("daemon.config") or None,
        "started_at": meta.get("daemon.started_at"),
        "stopped_at": meta.get("daemon.stopped_at"),
        "uptime_s": None,
        "heartbeat_at": meta.get("daemon.heartbeat_at"),
        "heartbeat_age_s": _age(now, meta.get("daemon.heartbeat_at")),
        "current_run": running_run["id"] if running_run else None,
        "metrics_listen": meta.get("daemon.metrics_listen") or None,
        "health": health.HEALTHY,
        "why": "",
    }
    if out["state"] != "running":
        out["why"] = ("stopped at " + out["stopped_at"]) if out["stopped_at"] else out["state"]
        return out
    alive = None
    if out["pid"] and out["host"] == socket.gethostname():
        alive = _pid_alive(out["pid"])
    try:
        beat = float(meta.get("daemon.heartbeat_interval", "15"))
    except ValueError:
        beat = 15.0
    age = out["heartbeat_age_s"]
    stale = age is not None and age > max(HEARTBEAT_GRACE * beat, 30.0)
    if alive is False:
        out.update(
            state="died",
            health=health.FAILING,
            why=f"process {out['pid']} ended without stopping cleanly",
        )
    elif stale and running_run is None:
        out.update(
            state="not responding", health=health.FAILING, why=f"no heartbeat for {age:.0f}s"
        )
    elif stale:
        # A run is open, but an agent that has not beaten for this long is stuck in it
        # (or in something the run waits on): an open run excuses nothing.
        assert running_run is not None
        out.update(
            running=True,
            uptime_s=_age(now, out["started_at"]),
            health=health.DEGRADED,
            why=f"no heartbeat for {age:.0f}s while run {running_run['id']} "
            f"({running_run['source']}) is open since {running_run['started_at']}",
        )
    else:
        out["running"] = True
        out["uptime_s"] = _age(now, out["started_at"])
        out["why"] = f"running run {running_run['id']}" if running_run else "idle"
    return out


def agent_needed(daemon: dict[str, Any], config: AgentConfig) -> None:
    """An agent that is not running (stopped, or never started) while the config
    enables sources leaves them unsynced: at least degraded, saying how to start it."""
    enabled = sorted(n for n, s in config.sources.items() if s.enabled)
    if daemon["running"] or not enabled or daemon["health"] != health.HEALTHY:
        return
    what = "was never started" if daemon["state"] == "never started" else (
        f"stopped at {daemon['stopped_at']}" if daemon["stopped_at"] else f"is {daemon['state']}")
    daemon["health"] = health.DEGRADED
    daemon["why"] = (
        f"the agent {what}, and {len(enabled)} source(s) are enabled "
        f"({', '.join(escape_name(n) for n in enabled)}): nothing syncs them until it runs "
        "(`contactsync daemon`, or `systemctl start contactsync-agent`)"
    )


def storage_status(wal_bytes: int, wal_warn_bytes: int, meta: dict[str, str]) -> dict[str, Any]:
    """The WAL's size and a pending erasure: degraded past `wal_warn_bytes`
    (`[agent] wal_warn_bytes`) or while a purge's erasure is not complete."""
    reasons: list[str] = []
    if wal_bytes > wal_warn_bytes:
        reasons.append(
            f"the WAL is {wal_bytes / 1e6:,.0f} MB (over {wal_warn_bytes / 1e6:,.0f} MB): a "
            "reader holding a transaction open keeps the agent's checkpoint from resetting it"
        )
    pending: dict[str, Any] | None = None
    if ERASURE_PENDING_KEY in meta:
        try:
            pending = json.loads(meta[ERASURE_PENDING_KEY])
        except ValueError:
            pending = {}
        if not isinstance(pending, dict):
            pending = {}
        reasons.append(
            f"erasure pending since {pending.get('since', '?')}: the purged values may still "
            "be in the WAL until a checkpoint completes (a reader is holding a transaction)"
        )
    return {
        "wal_bytes": wal_bytes,
        "wal_warn_bytes": wal_warn_bytes,
        "erasure_pending": pending,
        "erasure_completed_at": meta.get("erasure.completed_at"),
        "health": health.DEGRADED if reasons else health.HEALTHY,
        "reasons": reasons,
    }


def outbox_status(counts: dict[str, int], oldest: str | None, conflicts: int,
                  max_age: float, now: datetime) -> dict[str, Any]:
    """Two-way sync: the outbox's depth, its oldest open entry's age and the
    conflicts waiting for review; degraded when an entry waits past `max_age`."""
    age = _age(now, oldest)
    late = age is not None and age > max_age
    return {
        "depth": sum(counts.values()),
        "pending": counts.get("pending", 0),
        "sent": counts.get("sent", 0),
        "oldest_pending_age": age,
        "conflicts_open": conflicts,
        "health": "degraded" if late else "healthy",
        "why": (f"an outbox entry has waited {age:.0f}s (more than {max_age:.0f}s): "
                "see `contactsync outbox list`" if late else ""),
    }


def missing_database(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What `status` reports when there is no mirror at `path` (a mistyped `--db`,
    or no sync yet): failing, since nothing is being mirrored there."""
    shown = escape_name(path)
    return {
        "database": str(path),
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "health": health.FAILING,
        "why": f"no mirror database at {shown} (run a sync first, or check --db / "
        "CONTACTSYNC_DB)",
        "sources": [],
    }


def unknown(db: str | os.PathLike[str] | None, error: BaseException | str) -> dict[str, Any]:
    """What `status` reports when it could not determine the health: the mirror
    unreadable, a bad config, or a failure inside status itself (exit 3, Nagios
    UNKNOWN: never taken for degraded or failing)."""
    if isinstance(error, BaseException):
        text = str(error) or type(error).__name__
        if not isinstance(error, (ContactSyncError, OSError, sqlite3.Error)):
            text = f"{type(error).__name__}: {text}"  # a defect: say what kind
    else:
        text = error
    return {
        "database": None if db is None else str(db),
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "health": UNKNOWN,
        "why": f"could not determine the status: {escape(text)}",
        "sources": [],
    }


@dataclass
class CountsCache:
    """The contact counts of the last `collect`, kept by a caller that asks
    often (the web console's dashboard): counting 1M contacts takes about 2 s,
    and they change only with the change feed (every contact change, a purge
    too, adds an entry) or a run, so they are counted again only then."""

    key: tuple[int, int] | None = None
    rows: list[tuple[str | None, str, int, int]] = field(default_factory=list)


def report(db: str | os.PathLike[str], config: AgentConfig | None = None, *,
           counts_cache: CountsCache | None = None) -> dict[str, Any]:
    """`collect` for the mirror at `db` opened read-only (the API twin of
    `contactsync status --json`); `missing_database` when there is none, and
    `unknown` when it cannot be read (it never raises: a monitor must get an
    answer)."""
    try:
        if not os.path.exists(db):
            return missing_database(db)
        store = Store.open(db, readonly=True)
        try:
            return collect(store, config, counts_cache=counts_cache)
        finally:
            store.close()
    except Exception as e:
        return unknown(db, e)


def collect(
    store: Store, config: AgentConfig | None = None, now: datetime | None = None, *,
    counts_cache: CountsCache | None = None,
) -> dict[str, Any]:
    """Everything `status` shows, as plain data (the `--json` output)."""
    now = now or datetime.now(UTC)
    config = config or AgentConfig()
    # One consistent snapshot; a read transaction never blocks the writer.
    with store.read_snapshot():
        meta = store.all_meta()
        running = store.runs.running()
        running_run = (
            {"id": running[0], "source": running[1], "started_at": running[2]} if running else None
        )
        daemon = daemon_status(meta, running_run, now)
        try:
            live = json.loads(meta.get("daemon.sources", "{}")) if daemon["running"] else {}
        except ValueError:
            live = {}
        names = store.runs.sources()
        names |= set(config.sources)
        key = (store.feed.last_seq(), store.runs.last_id())
        if counts_cache is not None and counts_cache.key == key:
            rows = counts_cache.rows
        else:
            rows = store.contacts.counts_by_kind()
            if counts_cache is not None:
                counts_cache.key, counts_cache.rows = key, rows
        counts: dict[tuple[str | None, str, bool], int] = {}
        for src, rtype, alive, n in rows:
            counts[(src, rtype, bool(alive))] = n
        sources = [
            _source(name, config, store.runs.of_source(name, RUN_HISTORY), live.get(name, {}),
                    daemon, meta, counts, now)
            for name in sorted(names)
        ]

        agent_needed(daemon, config)
        totals = {
            "total": sum(n for (_, _, alive), n in counts.items() if alive),
            **{
                t: sum(n for (_, rt, alive), n in counts.items() if alive and rt == t)
                for t in ("sync", "manual", "external")
            },
            "deleted": sum(n for (_, _, alive), n in counts.items() if not alive),
        }
        storage = storage_status(store.wal_bytes(), config.daemon.wal_warn_bytes, meta)
        outbox = outbox_status(*store.outbox.summary(), config.daemon.outbox_max_age, now)
        data = {
            "database": str(store.path),
            "database_bytes": sum(
                os.path.getsize(p)
                for p in (str(store.path), f"{store.path}-wal", f"{store.path}-shm")
                if os.path.exists(p)
            ),
            "wal_bytes": storage["wal_bytes"],
            "storage": storage,
            "checked_at": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "health": health.worst([daemon["health"], storage["health"], outbox["health"],
                                    *(s["health"] for s in sources if s["judged"])]),
            "daemon": daemon,
            "contacts": totals,
            "open_activities": store.feed.open_activities(),
            "open_review_items": store.review.open_count(),
            "quarantined_rows": store.review.quarantined_count(),
            "outbox": outbox,
            "last_change_seq": store.feed.last_seq(),
            "sources": sources,
        }
    return data


def _source(
    name: str,
    config: AgentConfig,
    runs: list[dict[str, Any]],
    live: dict[str, Any],
    daemon: dict[str, Any],
    meta: dict[str, str],
    counts: dict[tuple[str | None, str, bool], int],
    now: datetime,
) -> dict[str, Any]:
    cfg = config.sources.get(name)
    enabled = bool(cfg and cfg.enabled)
    # With a config file only its enabled sources are judged: a one-off import
    # into another source is listed, never the overall health (docs/operations.md).
    judged = enabled or config.path is None
    expected = health.parse_time(daemon["started_at"]) if daemon["running"] else None
    verdict = health.evaluate(
        runs,
        now=now,
        interval=cfg.interval if enabled and cfg else None,
        expected_since=expected,
        max_duration=cfg.max_duration if cfg else None,
        problem=live.get("problem") if enabled else None,
    )
    last = runs[0] if runs else None
    last_ok = next((r for r in runs if r["status"] == "ok"), None)
    next_run = None
    if enabled and daemon["running"] and live:
        next_run = live.get("retry_at") or live.get("next_check_at")
    run_fields = (
        "id",
        "status",
        "mode",
        "origin",
        "started_at",
        "finished_at",
        "duration_ms",
        "records",
        "created",
        "converted",
        "updated",
        "unchanged",
        "deleted",
        "unlinked",
        "review_items",
        "activities",
        "rejected",
        "error",
    )
    return {
        "name": name,
        "configured": cfg is not None,
        "enabled": enabled,
        "judged": judged,
        "kind": cfg.kind if cfg else None,
        "path": cfg.path if cfg else None,
        "interval_s": cfg.interval if cfg else None,
        "health": verdict.state,
        "why": verdict.why if verdict.reasons else "last run ok",
        "reasons": list(verdict.reasons),
        "last_alerted": meta.get(f"alert.{name}.state"),
        "contacts": sum(n for (src, _, alive), n in counts.items() if alive and src == name),
        "last_run": {k: last[k] for k in run_fields} if last else None,
        "last_success_at": last_ok["finished_at"] if last_ok else None,
        "next_run": next_run,
        "retry_at": live.get("retry_at"),
        "pending_files": live.get("pending_files"),
        "watch": live.get("watch"),
        "observer_alive": live.get("observer_alive"),
    }


# ---------------------------------------------------------------- Nagios


def run_age(now: datetime, run: dict[str, Any] | None) -> float | None:
    """Seconds since a run finished (or started, while it runs)."""
    if not run:
        return None
    age = _age(now, run.get("finished_at") or run.get("started_at"))
    return None if age is None else max(age, 0.0)


def judged_runs(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The last run of each judged source that has one."""
    return [s["last_run"] for s in data.get("sources", []) if s["judged"] and s["last_run"]]


def problems(data: dict[str, Any]) -> list[str]:
    """What keeps the mirror from being healthy, the worst first, one phrase each."""
    if "daemon" not in data:  # no mirror, or unknown
        return [data["why"]]
    found: list[tuple[int, str]] = []
    d = data["daemon"]
    if d["health"] != health.HEALTHY:
        found.append((health.CODES[d["health"]], f"agent {d['state']}: {d['why']}"))
    st = data["storage"]
    found += [(health.CODES[st["health"]], f"storage: {why}") for why in st["reasons"]]
    if data["outbox"]["why"]:
        found.append((health.CODES[data["outbox"]["health"]], f"outbox: {data['outbox']['why']}"))
    for src in data["sources"]:
        if src["judged"] and src["health"] != health.HEALTHY:
            found.append((health.CODES[src["health"]], f"{escape_name(src['name'])}: {src['why']}"))
    return [text for _, text in sorted(found, key=lambda f: -f[0])]


def _perf_seconds(value: float | None) -> str:
    # "U": the value could not be determined (monitoring-plugins guidelines, 2.6).
    return "U" if value is None else f"{value:.3f}".rstrip("0").rstrip(".") + "s"


def nagios_line(data: dict[str, Any]) -> str:
    """`status` as one Nagios/Icinga plugin line (the API twin of `status --nagios`):
    `CONTACTSYNC OK - text | contacts=N last_run_age=Ns run_duration=Ns outbox=N
    review=N activities=N quarantine=N`. The ages and durations are the worst
    judged source's (the stalest last run, the longest); the exit code is
    `HEALTH_CODES[data["health"]]`."""
    state = NAGIOS_STATES[data["health"]]
    if data["health"] == health.HEALTHY and "daemon" in data:
        judged = [s for s in data["sources"] if s["judged"]]
        d = data["daemon"]
        text = (f"{data['contacts']['total']} contacts, {len(judged)} source(s) healthy, agent "
                + (d["why"] if d["running"] else d["state"]))
    else:
        text = "; ".join(problems(data))
    text = " ".join(escape(text).replace("|", "/").split())
    if len(text) > NAGIOS_TEXT_MAX:
        text = text[: NAGIOS_TEXT_MAX - 3].rstrip() + "..."
    line = f"CONTACTSYNC {state} - {text}"
    if "daemon" not in data:
        return line
    now = health.parse_time(data["checked_at"]) or datetime.now(UTC)
    runs = judged_runs(data)
    ages = [a for a in (run_age(now, r) for r in runs) if a is not None]
    durations = [r["duration_ms"] / 1000 for r in runs if r.get("duration_ms") is not None]
    perf = [
        f"contacts={data['contacts']['total']}",
        f"last_run_age={_perf_seconds(max(ages) if ages else None)}",
        f"run_duration={_perf_seconds(max(durations) if durations else None)}",
        f"outbox={data['outbox']['depth']}",
        f"review={data['open_review_items']}",
        f"activities={data['open_activities']}",
        f"quarantine={data['quarantined_rows']}",
    ]
    return f"{line} | {' '.join(perf)}"


# ---------------------------------------------------------------- the table
