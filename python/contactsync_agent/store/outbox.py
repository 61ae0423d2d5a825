"""`store.outbox`: the SQL of two-way sync: each source's recorded two-way
policy, the bases of locally edited out/both fields (`field_bases`) and the
outbox of local changes to push (`outbox`).

Every statement runs on the store's connection inside the caller's transaction.
It must not decide what is pushed or how a conflict ends (the rules and
`push.py` do), nor begin transactions itself, nor talk to a source.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from contactsync_agent.store.part import Part

#: Entries still to be pushed or confirmed.
OPEN = ("pending", "sent")


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    key: str
    source: str
    contact_id: int
    kind: str
    external_id: str | None
    #: {field: (base, new)}
    fields: dict[str, tuple[str, str]]
    status: str
    reason: str
    attempts: int
    local_at: str
    created_at: str
    sent_at: str | None
    done_at: str | None


_COLS = ("id, key, source, contact_id, kind, external_id, fields, status, reason, attempts, "
         "local_at, created_at, sent_at, done_at")


def _entry(row: Sequence[Any]) -> OutboxEntry:
    fields = {f: (str(v[0]), str(v[1])) for f, v in json.loads(row[6]).items()}
    return OutboxEntry(row[0], row[1], row[2], row[3], row[4], row[5], fields, *row[7:])


class Outbox(Part):
    """Two-way policies, bases and outbox entries."""

    # ------------------------------------------------------------ policy

    def sync_policy(self, source: str) -> dict[str, Any]:
        """The two-way policy recorded for `source` ({} = every field in only)."""
        row = self.conn.execute(
            "SELECT sync FROM source_policies WHERE source = ?", (source,)).fetchone()
        return dict(json.loads(row[0])) if row else {}

    def set_sync_policy(self, source: str, policy: Mapping[str, Any], at: str) -> None:
        self.conn.execute(
            "INSERT INTO source_policies (source, sync, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (source) DO UPDATE SET sync = excluded.sync, "
            "updated_at = excluded.updated_at",
            (source, json.dumps(dict(policy), sort_keys=True), at))

    # ------------------------------------------------------------ bases

    def bases(self, ids: Sequence[int]) -> dict[int, dict[str, str]]:
        """contact id -> {field: base} of the contacts that have any."""
        out: dict[int, dict[str, str]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for cid, fld, base in self.conn.execute(
                f"SELECT contact_id, field, base FROM field_bases WHERE contact_id IN ({marks})",
                chunk,
            ):
                out.setdefault(cid, {})[fld] = base
        return out

    def set_bases(self, contact_id: int, bases: Mapping[str, str]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO field_bases (contact_id, field, base) VALUES (?, ?, ?)",
            [(contact_id, f, v) for f, v in bases.items()])

    def drop_bases(self, contact_id: int, fields: Sequence[str]) -> None:
        self.conn.executemany(
            "DELETE FROM field_bases WHERE contact_id = ? AND field = ?",
            [(contact_id, f) for f in fields])

    # ------------------------------------------------------------ entries

    def add(self, *, key: str, source: str, contact_id: int, kind: str,
            external_id: str | None, fields: Mapping[str, tuple[str, str]], local_at: str,
            at: str) -> int:
        cur = self.conn.execute(
            "INSERT INTO outbox (key, source, contact_id, kind, external_id, fields, local_at, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, source, contact_id, kind, external_id,
             json.dumps({f: list(v) for f, v in fields.items()}, ensure_ascii=False), local_at,
             at))
        return int(cur.lastrowid or 0)

    def set_fields(self, entry_id: int, fields: Mapping[str, tuple[str, str]],
                   local_at: str | None = None) -> None:
        self.conn.execute(
            "UPDATE outbox SET fields = ?, local_at = coalesce(?, local_at) WHERE id = ?",
            (json.dumps({f: list(v) for f, v in fields.items()}, ensure_ascii=False), local_at,
             entry_id))

    def pending_for(self, contact_id: int) -> OutboxEntry | None:
        """The contact's pending (not yet sent) entry, if any: a new edit joins it."""
        row = self.conn.execute(
            f"SELECT {_COLS} FROM outbox WHERE contact_id = ? AND status = 'pending' "
            # (repeats the partial index's condition so SQLite uses it: without
            # it, every call scanned the whole outbox, confirmed history and all)
            "AND status IN ('pending', 'sent') ORDER BY id DESC LIMIT 1",
            (contact_id,)).fetchone()
        return _entry(row) if row else None

    def open_for(self, ids: Sequence[int]) -> dict[int, list[OutboxEntry]]:
        """contact id -> its pending and sent entries, oldest first."""
        out: dict[int, list[OutboxEntry]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(
                f"SELECT {_COLS} FROM outbox WHERE contact_id IN ({marks}) "
                "AND status IN ('pending', 'sent') ORDER BY id", chunk,
            ):
                out.setdefault(row[3], []).append(_entry(row))
        return out

    def delivered_for(self, contact_id: int, limit: int = 20) -> list[OutboxEntry]:
        """The contact's latest confirmed updates, oldest first (a pull tells
        the ones whose value has not come back yet by their bases)."""
        rows = self.conn.execute(
            f"SELECT {_COLS} FROM outbox WHERE contact_id = ? AND status = 'confirmed' "
            "AND kind = 'update' ORDER BY id DESC LIMIT ?", (contact_id, limit)).fetchall()
        return [_entry(r) for r in reversed(rows)]

    def entries(self, source: str | None = None, statuses: Sequence[str] | None = None,
                limit: int = 1000) -> list[OutboxEntry]:
        where, params = [], []
        if source is not None:
            where.append("source = ?")
            params.append(source)
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            params.extend(statuses)
        sql = f"SELECT {_COLS} FROM outbox"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_entry(r) for r in self.conn.execute(
            sql + " ORDER BY id LIMIT ?", [*params, limit])]

    def mark(self, ids: Sequence[int], status: str, at: str, *, reason: str = "",
             count_attempt: bool = False) -> None:
        """Moves entries to `status` (`sent` records when; the others when done)."""
        col = "sent_at" if status == "sent" else "done_at"
        self.conn.executemany(
            f"UPDATE outbox SET status = ?, {col} = ?, reason = ?, "
            "attempts = attempts + ? WHERE id = ?",
            [(status, at, reason, int(count_attempt), i) for i in ids])

    def set_external_id(self, entry_id: int, external_id: str) -> None:
        self.conn.execute("UPDATE outbox SET external_id = ? WHERE id = ?",
                          (external_id, entry_id))

    def depth(self) -> list[tuple[str, str, int, str | None]]:
        """(source, status, how many, oldest created_at) of open entries."""
        return self.conn.execute(
            "SELECT source, status, count(*), min(created_at) FROM outbox "
            "WHERE status IN ('pending', 'sent') GROUP BY 1, 2").fetchall()

    # ------------------------------------------------------------ new local contacts

    def create_candidates(self, source: str, referenced_only: bool,
                          limit: int = 10_000) -> list[int]:
        """Live manual contacts that no source knows yet and no entry of
        `source` creates already (only those with a registered reference when
        `referenced_only`)."""
        ref = ("AND EXISTS (SELECT 1 FROM contact_references r WHERE r.contact_id = c.id)"
               if referenced_only else "")
        return [r[0] for r in self.conn.execute(
            "SELECT c.id FROM contacts c WHERE c.record_type = 'manual' AND c.external_id IS NULL "
            f"AND c.deleted_at IS NULL {ref} AND NOT EXISTS (SELECT 1 FROM outbox o WHERE "
            "o.contact_id = c.id AND o.source = ? AND o.kind = 'create' "
            "AND o.status != 'superseded') ORDER BY c.id LIMIT ?", (source, limit))]

    def conflicts_of_run(self, run_id: int) -> list[tuple[int, str]]:
        """(contact id, reason) of the two-way conflicts a run decided."""
        return self.conn.execute(
            "SELECT contact_id, reason FROM changes WHERE run_id = ? "
            "AND reason_code = 'two_way_conflict' ORDER BY seq", (run_id,)).fetchall()

    # ------------------------------------------------------------ status

    def summary(self) -> tuple[dict[str, int], str | None, int]:
        """({status: how many} of open entries, the oldest pending entry's
        created_at, open review items of two-way conflicts). Empty on a mirror
        not yet migrated to schema 5 (read-only status never migrates)."""
        found = self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'outbox'")
        if found.fetchone() is None:
            return {}, None, 0
        counts = {s: int(n) for s, n in self.conn.execute(
            "SELECT status, count(*) FROM outbox WHERE status IN ('pending', 'sent') GROUP BY 1")}
        oldest = self.conn.execute(
            "SELECT min(created_at) FROM outbox WHERE status IN ('pending', 'sent')").fetchone()[0]
        conflicts = int(self.conn.execute(
            "SELECT count(*) FROM review_items WHERE status = 'open' AND kind = 'conflict'"
        ).fetchone()[0])
        return counts, oldest, conflicts
