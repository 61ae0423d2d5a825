"""`Mirror` methods of issue 6: entity feeds (organisations, locations,
contact–customer links), the access check, field ownership with local edits,
and the full export.

Thin calls into entities.py, relations.py and the store; mixed into `Mirror`.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from contactsync_agent import _core, entities, relations, rules
from contactsync_agent.defaults import MASS_DELETE_LIMIT
from contactsync_agent.errors import (
    ContactSyncError,
    NotFoundError,
    OwnershipError,
    SafetyLimitError,
)
from contactsync_agent.infile import OwnFiles, open_input, open_private_text
from contactsync_agent.mapping import FIELDS
from contactsync_agent.models import SyncReport
from contactsync_agent.store import CONTACT_COLUMNS, SCHEMA_VERSION, now_iso
from contactsync_agent.store.entities import EXPORT_LINK_COLUMNS

if TYPE_CHECKING:
    from contactsync_agent.store import Store

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


class RelationsMixin:
    """Organisations, locations, customer links, ownership and export for `Mirror`."""

    store: Store
    own_files: OwnFiles
    region: str

    # ------------------------------------------------------------ entity feeds

    def sync_entities(
        self, kind: str, source: str,
        records: Iterable[Mapping[str, Any]] | entities.CsvFile, *,
        mode: str = "full", mapping: Mapping[str, str] | None = None,
        allow_mass_delete: bool = False, mass_delete_limit: float | None = None,
        origin: str = "api",
    ) -> SyncReport:
        """One run of an entity feed: `kind` is organisation, location or customer_link."""
        spec = entities.SPECS.get(kind.rstrip("s").replace("-", "_"))
        if spec is None:
            raise ContactSyncError(f"unknown entity kind {kind!r} "
                                   f"(one of {', '.join(entities.SPECS)})")
        with self.store.writing():  # one writer from the run row to the commit
            return entities.run_entities(
                self.store, spec, source, records, mode=mode, mapping=mapping, origin=origin,
                allow_mass_delete=allow_mass_delete,
                mass_delete_limit=(MASS_DELETE_LIMIT if mass_delete_limit is None
                                   else mass_delete_limit))

    def sync_organisations(self, source: str, records: Iterable[Mapping[str, Any]], *,
                           mode: str = "full", **kw: Any) -> SyncReport:
        """Organisations of `source` (id, name, website, e-mail, phone, address, notes)."""
        return self.sync_entities("organisation", source, records, mode=mode, **kw)

    def sync_locations(self, source: str, records: Iterable[Mapping[str, Any]], *,
                       mode: str = "full", **kw: Any) -> SyncReport:
        """Locations of `source`, each with the source's id of its organisation."""
        return self.sync_entities("location", source, records, mode=mode, **kw)

    def sync_customer_links(self, source: str, records: Iterable[Mapping[str, Any]], *,
                            mode: str = "full", **kw: Any) -> SyncReport:
        """Contact–customer links of `source` with role flags Y / N / NA."""
        return self.sync_entities("customer_link", source, records, mode=mode, **kw)

    def sync_entity_file(self, kind: str, source: str, path: str | os.PathLike[str], *,
                         format: str | None = None, max_file_bytes: int = 2 << 30,
                         **kw: Any) -> SyncReport:
        # Opened once (never one of the mirror's own files) and read through that
        # descriptor; errors and the run name the file escaped (infile.py).
        with open_input(path, own=self.own_files) as f:
            if f.size > max_file_bytes:  # the readers hold a file in memory while they map it
                raise SafetyLimitError(f"{f.shown}: {f.size} bytes is over the maximum file "
                                       f"size of {max_file_bytes} bytes")
            kind_of_file = (format or ENTITY_FORMATS.get(f.path.suffix.lower(), "")).lower()
            if kind_of_file not in ("csv", "json", "ndjson"):
                raise ContactSyncError(f"{f.shown}: cannot tell the format; "
                                       "pass csv, json or ndjson")
            # CSV is read, mapped and hashed by the core; JSON and NDJSON here.
            records: Iterable[Mapping[str, Any]] | entities.CsvFile = (
                entities.CsvFile(f.reader_path(), f.shown) if kind_of_file == "csv"
                else read_records(f.reader_path(), kind_of_file))
            return self.sync_entities(kind, source, records, origin=f.shown, **kw)

    def organisations(self, source: str | None = None,
                      include_deleted: bool = False) -> list[dict[str, Any]]:
        return self._entity_list("organisations", source, include_deleted)

    def locations(self, source: str | None = None,
                  include_deleted: bool = False) -> list[dict[str, Any]]:
        return self._entity_list("locations", source, include_deleted)

    def _entity_list(self, table: str, source: str | None,
                     include_deleted: bool) -> list[dict[str, Any]]:
        return [_decode(r) for r in self.store.entities.list_rows(table, source, include_deleted)]

    # ------------------------------------------------------------ access

    def access(self, contact_id: int, customer: str, role: str) -> relations.AccessDecision:
        """May the contact act for the customer in `role` (bill_to, sold_to, ship_to,
        correspondence)? Answers with the reason; never raises for a missing contact."""
        return relations.access(self.store, contact_id, str(customer), role)

    def customers(self, contact_id: int) -> list[dict[str, Any]]:
        """Customers the contact is linked to, with each role's flag and the usable roles."""
        return relations.customers_of(self.store, contact_id)

    def organisation_of(self, contact_id: int) -> dict[str, Any] | None:
        return relations.organisation_of(self.store, contact_id)

    # ------------------------------------------------------------ ownership

    def set_policy(self, source: str, ownership: Mapping[str, str] | None = None,
                   unique: Sequence[str] | None = None) -> None:
        """Records the source's field ownership and unique fields (as configured);
        syncs and local edits of that source's contacts follow it."""
        own = {str(k): str(v) for k, v in (ownership or {}).items()}
        for k, v in own.items():
            if v not in rules.OWNERS:
                raise ContactSyncError(f"owner of {k!r} must be one of "
                                       f"{', '.join(rules.OWNERS)}, not {v!r}")
        keys = relations.check_unique_keys(list(unique or []),
                                           where=f"sources.{source}.unique")
        if self.store.runs.policy(source) == (own, keys):
            return
        with self.store.transaction():
            self.store.runs.set_policy(source, own, keys, now_iso())

    def policy(self, source: str) -> tuple[dict[str, str], list[str]]:
        """(ownership, unique fields) in force for `source` (empty when never set)."""
        return self.store.runs.policy(source) or ({}, [])

    def _policy_for(self, source: str, ownership: Mapping[str, str] | None,
                    unique: Sequence[str] | None) -> tuple[dict[str, str], tuple[str, ...]]:
        """The policy a sync uses: the one given (and then recorded), else the recorded one."""
        if ownership is not None or unique is not None:
            old_own, old_unique = self.policy(source)
            self.set_policy(source, old_own if ownership is None else ownership,
                            old_unique if unique is None else unique)
        own, keys = self.policy(source)
        return own, tuple(keys)

    def edit_contact(self, contact_id: int, *, extra: Mapping[str, str | None] | None = None,
                     **fields: Any) -> dict[str, list[Any]]:
        """A local edit of a contact's fields (and `extra` columns; None removes one).

        A synced contact's fields belong to its source unless the config makes
        them `local`: an edit to a source-owned field is refused (unless the
        contact is forced manual), and a `locked` field is refused always, with
        an OwnershipError saying who owns it and how to take it over. The edit
        goes to the change feed (op update, reason 'edited locally'); returns
        the {field: [before, after]} it wrote."""
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise ContactSyncError(f"unknown contact field(s): {', '.join(sorted(unknown))}")
        row = self.store.contacts.row(contact_id)
        if row is None or row["deleted_at"] is not None:
            raise NotFoundError(f"no contact with id {contact_id}")
        wanted: dict[str, str] = {
            f: _core.clean_value("" if v is None else str(v), f == "notes")
            for f, v in fields.items()}
        extra_now = json.loads(row["extra"] or "{}")
        extra_new = dict(extra_now)
        for k, v in (extra or {}).items():
            if v is None:
                extra_new.pop(str(k), None)
            else:
                extra_new[str(k)] = str(v)
        touched = [f for f in wanted if wanted[f] != (row[f] or "")]
        touched += [f"extra:{k}" for k in sorted({*extra_now, *extra_new})
                    if extra_now.get(k) != extra_new.get(k)]
        source = row["source"]
        synced = row["record_type"] == "sync" and source is not None
        ownership = self.policy(source)[0] if source else {}
        if synced:
            refused = {}
            for f in touched:
                owner = rules.owner_of(f, ownership)
                if owner == "locked" or (owner == "source" and not row["forced_manual"]):
                    refused[f] = owner
            if refused:
                raise OwnershipError(_refusal(contact_id, source, refused),
                                     contact_id=contact_id, source=source, fields=refused)
        if not touched:
            return {}
        self._check_unique_edit(contact_id, source, wanted, extra_new)
        write: dict[str, Any] = {}
        feed: dict[str, list[Any]] = {}
        for f in wanted:
            if wanted[f] != (row[f] or ""):
                write[f] = wanted[f]
                feed[f] = [row[f] or "", wanted[f]]
        if extra_new != extra_now:
            write["extra"] = json.dumps(extra_new, ensure_ascii=False, sort_keys=True)
            feed["extra"] = [extra_now, extra_new]
        values = [write.get(f, row[f]) or "" for f in FIELDS]
        phone_e, mobile_e, _ = _core.derive_keys(values, self.region)
        digest = _core.content_hash(values, sorted(extra_new.items()))
        write.update(phone_e164=phone_e, mobile_e164=mobile_e,
                     hash=rules.signed_hash(digest))
        at = now_iso()
        with self.store.transaction():
            if synced:
                # Remember what the source last sent for the local-owned fields edited,
                # so a later source change to them is told apart from this edit.
                held = self.store.contacts.held_values([contact_id]).get(contact_id, {})
                keep = {f: (row[f] or "") if f in FIELDS else str(extra_now.get(f[6:], ""))
                        for f in touched if f not in held}
                if keep:
                    self.store.contacts.set_held_values(contact_id, keep)
            self.store.contacts.update(contact_id, write, at)
            self.store.feed.add_change(contact_id, None, "update", feed, "edited_locally",
                                  "edited locally", at)
            if "extra" in write and source is not None:
                self.store.entities.relink_contacts(source, 1 << 62, [contact_id], at)
        return feed

    def _check_unique_edit(self, contact_id: int, source: str | None,
                           wanted: Mapping[str, str], extra_new: Mapping[str, str]) -> None:
        keys: set[str] = set()
        for src in [source] if source else self.store.runs.policy_sources():
            keys.update(self.policy(src)[1])
        for key in sorted(keys):
            value = wanted.get(key) if key in FIELDS else extra_new.get(key[6:])
            if not value:
                continue
            hit = self.store.entities.unique_holder(relations.unique_expr(key), value, contact_id)
            if hit is not None:
                raise ContactSyncError(
                    f"contact {contact_id}: {key} {value!r} is already used by contact "
                    f"{hit} ({key} is unique); nothing was changed")

    # ------------------------------------------------------------ export

    def export(self, out: IO[str], format: str = "json") -> dict[str, Any]:
        """Writes the whole mirror as one consistent snapshot; returns counts and
        `last_seq`, the change-feed position it reflects (continue with
        `changes(since=last_seq)`). JSON holds every table; CSV the contacts with
        their organisation, location, position and customer roles."""
        fmt = format.lower()
        if fmt not in ("json", "csv"):
            raise ContactSyncError(f"export format must be json or csv, not {format!r}")
        store = self.store
        with store.read_snapshot():  # one read snapshot for every table
            last_seq = store.feed.last_seq()
            counts = (_export_csv(store, out) if fmt == "csv"
                      else _export_json(store, out, last_seq))
        return {"format": fmt, "last_seq": last_seq, **counts}


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    if isinstance(row.get("extra"), str):
        row["extra"] = json.loads(row["extra"] or "{}")
    return row


def _refusal(contact_id: int, source: str, refused: Mapping[str, str]) -> str:
    parts = []
    src = [f for f, o in refused.items() if o == "source"]
    locked = [f for f, o in refused.items() if o == "locked"]
    if src:
        names = ", ".join(src)
        parts.append(
            f"{names} of contact {contact_id} {'is' if len(src) == 1 else 'are'} owned by "
            f"source {source!r}: the mirror follows {source} and a local edit would be "
            f"overwritten. Change it in {source}, or take the contact over with "
            f"`contactsync contacts force-manual {contact_id}` (it stays linked but is never "
            f"updated from {source} again), or make the field local-owned in the config "
            f"([sources.{source}.ownership] {src[0]} = \"local\")")
    if locked:
        names = ", ".join(locked)
        parts.append(
            f"{names} of contact {contact_id} {'is' if len(locked) == 1 else 'are'} locked "
            f"([sources.{source}.ownership] {locked[0]} = \"locked\"): nobody edits it "
            f"locally, not even on a forced-manual contact; change it in {source}")
    return "refused: " + "; ".join(parts)


_LINK_COLS = EXPORT_LINK_COLUMNS


def _contacts(store: Store) -> Iterator[dict[str, Any]]:
    cols = (*CONTACT_COLUMNS, *_LINK_COLS)
    for r in store.entities.export_contacts():
        d = dict(zip(cols, r, strict=True))
        d["forced_manual"] = bool(d["forced_manual"])
        d["extra"] = json.loads(d["extra"] or "{}")
        yield d


def _roles_by_contact(store: Store) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for cid, customer, name, *flags in store.entities.customer_roles():
        out.setdefault(cid, []).append(
            {"customer": customer, "customer_name": name,
             **dict(zip(entities.ROLES, flags, strict=True))})
    return out


def _export_json(store: Store, out: IO[str], last_seq: int) -> dict[str, int]:
    def dump(v: Any) -> str:
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))

    counts: dict[str, int] = {}
    out.write(f'{{"schema_version":{SCHEMA_VERSION},"exported_at":{dump(now_iso())},'
              f'"last_seq":{last_seq}')

    def section(name: str, rows: Iterable[dict[str, Any]]) -> None:
        out.write(f',\n"{name}":[')
        n = 0
        for row in rows:
            out.write(("," if n else "") + "\n" + dump(row))
            n += 1
        out.write("]")
        counts[name] = n

    roles = _roles_by_contact(store)
    section("contacts", _contacts(store))
    for table in ("organisations", "locations"):
        section(table, (_decode(r) for r in store.entities.live_rows(table)))
    section("customer_links", ({"contact_id": cid, **link}
                               for cid, links in sorted(roles.items()) for link in links))
    out.write("\n}\n")
    return counts


def _export_csv(store: Store, out: IO[str]) -> dict[str, int]:
    # Formula-like cells are neutralised: the export is opened in spreadsheets.
    from contactsync_agent import csvsafe

    w = csvsafe.writer(out)
    roles = _roles_by_contact(store)
    header = [*CONTACT_COLUMNS, *_LINK_COLS, "customer_roles"]
    w.writerow(header)
    n = 0
    for d in _contacts(store):
        d["extra"] = json.dumps(d["extra"], ensure_ascii=False, sort_keys=True)
        d["forced_manual"] = int(d["forced_manual"])
        links = roles.get(d["id"], [])
        d["customer_roles"] = "; ".join(
            f"{x['customer']}:" + "+".join(r for r in entities.ROLES if x[r] == "Y")
            for x in links)
        w.writerow(["" if d[c] is None else d[c] for c in header])
        n += 1
    return {"contacts": n}


def export_to_path(mirror: RelationsMixin, path: str | None, fmt: str,
                   stdout: IO[str]) -> dict[str, Any]:
    """Export to a file (written beside, owner-only, then moved into place) or to
    `stdout`."""
    if path is None or path == "-":
        return mirror.export(stdout, fmt)
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    if tmp.exists():
        tmp.unlink()  # left by a killed earlier export of the same pid
    try:
        with open_private_text(tmp) as fh:
            result = mirror.export(fh, fmt)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {**result, "path": str(p)}


__all__ = ["RelationsMixin", "export_to_path", "read_records"]
