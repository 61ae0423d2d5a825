"""The library's front door: `Mirror.open(path)` and everything a user does with it.

Every CLI command is a thin call into this class. It owns one `Store` and
never decides a sync itself (that is `sync.py` and `rules.py`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import platformdirs
import xxhash

from contactsync_agent import _core, sync
from contactsync_agent.errors import (
    ContactSyncError,
    NotFoundError,
    SafetyLimitError,
    SourceFormatError,
)
from contactsync_agent.mapping import FIELDS, build_mapping
from contactsync_agent.mirror_relations import RelationsMixin
from contactsync_agent.models import Activity, Change, Contact, ReviewItem, SyncReport
from contactsync_agent.store import CONTACT_COLUMNS, Store, now_iso
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
    """XXH3-128 of a file's bytes: how the agent recognises a file it has seen."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def format_for(path: str | os.PathLike[str]) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ContactSyncError(
            f"{path}: cannot tell the format from the file name; pass format= (csv, json, ndjson)"
        )
    return fmt


class Mirror(RelationsMixin):
    """A local mirror database. Open it read-write (one writer, locked) or read-only.

    Organisations, locations, customer links, access, ownership and export come
    from `RelationsMixin` (mirror_relations.py)."""

    def __init__(self, store: Store, *, region: str = "AU", review_threshold: float = 0.5,
                 auto_link_threshold: float | None = None) -> None:
        self.store = store
        self.region = region
        self.review_threshold = review_threshold
        self.auto_link_threshold = auto_link_threshold

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, readonly: bool = False,
             region: str = "AU", review_threshold: float = 0.5,
             auto_link_threshold: float | None = None) -> Mirror:
        """`review_threshold`: fuzzy candidates above it become review items;
        `auto_link_threshold` (opt-in) links an unambiguous pair above it."""
        return cls(Store.open(path or default_db_path(), readonly=readonly), region=region,
                   review_threshold=review_threshold, auto_link_threshold=auto_link_threshold)

    @property
    def path(self) -> Path:
        return self.store.path

    def close(self) -> None:
        self.store.close()

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
        """Adds a contact created locally (or left by another integration: `external`)."""
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
        field_list = [values[f] for f in FIELDS]
        phone_e, mobile_e, _ = _core.derive_keys(field_list, self.region)
        digest = _core.content_hash(field_list, list(extra_map.items()))
        row: dict[str, Any] = {
            **values, "record_type": record_type, "forced_manual": int(forced_manual),
            "source": source, "external_id": external_id,
            "extra": json.dumps(extra_map, ensure_ascii=False, sort_keys=True),
            "phone_e164": phone_e, "mobile_e164": mobile_e, "hash": _signed(digest),
        }
        at = now_iso()
        with self.store.transaction():
            cid = self.store.insert_contact(row, at)
            feed: dict[str, list[Any]] = {
                k: [None, row[k]] for k in ("record_type", "source", "external_id") if row[k]
            }
            if forced_manual:
                feed["forced_manual"] = [None, True]
            feed.update({f: [None, values[f]] for f in FIELDS if values[f]})
            if extra_map:
                feed["extra"] = [None, extra_map]
            self.store.add_change(cid, None, "create", feed, "added_locally",
                                  "created: added locally", at)
        return cid

    def set_forced_manual(self, contact_id: int, value: bool = True) -> None:
        cur = self._row(contact_id)
        if bool(cur["forced_manual"]) == value:
            return
        at = now_iso()
        with self.store.transaction():
            self.store.update_contact(contact_id, {"forced_manual": int(value)}, at)
            self.store.add_change(contact_id, None, "update",
                                  {"forced_manual": [bool(cur["forced_manual"]), value]},
                                  "forced_manual_set" if value else "forced_manual_cleared",
                                  "forced manual set locally" if value
                                  else "forced manual cleared locally", at)

    def add_reference(self, contact_id: int, ref: str) -> None:
        """Registers that something (a case, a document, an app) uses this contact."""
        self._row(contact_id)
        with self.store.transaction():
            self.store.add_reference(contact_id, ref, now_iso())

    def remove_reference(self, contact_id: int, ref: str) -> bool:
        with self.store.transaction():
            return self.store.remove_reference(contact_id, ref)

    # ------------------------------------------------------------ sync

    def _options(self, allow_mass_delete: bool, mass_delete_limit: float | None,
                 chunk_size: int | None, source: str | None = None,
                 ownership: Mapping[str, str] | None = None,
                 unique: Sequence[str] | None = None) -> sync.SyncOptions:
        own, keys = self._policy_for(source, ownership, unique) if source else ({}, ())
        opts = sync.SyncOptions(region=self.region, allow_mass_delete=allow_mass_delete,
                                ownership=own, unique=keys,
                                review_threshold=self.review_threshold,
                                auto_link_threshold=self.auto_link_threshold)
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
        unique: Sequence[str] | None = None,
    ) -> SyncReport:
        """Syncs records (mappings with an external id) from `source` in one run.

        `ownership` and `unique` (the source's config) are recorded and used from
        then on; left out, the ones recorded last time apply."""
        opts = self._options(allow_mass_delete, mass_delete_limit, chunk_size, source,
                             ownership, unique)
        table = build_mapping(mapping, where=f"sources.{source}.mapping")
        return sync.run_sync(self.store, source, sync.dict_batches(records, table, opts),
                             mode=mode, options=opts, origin="api", progress=progress)

    def sync_file(
        self, source: str, path: str | os.PathLike[str], *, mode: str = "full",
        format: str | None = None, mapping: Mapping[str, str] | None = None,
        allow_mass_delete: bool = False, mass_delete_limit: float | None = None,
        encoding: str | None = None, delimiter: str | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, chunk_size: int | None = None,
        progress: ProgressFn | None = None, ownership: Mapping[str, str] | None = None,
        unique: Sequence[str] | None = None,
    ) -> SyncReport:
        """Syncs one export file (CSV, JSON or NDJSON) from `source` in one run."""
        p = Path(path)
        if not p.is_file():
            raise ContactSyncError(f"{p}: no such file")
        size = p.stat().st_size
        if size > max_file_bytes:
            raise self._refused(source, mode, p, SafetyLimitError(
                f"{p}: {size} bytes is over the maximum file size of {max_file_bytes} bytes"
            ), digest=False)
        if size < 4096 and not p.read_bytes().removeprefix(b"\xef\xbb\xbf").strip():
            raise self._refused(source, mode, p, SourceFormatError(
                str(p), 1, 0, f"the file is empty ({size} bytes, not even a header line); "
                "an empty export is never applied"))
        fmt = (format or format_for(p)).lower()
        if ownership is not None or unique is not None:
            self._policy_for(source, ownership, unique)
        if fmt == "vcard":
            from contactsync_agent.sources import sync_vcard_file

            return sync_vcard_file(
                self, source, p, mode=mode, mapping=dict(mapping or {}),
                allow_mass_delete=allow_mass_delete,
                mass_delete_limit=0.20 if mass_delete_limit is None else mass_delete_limit,
                progress=progress)
        opts = self._options(allow_mass_delete, mass_delete_limit, chunk_size, source)
        table = build_mapping(mapping, where=f"sources.{source}.mapping")
        batches = sync.file_batches(str(p), fmt, table, opts, encoding=encoding,
                                    delimiter=delimiter, source=source)
        try:
            return sync.run_sync(self.store, source, batches, mode=mode, options=opts,
                                 origin=str(p), origin_hash=file_digest(p), progress=progress)
        except SafetyLimitError as e:  # say which file was refused
            raise SafetyLimitError(f"{p}: {e}", would_delete=e.would_delete, total=e.total,
                                   limit=e.limit) from None

    def _refused(self, source: str, mode: str, path: Path, error: ContactSyncError, *,
                 digest: bool = True) -> ContactSyncError:
        """Records a file refused before its run could start (too big, empty) as a
        refused run, as a refusal inside a run is: every refusal is on record
        (with the content hash, unless `digest` is False: a file too big to read)."""
        if not self.store.readonly and mode in ("full", "incremental"):
            try:
                content: str | None = file_digest(path) if digest else None
            except OSError:
                content = None
            run_id = self.store.begin_run(source, mode, str(path), content, False)
            with self.store.transaction():
                self.store.finish_run(run_id, "refused", {}, error=str(error), duration_ms=0)
        return error

    # ------------------------------------------------------------ reads

    def _row(self, contact_id: int) -> dict[str, Any]:
        row = self.store.contact_row(contact_id)
        if row is None:
            raise NotFoundError(f"no contact with id {contact_id}")
        return row

    def get(self, contact_id: int) -> Contact:
        return Contact.from_row(self._row(contact_id))

    def contacts(self, *, include_deleted: bool = False, record_type: str | None = None,
                 source: str | None = None, limit: int | None = None,
                 offset: int = 0) -> list[Contact]:
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
        sql = (f"SELECT {', '.join(CONTACT_COLUMNS)} FROM contacts WHERE {' AND '.join(where)} "
               f"ORDER BY id LIMIT ? OFFSET ?")
        params += [-1 if limit is None else limit, offset]
        return [Contact.from_row(dict(zip(CONTACT_COLUMNS, r, strict=True)))
                for r in self.store.conn.execute(sql, params)]

    def changes(self, since: int = 0, limit: int | None = None) -> list[Change]:
        rows = self.store.conn.execute(
            "SELECT seq, contact_id, run_id, op, fields, reason_code, reason, at, entity_type, "
            "entity_id FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
            (since, -1 if limit is None else limit))
        return [Change(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8], r[9])
                for r in rows]

    def activities(self, status: str | None = "open") -> list[Activity]:
        sql = ("SELECT id, contact_id, run_id, source, external_id, kind, fields, reason, status, "
               "created_at, closed_at, resolution FROM activities")
        params: list[Any] = []
        if status:
            sql += " WHERE status = ?"
            params.append(status)
        rows = self.store.conn.execute(sql + " ORDER BY id", params)
        return [Activity(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), *r[7:])
                for r in rows]

    def close_activity(self, activity_id: int, status: str = "resolved",
                       note: str | None = None) -> None:
        if status not in ("resolved", "dismissed"):
            raise ContactSyncError("an activity is closed as 'resolved' or 'dismissed'")
        with self.store.transaction():
            cur = self.store.conn.execute(
                "UPDATE activities SET status = ?, closed_at = ?, resolution = ? "
                "WHERE id = ? AND status = 'open'", (status, now_iso(), note, activity_id))
            if cur.rowcount == 0:
                raise NotFoundError(f"no open activity with id {activity_id}")

    def review_items(self, status: str | None = "open") -> list[ReviewItem]:
        sql = ("SELECT id, run_id, source, external_id, contact_id, candidate_id, kind, score, "
               "explanation, reason, status, created_at, decided_at FROM review_items")
        params: list[Any] = []
        if status:
            sql += " WHERE status = ?"
            params.append(status)
        rows = self.store.conn.execute(sql + " ORDER BY id", params)
        return [ReviewItem.from_row(r) for r in rows]

    def review_accept(self, item_id: int) -> dict[str, Any]:
        """Accepts a review item: the local contact becomes the source's record."""
        from contactsync_agent import review

        return review.accept(self.store, item_id)

    def review_reject(self, item_id: int) -> dict[str, Any]:
        """Rejects a review item: the pair is never suggested again."""
        from contactsync_agent import review

        return review.reject(self.store, item_id)

    def quarantine(self, run_id: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, run_id, source, file, line, reason, raw, created_at FROM quarantine"
        params: list[Any] = []
        if run_id is not None:
            sql += " WHERE run_id = ?"
            params.append(run_id)
        cols = ("id", "run_id", "source", "file", "line", "reason", "raw", "created_at")
        return [dict(zip(cols, r, strict=True))
                for r in self.store.conn.execute(sql + " ORDER BY id", params)]

    def runs(self, source: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        sql = "SELECT * FROM runs"
        params: list[Any] = []
        if source:
            sql += " WHERE source = ?"
            params.append(source)
        cur = self.store.conn.execute(sql + " ORDER BY id DESC LIMIT ?", [*params, limit])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur]


def _signed(u: int) -> int:
    """An unsigned 64-bit hash as SQLite's signed INTEGER."""
    return u - (1 << 64) if u >= 1 << 63 else u
