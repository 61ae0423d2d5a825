"""`store.contacts`: the SQL of contact rows: reads (one, many, a source's links,
match records, identity rows), id allocation, the bulk insert of a run's new
contacts and their feed entries, inserts and updates of single contacts, the
link snapshots, references (in use), held values of local-owned fields, and the
lists `Mirror` pages through.

Every statement is the store's, on the store's connection, inside the caller's
transaction. It must not decide what a contact's fields become (the rules do),
nor begin transactions itself. The bulk paths are import-speed critical: one
`executemany` per batch, no per-row Python work.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from contactsync_agent import _core
from contactsync_agent.mapping import FIELDS
from contactsync_agent.store.part import Part, sql_quote
from contactsync_agent.store.schema import CONTACT_COLUMNS, CONTACTS_LINK_INDEX


class Contacts(Part):
    """Contact rows and what belongs to one contact."""

    # ------------------------------------------------------------ reads

    def row(self, contact_id: int) -> dict[str, Any] | None:
        cur = self.conn.execute(
            f"SELECT {', '.join(CONTACT_COLUMNS)} FROM contacts WHERE id = ?", (contact_id,)
        )
        row = cur.fetchone()
        return dict(zip(CONTACT_COLUMNS, row, strict=True)) if row else None

    def rows(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        cols = ", ".join(CONTACT_COLUMNS)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(
                f"SELECT {cols} FROM contacts WHERE id IN ({marks})", chunk
            ):
                out[row[0]] = dict(zip(CONTACT_COLUMNS, row, strict=True))
        return out

    def in_use(self, ids: Sequence[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for cid, ref in self.conn.execute(
                f"SELECT contact_id, ref FROM contact_references WHERE contact_id IN ({marks}) "
                "ORDER BY contact_id, ref",
                chunk,
            ):
                out.setdefault(cid, []).append(ref)
        return out

    def linked(self, source: str) -> Iterator[list[tuple[str, int, int | None, int]]]:
        """(external id, local id, source hash, attention flag) of a source's links, in chunks."""
        cur = self.conn.execute(
            "SELECT external_id, id, source_hash, "
            "  (record_type != 'sync' OR forced_manual = 1) "
            "FROM contacts WHERE source = ? AND external_id IS NOT NULL AND deleted_at IS NULL",
            (source,),
        )
        while True:
            rows = cur.fetchmany(100_000)
            if not rows:
                return
            yield rows

    def local_identity_rows(self, source: str) -> list[tuple[int, int, list[str]]]:
        """Manual contacts not linked to `source` (kind 0) and external ones (kind 1)."""
        cols = ", ".join(FIELDS)
        rows = self.conn.execute(
            f"SELECT id, CASE record_type WHEN 'manual' THEN 0 ELSE 1 END, {cols} "
            # `record_type != 'sync'` lets SQLite read the partial index
            # `contacts_local` instead of scanning every contact.
            "FROM contacts WHERE record_type != 'sync' AND record_type IN ('manual', 'external') "
            "AND deleted_at IS NULL "
            "AND NOT (record_type = 'manual' AND source IS ? AND external_id IS NOT NULL)",
            (source,),
        ).fetchall()
        return [(r[0], r[1], list(r[2:])) for r in rows]

    def match_rows(self, where: str, params: Sequence[Any],
                   columns: Sequence[str]) -> list[dict[str, Any]]:
        """Live contacts as records for the matching engine ({"id": str, column: value})."""
        cols = ", ".join(columns)
        return [
            {"id": str(r[0]), **dict(zip(columns, r[1:], strict=True))}
            for r in self.conn.execute(
                f"SELECT id, {cols} FROM contacts WHERE deleted_at IS NULL AND {where} "
                "ORDER BY id", params)
        ]

    def linked_not_sync(self, source: str) -> int:
        """Live contacts linked to `source` that are not `sync` ones (manual or
        external contacts that carry its link): few, found by the
        `contacts_local` index (named: without statistics the planner took the
        link index and visited every linked contact, 0.2 s a million)."""
        return int(
            self.conn.execute(
                "SELECT count(*) FROM contacts INDEXED BY contacts_local "
                "WHERE record_type != 'sync' AND deleted_at IS NULL AND source = ? "
                "AND external_id IS NOT NULL",
                (source,),
            ).fetchone()[0]
        )

    def sync_count(self, source: str) -> int:
        return int(
            self.conn.execute(
                "SELECT count(*) FROM contacts WHERE source = ? AND record_type = 'sync' "
                "AND external_id IS NOT NULL AND deleted_at IS NULL",
                (source,),
            ).fetchone()[0]
        )

    def allocate_ids(self, n: int) -> int:
        """Reserves `n` new local ids and returns the first. Ids come from a
        high-water mark in `meta` that only grows, so an id is never reused,
        not even after a hard delete (call inside a transaction)."""
        return self._store.allocate_ids("contacts", n)

    # ------------------------------------------------------------ bulk loads

    def defer_link_index(self) -> bool:
        """On an empty table (a first import), drops the link index so that the
        bulk insert does not keep it row by row; True when dropped, and then the
        caller must call `build_link_index` in the same transaction before
        anything looks a contact up by its link (a rollback brings it back)."""
        if self.conn.execute("SELECT 1 FROM contacts LIMIT 1").fetchone() is not None:
            return False
        self.conn.execute("DROP INDEX contacts_link")
        return True

    def build_link_index(self) -> None:
        """Builds the link index dropped by `defer_link_index` (one sort)."""
        self.conn.execute(CONTACTS_LINK_INDEX)

    # ------------------------------------------------------------ link snapshots

    def load_snapshot(self, source: str) -> list[bytes] | None:
        """The parts of a source's saved link snapshot (the whole snapshot, then
        the deltas after it, in order), or None when there is none or a write
        to a contact dropped it (its `link_snapshots` row is the mark)."""
        if self.conn.execute("SELECT 1 FROM link_snapshots WHERE source = ?",
                             (source,)).fetchone() is None:
            return None
        parts = [bytes(r[0]) for r in self.conn.execute(
            "SELECT data FROM link_snapshot_parts WHERE source = ? ORDER BY part", (source,))]
        return parts or None

    def save_snapshot(self, source: str, data: bytes, entries: int, at: str) -> None:
        """Saves a whole snapshot of a source's links (replacing its parts)."""
        self.conn.execute("DELETE FROM link_snapshot_parts WHERE source = ?", (source,))
        self.conn.execute(
            "INSERT INTO link_snapshot_parts (source, part, data) VALUES (?, 0, ?)",
            (source, data))
        self._snapshot_mark(source, entries, at)

    def save_snapshot_delta(self, source: str, delta: bytes, entries: int, at: str) -> None:
        """Appends a delta to the parts the run loaded its links from (only
        then: they are what the delta applies to) and marks them valid again."""
        self.conn.execute(
            "INSERT INTO link_snapshot_parts (source, part, data) VALUES (?, "
            "(SELECT coalesce(max(part), 0) + 1 FROM link_snapshot_parts WHERE source = ?), ?)",
            (source, source, delta))
        self._snapshot_mark(source, entries, at)

    def _snapshot_mark(self, source: str, entries: int, at: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO link_snapshots (source, data, entries, saved_at) "
            "VALUES (?, x'', ?, ?)",
            (source, entries, at),
        )

    def link_rows(self, ids: Sequence[int]) -> list[tuple[int, str | None, str | None,
                                                          int | None, int, str | None]]:
        """(id, source, external id, source hash, attention, deleted_at) of contacts."""
        out: list[tuple[int, str | None, str | None, int | None, int, str | None]] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            out.extend(self.conn.execute(
                "SELECT id, source, external_id, source_hash, "
                "(record_type != 'sync' OR forced_manual = 1), deleted_at "
                f"FROM contacts WHERE id IN ({marks})", chunk))
        return out

    # ------------------------------------------------------------ writes

    def insert_created(
        self, source: str, batch: _core.Batch, first_id: int, count: int, run_id: int | None,
        at: str, reason_code: str, reason: str,
    ) -> None:
        """Bulk insert of the batch's new `sync` contacts of `source`, ids
        first_id .. first_id + count - 1 (the rows `Batch.create_rows` makes:
        id, source, external_id, 14 fields, extra, phone_e164, mobile_e164,
        hash), and their feed entries, written by SQLite from the rows in one
        statement: compact (schema 6: the payload, time and reason text by
        reference, see `store.feed.add_bulk_creates`).

        The rows are bound and stepped by the Rust core through this
        connection's own SQLite library when the store can reach it
        (`Store.bulk_library`; a 1M first import: 7.8 s instead of 10.3 s through
        `executemany`), else through `executemany`; the statement is the same."""
        cols = ", ".join(
            ("id", "source", "external_id", *FIELDS, "extra", "phone_e164", "mobile_e164", "hash")
        )
        n = 3 + len(FIELDS) + 4
        marks = ", ".join(f"?{i}" for i in range(1, n + 1))
        sql = (f"INSERT INTO contacts ({cols}, source_hash, record_type, forced_manual, "
               f"created_at, updated_at) VALUES ({marks}, ?{n}, 'sync', 0, {sql_quote(at)}, "
               f"{sql_quote(at)})")
        library = self._store.bulk_library()
        if library is not None:
            batch.insert_creates(library, self.conn, sql, first_id, source)
        else:
            self.conn.executemany(sql, batch.create_rows(first_id, source))
        self.conn.execute("DELETE FROM link_snapshots WHERE source = ?", (source,))
        self._store.feed.add_bulk_creates(first_id, count, run_id, reason_code, reason)

    def insert(self, values: dict[str, Any], at: str) -> int:
        """Inserts one contact under a newly allocated id (call inside a transaction)."""
        cid = self.allocate_ids(1)
        cols = [c for c in values if c in CONTACT_COLUMNS and c != "id"]
        self.conn.execute(
            f"INSERT INTO contacts (id, {', '.join(cols)}, created_at, updated_at) "
            f"VALUES (?, {', '.join('?' * len(cols))}, ?, ?)",
            [cid, *(values[c] for c in cols), at, at],
        )
        if values.get("external_id") is not None:
            self.conn.execute("DELETE FROM link_snapshots WHERE source IS ?",
                              (values.get("source"),))
        return cid

    def update(self, contact_id: int, values: dict[str, Any], at: str | None) -> None:
        if not values:
            return
        sets = ", ".join(f"{c} = ?" for c in values)
        params = list(values.values())
        if at is not None:
            sets += ", updated_at = ?"
            params.append(at)
        self.conn.execute(f"UPDATE contacts SET {sets} WHERE id = ?", [*params, contact_id])

    def add_reference(self, contact_id: int, ref: str, at: str) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO contact_references (contact_id, ref, registered_at) "
            "VALUES (?, ?, ?)",
            (contact_id, ref, at),
        )

    def remove_reference(self, contact_id: int, ref: str) -> bool:
        cur = self.conn.execute(
            "DELETE FROM contact_references WHERE contact_id = ? AND ref = ?", (contact_id, ref)
        )
        return cur.rowcount > 0

    # ------------------------------------------------------------ ownership

    def held_values(self, ids: Sequence[int]) -> dict[int, dict[str, str]]:
        """contact id -> {field: the source's last value} for local-owned fields."""
        out: dict[int, dict[str, str]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for cid, fld, value in self.conn.execute(
                f"SELECT contact_id, field, source_value FROM held_values "
                f"WHERE contact_id IN ({marks})", chunk,
            ):
                out.setdefault(cid, {})[fld] = value
        return out

    def set_held_values(self, contact_id: int, values: dict[str, str]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO held_values (contact_id, field, source_value) "
            "VALUES (?, ?, ?)",
            [(contact_id, f, v) for f, v in values.items()],
        )


    # ------------------------------------------------------------ Mirror's lists and lookups

    def cursor(self, where: str, params: Sequence[Any], limit: int | None,
               offset: int) -> sqlite3.Cursor:
        """The contacts matching `where` in id order, as a cursor the caller
        reads as it goes (and closes when it stops early)."""
        return self.conn.execute(
            f"SELECT {', '.join(CONTACT_COLUMNS)} FROM contacts WHERE {where} "
            "ORDER BY id LIMIT ? OFFSET ?", [*params, -1 if limit is None else limit, offset])

    def count(self, where: str, params: Sequence[Any]) -> int:
        return int(self.conn.execute(
            f"SELECT count(*) FROM contacts WHERE {where}", params).fetchone()[0])

    def counts_by_kind(self) -> list[tuple[str | None, str, int, int]]:
        """(source, record type, live, how many) of every contact."""
        return self.conn.execute(
            "SELECT source, record_type, deleted_at IS NULL, count(*) FROM contacts "
            "GROUP BY 1, 2, 3"
        ).fetchall()

    def link(self, contact_id: int) -> tuple[str | None, str | None, str | None] | None:
        """(source, external id, deleted_at) of a contact, or None."""
        row = self.conn.execute(
            "SELECT source, external_id, deleted_at FROM contacts WHERE id = ?", (contact_id,)
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def external_id(self, contact_id: int) -> str | None:
        row = self.conn.execute("SELECT external_id FROM contacts WHERE id = ?",
                                (contact_id,)).fetchone()
        return row[0] if row else None

    def extra(self, contact_id: int) -> str | None:
        """The contact's `extra` as stored (JSON text), or None without the contact."""
        row = self.conn.execute("SELECT extra FROM contacts WHERE id = ?",
                                (contact_id,)).fetchone()
        return row[0] if row else None

    def references(self, contact_id: int) -> list[tuple[str, str]]:
        """(ref, registered_at) of what uses the contact, oldest first."""
        return self.conn.execute(
            "SELECT ref, registered_at FROM contact_references WHERE contact_id = ? "
            "ORDER BY registered_at, ref", (contact_id,)).fetchall()

    def move_references(self, from_id: int, to_id: int) -> None:
        """A merged contact's registered uses go to the contact it merged into."""
        self.conn.execute(
            "UPDATE OR IGNORE contact_references SET contact_id = ? WHERE contact_id = ?",
            (to_id, from_id))

    def discard_created(self, contact_id: int, run_id: int | None) -> None:
        """Removes a contact this run created and never committed (auto-link),
        with its feed entries of the run and its organisation link."""
        self.conn.execute("DELETE FROM change_log WHERE contact_id = ? AND run_id = ?",
                          (contact_id, run_id))
        self.conn.execute("DELETE FROM contacts WHERE id = ?", (contact_id,))
        # Its organisation link was written with it.
        self.conn.execute("DELETE FROM contact_organisations WHERE contact_id = ?",
                          (contact_id,))
