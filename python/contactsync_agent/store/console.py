"""`store.console`: the SQL of the web console's reads that no other part has
(a page of the review queue with filters, runs since a time, the contact
search on its indexes, one contact's change feed with payloads), the writes
that undo a review decision, and the search indexes themselves.

Statements only, inside the caller's transaction or read; it must not decide
anything (console.py and review.py do) nor begin transactions itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contactsync_agent.store.part import Part

_ITEM_COLUMNS = ("id, run_id, source, external_id, contact_id, candidate_id, kind, score, "
                 "explanation, reason, status, created_at, decided_at")
_RUN_COLUMNS = ("id", "source", "status", "started_at", "duration_ms", "records", "created",
                "converted", "updated", "deleted", "rejected")
_HIT_COLUMNS = ("id", "display_name", "given_name", "family_name", "email", "phone", "mobile",
                "organisation", "record_type", "source")


#: The contact search's indexes: a prefix search by name, e-mail or phone is one
#: index range each, at 1M contacts too. NOCASE, so that `LIKE 'smi%'`
#: (case-insensitive by default) can use them; only live, non-empty values.
#: Made by the console when it starts (`ensure_search_indexes`), not by a
#: migration: each costs every import its upkeep (measured at 100k: a full
#: import 7.4-7.9 s without the six, 11.9-15.9 s with them, on a busy machine),
#: so a mirror whose console never ran pays nothing.
SEARCH_INDEXES: dict[str, str] = {
    f"contacts_{col}": f"CREATE INDEX IF NOT EXISTS contacts_{col} ON contacts "
                       f"({col} COLLATE NOCASE) WHERE deleted_at IS NULL AND {col} != ''"
    # Numbers too: LIKE uses an index only of its own collation (NOCASE by default).
    for col in ("display_name", "family_name", "given_name", "email", "phone_e164",
                "mobile_e164")
}


def _like_prefix(text: str) -> str:
    """`text` as a LIKE prefix pattern (ESCAPE '\\'): its own % and _ match themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class Console(Part):
    """Reads for the console's pages; the undo of a review decision."""

    def missing_search_indexes(self) -> list[str]:
        have = {r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'contacts'")}
        return [name for name in SEARCH_INDEXES if name not in have]

    def create_search_indexes(self, names: Sequence[str]) -> None:
        for name in names:
            self.conn.execute(SEARCH_INDEXES[name])

    # ------------------------------------------------------------ review queue

    @staticmethod
    def _review_where(status: str, min_score: float | None,
                      source: str | None) -> tuple[str, list[Any]]:
        where = ["status = ?"]
        params: list[Any] = [status]
        if min_score is not None:
            where.append("score IS NOT NULL AND score >= ?")
            params.append(min_score)
        if source:
            where.append("source = ?")
            params.append(source)
        return " AND ".join(where), params

    def review_page(self, status: str, min_score: float | None, source: str | None,
                    limit: int, offset: int) -> list[tuple[Any, ...]]:
        """Review item rows (`ReviewItem.from_row`) in id order, one page."""
        where, params = self._review_where(status, min_score, source)
        return self.conn.execute(
            f"SELECT {_ITEM_COLUMNS} FROM review_items WHERE {where} ORDER BY id "
            "LIMIT ? OFFSET ?", [*params, limit, offset]).fetchall()

    def review_ids(self, status: str, min_score: float | None,
                   source: str | None) -> list[int]:
        where, params = self._review_where(status, min_score, source)
        return [r[0] for r in self.conn.execute(
            f"SELECT id FROM review_items WHERE {where} ORDER BY id", params)]

    def review_count(self, status: str, min_score: float | None, source: str | None) -> int:
        where, params = self._review_where(status, min_score, source)
        return int(self.conn.execute(
            f"SELECT count(*) FROM review_items WHERE {where}", params).fetchone()[0])

    def review_position(self, item_id: int, status: str, min_score: float | None,
                        source: str | None) -> int:
        """How many items of the filtered queue come before `item_id`."""
        where, params = self._review_where(status, min_score, source)
        return int(self.conn.execute(
            f"SELECT count(*) FROM review_items WHERE {where} AND id < ?",
            [*params, item_id]).fetchone()[0])

    def review_sources(self) -> list[str]:
        # Every item's source has run: the few sources of `runs` (its index), each
        # kept if one open item names it (a DISTINCT over 10,000 items took 18 ms).
        return [r[0] for r in self.conn.execute(
            "SELECT s.source FROM (SELECT DISTINCT source FROM runs) s WHERE EXISTS "
            "(SELECT 1 FROM review_items r WHERE r.status = 'open' AND r.source = s.source) "
            "ORDER BY s.source")]

    def names(self, ids: Sequence[int]) -> dict[int, tuple[str, str, str, str]]:
        """id -> (display_name, given_name, family_name, email) of the contacts."""
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in self.conn.execute(
            f"SELECT id, display_name, given_name, family_name, email FROM contacts "
            f"WHERE id IN ({marks})", list(ids))}

    # ------------------------------------------------------------ undo of a decision

    def reopen_rejected(self, item_id: int, source: str, external_id: str,
                        candidate_id: int) -> None:
        """The rejected item is open again and its pair no longer remembered."""
        self.conn.execute(
            "UPDATE review_items SET status = 'open', decided_at = NULL WHERE id = ?",
            (item_id,))
        self.conn.execute(
            "DELETE FROM review_rejections WHERE source = ? AND external_id = ? "
            "AND candidate_id = ?", (source, external_id, candidate_id))

    def reopen_accepted(self, item_id: int, contact_id: int, candidate_id: int,
                        decided_at: str) -> int:
        """The accepted item is open again, and so are the items its accept
        settled (rejected at the same instant about either contact, with no
        remembered rejection). Returns how many of those."""
        self.conn.execute(
            "UPDATE review_items SET status = 'open', decided_at = NULL WHERE id = ?",
            (item_id,))
        cur = self.conn.execute(
            "UPDATE review_items SET status = 'open', decided_at = NULL "
            "WHERE status = 'rejected' AND decided_at = ? AND id != ? "
            "AND (contact_id = ? OR candidate_id = ?) AND NOT EXISTS ("
            "  SELECT 1 FROM review_rejections r WHERE r.source = review_items.source "
            "  AND r.external_id = review_items.external_id "
            "  AND r.candidate_id = review_items.candidate_id)",
            (decided_at, item_id, contact_id, candidate_id))
        return cur.rowcount

    def last_change(self, contact_id: int, reason_code: str) -> tuple[int, str] | None:
        """(seq, fields JSON) of the contact's latest feed entry with that reason."""
        row = self.conn.execute(
            "SELECT seq, fields FROM changes WHERE contact_id = ? AND reason_code = ? "
            "ORDER BY seq DESC LIMIT 1", (contact_id, reason_code)).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    # ------------------------------------------------------------ runs

    def runs_since(self, since: str) -> list[dict[str, Any]]:
        """Finished runs started at or after `since` (ISO time), oldest first."""
        cols = ", ".join(_RUN_COLUMNS)
        return [dict(zip(_RUN_COLUMNS, r, strict=True)) for r in self.conn.execute(
            f"SELECT {cols} FROM runs WHERE started_at >= ? AND status != 'running' "
            "ORDER BY id", (since,))]

    # ------------------------------------------------------------ contact search

    def search(self, *, name: Sequence[str] = (), email: str = "", phone: str = "",
               limit: int = 50) -> list[dict[str, Any]]:
        """Live contacts, each test an index range (`SEARCH_INDEXES`): `name` words
        (one: a prefix of the display, given or family name; two or more: the
        display name's prefix, or given and family name prefixes), `email` a
        prefix, `phone` an E.164 prefix of the phone or mobile."""
        cols = ", ".join(_HIT_COLUMNS)
        arms: list[tuple[str, list[Any]]] = []
        if email:
            arms.append(("email LIKE ? ESCAPE '\\' AND email != ''", [_like_prefix(email)]))
        if phone:
            p = _like_prefix(phone)
            arms.append(("phone_e164 LIKE ? ESCAPE '\\' AND phone_e164 != ''", [p]))
            arms.append(("mobile_e164 LIKE ? ESCAPE '\\' AND mobile_e164 != ''", [p]))
        if name:
            whole = " ".join(name)
            arms.append(("display_name LIKE ? ESCAPE '\\' AND display_name != ''",
                         [_like_prefix(whole)]))
            if len(name) == 1:
                for col in ("family_name", "given_name"):
                    arms.append((f"{col} LIKE ? ESCAPE '\\' AND {col} != ''",
                                 [_like_prefix(name[0])]))
            else:
                arms.append(("given_name LIKE ? ESCAPE '\\' AND given_name != '' "
                             "AND family_name LIKE ? ESCAPE '\\'",
                             [_like_prefix(name[0]), _like_prefix(" ".join(name[1:]))]))
        if not arms:
            return []
        # One indexed range per arm, each capped, then merged: an OR across
        # columns would make SQLite choose one plan for all of them.
        sql = " UNION ".join(
            f"SELECT * FROM (SELECT {cols} FROM contacts WHERE deleted_at IS NULL AND {w} "
            f"LIMIT {int(limit)})" for w, _ in arms)
        params = [p for _, ps in arms for p in ps]
        rows = self.conn.execute(f"SELECT * FROM ({sql}) ORDER BY id LIMIT ?",
                                 [*params, int(limit)]).fetchall()
        return [dict(zip(_HIT_COLUMNS, r, strict=True)) for r in rows]

    def quarantined(self, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """How many rows are quarantined, and the newest `limit` of them."""
        cols = ("id", "run_id", "source", "file", "line", "reason", "raw", "created_at")
        total = int(self.conn.execute("SELECT count(*) FROM quarantine").fetchone()[0])
        rows = [dict(zip(cols, r, strict=True)) for r in self.conn.execute(
            f"SELECT {', '.join(cols)} FROM quarantine ORDER BY id DESC LIMIT ?", (limit,))]
        return total, rows

    def contact_changes(self, contact_id: int, limit: int) -> list[tuple[Any, ...]]:
        """(seq, run_id, op, fields JSON, reason_code, reason, at) of the contact's
        feed entries, newest first."""
        return self.conn.execute(
            "SELECT seq, run_id, op, fields, reason_code, reason, at FROM changes "
            "WHERE contact_id = ? ORDER BY seq DESC LIMIT ?", (contact_id, limit)).fetchall()
