"""What `contactsync status` reports, read from the mirror opened read-only.

Collects facts and judges health; never writes and never waits on the writer.
"""

from __future__ import annotations

import os
from typing import Any

from contactsync_agent.store import Store

HEALTH_CODES = {"healthy": 0, "degraded": 1, "failing": 2}


def source_health(runs: list[dict[str, Any]]) -> tuple[str, str]:
    """(health, why) of one source from its latest runs, newest first."""
    if not runs:
        return "healthy", "no runs yet"
    last = runs[0]
    if last["status"] in ("failed", "refused", "aborted"):
        streak = 0
        for r in runs:
            if r["status"] in ("failed", "refused", "aborted"):
                streak += 1
            else:
                break
        state = "failing" if streak >= 2 or last["status"] == "refused" else "degraded"
        return state, f"last run {last['status']}: {last['error'] or 'no message'}"
    if last["status"] == "running":
        return "healthy", "a run is in progress"
    if last["rejected"]:
        return "degraded", f"last run rejected {last['rejected']} row(s)"
    return "healthy", "last run ok"


def collect(store: Store) -> dict[str, Any]:
    conn = store.conn
    cur = conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 500")
    cols = [d[0] for d in cur.description]
    all_runs = [dict(zip(cols, r, strict=True)) for r in cur]
    by_source: dict[str, list[dict[str, Any]]] = {}
    for r in all_runs:
        by_source.setdefault(r["source"], []).append(r)
    sources = []
    for name in sorted(by_source):
        runs = by_source[name]
        health, why = source_health(runs)
        last_ok = next((r for r in runs if r["status"] == "ok"), None)
        linked = conn.execute(
            "SELECT count(*) FROM contacts WHERE source = ? AND deleted_at IS NULL", (name,)
        ).fetchone()[0]
        sources.append({
            "name": name,
            "health": health,
            "why": why,
            "contacts": linked,
            "last_run": runs[0],
            "last_success_at": last_ok["finished_at"] if last_ok else None,
        })

    def count(sql: str) -> int:
        return int(conn.execute(sql).fetchone()[0])

    size = sum(
        os.path.getsize(p)
        for p in (str(store.path), f"{store.path}-wal")
        if os.path.exists(p)
    )
    worst = max((s["health"] for s in sources), key=HEALTH_CODES.__getitem__, default="healthy")
    return {
        "database": str(store.path),
        "database_bytes": size,
        "health": worst,
        "contacts": {
            "total": count("SELECT count(*) FROM contacts WHERE deleted_at IS NULL"),
            "sync": count("SELECT count(*) FROM contacts WHERE deleted_at IS NULL "
                          "AND record_type = 'sync'"),
            "manual": count("SELECT count(*) FROM contacts WHERE deleted_at IS NULL "
                            "AND record_type = 'manual'"),
            "external": count("SELECT count(*) FROM contacts WHERE deleted_at IS NULL "
                              "AND record_type = 'external'"),
            "deleted": count("SELECT count(*) FROM contacts WHERE deleted_at IS NOT NULL"),
        },
        "open_activities": count("SELECT count(*) FROM activities WHERE status = 'open'"),
        "open_review_items": count("SELECT count(*) FROM review_items WHERE status = 'open'"),
        "quarantined_rows": count("SELECT count(*) FROM quarantine"),
        "last_change_seq": count("SELECT coalesce(max(seq), 0) FROM changes"),
        "sources": sources,
    }
