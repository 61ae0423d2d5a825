"""What a contact run leaves behind besides contacts: the contact's link to its
organisation and location, and unique fields enforced; plus the customer-access
check over mirrored contact–customer links.

Set-based work over the contacts a run wrote; its SQL is the store's
(`store.entities`, `store.feed`, `store.contacts`): none lives here. It decides
no contact's fields itself (a clashing unique value is handed back, not chosen).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import xxhash

from contactsync_agent import _core
from contactsync_agent.entities import ROLES
from contactsync_agent.errors import ConfigError
from contactsync_agent.mapping import FIELDS
from contactsync_agent.store import Store, sql_quote

ROLE_WORDS = {"bill_to": "bill-to", "sold_to": "sold-to", "ship_to": "ship-to",
              "correspondence": "correspondence"}


def after_contact_run(store: Store, source: str, run_id: int, at: str, first_new_id: int,
                      touched: Sequence[int], unique: Sequence[str], *,
                      linked_up_to: int = 0) -> int:
    """Called inside a contact run's transaction; returns the activities it
    raised. New contacts up to `linked_up_to` got their links when inserted."""
    changed = [cid for cid in touched if cid < first_new_id]
    store.entities.relink_contacts(source, max(first_new_id, linked_up_to + 1), changed, at)
    if not unique:
        return 0
    return enforce_unique(store, source, run_id, at, first_new_id, changed, unique)


# ---------------------------------------------------------------- unique fields

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


def _value_of(row: Mapping[str, Any], key: str) -> str:
    if key in FIELDS:
        return row.get(key) or ""
    return str(json.loads(row.get("extra") or "{}").get(key[6:], ""))


def enforce_unique(store: Store, source: str, run_id: int, at: str, first_new_id: int,
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
        # Contacts whose value of `key` this run wrote.
        writers: dict[int, Any] = {}
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
        groups: dict[str, set[int]] = {}
        for cid, value, other in rows:
            writers[cid] = value
            groups.setdefault(str(value), set()).update((cid, other))
        for value, members in groups.items():
            holders = sorted(m for m in members if m not in writers)
            newcomers = sorted(m for m in members if m in writers)
            keeper = holders[0] if holders else newcomers[0]
            for loser in newcomers:
                if loser == keeper:
                    continue
                if loser >= first_new_id:
                    old = ""
                elif key in FIELDS:
                    old = before[loser].get(key) or ""
                else:
                    old = str((before[loser].get("extra") or {}).get(key[6:], ""))
                reverts.setdefault(loser, {})[key] = old
                if store.feed.has_open_clash(loser, key, value):
                    continue
                store.feed.add_activity(
                    contact_id=loser, run_id=run_id, source=source,
                    external_id=store.contacts.external_id(loser), kind="unique_clash",
                    fields={key: {"value": value, "held_by": keeper, "kept": old}},
                    reason=f"unique field {key}: {value!r} is already held by contact "
                           f"{keeper}; not applied to contact {loser}, which keeps "
                           f"{old!r} (resolve by hand: correct the source, or merge the two)",
                    at=at)
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


# ---------------------------------------------------------------- customer access

@dataclass(frozen=True)
class AccessDecision:
    """Whether a contact may act for a customer in a role, and why."""

    allowed: bool
    reason: str
    contact_id: int
    customer: str
    role: str

    def __bool__(self) -> bool:
        return self.allowed

    def to_dict(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "reason": self.reason, "contact_id": self.contact_id,
                "customer": self.customer, "role": self.role}


def check_role(role: str) -> str:
    r = role.strip().lower().replace("-", "_").replace(" ", "_")
    if r not in ROLES:
        raise ConfigError(f"unknown role {role!r} (one of {', '.join(ROLES)})", key="role")
    return r


def access(store: Store, contact_id: int, customer: str, role: str) -> AccessDecision:
    """The access check of the customer-contact document: the contact must be
    linked to the customer with the role's flag Y; NA means the customer is
    not of that type at all. Unknown, deleted or unlinked contacts are denied."""
    role = check_role(role)
    word = ROLE_WORDS[role]

    def deny(reason: str) -> AccessDecision:
        return AccessDecision(False, "denied: " + reason, contact_id, customer, role)

    row = store.contacts.link(contact_id)
    if row is None:
        return deny(f"no contact with id {contact_id}")
    src, ext, deleted = row
    if deleted is not None:
        return deny(f"contact {contact_id} was deleted")
    if ext is None:
        return deny(f"contact {contact_id} is not linked to a source, so it has no customers")
    flag = store.entities.customer_flag(role, src, ext, customer)
    if flag is None:
        return deny(f"contact {contact_id} is not assigned to customer {customer}")
    if flag == "NA":
        return deny(f"customer {customer} is not a {word} customer")
    if flag != "Y":
        return deny(f"contact {contact_id} is assigned to customer {customer}, "
                    f"but not for {word}")
    return AccessDecision(True, f"allowed: contact {contact_id} may act for customer "
                          f"{customer} as {word}", contact_id, customer, role)


def customers_of(store: Store, contact_id: int) -> list[dict[str, Any]]:
    """The customers a contact is linked to, with each role's flag and the roles it may use."""
    out = []
    for customer, name, *flags in store.entities.customers_of(contact_id):
        roles = dict(zip(ROLES, flags, strict=True))
        out.append({"customer": customer, "customer_name": name, "flags": roles,
                    "roles": [r for r in ROLES if roles[r] == "Y"]})
    return out


def organisation_of(store: Store, contact_id: int) -> dict[str, Any] | None:
    """The contact's organisation, location and position (from the view), if linked."""
    d = store.entities.organisation_view(contact_id)
    if d is None:
        return None
    if d["organisation_id"] is None and d["location_id"] is None and not d["position"]:
        return None
    keep = ("position",)
    return {k: v for k, v in d.items()
            if k in keep or k.startswith(("organisation_", "location_"))}
