"""The review queue: listing it with both contacts, comparing one pair field by
field, and the decisions (accept merges a candidate pair, reject remembers it),
one item or many.

`Mirror.review` is the `ReviewQueue` part at the end; the library twin of
`contactsync review`. All reads and writes go through the store
(`store.review`, no SQL here), in one transaction per item. It prints nothing
and logs no names or e-mails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contactsync_agent.errors import ContactSyncError, NotFoundError
from contactsync_agent.models import ReviewItem
from contactsync_agent.rules import REASONS, take_over
from contactsync_agent.store import Store, now_iso


def _open_item(store: Store, item_id: int) -> ReviewItem:
    row = store.review.item(item_id)
    if row is None:
        raise NotFoundError(f"no review item with id {item_id}")
    item = ReviewItem.from_row(row)
    if item.status != "open":
        raise ContactSyncError(f"review item {item_id} is already {item.status}")
    return item


def accept(store: Store, item_id: int) -> dict[str, Any]:
    """The candidate (local) contact is the incoming record: it is converted to
    `sync`, linked to the source's id and takes the source's values; the
    contact the run created for the record is deleted as merged into it."""
    at = now_iso()
    with store.transaction():
        item = _open_item(store, item_id)
        local = store.contacts.row(item.candidate_id)
        created = store.contacts.row(item.contact_id) if item.contact_id else None
        if local is None or local["deleted_at"] or local["record_type"] != "manual":
            raise ContactSyncError(
                f"review item {item_id}: contact {item.candidate_id} is no longer a manual "
                "contact; reject the item instead")
        if created is None or created["deleted_at"] or created["external_id"] is None:
            raise ContactSyncError(
                f"review item {item_id}: the contact made for {item.external_id!r} is gone; "
                "reject the item instead")
        cid, lid = created["id"], local["id"]
        store.contacts.update(cid, {"deleted_at": at}, at)
        store.feed.add_change(cid, None, "delete", {}, "merged_review",
                         REASONS["merged_review"].format(other=lid), at)
        store.contacts.move_references(cid, lid)
        write, feed = take_over(local, created)
        store.contacts.update(lid, write, at)
        store.feed.add_change(lid, None, "convert", feed, "converted_review",
                         REASONS["converted_review"].format(other=cid), at)
        # Other open suggestions about either contact are settled by this one.
        store.review.settle_accepted(item_id, cid, lid, at)
    return {"item": item_id, "contact": lid, "merged": cid, "external_id": created["external_id"]}


def reject(store: Store, item_id: int) -> dict[str, Any]:
    """Not the same person: the pair is remembered and never suggested again."""
    at = now_iso()
    with store.transaction():
        item = _open_item(store, item_id)
        store.review.record_rejection(item_id, item.source, item.external_id,
                                      item.candidate_id, at)
    return {"item": item_id, "source": item.source, "external_id": item.external_id,
            "candidate": item.candidate_id}


# ------------------------------------------------------------------ bulk work and comparisons

#: The fields `compare` shows side by side, in this order.
COMPARED: tuple[str, ...] = ("name", "given_name", "family_name", "organisation", "email",
                             "phone", "mobile", "street", "city", "postcode", "date_of_birth")

def _person(store: Store, contact_id: int | None) -> dict[str, Any]:
    row = store.contacts.row(contact_id) if contact_id else None
    if row is None:
        return {"contact_id": contact_id, "name": "", "email": "", "deleted": True}
    name = row["display_name"] or " ".join(
        p for p in (row["given_name"], row["family_name"]) if p)
    return {"contact_id": contact_id, "name": name, "email": row["email"],
            "deleted": row["deleted_at"] is not None}


def _items(store: Store, status: str | None, min_score: float | None,
           ids: list[int] | None = None) -> list[ReviewItem]:
    rows = store.review.items(status, min_score, ids)
    return [ReviewItem.from_row(r) for r in rows]


def summaries(store: Store, status: str | None = "open",
              min_score: float | None = None) -> list[dict[str, Any]]:
    """The queue as a person reads it: each item (its `ReviewItem` fields) with
    both contacts' names and e-mails (the incoming record's contact and the local
    candidate). `min_score` keeps items scored at least that (identity items,
    which have no score, drop out)."""
    out = []
    for item in _items(store, status, min_score):
        out.append({**item.to_dict(), "incoming": _person(store, item.contact_id),
                    "candidate": _person(store, item.candidate_id)})
    return out


def select(store: Store, min_score: float | None = None) -> list[int]:
    """Ids of the open items (scored at least `min_score`, when given)."""
    return [i.id for i in _items(store, "open", min_score)]


def compare(store: Store, item_id: int) -> dict[str, Any]:
    """One item with its two contacts side by side: per field both values and
    the agreement level and weight the matcher stored for it (None when the
    field was not compared, as for identity items)."""
    items = _items(store, None, None, [item_id])
    if not items:
        raise NotFoundError(f"no review item with id {item_id}")
    item = items[0]
    left = store.contacts.row(item.contact_id) if item.contact_id else None
    right = store.contacts.row(item.candidate_id)

    def value(row: dict[str, Any] | None, f: str) -> str:
        if row is None:
            return ""
        if f == "name":
            return str(row["display_name"] or " ".join(
                p for p in (row["given_name"], row["family_name"]) if p))
        return str(row[f] or "")

    fields = []
    for f in COMPARED:
        e = item.explanation.get(f)
        level = e.get("level") if isinstance(e, dict) else None
        weight = e.get("weight") if isinstance(e, dict) else None
        fields.append({"field": f, "incoming": value(left, f), "candidate": value(right, f),
                       "level": level, "weight": weight})
    return {"item": item.to_dict(), "incoming": _person(store, item.contact_id),
            "candidate": _person(store, item.candidate_id), "fields": fields}


def decide_many(store: Store, item_ids: list[int], action: str) -> dict[str, Any]:
    """Accepts or rejects several items, each in its own transaction: one that
    cannot be decided (already decided, gone) is reported and the others go on.
    Returns `{"action", "done": [results], "failed": [{"item", "error"}]}`."""
    if action not in ("accept", "reject"):
        raise ContactSyncError(f"action must be 'accept' or 'reject', not {action!r}")
    one = accept if action == "accept" else reject
    done: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for item_id in dict.fromkeys(item_ids):
        try:
            done.append(one(store, item_id))
        except ContactSyncError as e:
            failed.append({"item": item_id, "error": str(e)})
    return {"action": action, "done": done, "failed": failed}


class ReviewQueue:
    """`Mirror.review`: the candidate matches a person decides."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def items(self, status: str | None = "open") -> list[ReviewItem]:
        rows = self._store.review.items(status)
        return [ReviewItem.from_row(r) for r in rows]

    def accept(self, item_id: int) -> dict[str, Any]:
        """Accepts a review item: the local contact becomes the source's record."""
        return accept(self._store, item_id)

    def reject(self, item_id: int) -> dict[str, Any]:
        """Rejects a review item: the pair is never suggested again."""
        return reject(self._store, item_id)

    def summaries(self, status: str | None = "open",
                  min_score: float | None = None) -> list[dict[str, Any]]:
        """The queue with the score and both contacts' names and e-mails."""
        return summaries(self._store, status, min_score)

    def compare(self, item_id: int) -> dict[str, Any]:
        """One item's two contacts side by side with each field's agreement level."""
        return compare(self._store, item_id)

    def select(self, min_score: float | None = None) -> list[int]:
        """Ids of the open items (scored at least `min_score`, when given)."""
        return select(self._store, min_score)

    def accept_many(self, item_ids: Sequence[int]) -> dict[str, Any]:
        """Accepts several items (one transaction each); failures are listed, not raised."""
        return decide_many(self._store, list(item_ids), "accept")

    def reject_many(self, item_ids: Sequence[int]) -> dict[str, Any]:
        """Rejects several items (one transaction each); failures are listed, not raised."""
        return decide_many(self._store, list(item_ids), "reject")
