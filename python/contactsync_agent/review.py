"""The review queue's decisions: accept merges a candidate pair, reject remembers it.

Library twin of `contactsync review`; all writes go through the store in one
transaction each.
"""

from __future__ import annotations

from typing import Any

from contactsync_agent.errors import ContactSyncError, NotFoundError
from contactsync_agent.models import ReviewItem
from contactsync_agent.rules import REASONS, take_over
from contactsync_agent.store import Store, now_iso


def _open_item(store: Store, item_id: int) -> ReviewItem:
    row = store.conn.execute(
        "SELECT id, run_id, source, external_id, contact_id, candidate_id, kind, score, "
        "explanation, reason, status, created_at, decided_at FROM review_items WHERE id = ?",
        (item_id,),
    ).fetchone()
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
        local = store.contact_row(item.candidate_id)
        created = store.contact_row(item.contact_id) if item.contact_id else None
        if local is None or local["deleted_at"] or local["record_type"] != "manual":
            raise ContactSyncError(
                f"review item {item_id}: contact {item.candidate_id} is no longer a manual "
                "contact; reject the item instead")
        if created is None or created["deleted_at"] or created["external_id"] is None:
            raise ContactSyncError(
                f"review item {item_id}: the contact made for {item.external_id!r} is gone; "
                "reject the item instead")
        cid, lid = created["id"], local["id"]
        store.update_contact(cid, {"deleted_at": at}, at)
        store.add_change(cid, None, "delete", {}, "merged_review",
                         REASONS["merged_review"].format(other=lid), at)
        store.conn.execute(
            "UPDATE OR IGNORE contact_references SET contact_id = ? WHERE contact_id = ?",
            (lid, cid))
        write, feed = take_over(local, created)
        store.update_contact(lid, write, at)
        store.add_change(lid, None, "convert", feed, "converted_review",
                         REASONS["converted_review"].format(other=cid), at)
        store.conn.execute(
            "UPDATE review_items SET status = 'accepted', decided_at = ? WHERE id = ?",
            (at, item_id))
        # Other open suggestions about either contact are settled by this one.
        store.conn.execute(
            "UPDATE review_items SET status = 'rejected', decided_at = ? WHERE status = 'open' "
            "AND (contact_id = ? OR candidate_id = ?)", (at, cid, lid))
    return {"item": item_id, "contact": lid, "merged": cid, "external_id": created["external_id"]}


def reject(store: Store, item_id: int) -> dict[str, Any]:
    """Not the same person: the pair is remembered and never suggested again."""
    at = now_iso()
    with store.transaction():
        item = _open_item(store, item_id)
        store.conn.execute(
            "UPDATE review_items SET status = 'rejected', decided_at = ? WHERE id = ?",
            (at, item_id))
        store.conn.execute(
            "INSERT OR IGNORE INTO review_rejections (source, external_id, candidate_id, "
            "rejected_at) VALUES (?, ?, ?, ?)",
            (item.source, item.external_id, item.candidate_id, at))
    return {"item": item_id, "source": item.source, "external_id": item.external_id,
            "candidate": item.candidate_id}
