"""`store.review`: the SQL of the review queue (items, the decisions' writes,
remembered rejections) and of the quarantine of rejected input rows.

Statements only, inside the caller's transaction; it must not decide a review
(review.py and the rules do) nor begin transactions itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from contactsync_agent.store.part import Part


class Review(Part):
    """Review items, rejections and the quarantine."""

    def add_item(
        self, *, run_id: int | None, source: str, external_id: str, contact_id: int | None,
        candidate_id: int, kind: str, score: float | None, explanation: dict[str, Any],
        reason: str, at: str,
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO review_items (run_id, source, external_id, contact_id, candidate_id, "
            "kind, score, explanation, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, source, external_id, contact_id, candidate_id, kind, score,
             json.dumps(explanation, ensure_ascii=False), reason, at),
        )
        return int(cur.lastrowid or 0)

    def rejected_pairs(self, source: str) -> set[tuple[str, int]]:
        return {
            (e, c)
            for e, c in self.conn.execute(
                "SELECT external_id, candidate_id FROM review_rejections WHERE source = ?",
                (source,),
            )
        }

    def add_quarantine(
        self, rows: Iterable[tuple[int, str, str]], *, run_id: int | None, source: str,
        file: str | None, at: str,
    ) -> int:
        data = [(run_id, source, file, line, reason, raw, at) for line, reason, raw in rows]
        self.conn.executemany(
            "INSERT INTO quarantine (run_id, source, file, line, reason, raw, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            data,
        )
        return len(data)


    # ------------------------------------------------------------ the queue

    def items(self, status: str | None, min_score: float | None = None,
              ids: Sequence[int] | None = None) -> list[tuple[Any, ...]]:
        """Review item rows (status, score and ids filters), in id order."""
        where: list[str] = ["1"]
        params: list[Any] = []
        if status:
            where.append("status = ?")
            params.append(status)
        if min_score is not None:
            where.append("score IS NOT NULL AND score >= ?")
            params.append(min_score)
        if ids is not None:
            where.append(f"id IN ({', '.join('?' * len(ids))})")
            params.extend(ids)
        return self.conn.execute(
            f"SELECT {_ITEM_COLUMNS} FROM review_items WHERE {' AND '.join(where)} ORDER BY id",
            params).fetchall()

    def item(self, item_id: int) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(
            f"SELECT {_ITEM_COLUMNS} FROM review_items WHERE id = ?", (item_id,),
        ).fetchone()
        return row

    def open_pairs(self) -> set[tuple[int, int]]:
        """(contact id, candidate id) of every open item."""
        return set(self.conn.execute(
            "SELECT contact_id, candidate_id FROM review_items WHERE status = 'open'"))

    def open_count(self) -> int:
        return int(self.conn.execute(
            "SELECT count(*) FROM review_items WHERE status = 'open'").fetchone()[0])

    def settle_accepted(self, item_id: int, contact_id: int, candidate_id: int, at: str) -> None:
        """The item is accepted; other open suggestions about either contact are
        settled by it (rejected)."""
        self.conn.execute(
            "UPDATE review_items SET status = 'accepted', decided_at = ? WHERE id = ?",
            (at, item_id))
        # Other open suggestions about either contact are settled by this one.
        self.conn.execute(
            "UPDATE review_items SET status = 'rejected', decided_at = ? WHERE status = 'open' "
            "AND (contact_id = ? OR candidate_id = ?)", (at, contact_id, candidate_id))

    def record_rejection(self, item_id: int, source: str, external_id: str, candidate_id: int,
                         at: str) -> None:
        """The item is rejected and the pair remembered, never suggested again."""
        self.conn.execute(
            "UPDATE review_items SET status = 'rejected', decided_at = ? WHERE id = ?",
            (at, item_id))
        self.conn.execute(
            "INSERT OR IGNORE INTO review_rejections (source, external_id, candidate_id, "
            "rejected_at) VALUES (?, ?, ?, ?)",
            (source, external_id, candidate_id, at))

    # ------------------------------------------------------------ two-way conflicts

    def open_conflicts(self, source: str) -> dict[int, list[tuple[Any, ...]]]:
        """contact id -> its open `conflict` items of `source` (item rows), oldest first."""
        out: dict[int, list[tuple[Any, ...]]] = {}
        for row in self.conn.execute(
            f"SELECT {_ITEM_COLUMNS} FROM review_items WHERE status = 'open' "
            "AND kind = 'conflict' AND source = ? ORDER BY id", (source,),
        ):
            out.setdefault(int(row[4]), []).append(row)
        return out

    def close_item(self, item_id: int, status: str, explanation: dict[str, Any],
                   at: str) -> None:
        """Decides an item (`accepted` or `rejected`) and stores its explanation
        (a conflict's resolution or why it was closed)."""
        self.conn.execute(
            "UPDATE review_items SET status = ?, decided_at = ?, explanation = ? WHERE id = ?",
            (status, at, json.dumps(explanation, ensure_ascii=False), item_id))

    # ------------------------------------------------------------ quarantine

    def quarantined(self, run_id: int | None = None) -> list[dict[str, Any]]:
        """Quarantined rows (of one run, when given), in id order."""
        sql = "SELECT id, run_id, source, file, line, reason, raw, created_at FROM quarantine"
        params: list[Any] = []
        if run_id is not None:
            sql += " WHERE run_id = ?"
            params.append(run_id)
        cols = ("id", "run_id", "source", "file", "line", "reason", "raw", "created_at")
        return [dict(zip(cols, r, strict=True))
                for r in self.conn.execute(sql + " ORDER BY id", params)]

    def quarantined_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM quarantine").fetchone()[0])


_ITEM_COLUMNS = ("id, run_id, source, external_id, contact_id, candidate_id, kind, score, "
                 "explanation, reason, status, created_at, decided_at")
