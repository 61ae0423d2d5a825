"""`store.feed`: the SQL of the change feed (`changes`) and of activities:
adding entries (contacts and entities), the feed position, a dry run's preview,
the pages `Mirror.changes` and `activities` read, closing an activity.

Statements only, inside the caller's transaction; it must not decide what an
entry says (the rules and sync do) nor begin transactions itself. Feed payloads
are encoded once, here.

Entries are written to `change_log` and read through the `changes` view
(schema 6): a bulk import's create entries hold their payload, time and
reason text by reference (empty strings, no bytes), which the view writes
out; see `store.schema` (migration 6) for what keeps them true.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from contactsync_agent.store.part import FEED_JSON, Part


class Feed(Part):
    """The change feed and activities."""

    def add_change(
        self, contact_id: int, run_id: int | None, op: str, fields: dict[str, Any],
        reason_code: str, reason: str, at: str,
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO change_log (contact_id, run_id, op, fields, reason_code, reason, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (contact_id, run_id, op, json.dumps(fields, ensure_ascii=False), reason_code,
             reason, at),
        )
        return int(cur.lastrowid or 0)

    def add_bulk_creates(self, first_id: int, count: int, run_id: int | None,
                         reason_code: str, reason: str) -> None:
        """Create entries of the contacts just inserted under ids first_id ..
        first_id + count - 1, in one statement and compact: the payload is the
        row's own values and the time its `created_at` (empty `fields` and
        `at`), the reason its code's text in `change_reasons` (empty `reason`)
        unless that code's recorded text differs."""
        self.conn.execute("INSERT OR IGNORE INTO change_reasons (code, text) VALUES (?, ?)",
                          (reason_code, reason))
        known = self.conn.execute("SELECT text FROM change_reasons WHERE code = ?",
                                  (reason_code,)).fetchone()[0]
        self.conn.execute(
            "INSERT INTO change_log (contact_id, run_id, op, fields, reason_code, reason, at) "
            "SELECT id, ?, 'create', '', ?, ?, '' FROM contacts WHERE id BETWEEN ? AND ? "
            "ORDER BY id",
            (run_id, reason_code, "" if known == reason else reason, first_id,
             first_id + count - 1),
        )

    def add_entity_create_changes(
        self, table: str, entity_type: str, fields: Sequence[str], first_id: int, count: int,
        run_id: int | None, reason_code: str, reason: str, at: str,
    ) -> None:
        """Feed entries of entities just inserted under ids first_id .. first_id +
        count - 1, their payloads ({"source": [null, ...], "external_id": [null,
        ...], every non-empty field, "extra" when there is one}) written by
        SQLite from the rows in one statement (no payload passes through Python)."""
        parts = ["'{\"source\":[null,' || json_quote(source) || "
                 "'],\"external_id\":[null,' || json_quote(external_id) || ']'"]
        for f in fields:
            parts.append(f"CASE WHEN {f} != '' THEN ',\"{f}\":[null,' || json_quote({f}) "
                         "|| ']' ELSE '' END")
        parts.append("CASE WHEN extra != '{}' THEN ',\"extra\":[null,' || extra || ']' "
                     "ELSE '' END || '}'")
        self.conn.execute(
            "INSERT INTO change_log (contact_id, run_id, op, fields, reason_code, reason, at, "
            f"entity_type, object_id) SELECT NULL, ?, 'create', {' || '.join(parts)}, ?, ?, ?, "
            f"?, id FROM {table} WHERE id BETWEEN ? AND ? ORDER BY id",
            (run_id, reason_code, reason, at, entity_type, first_id, first_id + count - 1),
        )

    def add_entity_changes(
        self, entity_type: str, rows: Iterable[tuple[int, str, dict[str, Any]]],
        run_id: int | None, reason_code: str, reason: str, at: str,
    ) -> None:
        """Feed entries of organisations, locations or customer links:
        (entity id, op, payload) each; `contact_id` stays NULL on these."""
        self.conn.executemany(
            "INSERT INTO change_log (contact_id, run_id, op, fields, reason_code, reason, at, "
            "entity_type, object_id) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?)",
            ((run_id, op, FEED_JSON.encode(payload), reason_code, reason, at,
              entity_type, eid) for eid, op, payload in rows),
        )

    def last_seq(self) -> int:
        """The highest change-feed seq so far (0 if none)."""
        return int(self.conn.execute(
            "SELECT coalesce(max(seq), 0) FROM change_log").fetchone()[0])

    def run_preview(self, after_seq: int, limit: int) -> dict[str, list[dict[str, Any]]]:
        """The first `limit` contact feed entries after `after_seq` of each kind
        (creates, converts, updates, deletes, unlinks): what a dry run shows
        before it rolls back."""
        out: dict[str, list[dict[str, Any]]] = {}
        for key, op in (("creates", "create"), ("converts", "convert"), ("updates", "update"),
                        ("deletes", "delete"), ("unlinks", "unlink")):
            rows = self.conn.execute(
                "SELECT ch.contact_id, ch.fields, ch.reason, c.external_id FROM changes ch "
                "LEFT JOIN contacts c ON c.id = ch.contact_id WHERE ch.seq > ? AND ch.op = ? "
                "AND ch.contact_id IS NOT NULL ORDER BY ch.seq LIMIT ?",
                (after_seq, op, limit))
            items: list[dict[str, Any]] = []
            for cid, fields_json, reason, ext in rows:
                fields = json.loads(fields_json)
                link = fields.get("external_id")
                if ext is None and isinstance(link, list):  # an unlink removed it
                    ext = link[0] if link[0] is not None else link[1]
                if op == "create":
                    fields = {f: after for f, (_, after) in fields.items()}
                items.append({"contact_id": cid, "external_id": ext, "fields": fields,
                              "reason": reason})
            out[key] = items
        return out

    def add_activity(
        self, *, contact_id: int | None, run_id: int | None, source: str | None,
        external_id: str | None, kind: str, fields: dict[str, Any], reason: str, at: str,
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO activities (contact_id, run_id, source, external_id, kind, fields, "
            "reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (contact_id, run_id, source, external_id, kind,
             json.dumps(fields, ensure_ascii=False), reason, at),
        )
        return int(cur.lastrowid or 0)


    # ------------------------------------------------------------ reads

    def page(self, since: int, limit: int | None) -> list[tuple[Any, ...]]:
        """Feed rows after `since` in seq order (`Mirror.changes`)."""
        return self.conn.execute(
            "SELECT seq, contact_id, run_id, op, fields, reason_code, reason, at, entity_type, "
            "entity_id FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
            (since, -1 if limit is None else limit)).fetchall()

    def contact_history(self, contact_id: int) -> list[tuple[int, str, str, str]]:
        """(seq, op, reason, at) of one contact's feed entries."""
        return self.conn.execute(
            "SELECT seq, op, reason, at FROM changes WHERE contact_id = ? ORDER BY seq",
            (contact_id,)).fetchall()

    def run_payloads(self, run_id: int, ids: Sequence[int]) -> Iterator[tuple[int, str]]:
        """(contact id, payload) of a run's feed entries about `ids`, in seq order
        within each chunk of 500 ids."""
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            yield from self.conn.execute(
                f"SELECT contact_id, fields FROM changes WHERE run_id = ? AND contact_id IN "
                f"({marks}) ORDER BY seq", [run_id, *chunk],
            )

    # ------------------------------------------------------------ activities

    def activities(self, status: str | None) -> list[tuple[Any, ...]]:
        sql = ("SELECT id, contact_id, run_id, source, external_id, kind, fields, reason, status, "
               "created_at, closed_at, resolution FROM activities")
        params: list[Any] = []
        if status:
            sql += " WHERE status = ?"
            params.append(status)
        return self.conn.execute(sql + " ORDER BY id", params).fetchall()

    def close_activity(self, activity_id: int, status: str, note: str | None, at: str) -> bool:
        """Closes an open activity; False when there is no open one with that id."""
        cur = self.conn.execute(
            "UPDATE activities SET status = ?, closed_at = ?, resolution = ? "
            "WHERE id = ? AND status = 'open'", (status, at, note, activity_id))
        return cur.rowcount != 0

    def open_activities(self) -> int:
        return int(self.conn.execute(
            "SELECT count(*) FROM activities WHERE status = 'open'").fetchone()[0])

    def open_clashes(self, key: str, contact_ids: Sequence[int]) -> set[tuple[int, str]]:
        """(contact, value) of the open `unique_clash` activities about `key` of
        these contacts."""
        path = '$."' + key.replace('"', '\\"') + '".value'
        out: set[tuple[int, str]] = set()
        for start in range(0, len(contact_ids), 500):
            chunk = list(contact_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for cid, value in self.conn.execute(
                "SELECT contact_id, json_extract(fields, ?) FROM activities "
                f"WHERE status = 'open' AND contact_id IN ({marks}) "
                "AND kind = 'unique_clash' AND json_extract(fields, ?) IS NOT NULL",
                [path, *chunk, path],
            ):
                out.add((int(cid), str(value)))
        return out
