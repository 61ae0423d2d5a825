"""One sync run: stream batches from a source, plan with the rules, apply in
one transaction. Orchestration only: no rule logic and no SQL live here.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, assert_never

from contactsync_agent import _core, rules, uniqueness
from contactsync_agent.defaults import MASS_DELETE_LIMIT, MAX_FIELD_BYTES, REVIEW_THRESHOLD
from contactsync_agent.errors import (
    ContactSyncError,
    RunAborted,
    SafetyLimitError,
    SourceFormatError,
)
from contactsync_agent.mapping import FIELDS
from contactsync_agent.models import Decision, SyncReport
from contactsync_agent.rules import Action
from contactsync_agent.store import RUN_COUNTS, Store, now_iso

ProgressFn = Callable[[int], None]

MAX_DECISIONS = 10_000
FIELD_SET = frozenset(FIELDS)
WAL_CHECKPOINT_BYTES = 64 << 20

# Set (the test suite does) to rebuild the links from SQL after every run and
# compare them with the snapshot the run saves.
VERIFY_ENV = "CONTACTSYNC_VERIFY_SNAPSHOT"


@dataclass(frozen=True)
class SyncOptions:
    region: str = "AU"
    mass_delete_limit: float = MASS_DELETE_LIMIT
    allow_mass_delete: bool = False
    chunk_size: int = 25_000
    max_field_bytes: int = MAX_FIELD_BYTES
    # Field ownership ({field: source|local|locked}) and unique fields of the source.
    ownership: Mapping[str, str] = field(default_factory=dict)
    unique: tuple[str, ...] = ()
    # Rule 5: fuzzy candidates above `review_threshold` become review items;
    # `auto_link_threshold` (opt-in) links an unambiguous pair above it.
    fuzzy: bool = True
    review_threshold: float = REVIEW_THRESHOLD
    auto_link_threshold: float | None = None
    # Started with --force into a source the config does not list or has disabled.
    forced: bool = False
    # Confirms a full CSV snapshot whose header lost columns the source sent before.
    allow_column_drop: bool = False
    # A dry run shows this many creates, updates, deletes, ... of each kind.
    preview_limit: int = 20


class _Run:
    """State of one run while it streams; applies actions through the store."""

    def __init__(self, store: Store, source: str, mode: str, run_id: int, at: str,
                 ownership: Mapping[str, str] | None = None, *, dry_run: bool = False,
                 region: str = "AU") -> None:
        self.store = store
        self.dry_run = dry_run
        self.region = region
        # What a guard refused (a dry run goes on as if confirmed, and says so).
        self.refusals: list[str] = []
        self.warnings: list[str] = []
        # Quarantined rows that nothing tells apart: a full snapshot then deletes nothing.
        self.unidentified = 0
        # (field, heading) of what the snapshot's header carries (CSV files).
        self.columns: list[tuple[str, str]] | None = None
        # The source's share for the deletion guard is against what it held
        # before this run (its creates must not dilute it): set by `_plan`
        # from the links it loads.
        self.linked_before = 0
        # The share of the source's contacts a full run may empty one field on
        # before it is refused (None: not checked; set by `_plan`), how many
        # each field has been emptied on so far, and the fields refused.
        self.clear_limit: float | None = None
        # A confirmed column drop (`--allow-column-drop`): no column guard.
        self.allow_column_drop = False
        self.cleared: dict[str, int] = {}
        self.clear_refused: set[str] = set()
        self.ownership = dict(ownership or {})
        self.source = source
        self.mode = mode
        self.run_id = run_id
        self.at = at
        self.counts: dict[str, int] = dict.fromkeys(RUN_COUNTS, 0)
        self.decisions: list[Decision] = []
        self.dropped = 0
        self.rejected: list[tuple[int, str]] = []
        # contact id -> its external id before the run touched it (links to refresh)
        self.touched: dict[int, str | None] = {}
        self.created_links = False
        # Bulk creates whose organisation links were written with them: ids
        # first_new_id .. linked_up_to (a contiguous prefix; later ids, if any,
        # are linked by the set-based pass after the stream).
        self.first_new_id = store.peek_id_hwm("contacts") + 1
        self.linked_up_to = self.first_new_id - 1
        # Two-way sync: the source's policy when any field goes out (else {}:
        # an in-only source's pull reads no bases and pays nothing).
        policy = store.outbox.sync_policy(source)
        self.two_way: dict[str, Any] = policy if rules.two_way(policy) else {}
        # contact id -> its open two-way conflict items (read once, when needed).
        self._conflicts: dict[int, list[Any]] | None = None

    def decide(self, contact_id: int | None, ext: str | None, action: str, code: str,
               reason: str) -> None:
        if len(self.decisions) < MAX_DECISIONS:
            self.decisions.append(Decision(contact_id, ext, action, code, reason))
        else:
            self.dropped += 1

    # ---------------------------------------------------------------- writes

    def create(self, rec: Mapping[str, Any], code: str, reason: str) -> int:
        values: dict[str, Any] = {f: rec.get(f, "") for f in FIELDS}
        values.update(
            record_type="sync", forced_manual=0, source=self.source,
            external_id=rec["external_id"], extra=rec.get("extra") or "{}",
            phone_e164=rec.get("phone_e164", ""), mobile_e164=rec.get("mobile_e164", ""),
            hash=rec["hash"], source_hash=rec["hash"],
        )
        cid = self.store.contacts.insert(values, self.at)
        self.touched.setdefault(cid, None)
        feed: dict[str, list[Any]] = {
            "record_type": [None, "sync"], "source": [None, self.source],
            "external_id": [None, rec["external_id"]],
        }
        feed.update({f: [None, values[f]] for f in FIELDS if values[f]})
        extra = json.loads(values["extra"])
        if extra:
            feed["extra"] = [None, extra]
        self.store.feed.add_change(cid, self.run_id, "create", feed, code, reason, self.at)
        return cid

    def queue_reviews(self, contact_id: int, a: Action) -> None:
        """Review items pairing `contact_id` (made for the incoming record) with
        each candidate of `a`."""
        for rv in a.reviews:
            self.store.review.add_item(
                run_id=self.run_id, source=self.source, external_id=a.external_id or "",
                contact_id=contact_id, candidate_id=rv["candidate_id"], kind=rv["kind"],
                score=rv["score"], explanation=rv["explanation"], reason=rv["reason"],
                at=self.at,
            )
            self.counts["review_items"] += 1

    def apply(self, a: Action) -> None:
        """Applies one step of the plan, by its kind (every kind has its arm:
        mypy checks that none is left out)."""
        match a.kind:
            case "create":
                self.apply_create(a)
            case "review":
                self.apply_review(a)
            case "auto_link":  # applied as the conversion it becomes (counted there)
                assert a.record is not None and a.contact_id is not None
                _auto_link(self, a.contact_id, a.record["new_id"], a)
            case "convert" | "update" | "unchanged" | "skip" | "untouched" | "unlink" | "delete":
                self.apply_to_contact(a)
            case _:
                assert_never(a.kind)

    def count(self, a: Action) -> None:
        if a.counter:
            self.counts[a.counter] += 1

    def apply_create(self, a: Action) -> None:
        self.count(a)
        assert a.record is not None
        cid = self.create(a.record, a.reason_code, a.reason)
        self.queue_reviews(cid, a)
        self.decide(cid, a.external_id, a.kind, a.reason_code, a.reason)

    def apply_review(self, a: Action) -> None:
        self.count(a)
        assert a.contact_id is not None
        self.queue_reviews(a.contact_id, a)
        self.decide(a.reviews[0]["candidate_id"], a.external_id, "review", a.reason_code,
                    a.reason)

    def apply_to_contact(self, a: Action) -> None:
        """An action on one existing contact: its write, feed entry, held
        values and activity (each when it has one)."""
        self.count(a)
        assert a.contact_id is not None
        if a.write or a.kind == "delete":
            self.touched.setdefault(a.contact_id, a.external_id)
        if a.kind == "delete":
            self.store.contacts.update(a.contact_id, {"deleted_at": self.at}, self.at)
        elif a.write:
            # Only a change of mirrored data moves updated_at.
            self.store.contacts.update(a.contact_id, a.write, self.at if a.feed else None)
        if a.op is not None:
            self.store.feed.add_change(a.contact_id, self.run_id, a.op, a.feed, a.reason_code,
                                  a.reason, self.at)
            if self.clear_limit is not None:
                self.count_clears(a.feed)
        if a.held:
            self.store.contacts.set_held_values(a.contact_id, a.held)
        if a.activity is not None:
            self.store.feed.add_activity(
                contact_id=a.contact_id, run_id=self.run_id, source=self.source,
                external_id=a.external_id, kind=a.activity["kind"],
                fields=a.activity["fields"], reason=a.activity["reason"], at=self.at,
            )
            self.counts["activities"] += 1
        self.decide(a.contact_id, a.external_id, a.kind, a.reason_code, a.reason)

    def count_clears(self, feed: Mapping[str, Any]) -> None:
        """Counts the fields an update empties; the guard refuses as soon as one
        field's count passes the share (it only grows), so a run refused for a
        blank column stops early instead of writing every contact first."""
        assert self.clear_limit is not None
        for f, change in feed.items():
            if f not in FIELD_SET or not change[0] or change[1]:  # a field (not extra) emptied
                continue
            n = self.cleared[f] = self.cleared.get(f, 0) + 1
            if f in self.clear_refused:
                continue
            refused = len(self.refusals)
            self.guard(functools.partial(
                rules.check_field_clearing, self.source, f, n, self.linked_before,
                limit=self.clear_limit, allowed=False))
            if len(self.refusals) > refused:  # a dry run: said once, then as if confirmed
                self.clear_refused.add(f)

    # ---------------------------------------------------------------- batches

    def take(self, batch: _core.Batch, differ: _core.Differ, file: str | None,
             claims: list[Any],
             near: list[tuple[int, str, str]], deletes: list[tuple[str, int | None, int]]) -> None:
        self.counts["records"] += batch.total
        self.counts["unchanged"] += batch.unchanged
        if self.columns is None:
            self.columns = batch.columns()
            # The header is known at the first batch: a column drop is refused
            # before anything is written.
            _column_guard(self)
        rejected = batch.rejected()
        if rejected:
            self.store.review.add_quarantine(rejected, run_id=self.run_id, source=self.source,
                                      file=file, at=self.at)
            self.counts["rejected"] += len(rejected)
            self.rejected.extend((line, reason) for line, reason, _ in rejected[:1000])
            self.unidentified += batch.unidentified
            for cid, ext, line in batch.held():
                self.decide(cid, ext, "kept", "kept_quarantined",
                            rules.REASONS["kept_quarantined"].format(line=line))
        n = batch.create_count
        if n:
            base = self.store.contacts.allocate_ids(n)
            differ.add_created(batch, base)  # the creates' links, ids from base on
            self.store.contacts.insert_created(
                self.source, batch, base, n, self.run_id,
                self.at, "created", rules.REASONS["created"])
            if base == self.linked_up_to + 1:
                self.store.entities.insert_relations(self.source, batch.create_relations(base),
                                                     self.at)
                self.linked_up_to = base + n - 1
            self.counts["created"] += n
            self.created_links = True
            room = max(MAX_DECISIONS - len(self.decisions), 0)
            if room:
                for k, ext in enumerate(itertools.islice(batch.create_external_ids(), room)):
                    self.decide(base + k, ext, "create", "created", rules.REASONS["created"])
            self.dropped += max(n - room, 0)
        changed = batch.changed()
        if changed:
            ids = [cid for cid, _ in changed]
            current = self.store.contacts.rows(ids)
            held = (self.store.contacts.held_values(ids) if "local" in self.ownership.values()
                    else {})
            bases = self.store.outbox.bases(ids) if self.two_way else {}
            for cid, rec in changed:
                cur = current[cid]
                if "absent_fields" in rec:  # incremental: what it left out is kept
                    rec = rules.merge_partial(cur, rec, held.get(cid), self.region)
                    if (cur["source_hash"] == rec["hash"] and cur["record_type"] == "sync"
                            and not cur["forced_manual"]):
                        self.counts["unchanged"] += 1  # says what it said: no write
                        continue
                if (self.two_way and cur["record_type"] == "sync"
                        and not cur["forced_manual"]):
                    self.pull_two_way(cur, rec, bases.get(cid, {}))
                    continue
                self.apply(rules.decide_linked(cur, rec, self.ownership, held.get(cid)))
        claims.extend(batch.claims())
        near.extend(batch.near_misses())
        deletes.extend(batch.deletes())

    def pull_two_way(self, cur: Mapping[str, Any], rec: Mapping[str, Any],
                     bases: Mapping[str, str]) -> None:
        """A source change to a contact of a two-way source: out/both fields
        decided three ways (`rules.resolve_two_way`), then applied as an
        ordinary update; each resolution is a feed entry with its reason, a
        `review` conflict a review item with the three values, and the bases
        and outbox follow what was decided."""
        cid = int(cur["id"])
        open_entries = self.store.outbox.open_for([cid]).get(cid, [])
        # Echo suppression: a value the agent sent (an entry not yet confirmed,
        # e.g. after a crash; or delivered to a folder, whose base stays until
        # the value comes back) is its own write, not a remote change: it is
        # the base the comparison starts from.
        sent: list[Mapping[str, tuple[str, str]]] = []
        if bases:
            for e in self.store.outbox.delivered_for(cid):
                waiting = {f: v for f, v in e.fields.items() if bases.get(f) == v[0]}
                if waiting:
                    sent.append(waiting)
        in_flight = [e for e in open_entries if e.status == "sent"]
        sent += [e.fields for e in in_flight]
        echo = rules.echo_bases(rec, sent)
        bases = {**bases, **echo}
        # A sent entry's fields whose value came back are settled: the target
        # holds them, so the entry must not replay them with the old base.
        echoed = dict(zip((e.id for e in in_flight),
                          rules.echo_settled([e.fields for e in in_flight], echo), strict=True))
        # last_write_wins: the source's time is the record's `modified_at` (a
        # connector's modified_field / modified_column, a column mapped to
        # modified_at); a field's local time is when the entry carrying its
        # local value was edited (the newest open entry with the field), else
        # the contact's last write.
        local_times = {f: e.local_at for e in open_entries for f in e.fields}
        resolved, decisions = rules.resolve_two_way(
            cur, rec, bases, self.two_way, self.region, remote_at=rec.get("modified_at"),
            local_at=cur.get("updated_at"), local_times=local_times)
        a = rules.decide_linked(cur, resolved, self.ownership, None)
        # The source hash is what the source sent, so the same record again is
        # unchanged (and a kept local value is not decided twice).
        a.write["source_hash"] = rec["hash"]
        self.apply(a)
        if self.dry_run:
            return
        items = self.open_conflicts(cid)
        if not decisions and not echo:
            self.settle_conflicts(items, {}, {})
            return
        store, at = self.store.outbox, self.at
        pending = next((e for e in open_entries if e.status == "pending"), None)
        fields = dict(pending.fields) if pending else {}
        drop_bases, set_bases = [], {}
        settled: set[str] = set()  # fields a sent entry no longer speaks for
        reviewed: dict[str, Any] = {}  # field -> its conflict item now (id or row)
        said: dict[str, list[Any]] = {}
        reasons = []
        for f, d in decisions.items():
            local, remote = rules.field_value(cur, f), rules.field_value(rec, f)
            if d.outcome in ("remote", "echo", "conflict_remote"):
                drop_bases.append(f)
                fields.pop(f, None)
                settled.add(f)
            elif d.outcome == "local" and remote == bases.get(f, local):
                # Changed locally only. Pending: the entry goes as it is (an echo
                # of a sent value moved the base: the entry follows). Sent: wait
                # for its answer. Delivered but the source does not hold it (not
                # imported yet, or imported and changed back since): again.
                if f in echo:
                    set_bases[f] = remote
                if f in fields:
                    if fields[f][0] != remote:
                        fields[f] = (remote, fields[f][1])
                        set_bases[f] = remote
                elif not any(f in e.fields and f not in echoed.get(e.id, ())
                             for e in open_entries):
                    fields[f] = (remote, d.value)
            elif d.push:  # the local value goes out over what the source now holds
                set_bases[f] = remote
                fields[f] = (remote, d.value)
                settled.add(f)  # written once, by this entry: not by a sent one too
            elif d.outcome == "review":
                fields.pop(f, None)  # held until a person decides
                three = {"field": f, "base": bases.get(f, local), "local": local,
                         "remote": remote}
                same = next((i for i in items.get(f, []) if _three(i) == three), None)
                if same is not None:  # the same conflict, already waiting: said once
                    reviewed[f] = same
                    continue
                reviewed[f] = self.store.review.add_item(
                    run_id=self.run_id, source=self.source, external_id=str(rec["external_id"]),
                    contact_id=cid, candidate_id=cid, kind="conflict", score=None,
                    explanation=three, reason=d.reason, at=at)
                self.counts["review_items"] += 1
            # News: a conflict, or a source change put back (an out field). Not
            # an echo, nor a change of one side only (the update says it).
            if d.conflict or (d.push and remote != bases.get(f, local)):
                said[f] = [local, d.value]
                reasons.append(d.reason)
        for f, value in echo.items():  # the delivered value came back and is the local one
            if f not in decisions and rules.field_value(cur, f) == value:
                drop_bases.append(f)
        # A sent entry's value of a field this pull settled is no longer the
        # agent's: were it to come back later, it would not be an echo. One
        # whose value came back is done: the target applied it.
        for e in in_flight:
            back = echoed[e.id]
            gone = (settled & set(e.fields)) | back
            if not gone:
                continue
            rest = {f: v for f, v in e.fields.items() if f not in gone}
            if rest:
                store.set_fields(e.id, rest)
            elif gone <= back:
                store.mark([e.id], "confirmed", at, reason="its values came back in a pull")
            else:
                store.mark([e.id], "superseded", at, reason="settled by a pull")
        if drop_bases:
            store.drop_bases(cid, drop_bases)
        if set_bases:
            store.set_bases(cid, set_bases)
        if pending is not None:
            if fields:
                store.set_fields(pending.id, fields)
            else:
                store.mark([pending.id], "superseded", at, reason="settled by a pull")
        elif fields:
            store.add(key=uuid.uuid4().hex, source=self.source, contact_id=cid, kind="update",
                      external_id=str(rec["external_id"]), fields=fields, local_at=at, at=at)
        if reasons:
            code = ("two_way_conflict" if any(d.conflict for d in decisions.values())
                    else "two_way_resolved")
            self.store.feed.add_change(cid, self.run_id, "update", said, code,
                                       "; ".join(reasons), at)
        self.settle_conflicts(items, reviewed, decisions)

    def open_conflicts(self, contact_id: int) -> dict[str, list[Any]]:
        """field -> the contact's open two-way conflict items (review item rows)."""
        if self._conflicts is None:
            self._conflicts = self.store.review.open_conflicts(self.source)
        out: dict[str, list[Any]] = {}
        for row in self._conflicts.get(contact_id, []):
            out.setdefault(str(json.loads(row[8]).get("field", "")), []).append(row)
        return out

    def settle_conflicts(self, waiting: Mapping[str, list[Any]], reviewed: Mapping[str, Any],
                         decisions: Mapping[str, rules.FieldSync]) -> None:
        """Open conflict items this pull made stale: the field is in conflict
        again with other values (a new item replaces the old one), or no longer
        in conflict (the pull settled it, or both sides agree again). A person
        resolving a closed item is told why it closed."""
        for f, rows in waiting.items():
            now = reviewed.get(f)
            for row in rows:
                if now is row:
                    continue
                if isinstance(now, int):
                    why = f"a later pull changed {f} again (review item {now} replaces it)"
                elif now is not None:  # a duplicate of the item still waiting
                    why = f"the same conflict on {f} waits in review item {now[0]}"
                else:
                    d = decisions.get(f)
                    why = (f"a later pull settled {f}: {d.reason}" if d is not None
                           else f"a later pull found {f} unchanged on both sides")
                self.store.review.close_item(row[0], "rejected",
                                             {**json.loads(row[8]), "closed": why}, self.at)

    def guard(self, check: Callable[[], None]) -> None:
        """Runs a safety check: its refusal ends the run, except in a dry run,
        which records it and goes on as if it had been confirmed."""
        try:
            check()
        except SafetyLimitError as e:
            if not self.dry_run:
                raise
            self.refusals.append(str(e))


def _three(row: Any) -> dict[str, Any]:
    """A conflict item row's field and three values."""
    ex = json.loads(row[8])
    return {k: ex.get(k) for k in ("field", "base", "local", "remote")}


@dataclass(frozen=True)
class _Loaded:
    """The saved snapshot a run's links came from: bytes of its whole part,
    bytes of its deltas, and how many parts."""

    base_bytes: int
    delta_bytes: int
    parts: int


# A run saves its changes as a delta while the deltas stay under this share
# of the whole snapshot and this many parts; else a whole snapshot again.
DELTA_SHARE = 0.25
MAX_SNAPSHOT_PARTS = 32


def _load_differ(store: Store, source: str) -> tuple[_core.Differ, _Loaded | None]:
    """The source's links: from the saved snapshot (its whole part and the
    deltas after it) when it is still valid (any write to a contact's link
    drops it, by trigger), else from the contacts table."""
    parts = store.contacts.load_snapshot(source)
    if parts is not None:
        loaded = _Loaded(len(parts[0]), sum(len(p) for p in parts[1:]), len(parts))
        differ = _core.Differ.deserialize(parts[0], parts[1:])
        if os.environ.get(VERIFY_ENV) and differ.entries() != _differ_from_sql(
                store, source).entries():
            raise ContactSyncError(f"saved link snapshot of {source!r} ({len(parts)} "
                                   "part(s)) differs from the table")
        return differ, loaded
    return _differ_from_sql(store, source), None


def _differ_from_sql(store: Store, source: str) -> _core.Differ:
    differ = _core.Differ()
    for rows in store.contacts.linked(source):
        ext, ids, hashes, flags = zip(*rows, strict=True)
        differ.load(list(ext), list(ids), list(hashes), [int(f) for f in flags])
    return differ


def _load_identity(store: Store, source: str, region: str) -> _core.IdentityIndex | None:
    rows = store.contacts.local_identity_rows(source)
    if not rows:
        return None
    index = _core.IdentityIndex(region)
    index.add_many(rows)
    return index


def run_sync(
    store: Store,
    source: str,
    batches: Callable[[_core.Differ, _core.IdentityIndex | None], Iterator[_core.Batch]],
    *,
    mode: str,
    options: SyncOptions,
    origin: str | None = None,
    origin_hash: str | None = None,
    progress: ProgressFn | None = None,
    dry_run: bool = False,
) -> SyncReport:
    """Runs one sync. `batches(differ, identity)` yields processed batches.

    `dry_run`: the whole plan runs inside a transaction that is rolled back
    (no run row, no feed entry, nothing); the report says what would happen,
    with the first `options.preview_limit` entries of each kind and what a
    guard would refuse (the plan goes on as if confirmed)."""
    if mode not in ("full", "incremental"):
        raise ContactSyncError(f"mode must be 'full' or 'incremental', not {mode!r}")
    if store.readonly:
        raise ContactSyncError("the mirror is open read-only; sync needs the writer")
    if dry_run:
        return _dry_run(store, source, batches, mode=mode, options=options, origin=origin,
                        origin_hash=origin_hash, progress=progress)
    if store.wal_bytes() > WAL_CHECKPOINT_BYTES:
        store.checkpoint()
    started = time.monotonic()
    run_id = store.runs.begin(source, mode, origin, origin_hash, options.allow_mass_delete,
                             allow_column_drop=options.allow_column_drop,
                             forced=options.forced)
    try:
        with store.transaction():
            run = _Run(store, source, mode, run_id, now_iso(), options.ownership,
                       region=options.region)
            differ, loaded = _plan(run, batches, origin, options, progress)
            duration = int((time.monotonic() - started) * 1000)
            store.runs.finish(run_id, "ok", run.counts, error=None, duration_ms=duration)
            if run.touched or run.created_links or loaded is None or differ.learned():
                _save_links(run, differ, loaded)
    except BaseException as exc:
        if isinstance(exc, SafetyLimitError | SourceFormatError):
            status = "refused"
        elif isinstance(exc, RunAborted):
            status = "aborted"
        else:
            status = "failed"
        message = str(exc) or type(exc).__name__
        duration = int((time.monotonic() - started) * 1000)
        try:
            with store.transaction():
                store.runs.finish(run_id, status, {}, error=message, duration_ms=duration)
        except Exception:  # the database itself may be what failed; the run stays aborted
            pass
        raise
    return SyncReport(
        run_id=run_id, source=source, mode=mode, status="ok", counts=run.counts,
        decisions=run.decisions, decisions_dropped=run.dropped, rejected=run.rejected,
        duration_s=time.monotonic() - started, warnings=run.warnings,
    )


def _dry_run(
    store: Store, source: str,
    batches: Callable[[_core.Differ, _core.IdentityIndex | None], Iterator[_core.Batch]],
    *, mode: str, options: SyncOptions, origin: str | None, origin_hash: str | None,
    progress: ProgressFn | None,
) -> SyncReport:
    """`run_sync(dry_run=True)`: the run row and the whole plan in one
    transaction that is always rolled back (AUTOINCREMENT counters included)."""
    started = time.monotonic()
    with store.rolled_back():
        run_id = store.runs.insert(source, mode, origin, origin_hash, options.allow_mass_delete,
                                  allow_column_drop=options.allow_column_drop)
        seq = store.feed.last_seq()
        run = _Run(store, source, mode, run_id, now_iso(), options.ownership, dry_run=True,
                   region=options.region)
        _plan(run, batches, origin, options, progress)
        preview = store.feed.run_preview(seq, options.preview_limit)
    return SyncReport(
        run_id=0, source=source, mode=mode, status="dry_run", counts=run.counts,
        decisions=run.decisions, decisions_dropped=run.dropped, rejected=run.rejected,
        duration_s=time.monotonic() - started, warnings=run.warnings, dry_run=True,
        refused=run.refusals, preview=preview,
    )


def _plan(run: _Run, batches: Callable[[_core.Differ, _core.IdentityIndex | None],
                                       Iterator[_core.Batch]],
          origin: str | None, options: SyncOptions,
          progress: ProgressFn | None) -> tuple[_core.Differ, _Loaded | None]:
    """The run's work inside its transaction: stream the batches, decide and
    apply; returns the links and the saved snapshot they came from (None: the
    contacts table)."""
    store, source = run.store, run.source
    first_new_id = run.first_new_id
    differ, loaded = _load_differ(store, source)
    if run.mode == "full":  # the source's live `sync` contacts (the links, less the others)
        run.linked_before = len(differ) - store.contacts.linked_not_sync(source)
        run.allow_column_drop = options.allow_column_drop
        if not options.allow_column_drop and run.linked_before:
            run.clear_limit = options.mass_delete_limit
    identity = _load_identity(store, source, options.region)
    # A first import into an empty table builds the link index once, after
    # its bulk insert (nothing looks a contact up by its link until then).
    deferred_index = store.contacts.defer_link_index()
    claims: list[Any] = []
    near: list[tuple[int, str, str]] = []
    deletes: list[tuple[str, int | None, int]] = []
    # A bulk run makes millions of short-lived tuples of strings and ints
    # (no cycles); the cyclic GC would walk them again and again.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    # A first import appends (contacts, feed, then one sorted index build): a
    # small page cache, as pages are not read again (`Store.bulk_cache`).
    with store.bulk_cache() if deferred_index else contextlib.nullcontext():
        try:
            for batch in batches(differ, identity):
                run.take(batch, differ, origin, claims, near, deletes)
                if progress is not None:
                    progress(run.counts["records"])
        finally:
            if gc_was_enabled:
                gc.enable()
        if deferred_index:
            store.contacts.build_link_index()
    touched: set[int] = set()
    if claims:
        ids = sorted({cid for _, hits in claims for cid, _ in hits})
        local = store.contacts.rows(ids)
        for a in rules.resolve_claims(source, claims, local, store.review.rejected_pairs(source)):
            run.apply(a)
            if a.contact_id is not None:
                touched.add(a.contact_id)
    _deletions(run, differ, deletes, options)
    if options.fuzzy:
        touched |= _fuzzy_candidates(run, first_new_id, options)
    for a in rules.explain_untouched(near, touched):
        run.apply(a)
    # Organisation links and unique fields of what the run wrote (set-based). New
    # contacts up to `linked_up_to` got their links when inserted.
    changed = [cid for cid in run.touched if cid < first_new_id]
    store.entities.relink_contacts(source, max(first_new_id, run.linked_up_to + 1), changed,
                                   run.at)
    if options.unique:
        run.counts["activities"] += uniqueness.enforce(
            store, source, run.run_id, run.at, first_new_id, changed, options.unique)
    return differ, loaded


def columns_key(source: str) -> str:
    """`meta` key of the columns a source's full CSV snapshots carry."""
    return f"source.{source}.columns"


def _column_guard(run: _Run) -> None:
    """A full snapshot is the whole record, so a header that lost a column the
    source's last full snapshot carried would clear that field on every
    contact: refused like a mass deletion until confirmed. Only files with a
    header (CSV) are checked; the columns of a run that goes through become
    the source's (JSON `{field: heading}` in `meta`)."""
    if run.mode != "full" or run.columns is None:
        return
    store = run.store
    now = dict(run.columns)
    before: dict[str, str] = json.loads(store.get_meta(columns_key(run.source)) or "{}")
    missing = {f: h for f, h in before.items() if f not in now}
    if missing:
        run.guard(lambda: rules.check_column_drop(run.source, missing,
                                                  allowed=run.allow_column_drop))
    if now != before:
        store.set_meta(columns_key(run.source), json.dumps(now, sort_keys=True))


MATCH_COLUMNS = ("given_name", "family_name", "display_name", "organisation", "email",
                 "phone", "mobile", "street", "city", "postcode", "date_of_birth")


def _fuzzy_candidates(run: _Run, first_new_id: int, options: SyncOptions) -> set[int]:
    """Rule 5 for the contacts this run created: matched against the local manual
    contacts no source links (only when there are any), pairs above the review
    threshold become review items (or, opted in, links). Returns touched ids."""
    from contactsync_agent import matching  # the engine: only when there is work

    store = run.store
    # `!= 'sync'`: read through the partial index `contacts_local`, not a scan.
    local = store.contacts.match_rows(
        "record_type != 'sync' AND record_type = 'manual' AND external_id IS NULL", (),
        MATCH_COLUMNS)
    if not local:
        return set()
    new = store.contacts.match_rows("id >= ? AND source = ? AND record_type = 'sync'",
                           (first_new_id, run.source), (*MATCH_COLUMNS, "external_id"))
    if not new:
        return set()
    cfg = matching.MatchConfig.contacts(threshold=options.review_threshold,
                                        region=options.region)
    if len(local) + len(new) < SMALL_MATCH:
        cfg = _small_data_config(cfg)
    result = matching.link(local, new, cfg)
    pairs = [(int(p.left_id), int(p.right_id), p.probability,
              {f: {"level": c.level, "weight": round(c.weight, 3)}
               for f, c in p.explanation.items() if not c.level.startswith("missing")})
             for p in result]
    queued = store.review.open_pairs()
    pairs = [p for p in pairs if (p[1], p[0]) not in queued]
    new_external = {int(r["id"]): r["external_id"] for r in new}
    touched: set[int] = set()
    for a in rules.decide_fuzzy(pairs, new_external, store.review.rejected_pairs(run.source),
                                auto_link_threshold=options.auto_link_threshold):
        run.apply(a)
        if a.kind == "auto_link" and a.contact_id is not None:
            touched.add(a.contact_id)
    return touched


# Below this many records, random pairs are too few to estimate how often
# non-matches agree (u), and EM has nothing to learn from: fixed values are used.
SMALL_MATCH = 5000

# u of the best agreement level (exact) per field of the contact defaults: how
# often two different people agree exactly. Lower levels get a share each and
# "different" the rest.
SMALL_U_EXACT = {"given_name": 0.01, "family_name": 0.005, "organisation": 0.01,
                 "email": 0.0001, "mobile": 0.0001, "phone": 0.0005, "street": 0.0005,
                 "city": 0.05, "postcode": 0.01, "date_of_birth": 0.0005}


def _small_data_config(cfg: Any) -> Any:
    from dataclasses import replace

    from contactsync_agent import matching

    fields = []
    for f in cfg.fields:
        levels = matching.field_levels(f.type)[1:]  # without "missing"
        exact = SMALL_U_EXACT.get(f.name, 0.01)
        partial = [exact * 2] * (len(levels) - 2)
        u = (1.0 - exact - sum(partial), *partial, exact)
        fields.append(replace(f, u=u))
    return replace(cfg, fields=tuple(fields), em=False)


def _auto_link(run: _Run, local_id: int, new_id: int, a: Action) -> None:
    """Opt-in rule 5: the manual contact takes over the record this run created
    for it. The created contact was never committed, so it and its feed entry go."""
    store = run.store
    new = store.contacts.row(new_id)
    cur = store.contacts.row(local_id)
    assert new is not None and cur is not None
    # Its organisation link goes with it; the local contact gets its own from
    # the taken-over values (it is touched).
    store.contacts.discard_created(new_id, run.run_id)
    run.touched.setdefault(new_id, new["external_id"])
    write, feed = rules.take_over(cur, new)
    run.counts["created"] -= 1
    run.apply(Action(kind="convert", counter="converted", reason_code=a.reason_code,
                     reason=a.reason, contact_id=local_id, external_id=new["external_id"],
                     write=write, feed=feed, op="convert"))


def _save_links(run: _Run, differ: _core.Differ, loaded: _Loaded | None) -> None:
    """Brings the in-memory links up to date with what the run wrote and saves
    them as the source's snapshot, inside the run's transaction: as a delta
    over the snapshot the run loaded them from (the run's own writes dropped
    its mark, nothing else could: the run holds the write transaction), or,
    loaded from the table or with deltas grown too big, whole."""
    store = run.store
    for cid, before in run.touched.items():
        if before is not None:  # re-added below if the contact still holds a link
            differ.remove_if(before, cid)
    for cid, src, ext, source_hash, attention, deleted in store.contacts.link_rows(
            list(run.touched)):
        if src == run.source and ext is not None and deleted is None:
            differ.upsert(ext, cid, source_hash, int(attention))
    if os.environ.get(VERIFY_ENV):
        fresh = _differ_from_sql(store, run.source)
        if fresh.entries() != differ.entries():
            raise ContactSyncError(f"link snapshot of {run.source!r} drifted from the table")
    if loaded is not None and loaded.parts < MAX_SNAPSHOT_PARTS:
        delta = differ.serialize_delta()
        if loaded.delta_bytes + len(delta) <= loaded.base_bytes * DELTA_SHARE:
            store.contacts.save_snapshot_delta(run.source, delta, len(differ), run.at)
            return
    store.contacts.save_snapshot(run.source, differ.serialize(), len(differ), run.at)


def _deletions(run: _Run, differ: _core.Differ,
               explicit: list[tuple[str, int | None, int]], options: SyncOptions) -> None:
    store = run.store
    targets: list[int] = []
    for ext, cid, _line in explicit:
        if cid is None:
            run.decide(None, ext, "ignored", "delete_unknown", rules.REASONS["delete_unknown"])
        else:
            targets.append(cid)
    if run.mode == "full":
        absent = [cid for cid, _ in differ.absent()]
        rows = store.contacts.rows(absent)
        would = [cid for cid in absent if rows[cid]["record_type"] == "sync"]
        if run.unidentified:
            # Rows nobody can name may be any of the absent contacts: keep them all.
            run.counts["deletions_skipped"] += len(would)
            if would:
                run.warnings.append(
                    f"deletions skipped: {run.unidentified} quarantined row(s) could not be "
                    f"identified, so the {len(would)} contact(s) absent from this snapshot "
                    "were kept (fix the rows in `contactsync quarantine` and sync again)")
            for cid in would:
                run.decide(cid, rows[cid]["external_id"], "kept", "deletion_skipped",
                           rules.REASONS["deletion_skipped"])
            absent = []
        else:
            run.guard(lambda: rules.check_deletion_guard(
                run.source, would_delete=len(would), linked=run.linked_before,
                incoming=differ.seen(), limit=options.mass_delete_limit,
                allowed=options.allow_mass_delete,
            ))
        targets.extend(absent)
    if not targets:
        return
    rows = store.contacts.rows(targets)
    refs = store.contacts.in_use(targets)
    for cid in targets:
        run.apply(rules.decide_deletion(rows[cid], refs.get(cid, [])))


def dict_batches(
    records: Iterable[Mapping[str, Any]], mapping: dict[str, str], options: SyncOptions,
    *, partial: bool = False,
) -> Callable[[_core.Differ, _core.IdentityIndex | None], Iterator[_core.Batch]]:
    """Batches from Python mappings (the API and the non-file connectors).
    `partial` (incremental runs): a key a record leaves out keeps the mirror's value."""

    def gen(differ: _core.Differ, identity: _core.IdentityIndex | None) -> Iterator[_core.Batch]:
        it = iter(records)
        line = 1
        while True:
            chunk = [dict(r) for r in itertools.islice(it, options.chunk_size)]
            if not chunk:
                return
            yield _core.Batch.from_dicts(chunk, mapping, differ, identity, options.region, line,
                                         options.max_field_bytes, partial=partial)
            line += len(chunk)

    return gen


def file_batches(
    path: str, fmt: str, mapping: dict[str, str], options: SyncOptions, *,
    encoding: str | None = None, delimiter: str | None = None, source: str | None = None,
    partial: bool = False, name: str | None = None, meter: _core.ReadMeter | None = None,
) -> Callable[[_core.Differ, _core.IdentityIndex | None], Iterator[_core.Batch]]:
    """Batches read from an export file by the Rust reader thread (which, given
    the source, also writes the feed payloads of the creates). `partial`
    (incremental runs): a column or key a record leaves out keeps the mirror's value.
    `name`: the file as its errors name it, when `path` is a /proc/self/fd path
    (infile.py). `meter`: told the bytes parsed as the reader goes (a progress bar)."""

    def gen(differ: _core.Differ, identity: _core.IdentityIndex | None) -> Iterator[_core.Batch]:
        yield from _core.open_file(
            path, fmt, mapping, differ, identity, region=options.region,
            chunk_size=options.chunk_size, max_field_bytes=options.max_field_bytes,
            encoding=encoding, delimiter=delimiter, source=source, partial=partial, name=name,
            meter=meter,
        )

    return gen
