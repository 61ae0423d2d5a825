"""The review queue: listing it with both contacts, comparing one pair field by
field, and the decisions (accept merges a candidate pair, reject remembers it),
one item or many, the undo of one while nothing changed since (the web
console's `u`); and the two-way conflicts a person resolves (`resolve_conflict`:
the source's value, the local one, or a typed value, stored and pushed).

`Mirror.review` is the `ReviewQueue` part at the end; the library twin of
`contactsync review`. All reads and writes go through the store
(`store.review`, `store.console` for the undo; no SQL here), in one
transaction per item. It prints nothing
and logs no names or e-mails.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from contactsync_agent import _core, rules
from contactsync_agent.errors import ContactSyncError, NotFoundError
from contactsync_agent.mapping import FIELDS
from contactsync_agent.models import ReviewItem
from contactsync_agent.rules import REASONS, take_over
from contactsync_agent.store import Store, now_iso

#: Which side of a two-way conflict a person takes (`resolve_conflict`).
Take = Literal["source", "local"]


def _open_item(store: Store, item_id: int) -> ReviewItem:
    row = store.review.item(item_id)
    if row is None:
        raise NotFoundError(f"no review item with id {item_id}")
    item = ReviewItem.from_row(row)
    if item.kind == "conflict":
        raise ContactSyncError(
            f"review item {item_id} is a two-way conflict, not a candidate match: resolve it "
            f"with `contactsync review resolve {item_id} --take source|local` or "
            "`--value TEXT`")
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
        one = {**item.to_dict(), "incoming": _person(store, item.contact_id),
               "candidate": _person(store, item.candidate_id)}
        if item.kind == "conflict":
            one["conflict"] = conflict_values(item)
        out.append(one)
    return out


def conflict_values(item: ReviewItem) -> dict[str, Any]:
    """A two-way conflict item's field and its three values (base: what the
    source last sent; local: the mirror's; remote: what the source sent then),
    and how it ended once decided."""
    ex = item.explanation
    out = {"field": str(ex.get("field", "")), "base": str(ex.get("base", "")),
           "local": str(ex.get("local", "")), "remote": str(ex.get("remote", ""))}
    for k in ("resolution", "value", "closed"):
        if k in ex:
            out[k] = ex[k]
    return out


def select(store: Store, min_score: float | None = None) -> list[int]:
    """Ids of the open candidate matches (scored at least `min_score`, when
    given); two-way conflicts are resolved one by one, never in bulk."""
    return [i.id for i in _items(store, "open", min_score) if i.kind != "conflict"]


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
    out = {"item": item.to_dict(), "incoming": _person(store, item.contact_id),
           "candidate": _person(store, item.candidate_id), "fields": fields}
    if item.kind == "conflict":
        out["conflict"] = conflict_values(item)
    return out


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


# ------------------------------------------------------------------ two-way conflicts


def _conflict_item(store: Store, item_id: int) -> ReviewItem:
    row = store.review.item(item_id)
    if row is None:
        raise NotFoundError(f"no review item with id {item_id}")
    item = ReviewItem.from_row(row)
    if item.kind != "conflict":
        raise ContactSyncError(
            f"review item {item_id} is a candidate match, not a two-way conflict: "
            f"`contactsync review accept {item_id}` or `reject {item_id}` decides it")
    if item.status != "open":
        closed = item.explanation.get("closed")
        if closed:
            raise ContactSyncError(f"review item {item_id} is stale: {closed}; nothing changed")
        raise ContactSyncError(f"review item {item_id} is already resolved "
                               f"({item.explanation.get('resolution', item.status)})")
    return item


def _stale(item: ReviewItem, row: Mapping[str, Any] | None, fld: str, local: str,
           pending: Mapping[str, tuple[str, str]]) -> str:
    """Why a conflict item no longer describes the contact ("" when it does)."""
    if (row is None or row["deleted_at"] is not None or row["record_type"] != "sync"
            or row["source"] != item.source or row["external_id"] != item.external_id
            or row["forced_manual"]):
        return (f"contact {item.contact_id} is no longer a synced contact of "
                f"{item.source} {item.external_id!r}")
    if rules.field_value(row, fld) != local or fld in pending:
        return (f"{fld} of contact {item.contact_id} was edited locally since the conflict "
                "was recorded (that edit goes out through the outbox and a later pull "
                "compares both sides again)")
    return ""


def resolve_conflict(store: Store, region: str, item_id: int, take: str | None = None,
                     value: str | None = None) -> dict[str, Any]:
    """A person settles a two-way conflict (a `review` strategy's item).

    `take="source"`: the mirror takes the source's value (nothing is pushed);
    `take="local"`: the local value stays and is pushed over the source's;
    `value=TEXT`: the typed value is stored (cleaned as any edit) and pushed
    (unless it is the source's value). A push is an outbox update with the
    source's value as its base, joining the contact's pending entry, in this
    same transaction. The feed gets an entry (reason code `conflict_resolved`)
    naming the field and the choice, never a value.

    A stale item is refused and closed (raises ContactSyncError, nothing else
    changes): the contact is no longer the source's synced contact, or the
    field was edited locally since. (A later pull that changed the field again
    closes the item itself and opens a new one, or settles it.)"""
    if (take is None) == (value is None):
        raise ContactSyncError("give take='source' or take='local', or a value (not both)")
    if take is not None and take not in ("source", "local"):
        raise ContactSyncError(f"take must be 'source' or 'local', not {take!r}")
    at = now_iso()
    stale = ""
    result: dict[str, Any] = {}
    with store.transaction():
        item = _conflict_item(store, item_id)
        ex = item.explanation
        fld = str(ex.get("field") or "")
        local, remote = str(ex.get("local", "")), str(ex.get("remote", ""))
        cid = int(item.contact_id or item.candidate_id)
        row = store.contacts.row(cid)
        pending = store.outbox.pending_for(cid)
        stale = (_stale(item, row, fld, local, pending.fields if pending else {}) if fld
                 else "its values were erased (purge)")
        if stale or row is None:
            store.review.close_item(item_id, "rejected", {**ex, "closed": stale}, at)
        else:
            result = _resolve(store, region, item, row, fld, local, remote, take, value,
                              pending.id if pending else None, at)
    if stale:
        raise ContactSyncError(f"review item {item_id} is stale: {stale}; it is closed and "
                               "nothing changed")
    return result


def _resolve(store: Store, region: str, item: ReviewItem, row: Mapping[str, Any], fld: str,
             local: str, remote: str, take: str | None, value: str | None,
             pending_id: int | None, at: str) -> dict[str, Any]:
    """`resolve_conflict`'s writes (inside its transaction, the item checked)."""
    cid, source = int(row["id"]), item.source
    if value is not None:
        how = "value"
        new = _core.clean_value(value, fld == "notes")
    else:
        how = str(take)
        new = remote if take == "source" else local
    direction = rules.direction_of(fld, store.outbox.sync_policy(source))
    push = new != remote
    if push and direction not in ("out", "both"):
        raise ContactSyncError(
            f"review item {item.id}: {fld} of {source} goes in only now (its direction is "
            f"{direction!r}): only the source's value can be taken (--take source)")
    changed = _write_field(store, region, row, fld, new, at)
    entry_id: int | None = None
    pending = store.outbox.pending_for(cid)
    fields = dict(pending.fields) if pending else {}
    if push:
        # The source holds `remote`: it is the base the pushed value goes out over.
        store.outbox.set_bases(cid, {fld: remote})
        fields[fld] = (remote, new)
        if pending is not None:
            store.outbox.set_fields(pending.id, fields, local_at=at)
            entry_id = pending.id
        else:
            entry_id = store.outbox.add(
                key=uuid.uuid4().hex, source=source, contact_id=cid, kind="update",
                external_id=row["external_id"], fields=fields, local_at=at, at=at)
    else:
        store.outbox.drop_bases(cid, [fld])  # the mirror holds what the source holds
        if pending is not None and fields.pop(fld, None) is not None:
            if fields:
                store.outbox.set_fields(pending.id, fields)
            else:
                store.outbox.mark([pending.id], "superseded", at,
                                  reason="conflict resolved: the source's value taken")
    said = {"source": "the source's value taken",
            "local": f"the local value kept and queued to push to {source}",
            "value": (f"a value typed by a person stored and queued to push to {source}" if push
                      else "a value typed by a person (the source's) stored")}[how]
    reason = f"conflict on {fld} resolved by a person (review item {item.id}): {said}"
    store.feed.add_change(cid, None, "update", changed, "conflict_resolved", reason, at)
    explanation = {**item.explanation, "resolution": how, "pushed": push}
    if how == "value":
        explanation["value"] = new
    store.review.close_item(item.id, "accepted", explanation, at)
    return {"item": item.id, "contact": cid, "source": source, "field": fld,
            "resolution": how, "changed": bool(changed), "pushed": push,
            "outbox_entry": entry_id, "reason": reason}


def _write_field(store: Store, region: str, row: Mapping[str, Any], fld: str, new: str,
                 at: str) -> dict[str, list[Any]]:
    """Sets one field (or `extra:KEY`) of a contact with its derived keys and
    hash; returns the feed's {field: [before, after]} ({} when it holds `new`)."""
    if rules.field_value(row, fld) == new:
        return {}
    write: dict[str, Any] = {}
    extra_now = json.loads(row["extra"] or "{}")
    extra_new = dict(extra_now)
    if fld.startswith("extra:"):
        if new:
            extra_new[fld[6:]] = new
        else:
            extra_new.pop(fld[6:], None)
        write["extra"] = json.dumps(extra_new, ensure_ascii=False, sort_keys=True)
        feed: dict[str, list[Any]] = {"extra": [extra_now, extra_new]}
    else:
        write[fld] = new
        feed = {fld: [row[fld] or "", new]}
    values = [str(write.get(f, row[f]) or "") for f in FIELDS]
    phone_e, mobile_e, _ = _core.derive_keys(values, region)
    write.update(phone_e164=phone_e, mobile_e164=mobile_e,
                 hash=rules.signed_hash(_core.content_hash(values, sorted(extra_new.items()))))
    store.contacts.update(int(row["id"]), write, at)
    return feed


class ReviewQueue:
    """`Mirror.review`: the candidate matches a person decides."""

    def __init__(self, store: Store, region: str = "AU") -> None:
        self._store = store
        self._region = region

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

    def undo(self, item_id: int) -> dict[str, Any]:
        """Takes back an accept or a reject while its contacts are unchanged since."""
        return undo(self._store, item_id, self._region)

    def reject_many(self, item_ids: Sequence[int]) -> dict[str, Any]:
        """Rejects several items (one transaction each); failures are listed, not raised."""
        return decide_many(self._store, list(item_ids), "reject")

    def resolve_conflict(self, item_id: int, take: Take | None = None,
                         value: str | None = None) -> dict[str, Any]:
        """Settles a two-way conflict item: `take="source"` or `"local"`, or a
        typed `value` (stored and pushed). A stale item is refused (and closed)
        with a ContactSyncError saying why; see `review.resolve_conflict`."""
        return resolve_conflict(self._store, self._region, item_id, take, value)


# ------------------------------------------------------------------ undo (the web console)

#: Feed reason codes of an undone decision.
UNDONE = "review_undone"


def _restored_local(local: dict[str, Any], feed: dict[str, list[Any]], region: str
                    ) -> dict[str, Any]:
    """The local contact's columns as they were before the accept converted it:
    each value the conversion's feed entry recorded as replaced, and the keys
    and hash computed again from them (as for a contact added locally)."""
    from contactsync_agent import _core
    from contactsync_agent.mapping import FIELDS
    from contactsync_agent.rules import signed_hash

    before = {f: (feed[f][0] if f in feed else local[f]) for f in FIELDS}
    extra = feed["extra"][0] if "extra" in feed else json.loads(local["extra"] or "{}")
    field_list = [str(before[f] or "") for f in FIELDS]
    phone_e, mobile_e, _ = _core.derive_keys(field_list, region)
    digest = _core.content_hash(field_list, sorted((str(k), str(v)) for k, v in extra.items()))
    return {**before, "extra": json.dumps(extra, ensure_ascii=False, sort_keys=True),
            "phone_e164": phone_e, "mobile_e164": mobile_e, "hash": signed_hash(digest),
            "source_hash": None,
            "record_type": feed.get("record_type", ["manual"])[0] or "manual",
            "source": feed.get("source", [None])[0],
            "external_id": feed.get("external_id", [None])[0]}


def undo(store: Store, item_id: int, region: str = "AU") -> dict[str, Any]:
    """Takes back a decision while nothing has changed since: a rejected item is
    open again and its pair no longer remembered; an accepted one is open again
    with the contact made for the record restored, the local contact's values,
    type and link as they were, and the suggestions its accept settled open
    again. The feed records both contacts' changes (`review_undone`); what
    moved to the local contact at the merge (uses registered on the other) stays
    with it. Refused (ContactSyncError) once either contact changed since."""
    at = now_iso()
    with store.transaction():
        row = store.review.item(item_id)
        if row is None:
            raise NotFoundError(f"no review item with id {item_id}")
        item = ReviewItem.from_row(row)
        if item.status == "rejected":
            store.console.reopen_rejected(item_id, item.source, item.external_id,
                                          item.candidate_id)
            return {"item": item_id, "undone": "reject"}
        if item.status != "accepted":
            raise ContactSyncError(f"review item {item_id} is {item.status}: nothing to undo")
        local = store.contacts.row(item.candidate_id)
        created = store.contacts.row(item.contact_id) if item.contact_id else None
        change = store.console.last_change(item.candidate_id, "converted_review")
        decided = item.decided_at
        if (local is None or created is None or change is None or decided is None
                or created["deleted_at"] != decided or local["updated_at"] != decided
                or local["deleted_at"]):
            raise ContactSyncError(
                f"review item {item_id}: its contacts changed since it was accepted; "
                "the accept cannot be undone")
        feed = json.loads(change[1])
        write = _restored_local(local, feed, region)
        store.contacts.update(local["id"], write, at)
        store.feed.add_change(local["id"], None, "update",
                              {k: [local[k], v] for k, v in write.items()
                               if k in feed and local[k] != v},
                              UNDONE, f"review of item {item_id} undone: back to as it was",
                              at)
        store.contacts.update(created["id"], {"deleted_at": None}, at)
        store.feed.add_change(created["id"], None, "create", {}, UNDONE,
                              f"restored: review of item {item_id} undone", at)
        reopened = store.console.reopen_accepted(item_id, created["id"], local["id"], decided)
    return {"item": item_id, "undone": "accept", "reopened": reopened}
