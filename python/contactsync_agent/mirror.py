"""The library's front door: `Mirror.open(path)` and everything a user does with it.

Every CLI command is a thin call into this class. Contacts, syncs, the change
feed, activities and runs are its own methods; the rest are named parts, plain
attributes each of one concept's class: `entities` (entity feeds, entities.py),
`review` (the review queue, review.py), `access` (customer access, access.py),
`ownership` (source policies and local edits, ownership.py), `console` (the
web console's bounded reads, console.py); `export` writes
the full export (export.py). It owns one `Store` (whose parts run every SQL
statement: none lives here) and never decides a sync itself (that is `sync.py`
and `rules.py`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import platformdirs

from contactsync_agent import _core, export, maintenance, rules, sync
from contactsync_agent.access import Access
from contactsync_agent.console import Console
from contactsync_agent.defaults import MASS_DELETE_LIMIT, REVIEW_THRESHOLD
from contactsync_agent.entities import EntityFeeds
from contactsync_agent.errors import (
    ContactSyncError,
    NotFoundError,
    SafetyLimitError,
    SourceFormatError,
)
from contactsync_agent.infile import (
    BLANK_PROBE,
    InputFile,
    OwnFiles,
    fd_digest,
    is_blank,
    open_input,
)
from contactsync_agent.mapping import FIELDS, build_mapping
from contactsync_agent.models import Activity, Change, Contact, SyncReport
from contactsync_agent.ownership import Ownership
from contactsync_agent.review import ReviewQueue
from contactsync_agent.safetext import escape_name
from contactsync_agent.store import CONTACT_COLUMNS, DEFAULT_WRITE_WAIT, Store, now_iso
from contactsync_agent.sync import ProgressFn

APP = "contactsync-agent"
FORMATS = {".csv": "csv", ".txt": "csv", ".tsv": "csv", ".json": "json", ".ndjson": "ndjson",
           ".jsonl": "ndjson", ".vcf": "vcard", ".vcard": "vcard"}
DEFAULT_MAX_FILE_BYTES = 2 << 30


def default_db_path() -> Path:
    """`CONTACTSYNC_DB`, else `mirror.db` in the platform's user data directory."""
    env = os.environ.get("CONTACTSYNC_DB")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir(APP, appauthor=False)) / "mirror.db"


def file_digest(path: str | os.PathLike[str]) -> str:
    """XXH3-128 of a file's bytes, by its path (`infile.fd_digest`)."""
    with open(path, "rb") as f:
        return fd_digest(f.fileno())


def format_for(path: str | os.PathLike[str]) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ContactSyncError(
            f"{escape_name(path)}: cannot tell the format from the file name; "
            "pass format= (csv, json, ndjson)"
        )
    return fmt


class Mirror:
    """A local mirror database. Open it read-write (one writer, locked) or read-only.

    Its parts: `m.entities` (organisations, locations, customer links),
    `m.review` (the review queue), `m.access` (may a contact act for a
    customer), `m.ownership` (source policies, local edits), `m.console`
    (review pages, runs of the last days, contact search, a contact's feed)."""

    def __init__(self, store: Store, *, region: str = "AU",
                 review_threshold: float = REVIEW_THRESHOLD,
                 auto_link_threshold: float | None = None) -> None:
        self.store = store
        #: The database's own files: never opened as an export (see infile.py).
        self.own_files = OwnFiles(store.path)
        self.region = region
        self.review_threshold = review_threshold
        self.auto_link_threshold = auto_link_threshold
        #: Organisations, locations and contact–customer links: feeds and lists.
        self.entities = EntityFeeds(store, self.own_files)
        #: The review queue: candidate matches a person accepts or rejects.
        self.review = ReviewQueue(store, region)
        #: Customer access: may a contact act for a customer in a role.
        self.access = Access(store)
        #: Field ownership: each source's policy, and local edits under it.
        self.ownership = Ownership(store, region)
        #: The web console's bounded reads (review pages, runs, contact search).
        self.console = Console(store, region)

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, readonly: bool = False,
             region: str = "AU", review_threshold: float = REVIEW_THRESHOLD,
             auto_link_threshold: float | None = None,
             wait: float = DEFAULT_WRITE_WAIT,
             on_wait: Callable[[int | None], None] | None = None,
             interrupt: Callable[[], None] | None = None) -> Mirror:
        """`review_threshold`: fuzzy candidates above it become review items;
        `auto_link_threshold` (opt-in) links an unambiguous pair above it.

        Read-write mirrors may be open in several processes (the agent's and a
        CLI's): each write waits for the writer lock while another write (an
        agent run) holds it, up to `wait` seconds, calling `on_wait(holder pid)`
        once, then raises `LockedError`; `interrupt()`, called while waiting,
        may raise to give up."""
        store = Store.open(path or default_db_path(), readonly=readonly, lock_wait=wait,
                           on_wait=on_wait, interrupt=interrupt)
        return cls(store, region=region, review_threshold=review_threshold,
                   auto_link_threshold=auto_link_threshold)

    @property
    def path(self) -> Path:
        return self.store.path

    def close(self) -> None:
        self.store.close()
        self.own_files.release()

    def checkpoint(self) -> None:
        """Copies committed runs from the WAL into the database file (the agent
        does this after each run; `close()` does it too)."""
        self.store.checkpoint()

    def __enter__(self) -> Mirror:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------ local contacts

    def _clean_fields(self, values: Mapping[str, Any]) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in FIELDS:
            v = values.get(f)
            out[f] = _core.clean_value("" if v is None else str(v), f == "notes")
        return out

    def add_contact(
        self, *, name: str | None = None, record_type: str = "manual",
        source: str | None = None, external_id: str | None = None,
        forced_manual: bool = False, extra: Mapping[str, str] | None = None, **fields: Any,
    ) -> int:
        """Adds a contact created locally (or left by another integration: `external`).
        A contact with no field at all (an id alone is not one) is a ContactSyncError."""
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise ContactSyncError(f"unknown contact field(s): {', '.join(sorted(unknown))}")
        if record_type not in ("manual", "external", "sync"):
            raise ContactSyncError(f"record_type must be manual, external or sync, "
                                   f"not {record_type!r}")
        values = self._clean_fields(fields)
        if name:
            full = _core.clean_value(name, False)
            if not values["given_name"] and not values["family_name"]:
                values["given_name"], values["family_name"] = _core.split_name(full)
            if not values["display_name"]:
                values["display_name"] = full
        extra_map = {str(k): str(v) for k, v in sorted((extra or {}).items())}
        if not any(values.values()) and not any(extra_map.values()):
            raise ContactSyncError("a contact needs at least one of a name, an e-mail, a phone "
                                   "or another field; nothing was given")
        field_list = [values[f] for f in FIELDS]
        phone_e, mobile_e, _ = _core.derive_keys(field_list, self.region)
        digest = _core.content_hash(field_list, list(extra_map.items()))
        row: dict[str, Any] = {
            **values, "record_type": record_type, "forced_manual": int(forced_manual),
            "source": source, "external_id": external_id,
            "extra": json.dumps(extra_map, ensure_ascii=False, sort_keys=True),
            "phone_e164": phone_e, "mobile_e164": mobile_e, "hash": rules.signed_hash(digest),
        }
        at = now_iso()
        with self.store.transaction():
            cid = self.store.contacts.insert(row, at)
            feed: dict[str, list[Any]] = {
                k: [None, row[k]] for k in ("record_type", "source", "external_id") if row[k]
            }
            if forced_manual:
                feed["forced_manual"] = [None, True]
            feed.update({f: [None, values[f]] for f in FIELDS if values[f]})
            if extra_map:
                feed["extra"] = [None, extra_map]
            self.store.feed.add_change(cid, None, "create", feed, "added_locally",
                                  "created: added locally", at)
        return cid

    def set_forced_manual(self, contact_id: int, value: bool = True) -> None:
        cur = self._row(contact_id)
        if bool(cur["forced_manual"]) == value:
            return
        at = now_iso()
        with self.store.transaction():
            self.store.contacts.update(contact_id, {"forced_manual": int(value)}, at)
            self.store.feed.add_change(contact_id, None, "update",
                                  {"forced_manual": [bool(cur["forced_manual"]), value]},
                                  "forced_manual_set" if value else "forced_manual_cleared",
                                  "forced manual set locally" if value
                                  else "forced manual cleared locally", at)

    def add_reference(self, contact_id: int, ref: str) -> None:
        """Registers that something (a case, a document, an app) uses this contact."""
        self._row(contact_id)
        with self.store.transaction():
            self.store.contacts.add_reference(contact_id, ref, now_iso())

    def remove_reference(self, contact_id: int, ref: str) -> bool:
        """Unregisters one use of the contact; False when it was not registered."""
        self._row(contact_id)
        with self.store.transaction():
            return self.store.contacts.remove_reference(contact_id, ref)

    def references(self, contact_id: int) -> list[dict[str, Any]]:
        """What uses the contact: `ref` and `registered_at`, oldest first."""
        self._row(contact_id)
        return [{"ref": r, "registered_at": at}
                for r, at in self.store.contacts.references(contact_id)]

    # ------------------------------------------------------------ two-way sync

    def push(self, cfg: Any, *, dry_run: bool = False, writer: Any = None) -> Any:
        """One push of a configured source (`SourceConfig`): its open outbox
        entries through its writer (`sources.open_writer`, or `writer` given).
        Returns a `sources.writer.PushReport`; `dry_run` sends nothing."""
        # Imported here: the connectors (HTTP, SQL drivers) load only when used.
        from contactsync_agent import push
        from contactsync_agent.sources import FolderWriter, open_writer

        self.ownership.set_sync_policy(cfg.name, cfg.sync_policy())
        own = writer is None and not dry_run
        w: Any
        if own and cfg.kind == "folder":  # in the headings of the source's own files
            seen = json.loads(self.store.get_meta(sync.columns_key(cfg.name)) or "{}")
            w = FolderWriter(cfg, headings=seen)
        else:
            w = open_writer(cfg) if own else writer
        try:
            return push.push_source(self.store, cfg.name, w, push_new=cfg.push_new,
                                    dry_run=dry_run)
        finally:
            if own and w is not None:
                w.close()

    def outbox(self, source: str | None = None) -> list[dict[str, Any]]:
        """Open, rejected and conflicting outbox entries with their age."""
        from contactsync_agent import push

        return push.outbox_list(self.store, source)

    # ------------------------------------------------------------ sync

    def _policy_for(self, source: str, ownership: Mapping[str, str] | None,
                    unique: Sequence[str] | None) -> tuple[dict[str, str], tuple[str, ...]]:
        """The policy a sync uses: the one given (and then recorded), else the recorded one."""
        if ownership is not None or unique is not None:
            old_own, old_unique = self.ownership.policy(source)
            self.ownership.set_policy(source, old_own if ownership is None else ownership,
                                      old_unique if unique is None else unique)
        own, keys = self.ownership.policy(source)
        return own, tuple(keys)

    def sync_options(self, allow_mass_delete: bool, mass_delete_limit: float | None,
                     chunk_size: int | None, source: str | None = None,
                     ownership: Mapping[str, str] | None = None,
                     unique: Sequence[str] | None = None, forced: bool = False, *,
                     allow_column_drop: bool = False, dry_run: bool = False
                     ) -> sync.SyncOptions:
        """The options of a run of `source` on this mirror: its region and
        thresholds, and the source's field ownership and unique fields (those
        given, recorded as its policy unless `dry_run`; None: the recorded ones)."""
        own: dict[str, str]
        keys: tuple[str, ...]
        if not source:
            own, keys = {}, ()
        elif dry_run:  # the policy given, else the recorded one; nothing is recorded
            old_own, old_unique = self.ownership.policy(source)
            own = dict(old_own if ownership is None else ownership)
            keys = tuple(old_unique if unique is None else unique)
        else:
            own, keys = self._policy_for(source, ownership, unique)
        opts = sync.SyncOptions(region=self.region, allow_mass_delete=allow_mass_delete,
                                ownership=own, unique=keys, forced=forced,
                                review_threshold=self.review_threshold,
                                auto_link_threshold=self.auto_link_threshold,
                                allow_column_drop=allow_column_drop)
        if mass_delete_limit is not None:
            opts = sync.SyncOptions(**{**opts.__dict__, "mass_delete_limit": mass_delete_limit})
        if chunk_size is not None:
            opts = sync.SyncOptions(**{**opts.__dict__, "chunk_size": chunk_size})
        return opts

    def sync(
        self, source: str, records: Iterable[Mapping[str, Any]], *, mode: str = "full",
        mapping: Mapping[str, str] | None = None, allow_mass_delete: bool = False,
        mass_delete_limit: float | None = None, chunk_size: int | None = None,
        progress: ProgressFn | None = None, ownership: Mapping[str, str] | None = None,
        unique: Sequence[str] | None = None, forced: bool = False, dry_run: bool = False,
        allow_column_drop: bool = False,
    ) -> SyncReport:
        """Syncs records (mappings with an external id) from `source` in one run.

        `mode="full"`: the records are the whole source (a key a record leaves
        out is empty; absent records are deletions). `mode="incremental"`: only
        changes; a key a record leaves out keeps the mirror's value, an empty
        or None value clears it. `ownership` and `unique` (the source's config)
        are recorded and used from then on; left out, the ones recorded last
        time apply. `dry_run`: nothing is written; the report says what would
        happen (see `SyncReport.preview` and `refused`). `forced` records on
        the run that it overrode the config's source check
        (`AgentConfig.check_sync_target`). `allow_column_drop` confirms a full
        run that empties a field on more than the mass-deletion share of the
        source's contacts (refused otherwise, as a dropped column is)."""
        opts = self.sync_options(allow_mass_delete, mass_delete_limit, chunk_size, source,
                             ownership, unique, forced, dry_run=dry_run,
                             allow_column_drop=allow_column_drop)
        table = build_mapping(mapping, where=f"sources.{source}.mapping")
        batches = sync.dict_batches(records, table, opts, partial=mode == "incremental")
        with self.store.writing():  # one writer from the run row to the commit
            return sync.run_sync(self.store, source, batches, mode=mode, options=opts,
                                 origin="api", progress=progress, dry_run=dry_run)

    def sync_file(
        self, source: str, path: str | os.PathLike[str] | InputFile, *, mode: str = "full",
        format: str | None = None, mapping: Mapping[str, str] | None = None,
        allow_mass_delete: bool = False, mass_delete_limit: float | None = None,
        encoding: str | None = None, delimiter: str | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, chunk_size: int | None = None,
        progress: ProgressFn | None = None, ownership: Mapping[str, str] | None = None,
        unique: Sequence[str] | None = None, forced: bool = False,
        allow_column_drop: bool = False, dry_run: bool = False,
        meter: _core.ReadMeter | None = None,
    ) -> SyncReport:
        """Syncs one export file (CSV, JSON, NDJSON or vCard) from `source` in one run.

        `meter` (a `_core.ReadMeter`) is told the bytes the reader has parsed as
        it goes, for a progress bar polled from another thread (CSV, JSON and
        NDJSON files; a vCard file reports through `progress` only).

        `allow_column_drop` confirms a full CSV snapshot whose header lost a
        column the source's last full snapshot carried (refused otherwise:
        it would clear that field on every contact), or a full snapshot that
        empties a field on more than the mass-deletion share of the source's
        contacts. `dry_run`: nothing is
        written; the report says what would happen. `forced`: as for `sync`.

        `path` is opened once (`infile.open_input`: a regular file, never one of
        the mirror's own files) and everything is read from that descriptor; or
        pass an `InputFile` already opened (the daemon does, to move that very
        file afterwards)."""
        f = path if isinstance(path, InputFile) else open_input(path, own=self.own_files)
        try:
            return self._sync_input(
                source, f, mode=mode, format=format, mapping=mapping,
                allow_mass_delete=allow_mass_delete, mass_delete_limit=mass_delete_limit,
                encoding=encoding, delimiter=delimiter, max_file_bytes=max_file_bytes,
                chunk_size=chunk_size, progress=progress, ownership=ownership, unique=unique,
                forced=forced, allow_column_drop=allow_column_drop, dry_run=dry_run,
                meter=meter)
        finally:
            if f is not path:
                f.close()

    def _sync_input(
        self, source: str, f: InputFile, *, mode: str, format: str | None,
        mapping: Mapping[str, str] | None, allow_mass_delete: bool,
        mass_delete_limit: float | None, encoding: str | None, delimiter: str | None,
        max_file_bytes: int, chunk_size: int | None, progress: ProgressFn | None,
        ownership: Mapping[str, str] | None, unique: Sequence[str] | None,
        forced: bool, allow_column_drop: bool, dry_run: bool,
        meter: _core.ReadMeter | None = None,
    ) -> SyncReport:
        shown, size = f.shown, f.size
        if size > max_file_bytes:
            raise self._refused(source, mode, f, SafetyLimitError(
                f"{shown}: {size} bytes is over the maximum file size of {max_file_bytes} bytes"
            ), digest=False, dry_run=dry_run)
        if is_blank(f.head(BLANK_PROBE), size):
            raise self._refused(source, mode, f, SourceFormatError(
                shown, 1, 0, f"the file is empty ({size} bytes, not even a header line); "
                "an empty export is never applied"), dry_run=dry_run)
        fmt = (format or format_for(f.path)).lower()
        if (ownership is not None or unique is not None) and not dry_run:
            self._policy_for(source, ownership, unique)
        if fmt == "vcard":  # the one vCard dispatch (the agent's files come here too)
            # Imported when needed: the connectors pull in heavy database drivers.
            from contactsync_agent.source_runs import sync_vcard_file

            return sync_vcard_file(
                self, source, f, mode=mode, mapping=dict(mapping or {}),
                allow_mass_delete=allow_mass_delete,
                mass_delete_limit=(MASS_DELETE_LIMIT if mass_delete_limit is None
                                   else mass_delete_limit),
                progress=progress, forced=forced, dry_run=dry_run, chunk_size=chunk_size,
                allow_column_drop=allow_column_drop)
        opts = self.sync_options(allow_mass_delete, mass_delete_limit, chunk_size, source,
                             ownership, unique, forced, allow_column_drop=allow_column_drop,
                             dry_run=dry_run)
        table = build_mapping(mapping, where=f"sources.{source}.mapping")
        digest = f.digest()
        batches = sync.file_batches(f.reader_path(), fmt, table, opts, encoding=encoding,
                                    delimiter=delimiter, source=source,
                                    partial=mode == "incremental", name=shown,
                                    meter=meter)
        try:
            with self.store.writing():  # one writer from the run row to the commit
                return sync.run_sync(self.store, source, batches, mode=mode, options=opts,
                                     origin=shown, origin_hash=digest, progress=progress,
                                     dry_run=dry_run)
        except SafetyLimitError as e:  # say which file was refused
            raise SafetyLimitError(f"{shown}: {e}", would_delete=e.would_delete, total=e.total,
                                   limit=e.limit) from None

    def _refused(self, source: str, mode: str, f: InputFile, error: ContactSyncError, *,
                 digest: bool = True, dry_run: bool = False) -> ContactSyncError:
        """Records a file refused before its run could start (too big, empty) as a
        refused run, as a refusal inside a run is: every refusal is on record
        (with the content hash, unless `digest` is False: a file too big to read).
        A dry run records nothing."""
        if not self.store.readonly and not dry_run and mode in ("full", "incremental"):
            try:
                content: str | None = f.digest() if digest else None
            except OSError:
                content = None
            with self.store.transaction():
                run_id = self.store.runs.insert(source, mode, f.shown, content, False)
                self.store.runs.finish(run_id, "refused", {}, error=str(error), duration_ms=0)
        return error

    # ------------------------------------------------------------ reads

    def _row(self, contact_id: int) -> dict[str, Any]:
        row = self.store.contacts.row(contact_id)
        if row is None:
            raise NotFoundError(f"no contact with id {contact_id}")
        return row

    def get(self, contact_id: int) -> Contact:
        return Contact.from_row(self._row(contact_id))

    @staticmethod
    def _contact_filter(include_deleted: bool, record_type: str | None,
                        source: str | None) -> tuple[str, list[Any]]:
        where: list[str] = ["1"]
        params: list[Any] = []
        if not include_deleted:
            where.append("deleted_at IS NULL")
        if record_type:
            where.append("record_type = ?")
            params.append(record_type)
        if source:
            where.append("source = ?")
            params.append(source)
        return " AND ".join(where), params

    def iter_contacts(self, *, include_deleted: bool = False, record_type: str | None = None,
                      source: str | None = None, limit: int | None = None,
                      offset: int = 0) -> Iterator[Contact]:
        """The contacts in id order, read from a cursor as they are consumed:
        memory holds a small batch, whatever the mirror's size."""
        where, params = self._contact_filter(include_deleted, record_type, source)
        cur = self.store.contacts.cursor(where, params, limit, offset)
        try:
            while rows := cur.fetchmany(500):
                for r in rows:
                    yield Contact.from_row(dict(zip(CONTACT_COLUMNS, r, strict=True)))
        finally:
            # Left unfinished (a reader stopped early), it may be closed after the mirror.
            with contextlib.suppress(sqlite3.Error):
                cur.close()

    def contacts(self, *, include_deleted: bool = False, record_type: str | None = None,
                 source: str | None = None, limit: int | None = None,
                 offset: int = 0) -> list[Contact]:
        return list(self.iter_contacts(include_deleted=include_deleted,
                                       record_type=record_type, source=source, limit=limit,
                                       offset=offset))

    def count_contacts(self, *, include_deleted: bool = False, record_type: str | None = None,
                       source: str | None = None) -> int:
        """How many contacts `contacts()` would give without a limit."""
        where, params = self._contact_filter(include_deleted, record_type, source)
        return self.store.contacts.count(where, params)

    def changes(self, since: int = 0, limit: int | None = None) -> list[Change]:
        rows = self.store.feed.page(since, limit)
        return [Change(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8], r[9])
                for r in rows]

    def activities(self, status: str | None = "open") -> list[Activity]:
        rows = self.store.feed.activities(status)
        return [Activity(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), *r[7:])
                for r in rows]

    def close_activity(self, activity_id: int, status: str = "resolved",
                       note: str | None = None) -> None:
        if status not in ("resolved", "dismissed"):
            raise ContactSyncError("an activity is closed as 'resolved' or 'dismissed'")
        with self.store.transaction():
            if not self.store.feed.close_activity(activity_id, status, note, now_iso()):
                raise NotFoundError(f"no open activity with id {activity_id}")

    def quarantine(self, run_id: int | None = None) -> list[dict[str, Any]]:
        return self.store.review.quarantined(run_id)

    def runs(self, source: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        return self.store.runs.recent(source, limit)

    # ------------------------------------------------------------ export

    def history(self, contact_id: int) -> list[tuple[int, str, str, str]]:
        """(seq, op, reason, at) of one contact's change-feed entries, oldest first."""
        return self.store.feed.contact_history(contact_id)

    def match_records(self) -> list[dict[str, Any]]:
        """The live contacts as records for the matching engine (`matching.dedupe`):
        {"id": str, column: value} for the columns it compares."""
        return self.store.contacts.match_rows("1", (), sync.MATCH_COLUMNS)

    def purge(self, older_than_days: float, *,
              wait: float = maintenance.PURGE_WAIT) -> maintenance.PurgeReport:
        """Erases contacts soft-deleted more than `older_than_days` ago, with their
        values everywhere the mirror kept them (see `maintenance.purge`)."""
        return maintenance.purge(self.store, older_than_days, wait=wait)

    def export(self, out: IO[str], format: str = "json") -> dict[str, Any]:
        """Writes the whole mirror as one consistent snapshot; returns counts and
        `last_seq`, the change-feed position it reflects (continue with
        `changes(since=last_seq)`). JSON holds every table; CSV the contacts with
        their organisation, location, position and customer roles."""
        return export.write(self.store, out, format)
