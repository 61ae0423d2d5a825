"""Model-based stateful test of the mirror rules (issue 12, "the test that finds the next bug").

A Hypothesis `RuleBasedStateMachine` drives a real mirror (a real SQLite file,
through the public API `contactsync_agent.Mirror`, and through real CSV and
NDJSON files via `Mirror.sync_file`) and a small in-memory reference model of
`shared/spec/mirror-rules.md` with the same random operations, and after every
step checks that the two agree.

The model (`Model`, below) is meant to be read against the spec, not against
the code: the decision order (link by external id; identity match against
exactly one manual contact; never adopt external records; ambiguity is not a
match and goes to review; else create), record types, forced manual, contacts
in use (unlinked instead of deleted), the mass-deletion guard, full versus
incremental snapshots with partial records, and field ownership of local edits
(a synced contact's fields belong to its source).

Operations: full snapshots (API records, CSV files with unreadable rows, NDJSON
files; sometimes confirmed with `allow_mass_delete`), a full CSV snapshot that
leaves out a column, incremental batches (CSV files with a subset of the
columns and explicit empty cells, NDJSON objects with absent keys and `null`,
API records with every field), explicit deletes, local adds (manual, external, forced manual,
manual carrying a source id) and edits, force-manual, references added and
removed, review accept and reject, purge.

Invariants checked after every step: the contacts (ids, names, e-mail, phone,
record type, forced manual, source, external id, deleted), the source's links,
the change feed (the ops of each contact, and the feed replayed from seq 0
equals the contacts table), the activities (kinds per contact), the review
items (contact, candidate, kind, status), and each run's outcome (ok or
refused).

Kept simple on purpose:
- Fuzzy matching (rule 5) is left out: the public API has no switch to turn
  it off, so the mirror is opened with `review_threshold=1.0` and only the
  review items of identity ambiguities (`kind = 'ambiguous'`, which the model
  decides exactly) are compared and worked; fuzzy suggestions are ignored
  (they change no contact unless accepted, and the machine never accepts one).
- One source (`xpm`) with no ownership policy (every field source-owned);
  external contacts belong to `bgl`. Records carry given name, family name,
  e-mail and phone only, from alphabets of 3–4 values (with case and phone
  format variants), external ids from K1–K8, so identity matches, contested
  and ambiguous matches, collisions and deletions happen all the time.

The semantics of issue 12's defects are the model's (the code is being changed
to them); each can be switched back to today's behaviour to tell which one a
failure is (`--model-legacy=1,2,3`, see `tests/conftest.py` and the README's
"Testing"):
1. The guard's share is counted against the source's sync contacts *before*
   the run (today: after its creates and conversions).
2. In an incremental batch an absent CSV column or NDJSON key keeps the
   mirror's value, an empty cell or `null` clears it (today: absent clears);
   a full CSV snapshot whose header lacks a column that the source's last
   full CSV snapshot (with rows) carried is refused (SafetyLimitError) unless
   `allow_column_drop=True`, which then clears that field (today: clears);
   once confirmed, the smaller header is the source's. (A full snapshot that
   empties a field on over 20 % of the source and at least 10 contacts is
   refused too; the model's snapshots of at most 8 records never reach 10,
   so that guard is tested in `tests/test_data_safety.py`.)
3. In a full snapshot a quarantined row whose external id can be read (a row
   with one field too many) keeps its contact untouched; if a quarantined
   row's id cannot be read (empty id), the run makes no deletions (and so no
   deletion share to refuse) but applies creates and updates (today: both
   are absences and delete). The id of a row with the wrong number of fields
   is only a guess: when it names no contact of the source it counts as
   unreadable (as the fix does: it may be a mangled id of any of them).
Two readings the model takes where issue 12 leaves a choice: an incremental
record merges into the contact's current values before it is compared with
what the source last said, and a file whose rows all fail to be read is never
generated (its meaning, "empty export" or "no deletions", is left open).

A failure message names the defects the failing step's expectation depends on
(the model run again with that one fix switched off expects something else).

The module must not write outside its temporary directories, nor reach into
the package's private modules except `maintenance.purge` (the API's purge).
"""

from __future__ import annotations

import copy
import csv
import inspect
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from contactsync_agent import ContactSyncError, Mirror, SafetyLimitError, maintenance
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

SOURCE = "xpm"
OTHER = "bgl"  # the integration that owns `external` contacts
MF: tuple[str, ...] = ("given_name", "family_name", "email", "phone")
ALPHA: dict[str, tuple[str, ...]] = {
    "given_name": ("Ann", "ann", "Bob", ""),
    "family_name": ("Lee", "Roe", ""),
    "email": ("ann@x.org", "ANN@x.org", "bob@y.net", ""),
    "phone": ("0400 000 001", "+61 400 000 001", "0400 000 002", ""),
}
# E.164 with the default region AU: the phone part of the identity key.
PHONE_KEY = {"0400 000 001": "+61400000001", "+61 400 000 001": "+61400000001",
             "0400 000 002": "+61400000002", "": ""}
EXT: tuple[str, ...] = tuple(f"K{i}" for i in range(1, 9))
REFS = ("case:1", "case:2")
CSV_HEAD = {"given_name": "First Name", "family_name": "Surname", "email": "Email",
            "phone": "Phone"}
GUARD_LIMIT = 0.20

DEFECTS = {
    1: "defect 1: the deletion guard's share must be counted against what the source held "
       "before the run",
    2: "defect 2: an absent column/key in an incremental batch keeps the mirror's value; a "
       "full snapshot dropping a column is refused unless allow_column_drop",
    3: "defect 3: an unreadable row of a full snapshot is not an absence (readable id: "
       "contact untouched; unreadable id: no deletions)",
}
ALL_FIXES = frozenset(DEFECTS)

Fields = dict[str, str]


def identity(f: Mapping[str, str]) -> tuple[str, str, str] | None:
    """Name, e-mail and phone after normalisation; None when all three are empty."""
    name = " ".join(p for p in (f["given_name"], f["family_name"]) if p).lower()
    key = (name, f["email"].strip().lower(), PHONE_KEY[f["phone"]])
    return key if any(key) else None


def said(f: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(f[k] for k in MF)


@dataclass
class MContact:
    id: int
    record_type: str
    forced: bool
    source: str | None
    ext: str | None
    fields: Fields
    deleted: bool = False
    # What the source last said about this contact (its `source_hash`), None if never.
    said: tuple[str, ...] | None = None


@dataclass
class MReview:
    contact_id: int
    candidate_id: int
    ext: str
    status: str = "open"


@dataclass
class Incoming:
    """One readable record: the fields it sends (absent ones are not sent)."""

    ext: str
    sent: dict[str, str]
    deleted: bool = False


@dataclass
class Model:
    fixes: frozenset[int] = ALL_FIXES
    contacts: dict[int, MContact] = field(default_factory=dict)
    next_id: int = 1
    refs: dict[int, set[str]] = field(default_factory=dict)
    feed: dict[int, list[str]] = field(default_factory=dict)
    activities: dict[int, list[str]] = field(default_factory=dict)
    reviews: list[MReview] = field(default_factory=list)
    rejections: set[tuple[str, int]] = field(default_factory=set)
    # The fields the header of the source's last full CSV snapshot (with rows) carried.
    csv_columns: frozenset[str] | None = None

    # ------------------------------------------------------------ helpers

    def live(self) -> list[MContact]:
        return [c for c in self.contacts.values() if not c.deleted]

    def _op(self, cid: int, op: str) -> None:
        self.feed.setdefault(cid, []).append(op)

    def _activity(self, cid: int, kind: str) -> None:
        self.activities.setdefault(cid, []).append(kind)

    def _insert(self, record_type: str, forced: bool, source: str | None, ext: str | None,
                fields: Fields, said_: tuple[str, ...] | None) -> int:
        cid = self.next_id
        self.next_id += 1
        self.contacts[cid] = MContact(cid, record_type, forced, source, ext, dict(fields),
                                      said=said_)
        self._op(cid, "create")
        return cid

    def view(self) -> dict[str, Any]:
        return {
            "contacts": {c.id: (c.record_type, c.forced, c.source, c.ext,
                                *said(c.fields), c.deleted)
                         for c in self.contacts.values()},
            "feed": {k: v for k, v in self.feed.items() if v},
            "activities": {k: v for k, v in self.activities.items() if v},
            "reviews": [(r.contact_id, r.candidate_id, r.status) for r in self.reviews],
        }

    # ------------------------------------------------------------ local operations

    def add(self, record_type: str, forced: bool, source: str | None, ext: str | None,
            fields: Fields) -> int:
        return self._insert(record_type, forced, source, ext, fields, None)

    def edit(self, cid: int, new: Fields) -> str:
        """'refused', 'noop' or 'ok' (a synced contact's fields belong to its source)."""
        c = self.contacts[cid]
        touched = [f for f in new if new[f] != c.fields[f]]
        if not touched:
            return "noop"
        if c.record_type == "sync" and c.source is not None and not c.forced:
            return "refused"
        c.fields.update(new)
        self._op(cid, "update")
        return "ok"

    def force(self, cid: int) -> None:
        c = self.contacts[cid]
        if not c.forced:
            c.forced = True
            self._op(cid, "update")

    def purge(self) -> None:
        for cid in sorted(self.contacts):
            c = self.contacts[cid]
            if c.deleted and not self.refs.get(cid):
                del self.contacts[cid]
                self._op(cid, "purge")

    def review_accept(self, item: MReview) -> bool:
        local = self.contacts.get(item.candidate_id)
        created = self.contacts.get(item.contact_id)
        if local is None or local.deleted or local.record_type != "manual":
            return False
        if created is None or created.deleted or created.ext is None:
            return False
        created.deleted = True
        self._op(created.id, "delete")
        moved = self.refs.get(created.id, set()) - self.refs.get(local.id, set())
        self.refs.setdefault(local.id, set()).update(moved)
        self.refs[created.id] = self.refs.get(created.id, set()) - moved
        local.fields = dict(created.fields)
        local.record_type, local.source, local.ext = "sync", created.source, created.ext
        # As the code does (review.accept copies source_hash). Note: when the created
        # contact was forced manual and the source changed since, the local contact
        # gets stale values with the latest source hash and is not forced, so the
        # source's unchanged snapshots never correct it (reported with issue 12).
        local.said = created.said
        self._op(local.id, "convert")
        item.status = "accepted"
        for other in self.reviews:
            if other.status == "open" and (other.contact_id == created.id
                                           or other.candidate_id == local.id):
                other.status = "rejected"
        return True

    def review_reject(self, item: MReview) -> None:
        item.status = "rejected"
        self.rejections.add((item.ext, item.candidate_id))

    # ------------------------------------------------------------ a sync run

    def sync(self, records: Sequence[Incoming], mode: str, *, allow_mass_delete: bool = False,
             protected: frozenset[str] = frozenset(), unreadable_ids: int = 0,
             columns: frozenset[str] | None = None, allow_column_drop: bool = False) -> str:
        """Applies one run; returns 'ok' or 'refused' (then nothing changed).
        `columns`: the fields a CSV file's header carries (None: not a CSV file)."""
        before = copy.deepcopy(self.__dict__)
        outcome = self._sync(records, mode, allow_mass_delete, protected, unreadable_ids,
                             columns, allow_column_drop)
        if outcome == "refused":
            self.__dict__.update(before)
        elif mode == "full" and columns is not None and records:
            self.csv_columns = columns
        return outcome

    def _sync(self, records: Sequence[Incoming], mode: str, allow_mass_delete: bool,
              protected: frozenset[str], unreadable_ids: int, columns: frozenset[str] | None,
              allow_column_drop: bool) -> str:
        if (mode == "full" and columns is not None and self.csv_columns is not None
                and self.csv_columns - columns and 2 in self.fixes and not allow_column_drop):
            return "refused"  # the header lost a column the last full CSV carried
        live = self.live()
        links = {c.ext: c.id for c in live if c.source == SOURCE and c.ext is not None}
        held_before = sum(1 for c in live if c.source == SOURCE and c.ext is not None
                          and c.record_type == "sync")
        # Manual contacts not linked to this source (kind 0) and external ones (kind 1).
        index = [(c.id, 0 if c.record_type == "manual" else 1, identity(c.fields))
                 for c in sorted(live, key=lambda c: c.id)
                 if c.record_type == "external"
                 or (c.record_type == "manual" and not (c.source == SOURCE and c.ext))]
        linked: list[tuple[int, Incoming]] = []
        creates: list[tuple[str, Fields]] = []
        claims: list[tuple[str, Fields, list[tuple[int, int]]]] = []
        explicit: list[int] = []
        for r in records:
            if r.ext in links:
                if r.deleted:
                    explicit.append(links[r.ext])
                else:
                    linked.append((links[r.ext], r))
                continue
            if r.deleted:
                continue  # a delete for an id the mirror does not hold: ignored
            rec = {f: r.sent.get(f, "") for f in MF}
            key = identity(rec)
            hits = [(cid, kind) for cid, kind, k in index if key is not None and k == key]
            if hits:
                claims.append((r.ext, rec, hits))
            else:
                creates.append((r.ext, rec))

        # Rule 1: linked by external id.
        for cid, r in linked:
            c = self.contacts[cid]
            keep = mode == "incremental" and 2 in self.fixes
            merged = {f: r.sent.get(f, c.fields[f] if keep else "") for f in MF}
            attention = c.record_type != "sync" or c.forced
            if not attention and c.said == said(merged):
                continue  # the source said the same as last time: no write at all
            diff = [f for f in MF if c.fields[f] != merged[f]]
            converting = c.record_type != "sync"
            if c.forced:
                if diff and c.said != said(merged):
                    self._activity(cid, "forced_manual")
            else:
                c.fields = merged
            c.said = said(merged)
            if converting:
                c.record_type = "sync"
                self._op(cid, "convert")
            elif diff and not c.forced:
                self._op(cid, "update")

        # Rule 6 for records no identity key links (created before the claims).
        for ext, rec in creates:
            self._insert("sync", False, SOURCE, ext, rec, said(rec))

        # Rules 2–4: identity claims.
        manual_hits = [[cid for cid, kind in hits if kind == 0 and (ext, cid) not in
                        self.rejections] for ext, _, hits in claims]
        claimants = Counter(cid for ids in manual_hits for cid in set(ids))
        for (ext, rec, _), manual in zip(claims, manual_hits, strict=True):
            if len(manual) == 1 and claimants[manual[0]] == 1:
                c = self.contacts[manual[0]]
                if c.forced:
                    if any(c.fields[f] != rec[f] for f in MF):
                        self._activity(c.id, "forced_manual")
                else:
                    c.fields = dict(rec)
                c.record_type, c.source, c.ext, c.said = "sync", SOURCE, ext, said(rec)
                self._op(c.id, "convert")
            else:
                new = self._insert("sync", False, SOURCE, ext, rec, said(rec))
                for cand in manual:  # ambiguous or contested: every candidate to review
                    self.reviews.append(MReview(new, cand, ext))

        # Deletions: explicit ones, and absences from a full snapshot (guarded).
        targets = list(explicit)
        if mode == "full":
            seen = {r.ext for r in records}
            readable_bad = protected if 3 in self.fixes else frozenset()
            absent = sorted(cid for ext, cid in links.items()
                            if ext not in seen and ext not in readable_bad)
            # A ragged row's id is only a guess: one naming no contact of the
            # source may be a mangled id of any of them, so it counts as unreadable.
            unidentified = unreadable_ids + sum(1 for ext in readable_bad if ext not in links)
            if unidentified and 3 in self.fixes:
                absent = []
            would = sum(1 for cid in absent if self.contacts[cid].record_type == "sync")
            held = held_before if 1 in self.fixes else sum(
                1 for c in self.live() if c.source == SOURCE and c.ext is not None
                and c.record_type == "sync")
            if not allow_mass_delete and held > 0:
                if not seen:
                    return "refused"  # an empty export never wipes the mirror
                if would / held > GUARD_LIMIT:
                    return "refused"
            targets += absent
        for cid in targets:
            c = self.contacts[cid]
            if c.record_type != "sync":
                continue  # a deletion never touches a contact that is not a sync record
            if self.refs.get(cid) or c.forced:
                c.record_type, c.ext, c.source, c.said = "manual", None, None, None
                self._op(cid, "unlink")
                self._activity(cid, "source_deletion")
            else:
                c.deleted = True
                self._op(cid, "delete")
        return "ok"


# ---------------------------------------------------------------- the real mirror's view


def replay(changes: Sequence[Any]) -> dict[int, dict[str, Any]]:
    """The contacts table rebuilt from the change feed alone."""
    out: dict[int, dict[str, Any]] = {}
    for ch in changes:
        if ch.contact_id is None:
            continue
        if ch.op == "purge":
            out.pop(ch.contact_id, None)
            continue
        c = out.setdefault(ch.contact_id, {"record_type": "manual", "source": None,
                                           "external_id": None, "forced_manual": False,
                                           "deleted": False, **dict.fromkeys(MF, "")})
        for f, (_, after) in ch.fields.items():
            if f in c:
                c[f] = bool(after) if f == "forced_manual" else after
        if ch.op == "delete":
            c["deleted"] = True
    return out


def real_view(m: Mirror) -> dict[str, Any]:
    contacts = m.contacts(include_deleted=True)
    feed: dict[int, list[str]] = {}
    for ch in m.changes():
        if ch.contact_id is not None:
            feed.setdefault(ch.contact_id, []).append(ch.op)
    acts: dict[int, list[str]] = {}
    for a in m.activities(status=None):
        if a.contact_id is not None:
            acts.setdefault(a.contact_id, []).append(a.kind)
    return {
        "contacts": {c.id: (c.record_type, c.forced_manual, c.source, c.external_id,
                            *(getattr(c, f) for f in MF), c.deleted_at is not None)
                     for c in contacts},
        "feed": feed,
        "activities": acts,
        # Identity ambiguities only: fuzzy suggestions are left out (module doc).
        "reviews": [(r.contact_id, r.candidate_id, r.status)
                    for r in m.review.items(status=None) if r.kind == "ambiguous"],
    }


def table(m: Mirror) -> dict[int, dict[str, Any]]:
    return {c.id: {"record_type": c.record_type, "source": c.source,
                   "external_id": c.external_id, "forced_manual": c.forced_manual,
                   "deleted": c.deleted_at is not None, **{f: getattr(c, f) for f in MF}}
            for c in m.contacts(include_deleted=True)}


def diff_views(want: Mapping[str, Any], got: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for part in ("contacts", "feed", "activities"):
        w, g = want[part], got[part]
        for k in sorted(set(w) | set(g)):
            if w.get(k) != g.get(k):
                out.append(f"{part}[{k}]: model {w.get(k)!r} != mirror {g.get(k)!r}")
    if want["reviews"] != got["reviews"]:
        out.append(f"reviews: model {want['reviews']!r} != mirror {got['reviews']!r}")
    return out


# ---------------------------------------------------------------- strategies

VALUES = st.fixed_dictionaries({f: st.sampled_from(ALPHA[f]) for f in MF})
# A record's values: drawn from the alphabets, or (an int) copied from the n-th
# live contact of the model, so identity matches happen often.
SOURCE_VALUES = st.one_of(VALUES, st.integers(0, 11))
RECORDS = st.lists(st.tuples(st.sampled_from(EXT), SOURCE_VALUES), max_size=8,
                   unique_by=lambda r: r[0])
FIELD_SETS = st.frozensets(st.sampled_from(MF))
INC_ROWS = st.lists(st.tuples(st.sampled_from(EXT), SOURCE_VALUES, st.booleans()),
                    max_size=6, unique_by=lambda r: r[0])
NDJSON_ROWS = st.lists(st.tuples(st.sampled_from(EXT), SOURCE_VALUES, FIELD_SETS,
                                 st.booleans(), st.booleans()),
                       max_size=6, unique_by=lambda r: r[0])
BAD_ROWS = st.lists(st.tuples(st.sampled_from(["ragged", "no_id"]), st.sampled_from(EXT),
                              VALUES), max_size=2)
CONTACT_PICK = st.integers(0, 30)


def scratch_dir() -> str | None:
    """A RAM-backed temporary directory where there is one (Linux `/dev/shm`): the
    machine runs thousands of small synchronous commits while Hypothesis shrinks,
    and fsync on a disk makes that minutes. SQLite, WAL and the writer lock work
    the same there; the durability tests use real disks elsewhere."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


class MirrorMachine(RuleBasedStateMachine):
    """One mirror file and one model, driven by the same operations."""

    fixes: frozenset[int] = ALL_FIXES

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="model-mirror-", dir=scratch_dir()))
        self.mirror = Mirror.open(self.dir / "mirror.db", review_threshold=1.0)
        self.model = Model(fixes=self.fixes)
        self.files = 0
        self.ext_counter = 0
        self.tags: set[int] = set()
        self.pending: tuple[Model, dict[str, Any], str] | None = None
        self.step = ""

    def teardown(self) -> None:
        self.mirror.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ helpers

    def values(self, v: dict[str, str] | int) -> Fields:
        if isinstance(v, int):
            live = sorted(self.model.live(), key=lambda c: c.id)
            if live:
                return dict(live[v % len(live)].fields)
            v = dict.fromkeys(MF, "")
            v["family_name"] = "Lee"
        return dict(v)

    def pick(self, n: int, *, live_only: bool = True) -> MContact | None:
        pool = sorted((c for c in self.model.contacts.values() if not (live_only and c.deleted)),
                      key=lambda c: c.id)
        return pool[n % len(pool)] if pool else None

    def path(self, suffix: str) -> Path:
        self.files += 1
        return self.dir / f"f{self.files}{suffix}"

    def expect(self, what: str, **kw: Any) -> str:
        """Runs the model for one sync step (what it needs to tell which defects the
        expectation depends on is kept for `blame`, computed only on a failure)."""
        start = copy.deepcopy(self.model)
        outcome = self.model.sync(**kw)
        self.pending = (start, kw, outcome)
        self.step = what
        note(f"{what} -> model expects {outcome}")
        return outcome

    def local_step(self, what: str) -> None:
        self.tags, self.pending, self.step = set(), None, what
        note(what)

    def blame(self) -> str:
        """Which defects of issue 12 this step's expectation depends on: the model
        run again from the step's start with one fix switched off expects otherwise."""
        if self.pending is not None:
            start, kw, outcome = self.pending
            self.tags = set()
            for d in sorted(start.fixes):
                alt = copy.deepcopy(start)
                alt.fixes = start.fixes - {d}
                if (alt.sync(**kw), alt.view()) != (outcome, self.model.view()):
                    self.tags.add(d)
        if not self.tags:
            return (f"step {self.step!r}: no defect of issue 12 is involved in this "
                    "expectation: a new bug (or a model error)")
        return f"step {self.step!r} depends on " + "; ".join(DEFECTS[d] for d in
                                                              sorted(self.tags))

    def run_real(self, expected: str, call: Any) -> None:
        before = self.mirror.runs(source=SOURCE, limit=1)
        try:
            call()
            got = "ok"
        except SafetyLimitError as e:
            got = f"refused ({e})"
        if got.split(" ")[0] != expected:
            raise AssertionError(f"run outcome: model {expected}, mirror {got}. "
                                 + self.blame())
        last = self.mirror.runs(source=SOURCE, limit=1)
        if expected == "ok":
            assert last and last[0]["status"] == "ok", (last, self.blame())
        elif last != before:  # a refusal is on record as refused (if it made a run row)
            assert last[0]["status"] == "refused", (last, self.blame())

    @staticmethod
    def describe(recs: Sequence[Incoming]) -> str:
        return "; ".join(
            f"{r.ext}{' DELETE' if r.deleted else ''} "
            + "|".join(f"{f[0]}={r.sent[f]!r}" for f in MF if f in r.sent) for r in recs)

    # ------------------------------------------------------------ local operations

    @initialize(locals_=st.lists(st.tuples(st.sampled_from(["manual", "manual", "external"]),
                                           VALUES, st.booleans()), max_size=4))
    def start(self, locals_: list[tuple[str, Fields, bool]]) -> None:
        for rt, v, with_ext in locals_:
            self.add_local(rt, v, False, with_ext and rt == "manual")

    def add_local(self, record_type: str, v: Fields, forced: bool, with_ext: bool) -> None:
        ext: str | None = None
        if record_type == "external":
            self.ext_counter += 1
            ext = f"B{self.ext_counter}"
        elif with_ext:
            taken = {c.ext for c in self.model.live() if c.source == SOURCE}
            free = [e for e in EXT if e not in taken]
            ext = free[0] if free else None
        source = OTHER if record_type == "external" else (SOURCE if ext else None)
        if not any(v.values()):
            # A contact with no field at all is refused, and nothing is written.
            with pytest.raises(ContactSyncError, match="at least one"):
                self.mirror.add_contact(record_type=record_type, forced_manual=forced,
                                        source=source, external_id=ext, **v)
            return
        want = self.model.add(record_type, forced, source, ext, v)
        got = self.mirror.add_contact(record_type=record_type, forced_manual=forced,
                                      source=source, external_id=ext, **v)
        self.local_step(f"add {record_type} #{got} forced={forced} ext={ext} {v}")
        assert got == want, f"local id: model {want}, mirror {got}"

    @rule(record_type=st.sampled_from(["manual", "manual", "external"]), v=SOURCE_VALUES,
          forced=st.booleans(), with_ext=st.booleans())
    def add(self, record_type: str, v: dict[str, str] | int, forced: bool,
            with_ext: bool) -> None:
        self.add_local(record_type, self.values(v), forced, with_ext)

    @rule(n=CONTACT_PICK, change=st.lists(st.tuples(st.sampled_from(MF), st.integers(0, 3)),
                                          min_size=1, max_size=2))
    def edit(self, n: int, change: list[tuple[str, int]]) -> None:
        c = self.pick(n)
        if c is None:
            return
        new = {f: ALPHA[f][i % len(ALPHA[f])] for f, i in change}
        expected = self.model.edit(c.id, new)
        self.local_step(f"edit #{c.id} {new} -> model {expected}")
        try:
            feed = self.mirror.ownership.edit_contact(c.id, **new)
            got = "ok" if feed else "noop"
        except ContactSyncError as e:  # OwnershipError: the source owns the field
            got = "refused"
            assert type(e).__name__ == "OwnershipError", e
        assert got == expected, f"edit of #{c.id}: model {expected}, mirror {got}"

    @rule(n=CONTACT_PICK)
    def force_manual(self, n: int) -> None:
        c = self.pick(n, live_only=False)
        if c is None:
            return
        self.model.force(c.id)
        self.local_step(f"force-manual #{c.id}")
        self.mirror.set_forced_manual(c.id, True)

    @rule(n=CONTACT_PICK, ref=st.sampled_from(REFS))
    def add_reference(self, n: int, ref: str) -> None:
        c = self.pick(n, live_only=False)
        if c is None:
            return
        self.model.refs.setdefault(c.id, set()).add(ref)
        self.local_step(f"reference {ref} on #{c.id}")
        self.mirror.add_reference(c.id, ref)

    @rule(n=CONTACT_PICK, ref=st.sampled_from(REFS))
    def remove_reference(self, n: int, ref: str) -> None:
        c = self.pick(n, live_only=False)
        if c is None:
            return
        had = ref in self.model.refs.get(c.id, set())
        self.model.refs.get(c.id, set()).discard(ref)
        self.local_step(f"remove reference {ref} from #{c.id}")
        assert self.mirror.remove_reference(c.id, ref) == had

    @precondition(lambda self: any(r.status == "open" for r in self.model.reviews))
    @rule(n=st.integers(0, 10), accept=st.booleans())
    def review(self, n: int, accept: bool) -> None:
        items = [r for r in self.model.reviews if r.status == "open"]
        item = items[n % len(items)]
        real = [r.id for r in self.mirror.review.items(status="open")
                if (r.kind, r.contact_id, r.candidate_id)
                == ("ambiguous", item.contact_id, item.candidate_id)]
        what = (f"review {'accept' if accept else 'reject'} "
                f"#{item.contact_id} ~ #{item.candidate_id}")
        assert len(real) == 1, f"{what}: open review items in the mirror: {real}"
        if not accept:
            self.model.review_reject(item)
            self.local_step(what)
            self.mirror.review.reject(real[0])
            return
        ok = self.model.review_accept(item)
        self.local_step(f"{what} -> model {'accepts' if ok else 'refuses'}")
        try:
            self.mirror.review.accept(real[0])
            got = True
        except ContactSyncError:
            got = False
        assert got == ok, f"review accept {item.id}: model {ok}, mirror {got}"

    @rule()
    def purge(self) -> None:
        self.model.purge()
        self.local_step("purge")
        maintenance.purge(self.mirror.store, 0, now=datetime.now(UTC) + timedelta(days=1))

    # ------------------------------------------------------------ full snapshots

    @rule(recs=RECORDS, allow=st.sampled_from([False, False, False, True]))
    def full_api(self, recs: list[tuple[str, Any]], allow: bool) -> None:
        inc = [Incoming(e, self.values(v)) for e, v in recs]
        expected = self.expect(f"full API snapshot (allow_mass_delete={allow}): "
                               + self.describe(inc), records=inc, mode="full",
                               allow_mass_delete=allow)
        self.run_real(expected, lambda: self.mirror.sync(
            SOURCE, [{"external_id": r.ext, **r.sent} for r in inc], mode="full",
            allow_mass_delete=allow))

    @rule(recs=RECORDS, bad=BAD_ROWS, allow=st.sampled_from([False, False, False, True]))
    def full_csv(self, recs: list[tuple[str, Any]], bad: list[tuple[str, str, Fields]],
                 allow: bool) -> None:
        self._full_csv(recs, bad, allow, frozenset(), False)

    @rule(recs=RECORDS.filter(bool), drop=st.sampled_from(MF), allow_drop=st.booleans())
    def full_csv_dropping_a_column(self, recs: list[tuple[str, Any]], drop: str,
                                   allow_drop: bool) -> None:
        self._full_csv(recs, [], False, frozenset({drop}), allow_drop)

    def _full_csv(self, recs: list[tuple[str, Any]], bad: list[tuple[str, str, Fields]],
                  allow: bool, dropped: frozenset[str], allow_drop: bool) -> None:
        cols = [f for f in MF if f not in dropped]
        inc = [Incoming(e, {f: v for f, v in self.values(v).items() if f in cols})
               for e, v in recs]
        good = {r.ext for r in inc}
        bad = [(kind, e, v) for kind, e, v in bad if kind == "no_id" or e not in good]
        bad = [b for k, b in enumerate(bad) if b[0] == "no_id"
               or b[1] not in {x[1] for x in bad[:k]}]
        if not inc:
            bad = []  # a file of unreadable rows only is left out (see the module doc)
        protected = frozenset(e for kind, e, _ in bad if kind == "ragged")
        unreadable = sum(1 for kind, _, _ in bad if kind == "no_id")
        p = self.path(".csv")
        rows: list[list[str]] = [[r.ext, *(r.sent[f] for f in cols)] for r in inc]
        for kind, e, v in bad:
            cells = [e if kind == "ragged" else "", *(v[f] for f in cols)]
            rows.insert(len(rows) // 2, [*cells, "one too many"] if kind == "ragged" else cells)
        with open(p, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["Client ID", *(CSV_HEAD[f] for f in cols)])
            w.writerows(rows)
        what = (f"full CSV (allow_mass_delete={allow}"
                + (f", without {sorted(dropped)}, allow_column_drop={allow_drop}"
                   if dropped else "")
                + f"): {self.describe(inc)}"
                + (f"; unreadable rows {[(k, e) for k, e, _ in bad]}" if bad else ""))
        expected = self.expect(what, records=inc, mode="full", allow_mass_delete=allow,
                               protected=protected, unreadable_ids=unreadable,
                               columns=frozenset(cols), allow_column_drop=allow_drop)
        kw: dict[str, Any] = {}
        if allow_drop and 2 in self.fixes:
            if "allow_column_drop" not in inspect.signature(Mirror.sync_file).parameters:
                raise AssertionError("Mirror.sync_file has no allow_column_drop parameter. "
                                     + DEFECTS[2])
            kw["allow_column_drop"] = True
        self.run_real(expected, lambda: self.mirror.sync_file(
            SOURCE, p, mode="full", delimiter=",", allow_mass_delete=allow, **kw))

    @rule(recs=RECORDS, allow=st.sampled_from([False, False, False, True]))
    def full_ndjson(self, recs: list[tuple[str, Any]], allow: bool) -> None:
        if not recs:
            return  # an NDJSON file without a line is refused before any run
        inc = [Incoming(e, self.values(v)) for e, v in recs]
        p = self.path(".ndjson")
        p.write_text("".join(json.dumps({"external_id": r.ext, **r.sent}) + "\n" for r in inc),
                     encoding="utf-8")
        expected = self.expect(f"full NDJSON (allow_mass_delete={allow}): "
                               + self.describe(inc), records=inc, mode="full",
                               allow_mass_delete=allow)
        self.run_real(expected, lambda: self.mirror.sync_file(
            SOURCE, p, mode="full", allow_mass_delete=allow))

    # ------------------------------------------------------------ incremental batches

    @rule(cols=FIELD_SETS, deleted_col=st.booleans(), rows=INC_ROWS)
    def incremental_csv(self, cols: frozenset[str], deleted_col: bool,
                        rows: list[tuple[str, Any, bool]]) -> None:
        order = [f for f in MF if f in cols]
        inc = [Incoming(e, {f: x for f, x in self.values(v).items() if f in cols},
                        deleted=deleted_col and d) for e, v, d in rows]
        p = self.path(".csv")
        with open(p, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["Client ID", *(CSV_HEAD[f] for f in order)]
                       + (["Deleted"] if deleted_col else []))
            for r in inc:
                w.writerow([r.ext, *(r.sent[f] for f in order)]
                           + (["1" if r.deleted else ""] if deleted_col else []))
        expected = self.expect(f"incremental CSV, columns {order}: " + self.describe(inc),
                               records=inc, mode="incremental")
        self.run_real(expected, lambda: self.mirror.sync_file(
            SOURCE, p, mode="incremental", delimiter=","))

    @rule(rows=NDJSON_ROWS)
    def incremental_ndjson(self, rows: list[tuple[str, Any, frozenset[str], bool, bool]]
                           ) -> None:
        inc: list[Incoming] = []
        lines: list[str] = []
        for e, v, keys, as_null, deleted in rows:
            vals = self.values(v)
            sent = {f: vals[f] for f in MF if f in keys}
            obj: dict[str, Any] = {"external_id": e}
            obj.update({f: (None if as_null and x == "" else x) for f, x in sent.items()})
            if deleted:
                obj["deleted"] = "1"
            inc.append(Incoming(e, sent, deleted))
            lines.append(json.dumps(obj) + "\n")
        if not inc:
            return
        p = self.path(".ndjson")
        p.write_text("".join(lines), encoding="utf-8")
        expected = self.expect("incremental NDJSON: " + self.describe(inc) + " | "
                               + " ".join(x.strip() for x in lines),
                               records=inc, mode="incremental")
        self.run_real(expected, lambda: self.mirror.sync_file(SOURCE, p, mode="incremental"))

    @rule(rows=INC_ROWS)
    def incremental_api(self, rows: list[tuple[str, Any, bool]]) -> None:
        inc = [Incoming(e, self.values(v), deleted=d) for e, v, d in rows]
        expected = self.expect("incremental API: " + self.describe(inc), records=inc,
                               mode="incremental")
        self.run_real(expected, lambda: self.mirror.sync(
            SOURCE, [{"external_id": r.ext, **r.sent, "deleted": "1" if r.deleted else ""}
                     for r in inc], mode="incremental"))

    # ------------------------------------------------------------ invariants

    @invariant()
    def mirror_equals_model(self) -> None:
        want, got = self.model.view(), real_view(self.mirror)
        problems = diff_views(want, got)
        assert not problems, "\n".join([self.blame(), *problems])

    @invariant()
    def links_are_the_models(self) -> None:
        want = {c.ext: c.id for c in self.model.live() if c.source == SOURCE and c.ext}
        got = {c.external_id: c.id for c in self.mirror.contacts(source=SOURCE)
               if c.external_id is not None}
        assert got == want, f"links of {SOURCE}: model {want}, mirror {got}. {self.blame()}"

    @invariant()
    def feed_replays_to_the_table(self) -> None:
        assert replay(self.mirror.changes()) == table(self.mirror), (
            "the change feed replayed from seq 0 is not the contacts table. " + self.blame())


# In the suite: about 20 s (40 s under load) when it passes on this (shared, 2-core) machine. A
# failure shrinks one bug only (report_multiple_bugs=False) so that the shrunk
# example arrives within pytest's timeout; Hypothesis's database (.hypothesis/)
# replays it first on the next run.
DEFAULT_SETTINGS = settings(max_examples=100, stateful_step_count=25, deadline=None,
                            report_multiple_bugs=False,
                            suppress_health_check=[HealthCheck.too_slow,
                                                   HealthCheck.filter_too_much])


def machine_with(fixes: frozenset[int]) -> type[MirrorMachine]:
    return type("MirrorMachine", (MirrorMachine,), {"fixes": fixes})


# While it fails, Hypothesis shrinks for up to 5 minutes: let it finish the
# report rather than pytest's default timeout cut it short.
@pytest.mark.timeout(900)
def test_the_mirror_follows_the_model(request: pytest.FixtureRequest) -> None:
    """The stateful model test. `--hypothesis-profile=long` runs the nightly
    profile; `--model-legacy=1,2,3` switches the model back to today's
    behaviour for those defects of issue 12 (to tell which one a failure is)."""
    legacy = request.config.getoption("--model-legacy") or ""
    off = {int(x) for x in str(legacy).replace(" ", "").split(",") if x}
    profile = request.config.getoption("--hypothesis-profile", default=None)
    chosen = settings.get_profile(profile) if profile else DEFAULT_SETTINGS
    run_state_machine_as_test(lambda: machine_with(ALL_FIXES - off)(), settings=chosen)
