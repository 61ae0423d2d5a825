"""Runs of a configured source: one sync of a sql, http or vCard connector, its
high-water mark, and the preview of how a sample maps.

This is the one place that runs a connector against the mirror: `Mirror.sync_file`
(for a vCard file: the one vCard dispatch), the agent's jobs and `runner.pull_source`
all come here. It sits above both the connectors (`sources/`, which only read
their own system and know nothing of the mirror) and the sync (`sync.py`); it
decides nothing about contacts (that is `sync.py` and `rules.py`), and writes
only through the store: the run's rows through `sync.run_sync`, the mark through
`store.set_meta`. It must not import `mirror` (the mirror imports it): a run takes
anything with the mirror's `store`, `region` and `own_files` (`SyncTarget`).

Where the high-water mark is written
------------------------------------
`sync.run_sync` reads the records *inside* the run's transaction (it pulls the
batches in its `with store.transaction()`). So the records iterator handed to it
ends by writing the new mark into `meta` right after the last row: that write is
part of the run's transaction and commits or rolls back with it, and a failure
anywhere in the run (a mass-deletion refusal, a rule error, a crash, kill -9)
leaves the old mark. Should a future run_sync read the records outside its
transaction, the mark is written in a small transaction of its own after
run_sync returns instead; a crash between the two then only means the next run
re-reads some rows, which costs nothing since unchanged hashes are not written.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from contactsync_agent import _core, sync
from contactsync_agent.config import SourceConfig
from contactsync_agent.defaults import MASS_DELETE_LIMIT
from contactsync_agent.errors import ContactSyncError, SafetyLimitError
from contactsync_agent.infile import InputFile, OwnFiles
from contactsync_agent.mapping import FIELDS, build_mapping
from contactsync_agent.models import SyncReport
from contactsync_agent.sources import Connector, VCardSource, open_connector
from contactsync_agent.sources.base import digest
from contactsync_agent.store import Store

__all__ = [
    "MappedField",
    "SampleRecord",
    "SyncTarget",
    "load_mark",
    "map_record",
    "mark_json",
    "mark_key",
    "preview_source",
    "stored_mark",
    "sync_source",
    "sync_vcard_file",
]

log = logging.getLogger("contactsync_agent.sources")


class SyncTarget(Protocol):
    """What a run needs of the mirror (`Mirror` has it): its store, the default
    phone region, and its own files (never opened as an export)."""

    store: Store
    region: str
    own_files: OwnFiles

    def sync_options(self, allow_mass_delete: bool, mass_delete_limit: float | None,
                     chunk_size: int | None, source: str | None = None,
                     ownership: Mapping[str, str] | None = None,
                     unique: Sequence[str] | None = None, forced: bool = False, *,
                     allow_column_drop: bool = False, dry_run: bool = False
                     ) -> sync.SyncOptions: ...


# ------------------------------------------------------------------ marks


def mark_key(source: str) -> str:
    return f"source.{source}.mark"


def load_mark(store: Store, connector: Connector) -> str | None:
    """The stored mark of this source, or None (first run, or the query changed)."""
    raw = store.get_meta(mark_key(connector.name))
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        value, fp = data["value"], data["fingerprint"]
    except (ValueError, KeyError, TypeError):
        log.warning("source %s: ignoring an unreadable high-water mark", connector.name)
        return None
    if fp != digest(connector.fingerprint()):
        log.info(
            "source %s: its query changed since the mark was stored; reading from the start",
            connector.name,
        )
        return None
    return None if value is None else str(value)


def mark_json(connector: Connector, value: str) -> str:
    return json.dumps({"value": value, "fingerprint": digest(connector.fingerprint())})


def stored_mark(store: Store, source: str) -> str | None:
    """The raw high-water mark of a source as stored in `meta` (None: none yet)."""
    return store.get_meta(mark_key(source))


# ------------------------------------------------------------------ sync


_F = TypeVar("_F", bound=Callable[..., SyncReport])


def _one_writer(fn: _F) -> _F:
    """Holds the mirror's writer lock for the whole call: from the stored mark
    read, through the run, to the mark written (no other write in between)."""

    @functools.wraps(fn)
    def wrapper(mirror: SyncTarget, *args: Any, **kwargs: Any) -> SyncReport:
        with mirror.store.writing():
            return fn(mirror, *args, **kwargs)

    return cast(_F, wrapper)


@_one_writer
def sync_source(
    mirror: SyncTarget,
    cfg: SourceConfig,
    *,
    mode: str | None = None,
    path: str | Path | InputFile | None = None,
    allow_mass_delete: bool = False,
    progress: sync.ProgressFn | None = None,
    connector: Connector | None = None,
    forced: bool = False,
    dry_run: bool = False,
    ownership: Mapping[str, str] | None = None,
    unique: Sequence[str] | None = None,
    allow_column_drop: bool = False,
) -> SyncReport:
    """One run of a sql, http or vCard source; the mark advances only if it commits.

    `connector` lets a caller keep the instance (and read its `fetched` counter).
    `ownership`, `unique`: the source's field ownership and unique fields, recorded
    as its policy (a configured source passes its config's); None: the recorded ones.
    `dry_run`: nothing is written (the mark does not move either).
    A vCard file is opened once (`infile.open_input`, never one of the mirror's
    own files) and read, hashed and named from that descriptor; `path` may be an
    `InputFile` already opened.
    """
    conn = connector or open_connector(cfg, path=path)
    mode = mode or cfg.mode
    if mode not in ("full", "incremental"):
        raise ContactSyncError(f"mode must be 'full' or 'incremental', not {mode!r}")
    store = mirror.store
    # The mirror's thresholds and the source's policy, as for a file's run.
    opts = mirror.sync_options(allow_mass_delete, cfg.mass_delete_limit, cfg.chunk_size or None,
                               cfg.name, ownership, unique, forced, dry_run=dry_run,
                               allow_column_drop=allow_column_drop)
    table = build_mapping(conn.mapping(), where=f"sources.{cfg.name}.mapping")
    mark = load_mark(store, conn) if mode == "incremental" else None
    written = False

    def records() -> Iterator[dict[str, Any]]:
        nonlocal written
        yield from conn.read(mode, mark)
        if conn.next_mark is not None and conn.next_mark != mark and store.conn.in_transaction:
            # Inside the run's transaction (see the module docstring).
            store.set_meta(mark_key(conn.name), mark_json(conn, conn.next_mark))
            written = True

    origin_hash = None
    try:
        if isinstance(conn, VCardSource):
            # Pinned: opened once, so a folder's newest file cannot change between
            # hashing and reading.
            f = conn.open(own=mirror.own_files)
            conn.path = f.path
            if f.size > cfg.max_file_bytes:
                raise SafetyLimitError(
                    f"{f.shown}: {f.size} bytes is over the maximum file size of "
                    f"{cfg.max_file_bytes} bytes"
                )
            origin_hash = f.digest()
        report = sync.run_sync(
            store,
            cfg.name,
            sync.dict_batches(records(), table, opts, partial=mode == "incremental"),
            mode=mode,
            options=opts,
            origin=conn.origin,
            origin_hash=origin_hash,
            progress=progress,
            dry_run=dry_run,
        )
    finally:
        conn.close()
    if dry_run:
        return report
    if not written and conn.next_mark is not None and conn.next_mark != mark:
        with store.transaction():
            store.set_meta(mark_key(conn.name), mark_json(conn, conn.next_mark))
    return report


def sync_vcard_file(
    mirror: SyncTarget,
    source: str,
    path: str | Path | InputFile,
    *,
    mode: str = "full",
    mapping: dict[str, str] | None = None,
    allow_mass_delete: bool = False,
    mass_delete_limit: float = MASS_DELETE_LIMIT,
    progress: sync.ProgressFn | None = None,
    forced: bool = False,
    dry_run: bool = False,
    chunk_size: int | None = None,
    allow_column_drop: bool = False,
) -> SyncReport:
    """`Mirror.sync_file` for a vCard file (3.0 or 4.0, one or many cards); `path`
    may be an `InputFile` already opened. `chunk_size`: records per batch (the
    source's setting, when it has one)."""
    cfg = SourceConfig(
        name=source,
        kind="folder",
        format="vcard",
        mode=mode,
        mapping=dict(mapping or {}),
        mass_delete_limit=mass_delete_limit,
        chunk_size=chunk_size,
    )
    return sync_source(
        mirror, cfg, path=path, allow_mass_delete=allow_mass_delete, progress=progress,
        forced=forced, dry_run=dry_run, allow_column_drop=allow_column_drop,
    )


# ------------------------------------------------------------------ preview


@dataclass
class MappedField:
    source_field: str
    target: str  # a canonical field, external_id, name, deleted, extra or ignore
    value: str  # as the source gave it
    canonical: str  # as the mirror would store it ("" for extra / ignore)
    note: str = ""


@dataclass
class SampleRecord:
    number: int
    external_id: str
    fields: list[MappedField] = field(default_factory=list)
    problem: str = ""  # why the core would quarantine it

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "external_id": self.external_id,
            "problem": self.problem,
            "fields": [f.__dict__ for f in self.fields],
        }


def map_record(
    number: int, record: dict[str, Any], table: dict[str, str], region: str
) -> SampleRecord:
    """How the core maps one record: each column's target by the core's own mapping
    (`_core.map_columns`: the first column for a target wins, the rest go to `extra`,
    as in the Rust reader); values cleaned as the mirror stores them."""
    out = SampleRecord(number=number, external_id="")
    # LINE_KEY is where the record is in its file, not a field.
    columns = [c for c in record if c != _core.LINE_KEY]
    for column, (mapped, target) in zip(
        columns, _core.map_columns(columns, table), strict=True
    ):
        raw = record[column]
        value = (
            ""
            if raw is None
            else ("true" if raw is True else "false" if raw is False else str(raw))
        )
        note = f"{mapped} already given by an earlier field" if target != mapped else ""
        canonical = ""
        if target in FIELDS:
            canonical = _core.clean_value(value, target == "notes")
            if target in ("phone", "mobile") and canonical:
                e164 = _core.normalize_phone(canonical, region)
                note = f"E.164 {e164}" if e164 else "not a phone number here"
        elif target == "external_id":
            canonical = _core.clean_value(value, False)
            out.external_id = canonical
        elif target == "name":
            canonical = _core.clean_value(value, False)
            given, family = _core.split_name(canonical)
            note = (
                f"display name; split as given {given!r}, family {family!r} if the record "
                "has no given or family name field"
            )
        elif target == "extra" and not value:
            continue  # the core keeps no empty extras
        elif target in ("deleted", "extra"):
            canonical = value
        out.fields.append(MappedField(column, target, value, canonical, note))
    if not out.external_id:
        out.problem = "empty external id: the row would be quarantined"
    return out


def preview_source(
    cfg: SourceConfig, *, limit: int = 10, region: str = "AU", path: str | Path | None = None
) -> tuple[list[SampleRecord], list[str]]:
    """The first `limit` records of a source and how each maps; writes nothing.
    Also returns warnings: mapping entries naming a field no sampled record has."""
    conn = open_connector(cfg, path=path)
    table = build_mapping(conn.mapping(), where=f"sources.{cfg.name}.mapping")
    sample: list[SampleRecord] = []
    seen: set[str] = set()
    reader = conn.read("full", None)
    try:
        for n, record in enumerate(reader, start=1):
            seen.update(k.strip().lower() for k in record)
            sample.append(map_record(n, record, table, region))
            if n >= limit:
                break
    finally:
        reader.close()
        conn.close()
    warnings = [
        f"sources.{cfg.name}.mapping.{f}: no sampled record has a field {f!r}"
        for f in cfg.mapping
        if f.strip().lower() not in seen
    ]
    return sample, warnings
