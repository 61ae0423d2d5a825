"""Organisations, locations and contact–customer links: mirrored entities of
their own, each with the source's id, a content hash and a local id.

Maps and hashes incoming records, plans create / update / restore / delete per
entity (pure), and has the store apply the plan in one run's transaction with
one feed entry per changed entity. `Mirror.entities` is the `EntityFeeds` part
at the end: a feed's run from records or an export file, the mirrored lists,
a contact's organisation. It never writes contacts, and its SQL is the store's.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from contactsync_agent import _core
from contactsync_agent.defaults import MASS_DELETE_LIMIT
from contactsync_agent.errors import (
    ConfigError,
    ContactSyncError,
    SafetyLimitError,
    SourceFormatError,
)
from contactsync_agent.infile import OwnFiles, open_input
from contactsync_agent.models import SyncReport
from contactsync_agent.rules import signed_hash
from contactsync_agent.store import RUN_COUNTS, Store, now_iso

_ADDRESS: dict[str, tuple[str, ...]] = {
    "email": ("email", "e-mail", "email address", "e-mail address"),
    "phone": ("phone", "telephone", "phone number", "business phone"),
    "street": ("street", "address", "street address", "address line 1", "address1"),
    "city": ("city", "suburb", "town", "locality"),
    "region": ("region", "state", "province", "county"),
    "postcode": ("postcode", "post code", "postal code", "zip", "zip code", "zipcode"),
    "country": ("country",),
    "notes": ("notes", "note", "comments", "comment"),
}
_DELETED = ("deleted", "_deleted", "is_deleted", "is deleted", "delete")
ROLES: tuple[str, ...] = ("bill_to", "sold_to", "ship_to", "correspondence")


@dataclass(frozen=True)
class EntitySpec:
    """How one kind of entity arrives (headings) and is stored (table, fields)."""

    kind: str
    table: str
    fields: tuple[str, ...]
    headings: dict[str, tuple[str, ...]]
    required: tuple[str, ...] = ()
    # Fields whose values are Y / N / NA flags (customer links' roles).
    flags: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.kind.replace("_", " ")


ORGANISATION = EntitySpec(
    kind="organisation", table="organisations",
    fields=("name", "website", "email", "phone", "street", "city", "region", "postcode",
            "country", "notes"),
    headings={
        "external_id": ("external_id", "id", "organisation id", "organization id", "company id",
                        "org id", "metadata"),
        "name": ("name", "organisation", "organization", "company", "company name",
                 "business name", "organisation name", "organization name"),
        "website": ("website", "web", "url", "web site"),
        **_ADDRESS,
        "deleted": _DELETED,
    },
)

LOCATION = EntitySpec(
    kind="location", table="locations",
    fields=("organisation_ref", "name", "email", "phone", "street", "city", "region",
            "postcode", "country", "notes"),
    headings={
        "external_id": ("external_id", "id", "location id", "site id", "branch id", "metadata"),
        "organisation_ref": ("organisation_ref", "organisation id", "organization id",
                             "company id", "org id"),
        "name": ("name", "location", "location name", "site", "site name", "branch"),
        **_ADDRESS,
        "deleted": _DELETED,
    },
)

CUSTOMER_LINK = EntitySpec(
    kind="customer_link", table="contact_customers",
    fields=("contact_ref", "customer", "customer_name", *ROLES),
    headings={
        "external_id": ("external_id", "link id", "metadata"),
        "contact_ref": ("contact_ref", "contact id", "contactid", "contact", "client id"),
        "customer": ("customer", "customer id", "customerid", "cust id"),
        "customer_name": ("customer_name", "customer name"),
        "bill_to": ("bill_to", "bill to", "billto"),
        "sold_to": ("sold_to", "sold to", "soldto"),
        "ship_to": ("ship_to", "ship to", "shipto"),
        "correspondence": ("correspondence", "correspond", "correspondence flag"),
        "deleted": _DELETED,
    },
    required=("contact_ref", "customer"),
    flags=ROLES,
)

SPECS: dict[str, EntitySpec] = {s.kind: s for s in (ORGANISATION, LOCATION, CUSTOMER_LINK)}

_YES = {"y", "yes", "true", "1", "t", "x"}
_NO = {"", "n", "no", "false", "0", "f"}
_NA = {"na", "n/a", "n.a.", "not applicable", "-"}
_TRUTHY = {"1", "true", "yes", "y", "t", "x", "deleted", "delete", "d", "removed"}


def flag_value(raw: str) -> str | None:
    """A role flag as 'Y', 'N' or 'NA' (the customer is not of that type); None if unreadable."""
    v = raw.strip().lower()
    if v in _YES:
        return "Y"
    if v in _NO:
        return "N"
    if v in _NA:
        return "NA"
    return None


def build_table(spec: EntitySpec, overrides: Mapping[str, str] | None,
                where: str) -> dict[str, str]:
    """Lower-cased heading -> target for one entity kind, with a source's own entries on top."""
    table: dict[str, str] = {}
    for target, headings in spec.headings.items():
        for h in headings:
            table.setdefault(h.lower(), target)
    allowed = {*spec.fields, "external_id", "deleted", "extra", "ignore"}
    for column, target in (overrides or {}).items():
        if target not in allowed:
            raise ConfigError(
                f"unknown target {target!r} for column {column!r} of {spec.label}s "
                f"(one of: {', '.join(sorted(allowed))})", key=f"{where}.{column}")
        table[column.strip().lower()] = target
    return table


# One encoder for every payload: json.dumps with non-default options builds a new one per call.
_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True)
_CANON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def entity_hash(spec: EntitySpec, values: Mapping[str, str], extra: Mapping[str, str]) -> int:
    """XXH3-64 (signed) over the canonical serialisation: compact JSON (UTF-8, no
    ASCII escaping) of [[field values in the spec's order], [[name, value] of the
    extra columns sorted by name]]. The core writes and hashes the bytes; text
    it cannot take (a lone surrogate from a JSON file) is hashed here, over
    `entity_canonical`, the same serialisation in Python (a test pins both)."""
    vals = [values[f] for f in spec.fields]
    try:
        return _core.entity_hash(vals, list(extra.items()))
    except UnicodeEncodeError:
        return signed_hash(xxhash.xxh3_64_intdigest(entity_canonical(spec, values, extra)))


def entity_canonical(spec: EntitySpec, values: Mapping[str, str],
                     extra: Mapping[str, str]) -> bytes:
    return _CANON.encode([[values[f] for f in spec.fields], sorted(extra.items())]).encode(
        "utf-8", "surrogatepass")


def _dump(value: Any) -> str:
    return _JSON.encode(value) if value else "{}"


@dataclass(slots=True)
class Incoming:
    line: int
    external_id: str
    values: dict[str, str]
    extra: dict[str, str]
    deleted: bool
    hash: int


_EXTRA, _IGNORE, _EXT, _DEL, _FLAG, _FIELD, _NOTES = range(7)


def _as_text(raw: Any) -> str:
    if raw is None:
        return ""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)


def map_records(
    spec: EntitySpec, records: Iterable[Mapping[str, Any]], table: Mapping[str, str],
) -> tuple[list[Incoming], list[tuple[int, str, str]]]:
    """(mapped records, rejected (line, reason, raw)) — the first column for a target wins."""
    out: list[Incoming] = []
    rejected: list[tuple[int, str, str]] = []
    plans: dict[tuple[str, ...], list[tuple[Any, int, str]]] = {}
    clean = _core.clean_value
    hash_of = _core.entity_hash
    fields = spec.fields
    flags = spec.flags
    for line, rec in enumerate(records, start=1):
        keys = tuple(rec)
        plan = plans.get(keys)
        if plan is None:
            plan, taken = [], set()
            for k in keys:
                t = table.get(str(k).strip().lstrip("\ufeff").lower(), "extra")
                if t not in ("extra", "ignore"):
                    if t in taken:
                        t = "extra"
                    taken.add(t)
                code = {"extra": _EXTRA, "ignore": _IGNORE, "external_id": _EXT,
                        "deleted": _DEL}.get(t)
                if code is None:
                    code = _FLAG if t in flags else _NOTES if t == "notes" else _FIELD
                plan.append((k, code, t))
            plans[keys] = plan
        values = dict.fromkeys(fields, "")
        extra: dict[str, str] = {}
        ext = ""
        deleted = False
        problem = ""
        for k, code, t in plan:
            raw = rec[k]
            v = raw if type(raw) is str else _as_text(raw)
            if "\0" in v:
                problem = f"NUL byte in column {k!r}"
                break
            if code == _FIELD:
                values[t] = clean(v, False)
            elif code == _EXTRA:
                if v:
                    extra[str(k)] = v
            elif code == _EXT:
                ext = clean(v, False)
            elif code == _NOTES:
                values[t] = clean(v, True)
            elif code == _DEL:
                deleted = v.strip().lower() in _TRUTHY
            elif code == _FLAG:
                f = flag_value(v)
                if f is None:
                    problem = f"{t}: {v!r} is not Y, N or NA"
                    break
                values[t] = f
        if not problem:
            if flags:
                for f in flags:
                    values[f] = values[f] or "N"
            missing = [f for f in spec.required if not values[f]]
            if missing and not (deleted and ext):
                problem = "empty " + " and ".join(f.replace("_", " ") for f in missing)
            elif not ext and spec.kind == "customer_link":
                # A link is known by its contact and customer when the source has no link id.
                ext = f"{values['contact_ref']}|{values['customer']}"
            elif not ext:
                problem = "empty external id"
        if problem:
            raw_text = ", ".join(f"{k}={rec[k]}" for k in keys)
            rejected.append((line, problem, raw_text[:2000]))
            continue
        try:
            h = hash_of([values[f] for f in fields], list(extra.items()))
        except UnicodeEncodeError:
            h = entity_hash(spec, values, extra)
        out.append(Incoming(line, ext, values, extra, deleted, h))
    return out, rejected


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@dataclass(frozen=True)
class CsvFile:
    """An entity export in CSV, handed to the core whole (see `map_csv`). `name`:
    the file as errors name it, when `path` is a /proc/self/fd path (infile.py)."""

    path: str
    name: str | None = None


def read_csv(spec: EntitySpec, path: str, table: Mapping[str, str],
             name: str | None = None) -> _core.EntityFile:
    """A CSV file read, mapped, cleaned and hashed by the core, off the GIL and
    in parallel (UTF-8 or Windows-1252, any delimiter); lines are the file's."""
    try:
        return _core.read_entity_csv(
            path, dict(table), list(spec.fields), list(spec.flags), list(spec.required),
            spec.kind == "customer_link")
    except SourceFormatError as e:
        if name is None:
            raise
        raise SourceFormatError(name, e.line, e.column, e.message) from None
    except OSError as e:
        if name is None:
            raise
        raise OSError(e.errno, f"cannot read {name}: {e.strerror or e}") from None


def _incoming(spec: EntitySpec, f: _core.EntityFile) -> list[Incoming]:
    fields = spec.fields
    return [Incoming(line, ext, dict(zip(fields, values, strict=True)), dict(extra), deleted, h)
            for line, ext, values, extra, deleted, h in f.records()]


def map_csv(spec: EntitySpec, path: str, table: Mapping[str, str],
            ) -> tuple[list[Incoming], list[tuple[int, str, str]]]:
    """`map_records` for a CSV file, by the core."""
    f = read_csv(spec, path, table)
    return _incoming(spec, f), f.rejected()


@dataclass
class EntityPlan:
    creates: list[Incoming] = field(default_factory=list)
    restores: list[tuple[int, Incoming]] = field(default_factory=list)
    updates: list[tuple[int, Incoming]] = field(default_factory=list)
    deletes: list[int] = field(default_factory=list)
    unchanged: int = 0
    delete_unknown: int = 0
    duplicates: list[tuple[int, str, str]] = field(default_factory=list)


def plan_entities(
    incoming: list[Incoming], index: Mapping[str, tuple[int, int, str | None]], mode: str,
) -> EntityPlan:
    """Create / update / restore / delete decisions against the source's rows (pure)."""
    plan = EntityPlan()
    seen: dict[str, int] = {}
    for rec in incoming:
        first = seen.get(rec.external_id)
        if first is not None:
            plan.duplicates.append(
                (rec.line, f"duplicate external id {rec.external_id!r} (first seen at line "
                 f"{first})", ""))
            continue
        seen[rec.external_id] = rec.line
        have = index.get(rec.external_id)
        if rec.deleted:
            if have is None or have[2] is not None:
                plan.delete_unknown += have is None
            else:
                plan.deletes.append(have[0])
            continue
        if have is None:
            plan.creates.append(rec)
        elif have[2] is not None:
            plan.restores.append((have[0], rec))
        elif have[1] != rec.hash:
            plan.updates.append((have[0], rec))
        else:
            plan.unchanged += 1
    if mode == "full":
        plan.deletes.extend(
            i for e, (i, _, d) in index.items() if d is None and e not in seen)
    return plan


def _row_values(spec: EntitySpec, rec: Incoming) -> dict[str, Any]:
    return {**rec.values, "extra": _dump(rec.extra), "hash": rec.hash}


def _diff(spec: EntitySpec, cur: Mapping[str, Any], rec: Incoming) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for f in spec.fields:
        if (cur.get(f) or "") != rec.values[f]:
            out[f] = [cur.get(f) or "", rec.values[f]]
    cur_x = json.loads(cur.get("extra") or "{}")
    if cur_x != rec.extra:
        out["extra"] = [cur_x, rec.extra]
    return out


def _created_payload(spec: EntitySpec, source: str, rec: Incoming) -> dict[str, list[Any]]:
    feed: dict[str, list[Any]] = {"source": [None, source], "external_id": [None, rec.external_id]}
    feed.update({f: [None, rec.values[f]] for f in spec.fields if rec.values[f]})
    if rec.extra:
        feed["extra"] = [None, rec.extra]
    return feed


def run_entities(
    store: Store, spec: EntitySpec, source: str,
    records: Iterable[Mapping[str, Any]] | CsvFile, *,
    mode: str = "full", mapping: Mapping[str, str] | None = None, origin: str = "api",
    mass_delete_limit: float = MASS_DELETE_LIMIT, allow_mass_delete: bool = False,
) -> SyncReport:
    """One run of an entity feed: full (absent ones are deleted) or incremental
    (explicit deletes by a `deleted` column); atomic, recorded in `runs`."""
    if mode not in ("full", "incremental"):
        raise ContactSyncError(f"mode must be 'full' or 'incremental', not {mode!r}")
    if store.readonly:
        raise ContactSyncError("the mirror is open read-only; sync needs the writer")
    table = build_table(spec, mapping, f"sources.{source}.{spec.table}.mapping")
    started = time.monotonic()
    run_id = store.runs.begin(source, mode, origin, None, allow_mass_delete,
                             entity_type=spec.kind)
    counts = dict.fromkeys(RUN_COUNTS, 0)
    at = now_iso()
    try:
        # Tens of thousands of short-lived records without cycles: the cyclic
        # GC would only walk them again and again.
        with store.transaction(), _gc_paused():
            index = store.entities.index(spec.table, source)
            first_file: _core.EntityFile | None = None
            if isinstance(records, CsvFile):
                f = read_csv(spec, records.path, table, records.name)
                if not index:  # a first import: every record is new
                    first_file = f
                incoming, rejected = (([], []) if first_file is not None
                                      else (_incoming(spec, f), f.rejected()))
            else:
                incoming, rejected = map_records(spec, records, table)
            if first_file is not None:
                rejected = _create_all(store, spec, source, first_file, run_id, at, counts)
            else:
                plan = plan_entities(incoming, index, mode)
                rejected += plan.duplicates
                counts["records"] = len(incoming) + len(rejected) - len(plan.duplicates)
                live = sum(1 for _, _, d in index.values() if d is None)
                _guard(spec, source, mode, len(plan.deletes), live, len(incoming),
                       mass_delete_limit, allow_mass_delete)
                _apply(store, spec, source, plan, run_id, at)
                counts.update(created=len(plan.creates) + len(plan.restores),
                              updated=len(plan.updates), unchanged=plan.unchanged,
                              deleted=len(plan.deletes))
            counts["rejected"] = len(rejected)
            if rejected:
                rejected.sort()
                store.review.add_quarantine(rejected, run_id=run_id, source=source, file=origin,
                                            at=at)
            duration = int((time.monotonic() - started) * 1000)
            store.runs.finish(run_id, "ok", counts, error=None, duration_ms=duration)
    except BaseException as exc:
        status = "refused" if isinstance(exc, SafetyLimitError) else "failed"
        try:
            with store.transaction():
                store.runs.finish(run_id, status, {}, error=str(exc) or type(exc).__name__,
                                 duration_ms=int((time.monotonic() - started) * 1000))
        except Exception:  # the database itself may be what failed
            pass
        raise
    return SyncReport(run_id=run_id, source=source, mode=mode, counts=counts,
                      rejected=[(ln, r) for ln, r, _ in rejected[:1000]],
                      duration_s=time.monotonic() - started)


def _create_all(store: Store, spec: EntitySpec, source: str, f: _core.EntityFile, run_id: int,
                at: str, counts: dict[str, int]) -> list[tuple[int, str, str]]:
    """A file into a table with no rows of the source: what `plan_entities`
    and `_apply` do then (every record a create, repeats rejected, deletes of
    unknown ids ignored), with the rows made by the core. Returns the rejected."""
    n, duplicates, deleted = f.create_plan()
    rejected = f.rejected()
    counts["records"] = n + len(duplicates) + deleted + len(rejected)
    if n:
        base = store.allocate_ids(spec.table, n)
        store.entities.insert(spec.table, ("id", "source", "external_id", *spec.fields,
                                           "extra", "hash"), f.create_rows(base, source), at)
        store.feed.add_entity_create_changes(spec.table, spec.kind, spec.fields, base, n, run_id,
                                        "created", f"created: new {spec.label} in the source",
                                        at)
    counts["created"] = n
    return rejected + duplicates


def _guard(spec: EntitySpec, source: str, mode: str, would: int, live: int, incoming: int,
           limit: float, allowed: bool) -> None:
    if mode != "full" or allowed or live == 0 or would == 0:
        return
    if incoming == 0 or would / live > limit:
        raise SafetyLimitError(
            f"refused: the {spec.label} snapshot of source {source!r} would delete {would} of "
            f"{live} {spec.label}s ({would / live:.0%}, over the {limit:.0%} limit); nothing was "
            "changed (re-run with --allow-mass-delete to confirm)",
            would_delete=would, total=live, limit=limit)


def _apply(store: Store, spec: EntitySpec, source: str, plan: EntityPlan, run_id: int,
           at: str) -> None:
    kind = spec.kind
    if plan.creates:
        base = store.allocate_ids(spec.table, len(plan.creates))
        cols = ("id", "source", "external_id", *spec.fields, "extra", "hash")
        fields = spec.fields
        dump = _JSON.encode
        store.entities.insert(spec.table, cols, [
            (base + k, source, r.external_id, *[r.values[f] for f in fields],
             dump(r.extra) if r.extra else "{}", r.hash)
            for k, r in enumerate(plan.creates)], at)
        store.feed.add_entity_create_changes(
            spec.table, kind, spec.fields, base, len(plan.creates), run_id, "created",
            f"created: new {spec.label} in the source", at)
    if plan.restores:
        for eid, r in plan.restores:
            store.entities.update(spec.table, eid, {**_row_values(spec, r), "deleted_at": None}, at)
        store.feed.add_entity_changes(kind, (
            (eid, "create", _created_payload(spec, source, r)) for eid, r in plan.restores),
            run_id, "restored", f"restored: the {spec.label} is back in the source", at)
    if plan.updates:
        current = store.entities.rows(spec.table, [eid for eid, _ in plan.updates])
        feed = []
        for eid, r in plan.updates:
            diff = _diff(spec, current[eid], r)
            store.entities.update(spec.table, eid, _row_values(spec, r), at)
            if diff:
                feed.append((eid, "update", diff))
        store.feed.add_entity_changes(kind, feed, run_id, "updated_external_id",
                                 "updated: external id matched", at)
    if plan.deletes:
        for eid in plan.deletes:
            store.entities.update(spec.table, eid, {"deleted_at": at}, at)
        store.feed.add_entity_changes(kind, ((eid, "delete", {}) for eid in plan.deletes), run_id,
                                 "deleted", "deleted: removed from the source", at)


# ---------------------------------------------------------------- the Mirror's part

ENTITY_FORMATS = {".csv": "csv", ".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson"}


def read_records(path: str | os.PathLike[str], fmt: str | None = None,
                 encoding: str = "utf-8-sig") -> Iterator[dict[str, Any]]:
    """Records of an entity export file (CSV with a header, a JSON array, or NDJSON)."""
    p = Path(path)
    kind = (fmt or ENTITY_FORMATS.get(p.suffix.lower(), "")).lower()
    if kind == "csv":
        with p.open(newline="", encoding=encoding) as fh:
            yield from csv.DictReader(fh)
    elif kind == "json":
        data = json.loads(p.read_text(encoding=encoding))
        if not isinstance(data, list):
            raise ContactSyncError(f"{p}: expected a JSON array of records")
        yield from data
    elif kind == "ndjson":
        with p.open(encoding=encoding) as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)
    else:
        raise ContactSyncError(f"{p}: cannot tell the format; pass csv, json or ndjson")


def decode_extra(row: dict[str, Any]) -> dict[str, Any]:
    """An entity row with its `extra` JSON decoded."""
    if isinstance(row.get("extra"), str):
        row["extra"] = json.loads(row["extra"] or "{}")
    return row


class EntityFeeds:
    """`Mirror.entities`: the entity feeds' runs (records or a file), the
    mirrored organisations and locations, and a contact's organisation."""

    def __init__(self, store: Store, own_files: OwnFiles) -> None:
        self._store = store
        #: The database's own files: never opened as an export (see infile.py).
        self._own_files = own_files

    def sync(
        self, kind: str, source: str,
        records: Iterable[Mapping[str, Any]] | CsvFile, *,
        mode: str = "full", mapping: Mapping[str, str] | None = None,
        allow_mass_delete: bool = False, mass_delete_limit: float | None = None,
        origin: str = "api",
    ) -> SyncReport:
        """One run of an entity feed: `kind` is organisation, location or customer_link."""
        spec = SPECS.get(kind.rstrip("s").replace("-", "_"))
        if spec is None:
            raise ContactSyncError(f"unknown entity kind {kind!r} "
                                   f"(one of {', '.join(SPECS)})")
        with self._store.writing():  # one writer from the run row to the commit
            return run_entities(
                self._store, spec, source, records, mode=mode, mapping=mapping, origin=origin,
                allow_mass_delete=allow_mass_delete,
                mass_delete_limit=(MASS_DELETE_LIMIT if mass_delete_limit is None
                                   else mass_delete_limit))

    def sync_organisations(self, source: str, records: Iterable[Mapping[str, Any]], *,
                           mode: str = "full", **kw: Any) -> SyncReport:
        """Organisations of `source` (id, name, website, e-mail, phone, address, notes)."""
        return self.sync("organisation", source, records, mode=mode, **kw)

    def sync_locations(self, source: str, records: Iterable[Mapping[str, Any]], *,
                       mode: str = "full", **kw: Any) -> SyncReport:
        """Locations of `source`, each with the source's id of its organisation."""
        return self.sync("location", source, records, mode=mode, **kw)

    def sync_customer_links(self, source: str, records: Iterable[Mapping[str, Any]], *,
                            mode: str = "full", **kw: Any) -> SyncReport:
        """Contact–customer links of `source` with role flags Y / N / NA."""
        return self.sync("customer_link", source, records, mode=mode, **kw)

    def sync_file(self, kind: str, source: str, path: str | os.PathLike[str], *,
                  format: str | None = None, max_file_bytes: int = 2 << 30,
                  **kw: Any) -> SyncReport:
        """One run of an entity feed from an export file (CSV, JSON array or NDJSON)."""
        # Opened once (never one of the mirror's own files) and read through that
        # descriptor; errors and the run name the file escaped (infile.py).
        with open_input(path, own=self._own_files) as f:
            if f.size > max_file_bytes:  # the readers hold a file in memory while they map it
                raise SafetyLimitError(f"{f.shown}: {f.size} bytes is over the maximum file "
                                       f"size of {max_file_bytes} bytes")
            kind_of_file = (format or ENTITY_FORMATS.get(f.path.suffix.lower(), "")).lower()
            if kind_of_file not in ("csv", "json", "ndjson"):
                raise ContactSyncError(f"{f.shown}: cannot tell the format; "
                                       "pass csv, json or ndjson")
            # CSV is read, mapped and hashed by the core; JSON and NDJSON here.
            records: Iterable[Mapping[str, Any]] | CsvFile = (
                CsvFile(f.reader_path(), f.shown) if kind_of_file == "csv"
                else read_records(f.reader_path(), kind_of_file))
            return self.sync(kind, source, records, origin=f.shown, **kw)

    def organisations(self, source: str | None = None,
                      include_deleted: bool = False) -> list[dict[str, Any]]:
        return self._entity_list("organisations", source, include_deleted)

    def locations(self, source: str | None = None,
                  include_deleted: bool = False) -> list[dict[str, Any]]:
        return self._entity_list("locations", source, include_deleted)

    def _entity_list(self, table: str, source: str | None,
                     include_deleted: bool) -> list[dict[str, Any]]:
        return [decode_extra(r)
                for r in self._store.entities.list_rows(table, source, include_deleted)]

    def organisation_of(self, contact_id: int) -> dict[str, Any] | None:
        """The contact's organisation, location and position (from the view), if linked."""
        d = self._store.entities.organisation_view(contact_id)
        if d is None:
            return None
        if d["organisation_id"] is None and d["location_id"] is None and not d["position"]:
            return None
        keep = ("position",)
        return {k: v for k, v in d.items()
                if k in keep or k.startswith(("organisation_", "location_"))}
