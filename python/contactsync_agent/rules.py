"""The mirror rules of `shared/spec/mirror-rules.md`, as pure functions.

Given incoming records and read-only views of local contacts, they return
actions with a reason code and the text a person reads (for a unique field's
clashing values, `UniqueClash`es: who keeps the value, and the activity's
text). They never touch the database: the store applies what they return.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from contactsync_agent import _core
from contactsync_agent.defaults import CLEAR_GUARD_MIN
from contactsync_agent.errors import SafetyLimitError
from contactsync_agent.mapping import FIELDS

MIRRORED: tuple[str, ...] = (*FIELDS, "extra")

ReasonCode = Literal[
    "created", "created_external_only", "created_ambiguous", "created_contested",
    "created_rejected_pair", "converted_identity", "converted_external_id",
    "converted_updated_external_id", "converted_forced_manual", "updated_external_id",
    "unchanged", "skipped_forced_manual", "untouched_no_identity", "untouched_external",
    "untouched_ambiguous", "deleted", "unlinked_in_use", "unlinked_forced_manual",
    "delete_unknown", "kept_quarantined", "deletion_skipped", "delete_not_sync",
    "review_fuzzy", "converted_fuzzy", "converted_review", "merged_review",
]

REASONS: dict[ReasonCode, str] = {
    "created": "created: no existing match",
    "created_external_only": "created: the only match was an external record",
    "created_ambiguous": "created: {n} local contacts matched, sent to review",
    "created_contested": "created: {n} incoming records matched one local contact, sent to review",
    "created_rejected_pair": "created: the matching contact was rejected in review before",
    "converted_identity": "converted: name, e-mail and phone matched",
    "converted_external_id": "converted: external id matched",
    "converted_updated_external_id": "converted and updated: external id matched",
    "converted_forced_manual": "converted, not updated: forced manual",
    "updated_external_id": "updated: external id matched ({fields})",
    "unchanged": "unchanged",
    "skipped_forced_manual": "not updated: forced manual",
    "untouched_no_identity": "untouched: no identity match ({field} differs)",
    "untouched_external": "untouched: belongs to another integration",
    "untouched_ambiguous": "untouched: ambiguous match, sent to review",
    "deleted": "deleted: removed from the source",
    "unlinked_in_use": "unlinked, kept as manual: removed from the source but in use ({refs})",
    "unlinked_forced_manual": "unlinked, kept as manual: removed from the source but forced manual",
    "delete_unknown": "ignored: delete for an external id the mirror does not hold",
    "kept_quarantined": "kept, not updated: its row could not be read (line {line}, quarantined)",
    "deletion_skipped": "not deleted: the snapshot has rows that could not be identified",
    "delete_not_sync": "untouched: delete for a contact that is not a sync record",
    "review_fuzzy": "possible match ({p:.0%}): {agree}",
    "converted_fuzzy": "converted: fuzzy match {p:.0%} above the auto-link threshold",
    "converted_review": "converted: review accepted (match with contact {other})",
    "merged_review": "deleted: merged into contact {other} (review accepted)",
}

FIELD_WORDS = {"email": "e-mail", "phone": "phone", "name": "name"}


# What a step of a plan does (the run applies each kind its own way, sync.py):
# create a contact; convert one to `sync` (or link a forced-manual one again);
# update its fields; record an unchanged one's source hash; skip a forced-manual
# one; leave one untouched (a reason only); unlink or soft-delete one; queue a
# fuzzy review item; link a fuzzy pair (opt-in, becomes a convert).
ActionKind = Literal["create", "convert", "update", "unchanged", "skip", "untouched",
                     "unlink", "delete", "review", "auto_link"]
# The run count (store.RUN_COUNTS) an action adds one to; "" for none.
RunCounter = Literal["", "created", "converted", "updated", "unchanged",
                     "skipped_forced_manual", "ignored_external", "unlinked", "deleted"]
# The change-feed operation an action writes (`changes.op`).
FeedOp = Literal["create", "convert", "update", "unlink", "delete"]


@dataclass(frozen=True)
class Action:
    """One step of a plan. `write` are the contact columns to set; `feed` the
    change-feed payload ({field: [before, after]}); `counter` the run count it adds to."""

    kind: ActionKind
    counter: RunCounter
    reason_code: ReasonCode
    reason: str
    contact_id: int | None = None
    external_id: str | None = None
    write: dict[str, Any] = field(default_factory=dict)
    feed: dict[str, list[Any]] = field(default_factory=dict)
    op: FeedOp | None = None
    record: dict[str, Any] | None = None
    activity: dict[str, Any] | None = None
    reviews: list[dict[str, Any]] = field(default_factory=list)
    # The source's latest values of local-owned fields it could not write
    # ({field: value}, kept in `held_values` to tell a later source change).
    held: dict[str, str] = field(default_factory=dict)


OWNERS: tuple[str, ...] = ("source", "local", "locked")


def owner_of(fld: str, ownership: Mapping[str, str] | None) -> str:
    """Who owns a field: a canonical field name, or `extra:KEY` for one unmapped
    column (falling back to the owner of `extra` as a whole); default `source`."""
    if not ownership:
        return "source"
    if fld.startswith("extra:"):
        return ownership.get(fld) or ownership.get("extra") or "source"
    return ownership.get(fld, "source")


def signed_hash(u: int) -> int:
    """An unsigned 64-bit hash as SQLite's signed INTEGER (how the store keeps it)."""
    return u - (1 << 64) if u >= 1 << 63 else u


def _apply_ownership(
    contact: Mapping[str, Any], incoming: Mapping[str, Any], diff: dict[str, list[Any]],
    ownership: Mapping[str, str] | None, held: Mapping[str, str] | None,
) -> tuple[dict[str, list[Any]], dict[str, str], dict[str, dict[str, Any]], bool]:
    """Takes local-owned fields out of a source diff.

    Returns (the diff still to apply, held values to remember, collisions,
    whether the stored content now differs from the source's). A collision is
    a local-owned field whose source value changed (against the last one the
    source sent, else the current value) to something other than the local one.
    """
    if not ownership or "local" not in ownership.values():
        return diff, {}, {}, False
    held = held or {}
    out = dict(diff)
    keep: dict[str, str] = {}
    collisions: dict[str, dict[str, Any]] = {}
    kept = False

    def check(key: str, current: str, new: str) -> None:
        nonlocal kept
        previous = held.get(key, current)
        if new != previous:
            keep[key] = new
            if new != current:
                collisions[key] = {"current": current, "incoming": new,
                                   "previous_source": previous}
        if new != current:
            kept = True

    for f in FIELDS:
        if owner_of(f, ownership) == "local":
            check(f, contact.get(f) or "", incoming.get(f) or "")
            out.pop(f, None)
    cur_x, inc_x = _extra(contact.get("extra")), _extra(incoming.get("extra"))
    local_keys = {k for k in {*cur_x, *inc_x} if owner_of(f"extra:{k}", ownership) == "local"}
    if local_keys:
        merged = dict(inc_x)
        for k in local_keys:
            check(f"extra:{k}", cur_x.get(k, ""), inc_x.get(k, ""))
            if k in cur_x:
                merged[k] = cur_x[k]
            else:
                merged.pop(k, None)
        out.pop("extra", None)
        if merged != cur_x:
            out["extra"] = [cur_x, dict(sorted(merged.items()))]
    return out, keep, collisions, kept


def _content_hash(contact: Mapping[str, Any], diff: Mapping[str, list[Any]]) -> int:
    """The content hash of a contact once `diff` is applied (signed, as stored)."""
    values = [diff[f][1] if f in diff else (contact.get(f) or "") for f in FIELDS]
    extra = diff["extra"][1] if "extra" in diff else _extra(contact.get("extra"))
    return signed_hash(_core.content_hash(values, sorted(extra.items())))


def _collision_activity(collisions: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    names = ", ".join(collisions)
    return {
        "kind": "local_owned",
        "fields": dict(collisions),
        "reason": f"owned locally: the source's change to {names} was not applied "
                  "(the local value is kept; resolve it by hand if the source is right)",
    }


def _extra(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    decoded: dict[str, Any] = json.loads(value or "{}")
    return decoded


def merge_partial(
    current: Mapping[str, Any], incoming: Mapping[str, Any],
    held: Mapping[str, str] | None = None, region: str = "AU",
) -> dict[str, Any]:
    """An incremental record completed from the contact it updates.

    `incoming` came from an incremental batch: `absent_fields` lists the
    canonical fields it did not carry and `cleared_extra` the unmapped columns
    it sent empty. A field or `extra` key it did not carry keeps the source's
    last value (the mirror's current one, or for a local-owned field the one in
    `held`); one it sent (empty included) is the new value. Returns the whole
    record as the source now says it, with its hash and E.164 keys, so that the
    rules compare and hash whole records. A record from a full snapshot (no
    `absent_fields`) is returned as it is."""
    absent = incoming.get("absent_fields")
    if absent is None:
        return dict(incoming)
    held = held or {}
    out = dict(incoming)
    for f in absent:
        out[f] = held.get(f, current.get(f) or "")
    for base in ("phone", "mobile"):
        if base in absent:
            out[f"{base}_e164"] = (_core.normalize_phone(held[base], region) if base in held
                                   else current.get(f"{base}_e164") or "")
    cur_x, inc_x = _extra(current.get("extra")), _extra(incoming.get("extra"))
    cleared = set(incoming.get("cleared_extra") or ())
    sent = cleared | set(inc_x)
    merged = {k: v for k, v in cur_x.items() if k not in sent}
    for key, value in held.items():  # local-owned columns: the source's last value
        if key.startswith("extra:") and key[6:] not in sent:
            if value:
                merged[key[6:]] = value
            else:
                merged.pop(key[6:], None)
    merged.update(inc_x)
    merged = dict(sorted(merged.items()))
    out["extra"] = json.dumps(merged, ensure_ascii=False, separators=(",", ":"))
    out["hash"] = signed_hash(_core.content_hash([out[f] for f in FIELDS], list(merged.items())))
    return out


def field_diff(current: Mapping[str, Any], incoming: Mapping[str, Any]) -> dict[str, list[Any]]:
    """{field: [current, incoming]} for the mirrored fields that differ."""
    out: dict[str, list[Any]] = {}
    for f in FIELDS:
        if (current.get(f) or "") != (incoming.get(f) or ""):
            out[f] = [current.get(f) or "", incoming.get(f) or ""]
    cur_x, inc_x = _extra(current.get("extra")), _extra(incoming.get("extra"))
    if cur_x != inc_x:
        out["extra"] = [cur_x, inc_x]
    return out


def _apply_values(diff: Mapping[str, list[Any]], incoming: Mapping[str, Any]) -> dict[str, Any]:
    write: dict[str, Any] = {}
    for f, (_, after) in diff.items():
        write[f] = json.dumps(after, ensure_ascii=False, sort_keys=True) if f == "extra" else after
    for derived in ("phone_e164", "mobile_e164"):
        if derived in incoming:
            write[derived] = incoming[derived]
    return write


def decide_linked(
    contact: Mapping[str, Any], incoming: Mapping[str, Any],
    ownership: Mapping[str, str] | None = None, held: Mapping[str, str] | None = None,
) -> Action:
    """Rule 1: the incoming record carries the external id of a local contact.

    `ownership` maps fields (`notes`, `extra:Tags`, `extra`) to `source`, `local`
    or `locked`; local-owned fields are never overwritten (a source change to one
    becomes a `local_owned` activity). `held` has the source's last values of
    this contact's local-owned fields (from `held_values`)."""
    cid, ext = contact["id"], incoming["external_id"]
    diff = field_diff(contact, incoming)
    converting = contact["record_type"] != "sync"
    type_feed = {"record_type": [contact["record_type"], "sync"]} if converting else {}
    if contact["forced_manual"]:
        code: ReasonCode = "converted_forced_manual" if converting else "skipped_forced_manual"
        activity = None
        if diff and contact.get("source_hash") != incoming["hash"]:
            activity = {
                "kind": "forced_manual",
                "fields": {f: {"current": b, "incoming": a} for f, (b, a) in diff.items()},
                "reason": "forced manual: the source's changes to "
                + ", ".join(diff)
                + " were not applied",
            }
        write: dict[str, Any] = {"source_hash": incoming["hash"]}
        if converting:
            write["record_type"] = "sync"
        return Action(
            kind="convert" if converting else "skip",
            counter="skipped_forced_manual",
            reason_code=code,
            reason=REASONS[code],
            contact_id=cid,
            external_id=ext,
            write=write,
            feed=type_feed,
            op="convert" if converting else None,
            activity=activity,
        )
    diff, keep, collisions, kept = _apply_ownership(contact, incoming, diff, ownership, held)
    activity = _collision_activity(collisions) if collisions else None
    write = _apply_values(diff, incoming) if diff else {}
    if kept:
        for base in ("phone", "mobile"):
            if base not in diff:  # a local-owned number keeps its derived key too
                write.pop(f"{base}_e164", None)
    write["hash"] = _content_hash(contact, diff) if kept else incoming["hash"]
    write["source_hash"] = incoming["hash"]
    if converting:
        write["record_type"] = "sync"
        code = "converted_updated_external_id" if diff else "converted_external_id"
        return Action(
            kind="convert", counter="converted", reason_code=code, reason=REASONS[code],
            contact_id=cid, external_id=ext, write=write, feed={**type_feed, **diff},
            op="convert", activity=activity, held=keep,
        )
    if diff:
        return Action(
            kind="update", counter="updated", reason_code="updated_external_id",
            reason=REASONS["updated_external_id"].format(fields=", ".join(diff)),
            contact_id=cid, external_id=ext, write=write, feed=diff, op="update",
            activity=activity, held=keep,
        )
    # Same content under a different (or unknown) source hash: remember the hash only.
    return Action(
        kind="unchanged", counter="unchanged", reason_code="unchanged",
        reason=REASONS["unchanged"], contact_id=cid, external_id=ext, write=write,
        activity=activity, held=keep,
    )


def resolve_claims(
    source: str,
    claims: Sequence[tuple[dict[str, Any], Sequence[tuple[int, int]]]],
    local: Mapping[int, Mapping[str, Any]],
    rejected_pairs: set[tuple[str, int]] | None = None,
) -> list[Action]:
    """Rules 2–4 for new records whose identity keys hit local contacts.

    `claims` pairs each incoming record with its hits (contact id, kind 0 manual
    / 1 external); `local` holds the current rows of the hit contacts.
    """
    rejected_pairs = rejected_pairs or set()
    manual_hits = [
        [cid for cid, kind in hits if kind == 0 and (rec["external_id"], cid) not in rejected_pairs]
        for rec, hits in claims
    ]
    claimants = Counter(cid for ids in manual_hits for cid in set(ids))
    actions: list[Action] = []
    touched_external: set[int] = set()
    for (rec, hits), manual in zip(claims, manual_hits, strict=True):
        ext = rec["external_id"]
        external = [cid for cid, kind in hits if kind == 1]
        if len(manual) == 1 and claimants[manual[0]] == 1 and local[manual[0]]["forced_manual"]:
            # Forced manual outlives an unlink: linked again, never overwritten.
            actions.append(_forced_identity_link(source, local[manual[0]],
                                                 merge_partial(local[manual[0]], rec)))
        elif len(manual) == 1 and claimants[manual[0]] == 1:
            cid = manual[0]
            cur = local[cid]
            rec = merge_partial(cur, rec)  # an incremental record keeps what it left out
            diff = field_diff(cur, rec)
            write = _apply_values(diff, rec)
            write.update(record_type="sync", source=source, external_id=ext,
                         hash=rec["hash"], source_hash=rec["hash"])
            feed = {
                "record_type": [cur["record_type"], "sync"],
                "source": [cur.get("source"), source],
                "external_id": [cur.get("external_id"), ext],
                **diff,
            }
            actions.append(Action(
                kind="convert", counter="converted", reason_code="converted_identity",
                reason=REASONS["converted_identity"], contact_id=cid, external_id=ext,
                write=write, feed=feed, op="convert",
            ))
        elif manual:
            contested = len(manual) == 1
            code: ReasonCode = "created_contested" if contested else "created_ambiguous"
            n = claimants[manual[0]] if contested else len(manual)
            reviews = [
                {"candidate_id": cid, "kind": "ambiguous", "score": None,
                 "explanation": {"identity": "name, e-mail and phone matched"},
                 "reason": REASONS[code].format(n=n)}
                for cid in manual
            ]
            actions.append(Action(
                kind="create", counter="created", reason_code=code,
                reason=REASONS[code].format(n=n), external_id=ext, record=rec, op="create",
                reviews=reviews,
            ))
            for cid in manual:
                actions.append(Action(
                    kind="untouched", counter="", reason_code="untouched_ambiguous",
                    reason=REASONS["untouched_ambiguous"], contact_id=cid, external_id=ext,
                ))
        else:
            code = "created_external_only" if external else "created_rejected_pair"
            actions.append(Action(
                kind="create", counter="created", reason_code=code, reason=REASONS[code],
                external_id=ext, record=rec, op="create",
            ))
        for cid in external:
            if cid not in touched_external:
                touched_external.add(cid)
                actions.append(Action(
                    kind="untouched", counter="ignored_external",
                    reason_code="untouched_external", reason=REASONS["untouched_external"],
                    contact_id=cid, external_id=ext,
                ))
    return actions


def _forced_identity_link(source: str, cur: Mapping[str, Any], rec: Mapping[str, Any]) -> Action:
    """Rule 2 for a forced-manual contact (one the source unlinked earlier): it
    takes the external id like rule 1's forced branch, and no field changes."""
    cid, ext = cur["id"], rec["external_id"]
    diff = field_diff(cur, rec)
    activity = None
    if diff:
        activity = {
            "kind": "forced_manual",
            "fields": {f: {"current": b, "incoming": a} for f, (b, a) in diff.items()},
            "reason": "forced manual: the source's changes to " + ", ".join(diff)
            + " were not applied",
        }
    return Action(
        kind="convert", counter="skipped_forced_manual", reason_code="converted_forced_manual",
        reason=REASONS["converted_forced_manual"], contact_id=cid, external_id=ext,
        write={"record_type": "sync", "source": source, "external_id": ext,
               "source_hash": rec["hash"]},
        feed={"record_type": [cur["record_type"], "sync"], "source": [cur.get("source"), source],
              "external_id": [cur.get("external_id"), ext]},
        op="convert", activity=activity,
    )


def explain_untouched(
    near: Sequence[tuple[int, str, str]], touched: set[int]
) -> list[Action]:
    """Reasons for manual contacts an incoming record nearly matched (2 of 3 keys)."""
    out: list[Action] = []
    seen: set[int] = set()
    for cid, fld, ext in near:
        if cid in touched or cid in seen:
            continue
        seen.add(cid)
        out.append(Action(
            kind="untouched", counter="", reason_code="untouched_no_identity",
            reason=REASONS["untouched_no_identity"].format(field=FIELD_WORDS.get(fld, fld)),
            contact_id=cid, external_id=ext,
        ))
    return out


def check_deletion_guard(
    source: str, *, would_delete: int, linked: int, incoming: int, limit: float,
    allowed: bool,
) -> None:
    """Refuses a full snapshot that is empty or deletes more than `limit` of a source."""
    if allowed or linked == 0:
        return
    if incoming == 0:
        raise SafetyLimitError(
            f"refused: the export for source {source!r} has no records but the mirror holds "
            f"{linked} of its contacts; an empty or truncated export never wipes the mirror "
            "(re-run with --allow-mass-delete to confirm)",
            would_delete=would_delete, total=linked, limit=limit,
        )
    share = would_delete / linked
    if share > limit:
        raise SafetyLimitError(
            f"refused: the snapshot would delete {would_delete} of {linked} contacts of source "
            f"{source!r} ({share:.0%}, over the {limit:.0%} limit); nothing was changed "
            "(re-run with --allow-mass-delete to confirm)",
            would_delete=would_delete, total=linked, limit=limit,
        )


def check_field_clearing(source: str, field: str, cleared: int, linked: int, *,
                         limit: float, allowed: bool, at_least: int = CLEAR_GUARD_MIN) -> None:
    """Refuses a full snapshot that empties one field on more than `limit` of the
    source's contacts (and on `at_least` of them): a column that is there but
    blank everywhere (or a JSON snapshot that left the key out) clears the field
    like a missing column. `cleared` is how many it has emptied so far."""
    if allowed or linked == 0 or cleared < at_least or cleared <= limit * linked:
        return
    raise SafetyLimitError(
        f"refused: the full snapshot of source {source!r} empties {field} on at least "
        f"{cleared:,} of its {linked:,} contacts (over the {limit:.0%} limit): a column "
        "left blank, or a key left out, clears that field like a missing column; nothing "
        "was changed (re-run with --allow-column-drop to confirm; API: "
        "allow_column_drop=True)",
        would_delete=0, total=linked, limit=limit)


def check_column_drop(source: str, missing: Mapping[str, str], *, allowed: bool) -> None:
    """Refuses a full snapshot whose header lacks columns ({field: heading}) the
    source's last full snapshot carried: it would clear them on every contact."""
    if allowed or not missing:
        return
    names = ", ".join(f"{h!r} (kept in extra)" if f.startswith("extra:") else f"{h!r} ({f})"
                      for f, h in sorted(missing.items()))
    raise SafetyLimitError(
        f"refused: the full snapshot of source {source!r} has no column for {names}, which "
        "its last full snapshot carried; applying it would clear "
        f"{'that field' if len(missing) == 1 else 'those fields'} on every contact of the "
        "source; nothing was changed (re-run with --allow-column-drop to confirm)")


def decide_deletion(contact: Mapping[str, Any], refs: Sequence[str]) -> Action:
    """A source deletion: soft-delete, or unlink when the contact is in use or forced manual."""
    cid, ext = contact["id"], contact.get("external_id")
    if contact["record_type"] != "sync":
        return Action(kind="untouched", counter="", reason_code="delete_not_sync",
                      reason=REASONS["delete_not_sync"], contact_id=cid, external_id=ext)
    if refs or contact["forced_manual"]:
        code: ReasonCode = "unlinked_in_use" if refs else "unlinked_forced_manual"
        reason = REASONS[code].format(refs=", ".join(refs[:5]) + (" …" if len(refs) > 5 else ""))
        return Action(
            kind="unlink", counter="unlinked", reason_code=code, reason=reason,
            contact_id=cid, external_id=ext,
            write={"record_type": "manual", "external_id": None, "source": None,
                   "source_hash": None},
            feed={"record_type": ["sync", "manual"], "external_id": [ext, None],
                  "source": [contact.get("source"), None]},
            op="unlink",
            activity={"kind": "source_deletion", "fields": {"references": list(refs)},
                      "reason": reason},
        )
    return Action(kind="delete", counter="deleted", reason_code="deleted",
                  reason=REASONS["deleted"], contact_id=cid, external_id=ext, op="delete",
                  feed={})


def take_over(local: Mapping[str, Any], created: Mapping[str, Any]
              ) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """A local contact becomes the source record a run created a contact for
    (an accepted review item, an opt-in automatic link): the columns to write on
    it and the change-feed payload of its conversion."""
    write: dict[str, Any] = {f: created[f] for f in (*FIELDS, "extra", "phone_e164",
                                                     "mobile_e164", "hash", "source_hash")}
    write.update(record_type="sync", source=created["source"],
                 external_id=created["external_id"])
    feed = {"record_type": [local["record_type"], "sync"],
            "source": [local["source"], created["source"]],
            "external_id": [local["external_id"], created["external_id"]],
            **field_diff(local, created)}
    return write, feed


def decide_fuzzy(
    pairs: Sequence[tuple[int, int, float, dict[str, Any]]],
    new_external: Mapping[int, str],
    rejected_pairs: set[tuple[str, int]],
    *,
    auto_link_threshold: float | None = None,
) -> list[Action]:
    """Rule 5: fuzzy candidates (local manual contact, contact this run created,
    probability, per-field explanation) become review items; never a conversion,
    unless `auto_link_threshold` is set (opt-in) and the pair is above it and
    unambiguous on both sides."""
    kept = [p for p in pairs if (new_external[p[1]], p[0]) not in rejected_pairs]
    per_new = Counter(p[1] for p in kept)
    per_local = Counter(p[0] for p in kept)
    out: list[Action] = []
    for local_id, new_id, prob, expl in kept:
        ext = new_external[new_id]
        if (auto_link_threshold is not None and prob >= auto_link_threshold
                and per_new[new_id] == 1 and per_local[local_id] == 1):
            out.append(Action(
                kind="auto_link", counter="converted", reason_code="converted_fuzzy",
                reason=REASONS["converted_fuzzy"].format(p=prob), contact_id=local_id,
                external_id=ext, op="convert",
                record={"new_id": new_id, "probability": prob, "explanation": expl},
            ))
            continue
        agree = [f for f, e in expl.items() if not e["level"].startswith(("missing", "different"))]
        differ = [f for f, e in expl.items() if e["level"] == "different"]
        text = ", ".join(agree) + " agree" if agree else "weak agreement"
        if differ:
            text += "; " + ", ".join(differ) + " differ"
        out.append(Action(
            kind="review", counter="", reason_code="review_fuzzy",
            reason=REASONS["review_fuzzy"].format(p=prob, agree=text), contact_id=new_id,
            external_id=ext,
            reviews=[{"candidate_id": local_id, "kind": "fuzzy", "score": prob,
                      "explanation": expl, "reason": REASONS["review_fuzzy"].format(
                          p=prob, agree=text)}],
        ))
    return out


# ---------------------------------------------------------------- unique fields


@dataclass(frozen=True)
class UniqueClash:
    """A unique field's value a run wrote to `contact_id` that contact `held_by`
    keeps: the run's value is not applied, the contact keeps `kept` (its value
    from before the run, empty for a contact the run created). `activity`: a
    `unique_clash` activity is raised (False when an open one already says so)."""

    contact_id: int
    key: str
    value: str
    held_by: int
    kept: str
    activity: bool = True

    @property
    def activity_fields(self) -> dict[str, Any]:
        return {self.key: {"value": self.value, "held_by": self.held_by, "kept": self.kept}}

    @property
    def reason(self) -> str:
        return (f"unique field {self.key}: {self.value!r} is already held by contact "
                f"{self.held_by}; not applied to contact {self.contact_id}, which keeps "
                f"{self.kept!r} (resolve by hand: correct the source, or merge the two)")


def decide_unique_clashes(
    key: str,
    rows: Sequence[tuple[int, Any, int]],
    before: Mapping[int, Mapping[str, Any]],
    first_new_id: int,
    already_open: Collection[tuple[int, str]] = (),
) -> list[UniqueClash]:
    """Who keeps a unique field's value a run wrote that another live contact
    also holds. `rows`: (contact the run wrote the value of `key` to, the value,
    another live contact holding it); `before`: the before-values of the fields
    the run changed on existing contacts ({contact: {field: before}}, `extra` as
    a mapping); contacts from `first_new_id` on are the run's new ones;
    `already_open`: (contact, value) of the open `unique_clash` activities about
    `key`.

    A contact that held the value before the run keeps it (the lowest id of
    them); among contacts that all got it in this run, the lowest id keeps it.
    Every other writer gets a clash: it keeps its value from before the run."""
    groups: dict[str, set[int]] = {}
    writers: set[int] = set()
    for cid, value, other in rows:
        writers.add(cid)
        groups.setdefault(str(value), set()).update((cid, other))
    out: list[UniqueClash] = []
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
            out.append(UniqueClash(loser, key, value, keeper, old,
                                   activity=(loser, value) not in already_open))
    return out


# ---------------------------------------------------------------- two-way sync (issue 15)

#: Which way a field goes: `in` (the source's, today's behaviour), `out` (the
#: local value is pushed and the source's is not taken in), `both`.
Direction = Literal["in", "out", "both"]
DIRECTIONS: tuple[str, ...] = ("in", "out", "both")
#: How a conflict (a field changed on both sides to different values) ends.
Strategy = Literal["source_wins", "local_wins", "last_write_wins", "priority", "review"]
STRATEGIES: tuple[str, ...] = ("source_wins", "local_wins", "last_write_wins", "priority",
                               "review")
#: last_write_wins: two modification times closer than this (seconds) are too
#: close to order, because the two machines' clocks may disagree by that much:
#: the source wins (it is the system of record). Also the rule when either
#: side has no modification time.
CLOCK_SKEW_SECONDS = 120.0

#: What a field's three-way comparison found, and so what happens to it:
#: - none: changed on neither side; - remote: changed at the source only (taken);
#: - local: changed locally only (kept, pushed); - echo: both sides hold the
#:   same new value (the agent's own write coming back, or the same edit twice):
#:   nothing to take, nothing to push, the base moves to it;
#: - conflict_remote / conflict_local: both changed, different values, the
#:   strategy chose that side; - review: both changed, a person decides (the
#:   local value stays meanwhile and nothing is pushed).
SyncOutcome = Literal["none", "remote", "local", "echo", "conflict_remote", "conflict_local",
                      "review"]


def _policy_get(table: Mapping[str, str] | None, fld: str, default: str) -> str:
    if not table:
        return default
    if fld.startswith("extra:"):
        return table.get(fld) or table.get("extra") or table.get("default") or default
    return table.get(fld) or table.get("default") or default


def direction_of(fld: str, policy: Mapping[str, Any] | None) -> str:
    """A field's direction under a source's two-way policy (`in` by default)."""
    return _policy_get((policy or {}).get("directions"), fld, "in")


def strategy_of(fld: str, policy: Mapping[str, Any] | None) -> str:
    """A field's conflict strategy under a source's two-way policy (`source_wins`)."""
    return _policy_get((policy or {}).get("conflicts"), fld, "source_wins")


def two_way(policy: Mapping[str, Any] | None) -> bool:
    """Does any field of the source go out? (An in-only source pays nothing.)"""
    dirs = (policy or {}).get("directions") or {}
    return any(d in ("out", "both") for d in dirs.values())


@dataclass(frozen=True)
class FieldSync:
    """The decision for one field: the value the mirror keeps, whether it is
    pushed, and the reason a person reads (field names only, never values)."""

    outcome: SyncOutcome
    value: str
    push: bool
    reason: str

    @property
    def conflict(self) -> bool:
        return self.outcome in ("conflict_remote", "conflict_local", "review")


#: An epoch number above this is in milliseconds (seconds reach it in the year 5138).
_EPOCH_MS = 1e11


def modified_seconds(ts: str | None) -> float | None:
    """A modification time as seconds since the epoch, or None when there is
    none or it cannot be read (then last_write_wins lets the source win).

    Accepted: ISO 8601 (`2026-11-30T03:40:00Z`, `+10:00`, a space for the `T`,
    a date alone); a time without a zone is taken as UTC (never as this
    machine's zone, which the source's may not share); or epoch seconds
    (`1795923600`, `1795923600.5`), or epoch milliseconds (13 digits)."""
    if not ts:
        return None
    text = str(ts).strip()
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        if number != number or number in (float("inf"), float("-inf")) or number < 0:
            return None
        return number / 1000 if number >= _EPOCH_MS else number
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()



def decide_field_sync(
    base: str, local: str, remote: str, strategy: str, *, direction: str = "both",
    fld: str = "", local_at: str | None = None, remote_at: str | None = None,
    priority: Mapping[str, str] | None = None, skew: float = CLOCK_SKEW_SECONDS,
) -> FieldSync:
    """The three-way decision for one out/both field of a synced contact.

    `base` is what the source last sent, `local` the mirror's value, `remote`
    what the source sends now. A local change is `local != base`, a remote one
    `remote != base`; a conflict is both, to different values. Direction `out`:
    the local value is authoritative (a remote change is not taken in; the local
    value is pushed back over it). Otherwise a conflict goes by `strategy`:
    source_wins, local_wins, priority (`priority[fld]` is "local" or "source";
    source when unlisted), review, or last_write_wins: the later of `local_at`
    and `remote_at` (ISO 8601) wins, but when either is missing or they are
    less than `skew` seconds apart the source wins (see CLOCK_SKEW_SECONDS)."""
    name = fld or "the field"
    local_changed, remote_changed = local != base, remote != base
    if not local_changed and not remote_changed:
        return FieldSync("none", local, False, f"{name}: unchanged on both sides")
    if local_changed and remote_changed and local == remote:
        return FieldSync("echo", local, False,
                         f"{name}: the source now holds the local value (no change)")
    if direction == "out":
        if not local_changed:  # the source changed an out field: put the local value back
            return FieldSync("local", local, True,
                             f"{name} goes out only: the source's change is overwritten "
                             "with the local value")
        return FieldSync("conflict_local" if remote_changed else "local", local, True,
                         f"{name} goes out only: the local value is pushed")
    if not local_changed:
        return FieldSync("remote", remote, False, f"{name} changed at the source")
    if not remote_changed:
        return FieldSync("local", local, True, f"{name} changed locally: pushed")
    # A conflict.
    if strategy == "local_wins":
        return FieldSync("conflict_local", local, True,
                         f"conflict on {name}: local_wins keeps the local value")
    if strategy == "priority":
        side = (priority or {}).get(fld, "source")
        if side == "local":
            return FieldSync("conflict_local", local, True,
                             f"conflict on {name}: the priority table gives it to local")
        return FieldSync("conflict_remote", remote, False,
                         f"conflict on {name}: the priority table gives it to the source")
    if strategy == "review":
        return FieldSync("review", local, False,
                         f"conflict on {name}: kept for review (base, local and source values)")
    if strategy == "last_write_wins":
        lt, rt = modified_seconds(local_at), modified_seconds(remote_at)
        if lt is None or rt is None:
            return FieldSync("conflict_remote", remote, False,
                             f"conflict on {name}: last_write_wins without a modification time "
                             "on both sides; the source wins")
        if abs(lt - rt) < skew:
            return FieldSync("conflict_remote", remote, False,
                             f"conflict on {name}: last_write_wins, the two writes are less "
                             f"than {skew:g}s apart (clock skew): the source wins")
        if lt > rt:
            return FieldSync("conflict_local", local, True,
                             f"conflict on {name}: last_write_wins, the local write is later")
        return FieldSync("conflict_remote", remote, False,
                         f"conflict on {name}: last_write_wins, the source's write is later")
    return FieldSync("conflict_remote", remote, False,
                     f"conflict on {name}: source_wins takes the source's value")


def field_value(row: Mapping[str, Any], fld: str) -> str:
    if fld.startswith("extra:"):
        return str(_extra(row.get("extra")).get(fld[6:], ""))
    return str(row.get(fld) or "")


def two_way_fields(policy: Mapping[str, Any] | None, contact: Mapping[str, Any],
                   incoming: Mapping[str, Any]) -> list[str]:
    """The out/both fields of a source's policy that a pull of `incoming` over
    `contact` compares three ways (canonical fields and `extra:KEY`)."""
    keys = sorted({*_extra(contact.get("extra")), *_extra(incoming.get("extra"))})
    return [f for f in [*FIELDS, *(f"extra:{k}" for k in keys)]
            if direction_of(f, policy) in ("out", "both")]


def resolve_two_way(
    contact: Mapping[str, Any], incoming: Mapping[str, Any], bases: Mapping[str, str],
    policy: Mapping[str, Any], region: str, *, remote_at: str | None = None,
    local_at: str | None = None, local_times: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, FieldSync]]:
    """A pull's incoming record with every out/both field decided three ways.

    `bases` are the contact's recorded bases (a field without one has base ==
    its current value: nothing local pending). Returns the record the mirror
    should end with (values, derived keys and content hash redone when a field
    keeps its local value) and the decision of each field that has one other
    than `none`. The caller keeps the source's own hash as the source hash.
    `remote_at` is the record's modification time at the source; a field's
    local time is `local_times[field]` (when its local edit was made), else
    `local_at`."""
    decisions: dict[str, FieldSync] = {}
    for f in two_way_fields(policy, contact, incoming):
        local = field_value(contact, f)
        d = decide_field_sync(
            bases.get(f, local), local, field_value(incoming, f), strategy_of(f, policy),
            direction=direction_of(f, policy), fld=f,
            local_at=(local_times or {}).get(f, local_at), remote_at=remote_at,
            priority=(policy.get("priority") or {}))
        if d.outcome != "none":
            decisions[f] = d
    out = dict(incoming)
    keep = {f: d.value for f, d in decisions.items() if d.value != field_value(incoming, f)}
    if not keep:
        return out, decisions
    extra = dict(_extra(incoming.get("extra")))
    for f, v in keep.items():
        if f.startswith("extra:"):
            if v:
                extra[f[6:]] = v
            else:
                extra.pop(f[6:], None)
        else:
            out[f] = v
    out["extra"] = json.dumps(extra, ensure_ascii=False, separators=(",", ":"))
    values = [str(out.get(f) or "") for f in FIELDS]
    phone_e, mobile_e, _ = _core.derive_keys(values, region)
    out.update(phone_e164=phone_e, mobile_e164=mobile_e,
               hash=signed_hash(_core.content_hash(values, sorted(extra.items()))))
    return out, decisions


def echo_bases(incoming: Mapping[str, Any],
               sent: Sequence[Mapping[str, tuple[str, str]]]) -> dict[str, str]:
    """Bases of fields whose incoming value is one the agent sent (`sent`: the
    fields of entries sent but not confirmed, oldest first): that value is the
    agent's own write coming back, so the three-way comparison starts from it."""
    out: dict[str, str] = {}
    for fields in sent:
        for f, (_, new) in fields.items():
            if field_value(incoming, f) == new:
                out[f] = new
    return out


def echo_settled(sent: Sequence[Mapping[str, tuple[str, str]]],
                 echo: Mapping[str, str]) -> list[set[str]]:
    """Per entry of `sent` (a contact's entries sent but not confirmed, oldest
    first), the fields an echo settles: the target holds that entry's value
    (it came back), or a later sent entry's value, which the target applied
    after this one (a contact's entries go out in order). Such a field is no
    longer the entry's to write: replayed with its old base, a conditional
    write would refuse it as a conflict once the source changes the field."""
    out: list[set[str]] = [set() for _ in sent]
    for f, value in echo.items():
        last = max((i for i, fields in enumerate(sent)
                    if f in fields and fields[f][1] == value), default=-1)
        for i in range(last + 1):
            if f in sent[i]:
                out[i].add(f)
    return out
