"""Unique fields: the config's unique keys checked, and enforced over the
contacts a run wrote.

Orchestration only: the store reads what the run wrote and its clashes
(`store.entities`, `store.feed`, `store.contacts`: no SQL lives here),
`rules.decide_unique_clashes` decides who keeps a clashing value, and the store
writes the reverts and activities. It decides no other field of a contact.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import xxhash

from contactsync_agent import _core, rules
from contactsync_agent.errors import ConfigError
from contactsync_agent.mapping import FIELDS
from contactsync_agent.store import Store, sql_quote


def check_unique_keys(keys: Sequence[str], where: str = "unique") -> list[str]:
    """Validates `unique` entries: a canonical field name or `extra:COLUMN`."""
    out = []
    for k in keys:
        if not isinstance(k, str) or not (k in FIELDS or (k.startswith("extra:") and k[6:])):
            raise ConfigError(f"unknown unique field {k!r} (a contact field such as email, or "
                              "extra:COLUMN for an unmapped column)", key=where)
        out.append(k)
    return out


def unique_expr(key: str, alias: str = "") -> str:
    """The SQL expression of a unique key's value on `contacts` (keys are config, quoted)."""
    p = f"{alias}." if alias else ""
    if key in FIELDS:
        return f"{p}{key}"
    path = '$."' + key[6:].replace('"', '\\"') + '"'
    return f"json_extract({p}extra, {sql_quote(path)})"


def enforce(store: Store, source: str, run_id: int, at: str, first_new_id: int,
            changed: Sequence[int], unique: Sequence[str]) -> int:
    """A value of a unique field the run wrote that another live contact already
    holds is not applied: the contact keeps its value from before the run (empty
    for a new one), the feed gets the revert, and a `unique_clash` activity names
    both contacts. Among contacts that all got the value in this run, the lowest
    id keeps it. Clashes the run did not write are left alone."""
    # Before-values of the fields this run changed on existing contacts, from its feed.
    before: dict[int, dict[str, Any]] = {}
    for cid, payload in store.feed.run_payloads(run_id, changed):
        d = before.setdefault(cid, {})
        for f, pair in json.loads(payload).items():
            d.setdefault(f, pair[0])
    raised = 0
    reverts: dict[int, dict[str, str]] = {}
    for key in unique:
        expr, oexpr = unique_expr(key, "c"), unique_expr(key, "o")
        name = "contacts_unique_" + xxhash.xxh3_64_hexdigest(key.encode())
        store.entities.ensure_unique_index(name, unique_expr(key))
        # Existing contacts whose value of `key` this run changed.
        if key in FIELDS:
            field_changed = [cid for cid in changed if key in before.get(cid, {})]
        else:
            k = key[6:]
            field_changed = [
                cid for cid in changed if "extra" in before.get(cid, {})
                and _extra_changed(store, cid, before[cid]["extra"], k)]
        rows = store.entities.unique_clashes(expr, oexpr, first_new_id, source, field_changed)
        if not rows:
            continue
        open_now = store.feed.open_clashes(key, sorted({cid for cid, _, _ in rows}))
        for clash in rules.decide_unique_clashes(key, rows, before, first_new_id, open_now):
            reverts.setdefault(clash.contact_id, {})[key] = clash.kept
            if not clash.activity:
                continue
            store.feed.add_activity(
                contact_id=clash.contact_id, run_id=run_id, source=source,
                external_id=store.contacts.external_id(clash.contact_id), kind="unique_clash",
                fields=clash.activity_fields, reason=clash.reason, at=at)
            raised += 1
    for cid, values in reverts.items():
        _revert(store, cid, values, run_id, at)
    return raised


def _extra_changed(store: Store, cid: int, old_extra: Any, k: str) -> bool:
    extra = store.contacts.extra(cid)
    now = json.loads(extra or "{}") if extra is not None else {}
    return (old_extra or {}).get(k) != now.get(k)


def _revert(store: Store, cid: int, values: Mapping[str, str], run_id: int, at: str) -> None:
    row = store.contacts.row(cid)
    assert row is not None
    write: dict[str, Any] = {}
    feed: dict[str, list[Any]] = {}
    extra = json.loads(row["extra"] or "{}")
    new_extra = dict(extra)
    for key, old in values.items():
        if key in FIELDS:
            write[key] = old
            feed[key] = [row[key], old]
        elif old:
            new_extra[key[6:]] = old
        else:
            new_extra.pop(key[6:], None)
    if new_extra != extra:
        write["extra"] = json.dumps(dict(sorted(new_extra.items())), ensure_ascii=False,
                                    sort_keys=True)
        feed["extra"] = [extra, new_extra]
    fields = [write.get(f, row[f]) or "" for f in FIELDS]
    digest = _core.content_hash(fields, sorted(new_extra.items()))
    write["hash"] = digest - (1 << 64) if digest >= 1 << 63 else digest
    if "phone" in write or "mobile" in write:
        write["phone_e164"], write["mobile_e164"], _ = _core.derive_keys(fields)
    store.contacts.update(cid, write, at)
    store.feed.add_change(cid, run_id, "update", feed, "unique_clash",
                     "not applied: " + ", ".join(values) + " would clash with another contact "
                     "(unique field)", at)
