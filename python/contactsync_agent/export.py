"""The full export: the whole mirror as one consistent snapshot, JSON (every
table) or CSV (the contacts with their organisation, location, position and
customer roles), to a stream or to an owner-only file moved into place.

`Mirror.export` calls `write`; reads go through the store (`store.feed`,
`store.entities`: no SQL lives here) inside one read snapshot. It never
writes the mirror.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from contactsync_agent.entities import ROLES, decode_extra
from contactsync_agent.errors import ContactSyncError
from contactsync_agent.infile import open_private_text
from contactsync_agent.store import CONTACT_COLUMNS, SCHEMA_VERSION, Store, now_iso
from contactsync_agent.store.entities import EXPORT_LINK_COLUMNS


def write(store: Store, out: IO[str], format: str = "json") -> dict[str, Any]:
    """Writes the whole mirror as one consistent snapshot; returns counts and
    `last_seq`, the change-feed position it reflects (continue with
    `changes(since=last_seq)`). JSON holds every table; CSV the contacts with
    their organisation, location, position and customer roles."""
    fmt = format.lower()
    if fmt not in ("json", "csv"):
        raise ContactSyncError(f"export format must be json or csv, not {format!r}")
    with store.read_snapshot():  # one read snapshot for every table
        last_seq = store.feed.last_seq()
        counts = (_export_csv(store, out) if fmt == "csv"
                  else _export_json(store, out, last_seq))
    return {"format": fmt, "last_seq": last_seq, **counts}


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
             **dict(zip(ROLES, flags, strict=True))})
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
        section(table, (decode_extra(r) for r in store.entities.live_rows(table)))
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
            f"{x['customer']}:" + "+".join(r for r in ROLES if x[r] == "Y")
            for x in links)
        w.writerow(["" if d[c] is None else d[c] for c in header])
        n += 1
    return {"contacts": n}


def export_to_path(export: Callable[[IO[str], str], dict[str, Any]], path: str | None,
                   fmt: str, stdout: IO[str]) -> dict[str, Any]:
    """`export` (`Mirror.export`) to a file (written beside, owner-only, then moved
    into place) or to `stdout`."""
    if path is None or path == "-":
        return export(stdout, fmt)
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    if tmp.exists():
        tmp.unlink()  # left by a killed earlier export of the same pid
    try:
        with open_private_text(tmp) as fh:
            result = export(fh, fmt)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {**result, "path": str(p)}
