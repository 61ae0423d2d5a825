"""What `contactsync status` reports, read from the mirror opened read-only.

Collects facts (daemon, sources, queues, size, the WAL, a pending erasure)
through the store's reads (no SQL here) and judges health with `health.py`;
never writes and never waits on the writer.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from contactsync_agent import health
from contactsync_agent.config import AgentConfig
from contactsync_agent.safetext import escape_name
from contactsync_agent.store import ERASURE_PENDING_KEY, Store

HEALTH_CODES = health.CODES
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
    `contactsync status --json`); `missing_database` when there is none."""
    if not os.path.exists(db):
        return missing_database(db)
    store = Store.open(db, readonly=True)
    try:
        return collect(store, config, counts_cache=counts_cache)
    finally:
        store.close()


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


# ---------------------------------------------------------------- the table


def _ago(now: datetime, text: str | None) -> str:
    age = _age(now, text)
    if age is None:
        return "—"
    if -2 < age < 0:  # `now` has whole seconds, run times milliseconds
        age = 0.0
    a = abs(age)
    span = (
        f"{a:.0f}s"
        if a < 120
        else f"{a / 60:.0f} min"
        if a < 7200
        else f"{a / 3600:.1f} h"
        if a < 172800
        else f"{a / 86400:.1f} d"
    )
    return f"{span} ago" if age >= 0 else f"in {span}"


def render(data: dict[str, Any]) -> None:
    """Prints `data` as a few lines and a table (rich) for a person at a terminal."""
    from rich.table import Table

    from contactsync_agent.safetext import cell, console, markup

    now = health.parse_time(data["checked_at"]) or datetime.now(UTC)
    colour = {"healthy": "green", "degraded": "yellow", "failing": "red"}
    con = console()
    h = data["health"]
    if "daemon" not in data:  # no mirror at all (`missing_database`)
        con.print(f"[bold]Mirror[/] — health: [bold {colour[h]}]{h}[/]: {markup(data['why'])}",
                  soft_wrap=True)
        return
    con.print(
        f"[bold]Mirror[/] {data['database']} ({data['database_bytes'] / 1e6:.1f} MB, "
        f"WAL {data['wal_bytes'] / 1e6:.1f} MB) — health: [bold {colour[h]}]{h}[/]"
    )
    for why in data["storage"]["reasons"]:
        con.print(f"  [{colour[data['storage']['health']]}]storage[/]: {why}")
    if data["outbox"]["why"]:
        con.print(f"  [{colour[data['outbox']['health']]}]outbox[/]: {data['outbox']['why']}")
    d = data["daemon"]
    if d["running"]:
        up = d["uptime_s"] or 0
        con.print(
            f"agent: [green]running[/] pid {d['pid']} on {d['host']}, up "
            f"{up / 3600:.1f} h, last heartbeat {_ago(now, d['heartbeat_at'])} "
            f"({d['why']})"
        )
    else:
        style = colour[d["health"]]
        con.print(
            f"agent: [{style}]{d['state']}[/]"
            + (f" (pid {d['pid']}): {markup(d['why'])}" if d["pid"] else "")
        )
    c = data["contacts"]
    con.print(
        f"contacts: {c['total']:,} ({c['sync']:,} sync, {c['manual']:,} manual, "
        f"{c['external']:,} external; {c['deleted']:,} deleted)   "
        f"open activities: {data['open_activities']}   "
        f"review items: {data['open_review_items']}   "
        f"quarantined rows: {data['quarantined_rows']}   "
        f"outbox: {data['outbox']['depth']}"
        + (f" (oldest {data['outbox']['oldest_pending_age']:.0f}s)"
           if data["outbox"]["oldest_pending_age"] is not None else "")
        + f", conflicts: {data['outbox']['conflicts_open']}   "
        f"change feed at seq {data['last_change_seq']:,}"
    )
    t = Table(
        "source",
        "on",
        "health",
        "contacts",
        "last run",
        "outcome",
        "records (+new ~upd -del !rejected)",
        "next check",
    )
    for s in data["sources"]:
        r = s["last_run"] or {}
        counts = (
            (
                f"{r['records']:,} (+{r['created']:,} ~{r['updated']:,} -{r['deleted']:,} "
                f"!{r['rejected']:,})"
            )
            if r
            else "—"
        )
        t.add_row(
            cell(s["name"]),
            "yes" if s["enabled"] else "no",
            f"[{colour[s['health']]}]{s['health']}[/]"
            if s["judged"]
            else f"[dim]{s['health']} ("
            + ("disabled" if s["configured"] else "not configured")
            + ": not judged)[/]",
            f"{s['contacts']:,}",
            _ago(now, r.get("finished_at") or r.get("started_at")),
            r.get("status", "—"),
            counts,
            _ago(now, s["next_run"]) if s["next_run"] else "—",
        )
    con.print(t)
    for s in data["sources"]:
        if s["health"] != "healthy" or s["reasons"]:
            style = colour[s["health"]] if s["judged"] else "dim"
            con.print(f"  [{style}]{markup(s['name'])}[/]"
                      + ("" if s["judged"] else " (not judged)") + f": {markup(s['why'])}")
