"""Push: drain one source's outbox through its writer.

Each pending (or sent but never confirmed) entry goes `pending` -> `sent` in
one transaction before the writer is called, then to what the writer answered
in a second one (a contact's entries one at a time, in order: a later one after
the earlier one's answer moved its base, and not before an earlier one to be
sent again): `confirmed` (the bases move to the pushed values; a create
links the contact by the id the source returned), `rejected` (the local value
stays and a reconciliation activity names the fields and the target's reason),
`conflict` (the source changed meanwhile: the next pull decides it) or back to
`pending` (`retry`: sent again, with the same idempotency key). New local
contacts are queued first, under the source's `push_new` policy.

It must not decide a conflict (the rules do), run SQL (the store does) or log
a value (field names, counts and the target's reason only).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from contactsync_agent.mapping import FIELDS
from contactsync_agent.sources.writer import OutboundChange, PushReport, PushResult, Writer
from contactsync_agent.store import Store, now_iso
from contactsync_agent.store.outbox import OutboxEntry

BATCH = 500


def queue_new_contacts(store: Store, source: str, push_new: str) -> int:
    """Outbox `create` entries for new local contacts the policy lets out
    (`referenced`: only those something registered a use of; `all`; `none`)."""
    if push_new == "none":
        return 0
    ids = store.outbox.create_candidates(source, referenced_only=push_new != "all")
    if not ids:
        return 0
    rows = store.contacts.rows(ids)
    at = now_iso()
    with store.transaction():
        for cid in ids:
            row = rows[cid]
            fields = {f: ("", str(row[f])) for f in FIELDS if row[f]}
            store.outbox.add(key=uuid.uuid4().hex, source=source, contact_id=cid,
                             kind="create", external_id=None, fields=fields,
                             local_at=row["updated_at"], at=at)
    return len(ids)


def _change(e: OutboxEntry) -> OutboundChange:
    return OutboundChange(entry_id=e.id, key=e.key, kind="create" if e.kind == "create"
                          else "update", external_id=e.external_id, fields=dict(e.fields))


def _row(e: OutboxEntry, status: str, reason: str = "") -> dict[str, Any]:
    return {"id": e.id, "contact_id": e.contact_id, "kind": e.kind, "status": status,
            "fields": sorted(e.fields), "reason": reason}


def push_source(store: Store, source: str, writer: Writer | None, *, push_new: str = "referenced",
                dry_run: bool = False, batch: int = BATCH) -> PushReport:
    """One push of `source`: every open entry, in batches of `batch`."""
    report = PushReport(source=source, dry_run=dry_run)
    counts = dict.fromkeys(("confirmed", "rejected", "conflict", "retry", "queued_new"), 0)
    if not dry_run:
        counts["queued_new"] = queue_new_contacts(store, source, push_new)
    entries = store.outbox.entries(source, ("pending", "sent"), limit=1 << 30)
    if dry_run or writer is None:
        report.entries = [_row(e, e.status) for e in entries]
        report.counts = {"would_push": len(entries)}
        return report
    # A contact's entries go out in order, one at a time: a later one (an edit
    # made while an earlier one was sent and unconfirmed, e.g. after a crash)
    # waits for the earlier one's answer, which moves its base (a conditional
    # write checks it), and waits for the next push when that answer is
    # `retry` (delivery unknown: sent again after the later one, the older
    # value would win).
    tried: set[int] = set()
    unsettled: set[int] = set()  # contacts whose entry is to be sent again
    while entries:
        wave: list[OutboxEntry] = []
        later: list[OutboxEntry] = []
        seen: set[int] = set()
        for e in entries:
            if e.contact_id in unsettled:
                continue
            (later if e.contact_id in seen else wave).append(e)
            seen.add(e.contact_id)
        for start in range(0, len(wave), batch):
            chunk = wave[start : start + batch]
            for e, outcome in zip(chunk, _send(store, source, writer, chunk, report),
                                  strict=True):
                counts[outcome] += 1
                if outcome == "retry":
                    unsettled.add(e.contact_id)
        tried.update(e.id for e in wave)
        if not later:
            break
        # Read again: the answers just settled moved the later entries' bases.
        waiting = {e.id for e in later}
        entries = [e for e in store.outbox.entries(source, ("pending", "sent"), limit=1 << 30)
                   if e.id in waiting and e.id not in tried]
    report.counts = counts
    return report


def _send(store: Store, source: str, writer: Writer, chunk: Sequence[OutboxEntry],
          report: PushReport) -> list[str]:
    """One batch: marked sent (committed before the writer is called), pushed,
    each answer settled in a second transaction; the outcomes, in order."""
    with store.transaction():
        store.outbox.mark([e.id for e in chunk], "sent", now_iso(), count_attempt=True)
    try:
        results = writer.push([_change(e) for e in chunk])
    except (OSError, ConnectionError) as err:
        # The target cannot be reached: every entry stays to be sent again.
        results = [PushResult(e.id, "retry", reason=str(err)) for e in chunk]
    by_id = {r.entry_id: r for r in results}
    outcomes: list[str] = []
    with store.transaction():
        for e in chunk:
            r = by_id.get(e.id) or PushResult(e.id, "retry", reason="no answer")
            _settle(store, source, e, r)
            outcomes.append(r.outcome)
            report.entries.append(_row(e, r.outcome, r.reason))
    return outcomes


def _settle(store: Store, source: str, e: OutboxEntry, r: PushResult) -> None:
    """One entry's result (inside the push's second transaction)."""
    at = now_iso()
    if r.outcome == "retry":
        store.outbox.mark([e.id], "pending", at, reason=r.reason)
        return
    if r.outcome == "conflict":
        store.outbox.mark([e.id], "conflict", at, reason=r.reason or "the source changed")
        # The next pull decides, so it must compare the contact again even if
        # the source's record hashes as before (a conditional write can find a
        # base stale without the record changing since the last pull): the
        # local changes still unsent are then queued again, none stranded.
        store.contacts.update(e.contact_id, {"source_hash": None}, None)
        return
    if r.outcome == "rejected":
        store.outbox.mark([e.id], "rejected", at, reason=r.reason)
        names = list(r.fields or sorted(e.fields))
        store.feed.add_activity(
            contact_id=e.contact_id, run_id=None, source=source, external_id=e.external_id,
            kind="push_rejected", fields={f: {"not_applied": True} for f in names},
            reason=f"{source} refused the {'new contact' if e.kind == 'create' else 'update'} "
                   f"({', '.join(names)} not applied): {r.reason or 'no reason given'}",
            at=at)
        return
    store.outbox.mark([e.id], "confirmed", at)
    # The source's record changed (by us): the next pull compares it again even
    # if the source's export hashes the same as before (it may have changed
    # back meanwhile, which only the three-way comparison can tell).
    store.contacts.update(e.contact_id, {"source_hash": None}, None)
    if e.kind == "create":
        if r.external_id:
            store.outbox.set_external_id(e.id, r.external_id)
            store.contacts.update(e.contact_id, {"record_type": "sync", "source": source,
                                                 "external_id": r.external_id}, at)
            store.feed.add_change(
                e.contact_id, None, "convert",
                {"record_type": ["manual", "sync"], "source": [None, source],
                 "external_id": [None, r.external_id]},
                "linked_by_push", f"pushed to {source} as a new contact; linked by the id "
                f"{source} returned", at)
        return
    if r.applied:  # delivered for a later import: the echo of a pull settles the bases
        _confirmed_bases(store, e)


def _confirmed_bases(store: Store, e: OutboxEntry) -> None:
    """The source now holds the pushed values: they are the bases. A field whose
    local value is still the pushed one needs no base row (base == value); a
    later pending entry's base of the field becomes the pushed value."""
    row = store.contacts.row(e.contact_id)
    if row is None:
        return
    drop, keep = [], {}
    for f, (_, new) in e.fields.items():
        now = _value(row, f)
        if now == new:
            drop.append(f)
        else:
            keep[f] = new
    store.outbox.drop_bases(e.contact_id, drop)
    store.outbox.set_bases(e.contact_id, keep)
    later = store.outbox.pending_for(e.contact_id)
    if later is not None and later.id != e.id:
        fields = {f: ((e.fields[f][1] if f in e.fields else b), n)
                  for f, (b, n) in later.fields.items()}
        store.outbox.set_fields(later.id, fields)


def _value(row: Mapping[str, Any], f: str) -> str:
    if f.startswith("extra:"):
        return str(json.loads(row.get("extra") or "{}").get(f[6:], ""))
    return str(row.get(f) or "")


def outbox_list(store: Store, source: str | None = None,
                statuses: Sequence[str] = ("pending", "sent", "rejected", "conflict"),
                ) -> list[dict[str, Any]]:
    """Entries with their age (seconds) for `contactsync outbox list`."""
    now = datetime.now(UTC)
    out = []
    for e in store.outbox.entries(source, statuses, limit=1 << 30):
        made = datetime.fromisoformat(e.created_at.replace("Z", "+00:00"))
        out.append({"id": e.id, "source": e.source, "contact_id": e.contact_id,
                    "kind": e.kind, "status": e.status, "fields": sorted(e.fields),
                    "attempts": e.attempts, "reason": e.reason, "created_at": e.created_at,
                    "age_seconds": round((now - made).total_seconds(), 1)})
    return out
