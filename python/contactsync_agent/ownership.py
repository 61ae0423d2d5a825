"""Field ownership: each source's recorded policy (who owns which field, which
fields are unique) and the local edit of a contact, refused when the policy
gives the field to the source or locks it.

`Mirror.ownership` is the `Ownership` part below. Its SQL is the store's
(`store.runs`, `store.contacts`, `store.feed`, `store.entities`: none lives
here); who owns a field is `rules.owner_of`. It never runs a sync.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from contactsync_agent import _core, rules
from contactsync_agent.errors import ContactSyncError, NotFoundError, OwnershipError
from contactsync_agent.mapping import FIELDS
from contactsync_agent.store import Store, now_iso
from contactsync_agent.uniqueness import check_unique_keys, unique_expr


class Ownership:
    """`Mirror.ownership`: source policies and local edits under them."""

    def __init__(self, store: Store, region: str) -> None:
        self._store = store
        self._region = region

    def set_policy(self, source: str, ownership: Mapping[str, str] | None = None,
                   unique: Sequence[str] | None = None) -> None:
        """Records the source's field ownership and unique fields (as configured);
        syncs and local edits of that source's contacts follow it."""
        own = {str(k): str(v) for k, v in (ownership or {}).items()}
        for k, v in own.items():
            if v not in rules.OWNERS:
                raise ContactSyncError(f"owner of {k!r} must be one of "
                                       f"{', '.join(rules.OWNERS)}, not {v!r}")
        keys = check_unique_keys(list(unique or []), where=f"sources.{source}.unique")
        if self._store.runs.policy(source) == (own, keys):
            return
        with self._store.transaction():
            self._store.runs.set_policy(source, own, keys, now_iso())

    def set_sync_policy(self, source: str, policy: Mapping[str, Any]) -> None:
        """Records the source's two-way policy (`SourceConfig.sync_policy()`):
        local edits of its out/both fields are then recorded in the outbox."""
        for f, d in (policy.get("directions") or {}).items():
            if d not in rules.DIRECTIONS:
                raise ContactSyncError(f"direction of {f!r} must be one of "
                                       f"{', '.join(rules.DIRECTIONS)}, not {d!r}")
        for f, st in (policy.get("conflicts") or {}).items():
            if st not in rules.STRATEGIES:
                raise ContactSyncError(f"strategy of {f!r} must be one of "
                                       f"{', '.join(rules.STRATEGIES)}, not {st!r}")
        if self._store.outbox.sync_policy(source) == dict(policy):
            return
        with self._store.transaction():
            self._store.outbox.set_sync_policy(source, policy, now_iso())

    def sync_policy(self, source: str) -> dict[str, Any]:
        """The two-way policy in force for `source` ({} = every field in only)."""
        return self._store.outbox.sync_policy(source)

    def policy(self, source: str) -> tuple[dict[str, str], list[str]]:
        """(ownership, unique fields) in force for `source` (empty when never set)."""
        return self._store.runs.policy(source) or ({}, [])

    def edit_contact(self, contact_id: int, *, extra: Mapping[str, str | None] | None = None,
                     **fields: Any) -> dict[str, list[Any]]:
        """A local edit of a contact's fields (and `extra` columns; None removes one).

        A synced contact's fields belong to its source unless the config makes
        them `local`: an edit to a source-owned field is refused (unless the
        contact is forced manual), and a `locked` field is refused always, with
        an OwnershipError saying who owns it and how to take it over. The edit
        goes to the change feed (op update, reason 'edited locally'); returns
        the {field: [before, after]} it wrote.

        A field whose direction is `out`/`both` for the contact's source
        (`set_sync_policy`) may be edited on a synced contact whatever its
        ownership (unless locked), without forcing the contact manual: the
        edit is recorded in the outbox, with its base, in the same transaction."""
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise ContactSyncError(f"unknown contact field(s): {', '.join(sorted(unknown))}")
        row = self._store.contacts.row(contact_id)
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
        two_way = self.sync_policy(source) if synced else {}
        outbound = [f for f in touched
                    if rules.direction_of(f, two_way) in ("out", "both")] if two_way else []
        if synced:
            refused = {}
            for f in touched:
                owner = rules.owner_of(f, ownership)
                if owner == "locked" or (owner == "source" and not row["forced_manual"]
                                         and f not in outbound):
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
        phone_e, mobile_e, _ = _core.derive_keys(values, self._region)
        digest = _core.content_hash(values, sorted(extra_new.items()))
        write.update(phone_e164=phone_e, mobile_e164=mobile_e,
                     hash=rules.signed_hash(digest))
        at = now_iso()
        with self._store.transaction():
            if synced:
                # Remember what the source last sent for the local-owned fields edited,
                # so a later source change to them is told apart from this edit.
                held = self._store.contacts.held_values([contact_id]).get(contact_id, {})
                keep = {f: (row[f] or "") if f in FIELDS else str(extra_now.get(f[6:], ""))
                        for f in touched if f not in held and f not in outbound}
                if keep:
                    self._store.contacts.set_held_values(contact_id, keep)
            self._store.contacts.update(contact_id, write, at)
            self._store.feed.add_change(contact_id, None, "update", feed, "edited_locally",
                                  "edited locally", at)
            if outbound and not row["forced_manual"]:
                before = {f: (row[f] or "") if f in FIELDS else str(extra_now.get(f[6:], ""))
                          for f in outbound}
                after = {f: wanted[f] if f in FIELDS else str(extra_new.get(f[6:], ""))
                         for f in outbound}
                self._record_outbound(contact_id, source, row["external_id"], before, after,
                                      at)
            if "extra" in write and source is not None:
                self._store.entities.relink_contacts(source, 1 << 62, [contact_id], at)
        return feed

    def _record_outbound(self, contact_id: int, source: str, external_id: str | None,
                         before: Mapping[str, str], after: Mapping[str, str], at: str) -> None:
        """The outbox side of a local edit (inside its transaction): each field's
        base (what the source last sent: kept from an earlier edit, else the
        value before this one) and the entry to push. Edits before a push join
        the contact's pending entry; a field edited back to its base leaves it."""
        store = self._store.outbox
        bases = store.bases([contact_id]).get(contact_id, {})
        new_bases = {f: before[f] for f in after if f not in bases}
        if new_bases:
            store.set_bases(contact_id, new_bases)
            bases = {**bases, **new_bases}
        pending = store.pending_for(contact_id)
        fields: dict[str, tuple[str, str]] = dict(pending.fields) if pending else {}
        for f, value in after.items():
            base = fields[f][0] if f in fields else bases[f]
            if value == base:
                fields.pop(f, None)
            else:
                fields[f] = (base, value)
        if pending is not None:
            if fields:
                store.set_fields(pending.id, fields, local_at=at)
            else:
                store.mark([pending.id], "superseded", at,
                           reason="edited back to the source's value")
        elif fields:
            store.add(key=uuid.uuid4().hex, source=source, contact_id=contact_id,
                      kind="update", external_id=external_id, fields=fields, local_at=at,
                      at=at)

    def _check_unique_edit(self, contact_id: int, source: str | None,
                           wanted: Mapping[str, str], extra_new: Mapping[str, str]) -> None:
        keys: set[str] = set()
        for src in [source] if source else self._store.runs.policy_sources():
            keys.update(self.policy(src)[1])
        for key in sorted(keys):
            value = wanted.get(key) if key in FIELDS else extra_new.get(key[6:])
            if not value:
                continue
            hit = self._store.entities.unique_holder(unique_expr(key), value, contact_id)
            if hit is not None:
                raise ContactSyncError(
                    f"contact {contact_id}: {key} {value!r} is already used by contact "
                    f"{hit} ({key} is unique); nothing was changed")


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
