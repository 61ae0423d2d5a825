"""`Mirror.console`: the reads the web console needs that the other parts do
not have, each bounded for a mirror of 1M contacts: one page of the review
queue with its filters, the runs of the last days, the contact search (one
index range per test, on indexes it makes when the console starts) and a
contact's change feed with what each change did.

Reads, through the store (`store.console`, no SQL here), and the one write of
its search indexes; it decides nothing: decisions go through `Mirror.review`
as `contactsync review`'s do. It logs no names, e-mails or phone numbers.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from contactsync_agent import _core
from contactsync_agent.models import ReviewItem
from contactsync_agent.store import Store

#: Most contacts a search returns.
SEARCH_LIMIT = 50
_PHONE = re.compile(r"^\+?[\d\s().-]{3,}$")
#: What an e-mail's local part may start with (RFC 5322's atom characters and dots).
_LOCAL_PART = re.compile(r"^[\w.!#$%&'*+/=?^`{|}~-]+$")


def _display(row: tuple[str, str, str, str] | None) -> tuple[str, str]:
    if row is None:
        return "", ""
    name = row[0] or " ".join(p for p in (row[1], row[2]) if p)
    return name, row[3]


class Console:
    """`Mirror.console`: bounded reads for the web console's pages."""

    def __init__(self, store: Store, region: str = "AU") -> None:
        self._store = store
        self._region = region

    def ensure_search_index(self) -> list[str]:
        """Makes the contact search's indexes where missing (the console does
        when it starts; about a second each at 1M contacts, once): from then on
        every import keeps them up to date. Returns the ones it made."""
        missing = self._store.console.missing_search_indexes()
        if missing and not self._store.readonly:
            with self._store.transaction():
                missing = self._store.console.missing_search_indexes()
                self._store.console.create_search_indexes(missing)
        return missing

    def review_page(self, *, min_score: float | None = None, source: str | None = None,
                    limit: int = 50, offset: int = 0, status: str = "open") -> dict[str, Any]:
        """One page of the (filtered) queue: `total`, `items` (ReviewItem fields
        with `incoming` and `candidate` names and e-mails) and `ids`, every
        filtered item's id in order (for moving through the queue)."""
        c = self._store.console
        with self._store.read_snapshot():
            rows = c.review_page(status, min_score, source, limit, offset)
            ids = c.review_ids(status, min_score, source)
            items = [ReviewItem.from_row(r) for r in rows]
            people = c.names([i for it in items for i in (it.contact_id, it.candidate_id)
                              if i is not None])
        out = []
        for it in items:
            a_name, a_email = _display(people.get(it.contact_id or -1))
            b_name, b_email = _display(people.get(it.candidate_id))
            out.append({**it.to_dict(),
                        "incoming": {"contact_id": it.contact_id, "name": a_name,
                                     "email": a_email},
                        "candidate": {"contact_id": it.candidate_id, "name": b_name,
                                      "email": b_email}})
        return {"total": len(ids), "items": out, "ids": ids}

    def review_sources(self) -> list[str]:
        """The sources that have open review items."""
        return self._store.console.review_sources()

    def review_ids(self, *, min_score: float | None = None,
                   source: str | None = None) -> list[int]:
        """Ids of the open items scored at least `min_score` from `source` (each when given)."""
        return self._store.console.review_ids("open", min_score, source)

    def runs_since(self, days: float = 30.0, now: datetime | None = None
                   ) -> list[dict[str, Any]]:
        """Finished runs of the last `days` days, oldest first, with their counts."""
        since = (now or datetime.now(UTC)) - timedelta(days=days)
        text = since.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return self._store.console.runs_since(text)

    def search(self, query: str, limit: int = SEARCH_LIMIT) -> list[dict[str, Any]]:
        """Live contacts whose name, e-mail or phone starts with `query`: an
        e-mail (with @) by its prefix, a number by its E.164 form's prefix,
        words by the name (one word: display, given or family name, or the
        start of an e-mail; more: the display name, or given and family name).
        In id order, at most `limit`."""
        q = " ".join(query.split())
        if not q:
            return []
        if "@" in q:
            return self._store.console.search(email=q.lower(), limit=limit)
        if _PHONE.match(q) and sum(ch.isdigit() for ch in q) >= 3:
            return self._store.console.search(phone=self._phone_prefix(q), limit=limit)
        words = q.split(" ")
        # One word may be the start of an e-mail's local part too (`mia.brown1`):
        # then the e-mail index's range is searched beside the names'.
        email = q.lower() if len(words) == 1 and _LOCAL_PART.match(q) else ""
        return self._store.console.search(name=words, email=email, limit=limit)

    def _phone_prefix(self, q: str) -> str:
        """A whole number as its E.164 form; a partial one as the E.164 prefix
        it starts (international with + or a national one with its 0)."""
        whole = _core.normalize_phone(q, self._region)
        if whole:
            return whole
        digits = "".join(ch for ch in q if ch.isdigit())
        if q.startswith("+") or not digits.startswith("0"):
            return "+" + digits
        # The region's calling code, from the number the region's trunk 0 begins.
        code = _core.normalize_phone("0" + digits[1:].ljust(9, "1"), self._region)
        keep = len(code) - (len(digits[1:].ljust(9, "1"))) if code else 0
        return (code[:keep] if keep > 1 else "+") + digits[1:]

    def quarantine(self, limit: int = 500) -> tuple[int, list[dict[str, Any]]]:
        """How many input rows are quarantined, and the newest `limit` (file,
        line, reason, raw text), newest first."""
        return self._store.console.quarantined(limit)

    def changes(self, contact_id: int, limit: int = 200) -> list[dict[str, Any]]:
        """The contact's change-feed entries, newest first: seq, run, op, what
        each field went from and to, the reason code and text, and when."""
        out = []
        for seq, run_id, op, fields, code, reason, at in self._store.console.contact_changes(
                contact_id, limit):
            try:
                payload = json.loads(fields)
            except ValueError:
                payload = {}
            out.append({"seq": seq, "run_id": run_id, "op": op, "fields": payload,
                        "reason_code": code, "reason": reason, "at": at})
        return out
