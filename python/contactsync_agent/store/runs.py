"""`store.runs`: the SQL of run rows (begin, insert inside a transaction,
finish, abort the stale ones) and the reads of status, health, the daemon and
the runner; plus each source's last policy (ownership, unique fields).

Statements only; it must not decide a run's outcome (sync.py does). `begin`
and `abort_stale` take their own short transaction; the others run inside the
caller's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from contactsync_agent.store.part import Part, now_iso


class Runs(Part):
    """Run rows and source policies."""

    def begin(self, source: str, mode: str, origin: str | None, origin_hash: str | None,
              allow_mass_delete: bool, entity_type: str = "contact", *,
              allow_column_drop: bool = False, forced: bool = False) -> int:
        with self._store.transaction():
            return self.insert(source, mode, origin, origin_hash, allow_mass_delete,
                               entity_type, allow_column_drop=allow_column_drop,
                               forced=forced)

    def insert(self, source: str, mode: str, origin: str | None, origin_hash: str | None,
               allow_mass_delete: bool, entity_type: str = "contact", *,
               allow_column_drop: bool = False, forced: bool = False) -> int:
        """The run row, inside the caller's transaction (a dry run rolls it back)."""
        cur = self.conn.execute(
            "INSERT INTO runs (source, mode, origin, origin_hash, started_at, status, "
            "allow_mass_delete, entity_type, allow_column_drop, forced) "
            "VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)",
            (source, mode, origin, origin_hash, now_iso(), int(allow_mass_delete),
             entity_type, int(allow_column_drop), int(forced)),
        )
        return int(cur.lastrowid or 0)

    def finish(self, run_id: int, status: str, counts: dict[str, int], *,
               error: str | None, duration_ms: int) -> None:
        """Called inside the run's transaction for 'ok', in its own for failures."""
        cols = [c for c in counts if c in RUN_COUNTS]
        sets = "".join(f", {c} = ?" for c in cols)
        self.conn.execute(
            f"UPDATE runs SET status = ?, finished_at = ?, error = ?, duration_ms = ?{sets} "
            "WHERE id = ?",
            [status, now_iso(), error, duration_ms, *(counts[c] for c in cols), run_id],
        )

    def policy(self, source: str) -> tuple[dict[str, str], list[str]] | None:
        """(ownership, unique fields) last configured for `source`, if any."""
        row = self.conn.execute(
            "SELECT ownership, unique_fields FROM source_policies WHERE source = ?", (source,)
        ).fetchone()
        return (json.loads(row[0]), json.loads(row[1])) if row else None

    def set_policy(self, source: str, ownership: dict[str, str], unique: Sequence[str],
                   at: str) -> None:
        self.conn.execute(
            "INSERT INTO source_policies (source, ownership, unique_fields, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (source) DO UPDATE SET "
            "ownership = excluded.ownership, unique_fields = excluded.unique_fields, "
            "updated_at = excluded.updated_at",
            (source, json.dumps(ownership, sort_keys=True), json.dumps(list(unique)), at),
        )

    def abort_stale(self) -> None:
        """Runs left 'running' by a killed process never committed: say so."""
        with self._store.transaction():
            self.conn.execute(
                "UPDATE runs SET status = 'aborted', finished_at = ?, "
                "error = 'the process ended before the run committed' WHERE status = 'running'",
                (now_iso(),),
            )
    # ------------------------------------------------------------ reads

    def row(self, run_id: int) -> dict[str, Any]:
        cur = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,))
        cols = [d[0] for d in cur.description]
        row = cur.fetchone()
        return dict(zip(cols, row, strict=True))

    def recent(self, source: str | None, limit: int) -> list[dict[str, Any]]:
        """The last `limit` runs (of one source, when given), newest first."""
        sql = "SELECT * FROM runs"
        params: list[Any] = []
        if source:
            sql += " WHERE source = ?"
            params.append(source)
        cur = self.conn.execute(sql + " ORDER BY id DESC LIMIT ?", [*params, limit])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur]

    def of_source(self, source: str, limit: int) -> list[dict[str, Any]]:
        """The last `limit` runs of `source`, newest first."""
        cur = self.conn.execute(
            "SELECT * FROM runs WHERE source = ? ORDER BY id DESC LIMIT ?", (source, limit)
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur]

    def last_id(self) -> int:
        row = self.conn.execute("SELECT coalesce(max(id), 0) FROM runs").fetchone()
        return int(row[0])

    def latest_since(self, source: str, after_id: int) -> int | None:
        """The newest run of `source` with an id above `after_id`, if any."""
        row = self.conn.execute(
            "SELECT max(id) FROM runs WHERE source = ? AND id > ?", (source, after_id)
        ).fetchone()
        return None if row[0] is None else int(row[0])

    def last_done_with(self, source: str, origin_hash: str) -> tuple[Any, ...] | None:
        """(id, status, error, started_at) of the last finished run of this very
        content (origin hash) into `source`."""
        row: tuple[Any, ...] | None = self.conn.execute(
            "SELECT id, status, error, started_at FROM runs WHERE source = ? AND origin_hash = ? "
            "AND status != 'running' ORDER BY id DESC LIMIT 1",
            (source, origin_hash),
        ).fetchone()
        return row

    def running(self) -> tuple[Any, ...] | None:
        """(id, source, started_at) of the newest run still 'running', if any."""
        row: tuple[Any, ...] | None = self.conn.execute(
            "SELECT id, source, started_at FROM runs WHERE status = 'running' "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return row

    def sources(self) -> set[str]:
        """Every source a run was recorded for."""
        return {r[0] for r in self.conn.execute("SELECT DISTINCT source FROM runs")}

    def policy_sources(self) -> list[str]:
        """Sources with a recorded policy."""
        return [r[0] for r in self.conn.execute("SELECT source FROM source_policies")]


RUN_COUNTS: tuple[str, ...] = (
    "records",
    "created",
    "converted",
    "updated",
    "unchanged",
    "skipped_forced_manual",
    "ignored_external",
    "unlinked",
    "deleted",
    "review_items",
    "activities",
    "rejected",
    "deletions_skipped",
)
