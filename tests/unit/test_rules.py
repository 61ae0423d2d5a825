"""The pure rule functions of rules.py called directly, as tables.

First the spec's examples (shared/spec/mirror-rules.md, as data in
tests/spec_tables.py) row by row: each result row is decided by the function
that decides it in a run, and the contact after the action's write must be the
row, reason included. Then the edge cases of each rule: empty values, field
ownership (local, locked, held values), near misses, ties, partial records,
thresholds exactly at the limit. test_spec_examples.py shows the same tables
through real runs; here a change to one rule fails naming the row. The deletion
guards and `decide_deletion` are in tests/test_rules_deletion.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, get_args

import pytest
from contactsync_agent import _core, rules
from contactsync_agent.mapping import FIELDS
from contactsync_agent.rules import Action
from contactsync_agent.store import RUN_COUNTS

from tests.spec_tables import (
    EX1_EXISTING,
    EX1_INCOMING,
    EX1_RESULT,
    EX2_INCOMING,
    EX2_RESULT,
)

# ---------------------------------------------------------------- builders


def values(name: str = "", email: str = "", phone: str = "", **more: str) -> dict[str, str]:
    """The 14 canonical fields, empty unless given (a name fills the three name fields)."""
    given, _, family = name.partition(" ")
    out = dict.fromkeys(FIELDS, "")
    out.update(given_name=given, family_name=family, display_name=name, email=email,
               phone=phone, **more)
    return out


def content_hash(vals: Mapping[str, str], extra: Mapping[str, str] | None = None) -> int:
    return rules.signed_hash(_core.content_hash([vals[f] for f in FIELDS],
                                                sorted((extra or {}).items())))


def local(cid: int, fields: Mapping[str, str] | None = None, *, record_type: str = "sync",
          forced: bool = False, ext: str | None = None, source: str | None = None,
          extra: Mapping[str, str] | None = None, source_hash: int | None = None,
          **vals: str) -> dict[str, Any]:
    """A contact row as the store returns it (`extra` as JSON text); its values
    are `fields` and `vals`."""
    v = values(**{**(fields or {}), **vals})
    return {"id": cid, **v, "record_type": record_type, "forced_manual": int(forced),
            "external_id": ext, "source": source or ("xpm" if ext else None),
            "extra": json.dumps(dict(extra or {})), "hash": content_hash(v, extra),
            "source_hash": source_hash, "phone_e164": "", "mobile_e164": ""}


def incoming(external_id: str, fields: Mapping[str, str] | None = None, *,
             extra: Mapping[str, str] | None = None, **vals: str) -> dict[str, Any]:
    """An incoming record as the core hands it to the rules."""
    v = values(**{k: x for k, x in {**(fields or {}), **vals}.items() if k != "external_id"})
    return {"external_id": external_id, **v, "extra": json.dumps(dict(extra or {})),
            "hash": content_hash(v, extra)}


def after(contact: Mapping[str, Any], action: Action) -> dict[str, Any]:
    """The contact once the action's write is applied."""
    return {**contact, **action.write}


def one(actions: list[Action], cid: int) -> Action:
    [a] = [a for a in actions if a.contact_id == cid]
    return a


# ---------------------------------------------------------------- the spec's examples

EX1_LOCAL = {
    r["id"]: local(r["id"], record_type=r["type"], forced=r["forced"], ext=r["ext"],
                   name=r["name"], email=r["email"], phone=r["phone"])
    for r in EX1_EXISTING
}
EX1_IN = {r["external_id"]: incoming(r["external_id"], r) for r in EX1_INCOMING}


def plan_example_1() -> list[Action]:
    """What a first run decides for Example 1: D and E carry the external ids of
    contacts 4 and 5 (rule 1); A's identity keys hit manual contact 1 and C's
    hit external contact 3 (rules 2–3); B's hit nothing (the core creates it)
    but nearly matched Mary (2 of 3 keys: the phone differs)."""
    acts = [rules.decide_linked(EX1_LOCAL[4], EX1_IN["D"]),
            rules.decide_linked(EX1_LOCAL[5], EX1_IN["E"])]
    acts += rules.resolve_claims("xpm", [(EX1_IN["A"], [(1, 0)]), (EX1_IN["C"], [(3, 1)])],
                                 EX1_LOCAL)
    touched = {a.contact_id for a in acts if a.contact_id is not None}
    acts += rules.explain_untouched([(2, "phone", "B")], touched)
    return acts


def ex2_local() -> dict[int, dict[str, Any]]:
    """Example 2's mirror: contacts 1, 4 and 5 with Example 1's result values,
    each holding the hash its source last sent (what the core compares)."""
    out = {}
    for cid, name, email, phone, rtype, forced, ext, _ in EX1_RESULT[:5]:
        if ext is None:
            continue
        row = local(cid, record_type=rtype, forced=forced, ext=ext, name=name, email=email,
                    phone=phone)
        row["source_hash"] = EX1_IN[ext]["hash"]
        out[cid] = row
    return out


def plan_example_2() -> list[Action]:
    """Example 2: A, D and E carry the external ids of 1, 4 and 5 (rule 1); F
    hits nothing (the core creates it). A's content is unchanged but the
    contact's hash is asked about anyway (as after a hash-version change)."""
    loc = ex2_local()
    inc = {r["external_id"]: incoming(r["external_id"], r) for r in EX2_INCOMING}
    return [rules.decide_linked(loc[1], inc["A"]), rules.decide_linked(loc[4], inc["D"]),
            rules.decide_linked(loc[5], inc["E"])]


def spec_ids(table: list[tuple[Any, ...]], example: str) -> list[str]:
    return [f"{example}-id{row[0]}-{row[1]}-{row[7]}" for row in table]


def check_row(contact: Mapping[str, Any], action: Action,
              row: tuple[int, str, str, str, str, bool, str | None, str]) -> None:
    _, name, email, phone, rtype, forced, ext, reason = row
    now = after(contact, action)
    assert action.reason == reason
    assert (now["display_name"], now["email"], now["phone"], now["record_type"],
            bool(now["forced_manual"]), now["external_id"]) == (
        name, email, phone, rtype, forced, ext)


@pytest.mark.parametrize("row", EX1_RESULT, ids=spec_ids(EX1_RESULT, "ex1"))
def test_example_1_row_by_row(row: tuple[int, str, str, str, str, bool, str | None, str]) -> None:
    cid, name, email, phone, _, _, ext, reason = row
    acts = plan_example_1()
    if cid in EX1_LOCAL:
        check_row(EX1_LOCAL[cid], one(acts, cid), row)
    elif ext == "B":  # no rule saw it: the core created it, with this reason
        assert not [a for a in acts if a.external_id == "B" and a.kind != "untouched"]
        assert rules.REASONS["created"] == reason
    else:
        [a] = [a for a in acts if a.kind == "create" and a.external_id == ext]
        assert a.reason == reason and a.op == "create" and a.counter == "created"
        assert a.record is not None
        assert (a.record["display_name"], a.record["email"], a.record["phone"]) == (
            name, email, phone)


@pytest.mark.parametrize("row", EX2_RESULT, ids=spec_ids(EX2_RESULT, "ex2"))
def test_example_2_row_by_row(row: tuple[int, str, str, str, str, bool, str | None, str]) -> None:
    cid, *_, reason = row
    loc = ex2_local()
    if cid in loc:
        check_row(loc[cid], one(plan_example_2(), cid), row)
    else:  # F: the core created it
        assert rules.REASONS["created"] == reason


def test_example_1_counts_as_the_spec_says() -> None:
    """One convert by identity, one by external id, one forced (counted as
    skipped), one create past an external match, one external ignored; Mary,
    untouched, counts nowhere."""
    counted = sorted(a.counter for a in plan_example_1() if a.counter)
    assert counted == ["converted", "converted", "created", "ignored_external",
                       "skipped_forced_manual"]


# ---------------------------------------------------------------- rule 1: decide_linked

OWN_NOTES = {"notes": "local"}
BASE = dict(name="Ann Lee", email="ann@lee.au", phone="0400 000 001", notes="met in May")


def linked_case(changes: Mapping[str, str], *, contact: Mapping[str, Any] | None = None,
                ownership: Mapping[str, str] | None = None,
                held: Mapping[str, str] | None = None,
                ) -> tuple[dict[str, Any], dict[str, Any], Action]:
    """Rule 1 for contact 7 (Ann, linked as K7) and Ann's record with `changes`."""
    cur = dict(contact or local(7, BASE, ext="K7"))
    inc = incoming("K7", {**BASE, **changes})
    return cur, inc, rules.decide_linked(cur, inc, ownership, held)


# (id, contact overrides, incoming changes, ownership, held) ->
# (kind, counter, reason, op, feed fields, held, activity kind)
LINKED: list[Any] = [
    pytest.param({}, {}, None, None,
                 ("unchanged", "unchanged", "unchanged", None, [], {}, None),
                 id="same-content-unchanged"),
    pytest.param({"phone": None}, {"phone": ""}, None, None,
                 ("unchanged", "unchanged", "unchanged", None, [], {}, None),
                 id="empty-value-equals-null"),
    pytest.param({}, {"phone": "0400 000 009"}, None, None,
                 ("update", "updated", "updated: external id matched (phone)", "update",
                  ["phone"], {}, None),
                 id="one-field-update"),
    pytest.param({}, {"phone": "0400 000 009", "email": "a@lee.au"}, None, None,
                 ("update", "updated", "updated: external id matched (email, phone)", "update",
                  ["email", "phone"], {}, None),
                 id="fields-named-in-canonical-order"),
    pytest.param({}, {"email": ""}, None, None,
                 ("update", "updated", "updated: external id matched (email)", "update",
                  ["email"], {}, None),
                 id="a-field-sent-empty-is-cleared"),
    pytest.param({"record_type": "manual"}, {}, None, None,
                 ("convert", "converted", "converted: external id matched", "convert",
                  ["record_type"], {}, None),
                 id="manual-with-the-id-converted-no-field-change"),
    pytest.param({"record_type": "manual"}, {"phone": "0400 000 009"}, None, None,
                 ("convert", "converted", "converted and updated: external id matched",
                  "convert", ["record_type", "phone"], {}, None),
                 id="manual-with-the-id-converted-and-updated"),
    pytest.param({"forced": True}, {"phone": "0400 000 009"}, None, None,
                 ("skip", "skipped_forced_manual", "not updated: forced manual", None, [], {},
                  "forced_manual"),
                 id="forced-manual-sync-skipped-with-activity"),
    pytest.param({"forced": True}, {}, None, None,
                 ("skip", "skipped_forced_manual", "not updated: forced manual", None, [], {},
                  None),
                 id="forced-manual-sync-no-change-no-activity"),
    pytest.param({"forced": True, "record_type": "manual"}, {"phone": "0400 000 009"}, None,
                 None,
                 ("convert", "skipped_forced_manual", "converted, not updated: forced manual",
                  "convert", ["record_type"], {}, "forced_manual"),
                 id="forced-manual-converted-not-updated"),
    pytest.param({}, {"notes": "VIP"}, OWN_NOTES, None,
                 ("unchanged", "unchanged", "unchanged", None, [], {"notes": "VIP"},
                  "local_owned"),
                 id="local-owned-change-held-not-written"),
    pytest.param({}, {"notes": "VIP", "phone": "0400 000 009"}, OWN_NOTES, None,
                 ("update", "updated", "updated: external id matched (phone)", "update",
                  ["phone"], {"notes": "VIP"}, "local_owned"),
                 id="local-owned-held-other-field-updated"),
    pytest.param({}, {"notes": "VIP"}, {"notes": "locked"}, None,
                 ("update", "updated", "updated: external id matched (notes)", "update",
                  ["notes"], {}, None),
                 id="locked-field-source-writes-it"),
    pytest.param({}, {"notes": "VIP"}, {"notes": "source"}, None,
                 ("update", "updated", "updated: external id matched (notes)", "update",
                  ["notes"], {}, None),
                 id="source-owned-field-written"),
    pytest.param({}, {"notes": "VIP"}, OWN_NOTES, {"notes": "VIP"},
                 ("unchanged", "unchanged", "unchanged", None, [], {}, None),
                 id="local-owned-source-repeats-its-held-value-no-new-collision"),
    pytest.param({}, {"notes": "met in May"}, OWN_NOTES, {"notes": "VIP"},
                 ("unchanged", "unchanged", "unchanged", None, [], {"notes": "met in May"},
                  None),
                 id="local-owned-source-comes-back-to-the-local-value"),
]


@pytest.mark.parametrize(("over", "changes", "ownership", "held", "want"), LINKED)
def test_decide_linked(over: dict[str, Any], changes: dict[str, str],
                       ownership: dict[str, str] | None, held: dict[str, str] | None,
                       want: tuple[Any, ...]) -> None:
    base = {**BASE, **{k: v for k, v in over.items() if k in FIELDS or k == "name"}}
    cur = local(7, {k: v or "" for k, v in base.items()}, ext="K7",
                record_type=over.get("record_type", "sync"), forced=over.get("forced", False))
    for k, v in over.items():
        if k in FIELDS:
            cur[k] = v  # a NULL column stays NULL
    _, inc, a = linked_case(changes, contact=cur, ownership=ownership, held=held)
    kind, counter, reason, op, feed, keep, activity = want
    assert (a.kind, a.counter, a.reason, a.op) == (kind, counter, reason, op)
    assert (a.contact_id, a.external_id) == (7, "K7")
    assert list(a.feed) == feed
    assert a.held == keep
    assert (a.activity or {}).get("kind") == activity
    assert a.write["source_hash"] == inc["hash"]
    if cur["forced_manual"]:
        assert set(a.write) <= {"source_hash", "record_type"}  # no field changes
        return
    # The contact's hash is the source's unless a local-owned field keeps it apart.
    kept = ownership is not None and any(
        (cur.get(f) or "") != inc[f] for f, o in ownership.items() if o == "local")
    assert a.write["hash"] == (content_hash(after(cur, a)) if kept else inc["hash"])
    for f in feed:
        if f in FIELDS:
            assert a.write[f] == inc[f] and a.feed[f] == [cur[f] or "", inc[f]]


def test_decide_linked_local_owned_collision_names_all_three_values() -> None:
    _, _, a = linked_case({"notes": "VIP"}, ownership=OWN_NOTES, held={"notes": "old source"})
    assert a.activity == {
        "kind": "local_owned",
        "fields": {"notes": {"current": "met in May", "incoming": "VIP",
                             "previous_source": "old source"}},
        "reason": "owned locally: the source's change to notes was not applied (the local "
                  "value is kept; resolve it by hand if the source is right)"}


def test_decide_linked_forced_manual_reports_only_a_new_source_version() -> None:
    """The same source change again (its hash already the contact's
    source_hash) raises no second forced-manual activity."""
    inc = incoming("K7", {**BASE, "phone": "0400 000 009"})
    cur = local(7, BASE, ext="K7", forced=True, source_hash=inc["hash"])
    a = rules.decide_linked(cur, inc)
    assert (a.kind, a.activity) == ("skip", None)
    fresh = rules.decide_linked({**cur, "source_hash": None}, inc)
    assert fresh.activity == {
        "kind": "forced_manual",
        "fields": {"phone": {"current": "0400 000 001", "incoming": "0400 000 009"}},
        "reason": "forced manual: the source's changes to phone were not applied"}


@pytest.mark.parametrize(("ownership", "incoming_extra", "written"), [
    pytest.param({"extra:Tags": "local"}, {"Tags": "b", "Code": "2"}, {"Tags": "a", "Code": "2"},
                 id="local-extra-key-kept-other-key-written"),
    pytest.param({"extra": "local"}, {"Tags": "b", "Code": "2"}, None,
                 id="all-extra-local-nothing-written"),
    pytest.param({"extra:Tags": "local"}, {"Code": "2"}, {"Tags": "a", "Code": "2"},
                 id="local-extra-key-the-source-dropped-is-kept"),
    pytest.param({"extra:Code": "local"}, {"Tags": "b"}, {"Tags": "b"},
                 id="local-extra-key-the-contact-lacks-stays-absent"),
])
def test_decide_linked_extra_ownership(ownership: dict[str, str], incoming_extra: dict[str, str],
                                       written: dict[str, str] | None) -> None:
    cur = local(7, BASE, ext="K7", extra={"Tags": "a"})
    a = rules.decide_linked(cur, incoming("K7", BASE, extra=incoming_extra), ownership)
    if written is None:
        assert "extra" not in a.write and "extra" not in a.feed
    else:
        assert json.loads(a.write["extra"]) == written
        assert a.feed["extra"] == [{"Tags": "a"}, written]


def test_decide_linked_local_owned_phone_keeps_its_derived_key() -> None:
    inc = incoming("K7", {**BASE, "phone": "0400 000 009", "email": "new@lee.au"})
    inc["phone_e164"] = "+61400000009"
    a = rules.decide_linked(local(7, BASE, ext="K7"), inc, {"phone": "local"})
    assert "phone" not in a.write and "phone_e164" not in a.write
    assert a.write["email"] == "new@lee.au"
    b = rules.decide_linked(local(7, BASE, ext="K7"), inc)
    assert b.write["phone_e164"] == "+61400000009"


# ---------------------------------------------------------------- ownership: owner_of

@pytest.mark.parametrize(("fld", "ownership", "owner"), [
    pytest.param("notes", None, "source", id="no-policy-source"),
    pytest.param("notes", {}, "source", id="empty-policy-source"),
    pytest.param("notes", {"notes": "local"}, "local", id="field-local"),
    pytest.param("notes", {"notes": "locked"}, "locked", id="field-locked"),
    pytest.param("email", {"notes": "local"}, "source", id="unlisted-field-source"),
    pytest.param("extra:Tags", {"extra:Tags": "locked"}, "locked", id="extra-key-own-entry"),
    pytest.param("extra:Tags", {"extra": "local"}, "local", id="extra-key-falls-back-to-extra"),
    pytest.param("extra:Tags", {"extra": "local", "extra:Tags": "source"}, "source",
                 id="extra-key-entry-beats-extra"),
    pytest.param("extra:Tags", {"Tags": "local"}, "source", id="bare-key-is-not-extra"),
])
def test_owner_of(fld: str, ownership: dict[str, str] | None, owner: str) -> None:
    assert rules.owner_of(fld, ownership) == owner
    assert owner in rules.OWNERS


# ---------------------------------------------------------------- rules 2–4: resolve_claims


def manual(cid: int, **vals: str) -> dict[str, Any]:
    return local(cid, vals or {"name": "Ann Lee"}, record_type="manual")


def summary(actions: list[Action]) -> list[tuple[Any, ...]]:
    return [(a.kind, a.counter, a.contact_id, a.external_id, a.reason) for a in actions]


ANN = incoming("A", name="Ann Lee")
ANN2 = incoming("A2", name="Ann Lee")
CLAIMS: list[Any] = [
    pytest.param([(ANN, [(1, 0)])], set(),
                 [("convert", "converted", 1, "A", "converted: name, e-mail and phone matched")],
                 id="one-manual-hit-converted"),
    pytest.param([(ANN, [(1, 0), (2, 0)])], set(),
                 [("create", "created", None, "A",
                   "created: 2 local contacts matched, sent to review"),
                  ("untouched", "", 1, "A", "untouched: ambiguous match, sent to review"),
                  ("untouched", "", 2, "A", "untouched: ambiguous match, sent to review")],
                 id="tie-two-manual-hits-ambiguous"),
    pytest.param([(ANN, [(1, 0)]), (ANN2, [(1, 0)])], set(),
                 [("create", "created", None, "A",
                   "created: 2 incoming records matched one local contact, sent to review"),
                  ("untouched", "", 1, "A", "untouched: ambiguous match, sent to review"),
                  ("create", "created", None, "A2",
                   "created: 2 incoming records matched one local contact, sent to review"),
                  ("untouched", "", 1, "A2", "untouched: ambiguous match, sent to review")],
                 id="tie-two-records-claim-one-contact-contested"),
    pytest.param([(ANN, [(3, 1)])], set(),
                 [("create", "created", None, "A",
                   "created: the only match was an external record"),
                  ("untouched", "ignored_external", 3, "A",
                   "untouched: belongs to another integration")],
                 id="external-only-never-adopted"),
    pytest.param([(ANN, [(3, 1)]), (ANN2, [(3, 1)])], set(),
                 [("create", "created", None, "A",
                   "created: the only match was an external record"),
                  ("untouched", "ignored_external", 3, "A",
                   "untouched: belongs to another integration"),
                  ("create", "created", None, "A2",
                   "created: the only match was an external record")],
                 id="external-hit-twice-reported-once"),
    pytest.param([(ANN, [(1, 0), (3, 1)])], set(),
                 [("convert", "converted", 1, "A", "converted: name, e-mail and phone matched"),
                  ("untouched", "ignored_external", 3, "A",
                   "untouched: belongs to another integration")],
                 id="manual-and-external-hit-manual-converted"),
    pytest.param([(ANN, [(1, 0)])], {("A", 1)},
                 [("create", "created", None, "A",
                   "created: the matching contact was rejected in review before")],
                 id="rejected-pair-created"),
    pytest.param([(ANN, [(1, 0), (2, 0)])], {("A", 2)},
                 [("convert", "converted", 1, "A", "converted: name, e-mail and phone matched")],
                 id="rejected-pair-breaks-the-tie"),
    pytest.param([(ANN, [(1, 0)]), (ANN2, [(1, 0)])], {("A2", 1)},
                 [("convert", "converted", 1, "A", "converted: name, e-mail and phone matched"),
                  ("create", "created", None, "A2",
                   "created: the matching contact was rejected in review before")],
                 id="rejected-claimant-does-not-contest"),
]


@pytest.mark.parametrize(("claims", "rejected", "want"), CLAIMS)
def test_resolve_claims(claims: list[Any], rejected: set[tuple[str, int]],
                        want: list[tuple[Any, ...]]) -> None:
    loc = {1: manual(1), 2: manual(2), 3: local(3, record_type="external", name="Ann Lee")}
    acts = rules.resolve_claims("xpm", claims, loc, rejected)
    assert summary(acts) == want
    for a in acts:
        if a.kind == "create":
            assert a.record is not None and a.record["external_id"] == a.external_id
            assert a.op == "create"
            ambiguous = a.reason_code in ("created_ambiguous", "created_contested")
            assert bool(a.reviews) == ambiguous
        if a.kind == "untouched":
            assert (a.write, a.feed, a.op) == ({}, {}, None)


def test_resolve_claims_ambiguous_review_items() -> None:
    [create, *_] = rules.resolve_claims("xpm", [(ANN, [(1, 0), (2, 0)])],
                                        {1: manual(1), 2: manual(2)})
    reason = "created: 2 local contacts matched, sent to review"
    assert create.reviews == [
        {"candidate_id": cid, "kind": "ambiguous", "score": None,
         "explanation": {"identity": "name, e-mail and phone matched"}, "reason": reason}
        for cid in (1, 2)]


def test_resolve_claims_identity_conversion_writes_and_feeds() -> None:
    cur = manual(1, name="Ann Lee", city="Perth")
    inc = incoming("A", name="Ann Lee", city="Hobart")
    [a] = rules.resolve_claims("xpm", [(inc, [(1, 0)])], {1: cur})
    assert (a.op, a.reason_code) == ("convert", "converted_identity")
    assert a.write == {"city": "Hobart", "record_type": "sync", "source": "xpm",
                       "external_id": "A", "hash": inc["hash"], "source_hash": inc["hash"]}
    assert a.feed == {"record_type": ["manual", "sync"], "source": [None, "xpm"],
                      "external_id": [None, "A"], "city": ["Perth", "Hobart"]}


def test_resolve_claims_forced_manual_is_linked_again_never_overwritten() -> None:
    cur = local(1, record_type="manual", forced=True, name="Ann Lee", city="Perth")
    inc = incoming("A", name="Ann Lee", city="Hobart")
    [a] = rules.resolve_claims("xpm", [(inc, [(1, 0)])], {1: cur})
    assert (a.kind, a.counter, a.reason_code, a.op) == (
        "convert", "skipped_forced_manual", "converted_forced_manual", "convert")
    assert a.write == {"record_type": "sync", "source": "xpm", "external_id": "A",
                       "source_hash": inc["hash"]}
    assert a.activity is not None and a.activity["fields"] == {
        "city": {"current": "Perth", "incoming": "Hobart"}}


def test_resolve_claims_partial_record_keeps_what_it_left_out() -> None:
    """An incremental record (absent_fields) converting a contact by identity:
    the fields it did not carry keep the contact's values."""
    cur = manual(1, name="Ann Lee", city="Perth", notes="n")
    inc = incoming("A", name="Ann Lee", city="Hobart")
    inc["absent_fields"] = ["notes"]
    [a] = rules.resolve_claims("xpm", [(inc, [(1, 0)])], {1: cur})
    assert "notes" not in a.write and a.write["city"] == "Hobart"
    whole = values(name="Ann Lee", city="Hobart", notes="n")
    assert a.write["hash"] == content_hash(whole)


# ---------------------------------------------------------------- near misses: explain_untouched

@pytest.mark.parametrize(("near", "touched", "want"), [
    pytest.param([(2, "phone", "B")], set(),
                 [(2, "B", "untouched: no identity match (phone differs)")], id="phone-differs"),
    pytest.param([(2, "email", "B")], set(),
                 [(2, "B", "untouched: no identity match (e-mail differs)")], id="email-worded"),
    pytest.param([(2, "name", "B")], set(),
                 [(2, "B", "untouched: no identity match (name differs)")], id="name-differs"),
    pytest.param([(2, "mobile", "B")], set(),
                 [(2, "B", "untouched: no identity match (mobile differs)")],
                 id="other-field-named-as-is"),
    pytest.param([(2, "phone", "B")], {2}, [], id="touched-contact-not-explained"),
    pytest.param([(2, "phone", "B"), (2, "email", "C"), (4, "name", "C")], set(),
                 [(2, "B", "untouched: no identity match (phone differs)"),
                  (4, "C", "untouched: no identity match (name differs)")],
                 id="first-near-miss-per-contact"),
    pytest.param([], set(), [], id="none"),
])
def test_explain_untouched(near: list[tuple[int, str, str]], touched: set[int],
                           want: list[tuple[int, str, str]]) -> None:
    acts = rules.explain_untouched(near, touched)
    assert [(a.contact_id, a.external_id, a.reason) for a in acts] == want
    for a in acts:
        assert (a.kind, a.counter, a.reason_code, a.op, a.write) == (
            "untouched", "", "untouched_no_identity", None, {})


# ---------------------------------------------------------------- merge_partial


def test_merge_partial_a_full_record_is_returned_as_it_is() -> None:
    inc = incoming("A", name="Ann Lee")
    out = rules.merge_partial(local(1, name="Bo Lee", city="Perth"), inc)
    assert out == inc and out is not inc


PARTIAL: list[Any] = [
    # current values, incoming values, absent fields, held -> expected values
    pytest.param({"city": "Perth"}, {}, ["city"], None, {"city": "Perth"},
                 id="absent-field-keeps-current"),
    pytest.param({"city": "Perth"}, {"city": ""}, [], None, {"city": ""},
                 id="sent-empty-clears"),
    pytest.param({"city": "Perth"}, {"city": "Hobart"}, [], None, {"city": "Hobart"},
                 id="sent-value-replaces"),
    pytest.param({"notes": "local"}, {}, ["notes"], {"notes": "source's"},
                 {"notes": "source's"}, id="absent-local-owned-keeps-the-held-source-value"),
    pytest.param({"notes": "local"}, {}, ["notes"], {}, {"notes": "local"},
                 id="absent-nothing-held-keeps-current"),
]


@pytest.mark.parametrize(("cur", "inc", "absent", "held", "want"), PARTIAL)
def test_merge_partial_fields(cur: dict[str, str], inc: dict[str, str], absent: list[str],
                              held: dict[str, str] | None, want: dict[str, str]) -> None:
    rec = incoming("A", {"name": "Ann Lee", **inc})
    rec["absent_fields"] = absent
    out = rules.merge_partial(local(1, {"name": "Ann Lee", **cur}), rec, held)
    for f, v in want.items():
        assert out[f] == v
    assert out["hash"] == content_hash(values(name="Ann Lee", **want))


@pytest.mark.parametrize(("held", "e164"), [
    pytest.param(None, "+61400000001", id="absent-phone-keeps-current-key"),
    pytest.param({"phone": "0400 000 002"}, "+61400000002", id="absent-held-phone-normalised"),
])
def test_merge_partial_phone_key(held: dict[str, str] | None, e164: str) -> None:
    cur = {**local(1, name="Ann Lee", phone="0400 000 001"), "phone_e164": "+61400000001"}
    rec = incoming("A", name="Ann Lee")
    rec["absent_fields"] = ["phone"]
    out = rules.merge_partial(cur, rec, held)
    assert out["phone_e164"] == e164


@pytest.mark.parametrize(("cur", "inc", "cleared", "held", "want"), [
    pytest.param({"A": "1", "B": "2"}, {"B": "3"}, [], None, {"A": "1", "B": "3"},
                 id="unsent-key-kept-sent-key-replaced"),
    pytest.param({"A": "1", "B": "2"}, {}, ["A"], None, {"B": "2"}, id="cleared-key-dropped"),
    pytest.param({"A": "mine"}, {}, [], {"extra:A": "theirs"}, {"A": "theirs"},
                 id="local-owned-key-takes-the-held-source-value"),
    pytest.param({"A": "mine"}, {}, [], {"extra:A": ""}, {},
                 id="held-empty-source-value-drops-the-key"),
    pytest.param({"A": "mine"}, {"A": "new"}, [], {"extra:A": "theirs"}, {"A": "new"},
                 id="sent-key-beats-held"),
    pytest.param({}, {}, [], None, {}, id="empty"),
])
def test_merge_partial_extra(cur: dict[str, str], inc: dict[str, str], cleared: list[str],
                             held: dict[str, str] | None, want: dict[str, str]) -> None:
    rec = incoming("A", extra=inc, name="Ann Lee")
    rec["absent_fields"] = []
    rec["cleared_extra"] = cleared
    out = rules.merge_partial(local(1, extra=cur, name="Ann Lee"), rec, held)
    assert json.loads(out["extra"]) == want
    assert out["hash"] == content_hash(values(name="Ann Lee"), want)


# ---------------------------------------------------------------- field_diff

@pytest.mark.parametrize(("cur", "inc", "want"), [
    pytest.param({}, {}, {}, id="nothing"),
    pytest.param({"email": None}, {"email": ""}, {}, id="null-equals-empty"),
    pytest.param({"email": None}, {"email": "a@b.au"}, {"email": ["", "a@b.au"]},
                 id="null-to-value-reported-as-empty"),
    pytest.param({"email": "a@b.au"}, {}, {"email": ["a@b.au", ""]}, id="value-to-missing"),
    pytest.param({"email": "A@b.au"}, {"email": "a@b.au"}, {"email": ["A@b.au", "a@b.au"]},
                 id="case-is-a-difference"),
    pytest.param({"extra": '{"A":"1"}'}, {"extra": {"A": "1"}}, {}, id="extra-text-equals-dict"),
    pytest.param({"extra": None}, {"extra": "{}"}, {}, id="extra-null-equals-empty"),
    pytest.param({"extra": '{"A":"1"}'}, {"extra": '{"A":"2"}'},
                 {"extra": [{"A": "1"}, {"A": "2"}]}, id="extra-differs"),
    pytest.param({"notes": "x", "given_name": "a"}, {"notes": "y", "given_name": "b"},
                 {"given_name": ["a", "b"], "notes": ["x", "y"]}, id="canonical-order"),
])
def test_field_diff(cur: dict[str, Any], inc: dict[str, Any], want: dict[str, Any]) -> None:
    out = rules.field_diff(cur, inc)
    assert out == want and list(out) == list(want)


# ---------------------------------------------------------------- take_over


def test_take_over() -> None:
    cur = manual(2, name="Ann Lee", city="Perth")
    new = {**local(9, ext="N9", name="Ann Lee", city="Hobart"), "source_hash": 5}
    write, feed = rules.take_over(cur, new)
    assert write["record_type"] == "sync" and write["external_id"] == "N9"
    assert write["source"] == "xpm" and write["city"] == "Hobart"
    assert (write["hash"], write["source_hash"]) == (new["hash"], 5)
    assert set(write) == {*FIELDS, "extra", "phone_e164", "mobile_e164", "hash", "source_hash",
                          "record_type", "source", "external_id"}
    assert feed == {"record_type": ["manual", "sync"], "source": [None, "xpm"],
                    "external_id": [None, "N9"], "city": ["Perth", "Hobart"]}


# ---------------------------------------------------------------- rule 5: decide_fuzzy

EXPL = {"email": {"level": "exact", "weight": 9.1}, "given_name": {"level": "different",
                                                                   "weight": -2.0}}


def fuzzy(pairs: list[tuple[int, int, float]], rejected: set[tuple[str, int]] | None = None,
          threshold: float | None = None) -> list[tuple[str, str, int | None]]:
    new_external = {new: f"N{new}" for _, new, _ in pairs}
    acts = rules.decide_fuzzy([(lo, new, p, EXPL) for lo, new, p in pairs], new_external,
                              rejected or set(), auto_link_threshold=threshold)
    return [(a.kind, a.counter, a.contact_id) for a in acts]


FUZZY: list[Any] = [
    pytest.param([(1, 10, 0.97)], None, None, [("review", "", 10)],
                 id="no-auto-link-setting-review-only"),
    pytest.param([(1, 10, 0.95)], None, 0.95, [("auto_link", "converted", 1)],
                 id="exactly-at-the-threshold-links"),
    pytest.param([(1, 10, 0.9499)], None, 0.95, [("review", "", 10)],
                 id="just-under-the-threshold-review"),
    pytest.param([(1, 10, 0.97), (2, 10, 0.96)], None, 0.95,
                 [("review", "", 10), ("review", "", 10)], id="tie-one-new-two-locals-review"),
    pytest.param([(1, 10, 0.97), (1, 11, 0.96)], None, 0.95,
                 [("review", "", 10), ("review", "", 11)], id="tie-one-local-two-news-review"),
    pytest.param([(1, 10, 0.97), (2, 10, 0.96)], {("N10", 2)}, 0.95,
                 [("auto_link", "converted", 1)], id="rejected-pair-dropped-breaks-the-tie"),
    pytest.param([(1, 10, 0.6)], {("N10", 1)}, None, [], id="rejected-pair-never-again"),
    pytest.param([], None, 0.95, [], id="none"),
]


@pytest.mark.parametrize(("pairs", "rejected", "threshold", "want"), FUZZY)
def test_decide_fuzzy(pairs: list[tuple[int, int, float]], rejected: set[tuple[str, int]] | None,
                      threshold: float | None, want: list[tuple[str, str, int | None]]) -> None:
    assert fuzzy(pairs, rejected, threshold) == want


def test_decide_fuzzy_review_item_and_auto_link_payloads() -> None:
    pairs = [(1, 10, 0.8, EXPL)]
    [review] = rules.decide_fuzzy(pairs, {10: "N10"}, set())
    text = "possible match (80%): email agree; given_name differ"
    assert (review.reason_code, review.reason, review.external_id) == ("review_fuzzy", text,
                                                                       "N10")
    assert review.reviews == [{"candidate_id": 1, "kind": "fuzzy", "score": 0.8,
                               "explanation": EXPL, "reason": text}]
    [link] = rules.decide_fuzzy(pairs, {10: "N10"}, set(), auto_link_threshold=0.8)
    assert (link.reason, link.op, link.external_id) == (
        "converted: fuzzy match 80% above the auto-link threshold", "convert", "N10")
    assert link.record == {"new_id": 10, "probability": 0.8, "explanation": EXPL}


@pytest.mark.parametrize(("expl", "text"), [
    pytest.param({"email": {"level": "missing_left"}}, "weak agreement", id="nothing-agrees"),
    pytest.param({"city": {"level": "different"}}, "weak agreement; city differ",
                 id="only-differences"),
    pytest.param({"email": {"level": "exact"}, "city": {"level": "fuzzy"}}, "email, city agree",
                 id="partial-levels-agree"),
])
def test_decide_fuzzy_explanation_text(expl: dict[str, Any], text: str) -> None:
    [a] = rules.decide_fuzzy([(1, 10, 0.5, expl)], {10: "N10"}, set())
    assert a.reason == f"possible match (50%): {text}"


# ---------------------------------------------------------------- the typed action


def test_the_action_vocabularies_are_closed_and_consistent() -> None:
    """Every reason code has its text (and no text lacks a code); every counter
    an action adds to is a run count the store keeps."""
    assert set(get_args(rules.ReasonCode)) == set(rules.REASONS)
    assert set(get_args(rules.RunCounter)) - {""} <= set(RUN_COUNTS)


PLANS: list[Callable[[], list[Action]]] = [plan_example_1, plan_example_2]


@pytest.mark.parametrize("plan", PLANS, ids=["ex1", "ex2"])
def test_every_action_of_a_plan_is_a_known_kind_with_its_op(
        plan: Callable[[], list[Action]]) -> None:
    ops: dict[str, set[str | None]] = {
        "create": {"create"}, "convert": {"convert"}, "update": {"update"},
        "unchanged": {None}, "skip": {None}, "untouched": {None}, "unlink": {"unlink"},
        "delete": {"delete"}, "review": {None}, "auto_link": {"convert"}}
    assert set(ops) == set(get_args(rules.ActionKind))
    for a in plan():
        assert a.op in ops[a.kind]
        assert a.reason_code in rules.REASONS
        with pytest.raises(AttributeError):
            a.kind = "delete"  # type: ignore[misc]  # frozen: a plan is not edited


# ---------------------------------------------------------------- decide_unique_clashes

# Contacts 1-9 existed before the run, 10 on are the run's new ones. A row is
# (contact the run wrote the value to, the value, another live contact holding it),
# as the store's clash query returns them; `before` holds the before-values of
# the fields the run changed on existing contacts.
NEW = 10
BEFORE: dict[int, dict[str, Any]] = {
    2: {"email": "old2@x.example"},
    3: {"email": "", "extra": {"Tax": "T3"}},
    4: {"extra": {}},
}


@pytest.mark.parametrize(("key", "rows", "want"), [
    pytest.param("email", [], [], id="no clash"),
    # An existing contact changed to a value contact 1 held already: 1 keeps it,
    # 2 keeps its value from before the run.
    pytest.param("email", [(2, "a@x.example", 1)],
                 [(2, "a@x.example", 1, "old2@x.example")], id="existing writer loses to holder"),
    # A contact the run created with a held value: it keeps nothing ("").
    pytest.param("email", [(10, "a@x.example", 1)],
                 [(10, "a@x.example", 1, "")], id="new contact loses to holder"),
    # Several held it before the run: the lowest id of them keeps it.
    pytest.param("email", [(10, "a@x.example", 5), (10, "a@x.example", 1)],
                 [(10, "a@x.example", 1, "")], id="lowest holder keeps"),
    # Two new contacts got the same value in this run (nobody held it): the
    # lowest id keeps it, the other gets the clash.
    pytest.param("email", [(11, "b@x.example", 12), (12, "b@x.example", 11)],
                 [(12, "b@x.example", 11, "")], id="lowest newcomer keeps"),
    # An existing contact and a new one both got it: the lowest id (the existing) keeps it.
    pytest.param("email", [(2, "b@x.example", 10), (10, "b@x.example", 2)],
                 [(10, "b@x.example", 2, "")], id="existing newcomer keeps over new one"),
    # Two values of one key are decided on their own.
    pytest.param("email", [(2, "a@x.example", 1), (11, "b@x.example", 5)],
                 [(2, "a@x.example", 1, "old2@x.example"), (11, "b@x.example", 5, "")],
                 id="two values"),
    # An unmapped column: the before-value comes from `extra`; a column that was
    # not there before is kept as "".
    pytest.param("extra:Tax", [(3, "T1", 1)], [(3, "T1", 1, "T3")], id="extra column"),
    pytest.param("extra:Tax", [(4, "T1", 1)], [(4, "T1", 1, "")], id="extra column was absent"),
    # An empty before-value (the field was empty) is kept as "".
    pytest.param("email", [(3, "a@x.example", 1)], [(3, "a@x.example", 1, "")],
                 id="empty before"),
    # A value that is not text (a JSON number in `extra`) is compared as text.
    pytest.param("extra:Tax", [(10, 42, 1)], [(10, "42", 1, "")], id="number value as text"),
])
def test_decide_unique_clashes(key: str, rows: list[tuple[int, Any, int]],
                               want: list[tuple[int, str, int, str]]) -> None:
    got = rules.decide_unique_clashes(key, rows, BEFORE, NEW)
    assert [(c.contact_id, c.value, c.held_by, c.kept) for c in got] == want
    assert all(c.key == key and c.activity for c in got)


def test_decide_unique_clashes_an_open_activity_is_not_raised_again() -> None:
    """The value is still not applied (the revert stands), but an open
    `unique_clash` activity about the same contact and value is not repeated;
    one about another value is."""
    rows = [(2, "a@x.example", 1), (10, "a@x.example", 1)]
    got = rules.decide_unique_clashes("email", rows, BEFORE, NEW,
                                      already_open={(2, "a@x.example"), (10, "other@x.example")})
    assert [(c.contact_id, c.kept, c.activity) for c in got] == [
        (2, "old2@x.example", False), (10, "", True)]


def test_unique_clash_activity_payload_and_text() -> None:
    [c] = rules.decide_unique_clashes("email", [(2, "a@x.example", 1)], BEFORE, NEW)
    assert c.activity_fields == {"email": {"value": "a@x.example", "held_by": 1,
                                           "kept": "old2@x.example"}}
    assert c.reason == ("unique field email: 'a@x.example' is already held by contact 1; "
                        "not applied to contact 2, which keeps 'old2@x.example' (resolve by "
                        "hand: correct the source, or merge the two)")


# ---------------------------------------------------------------- two-way: decide_field_sync

T0 = "2026-01-01T10:00:00Z"
T_LATER = "2026-01-01T11:00:00Z"
T_CLOSE = "2026-01-01T10:00:30Z"

# (base, local, remote, strategy, extra kwargs) -> (outcome, value, push)
FIELD_SYNC_TABLE: list[tuple[str, str, str, str, dict[str, Any], str, str, bool]] = [
    # No conflict: the strategy plays no part.
    ("a", "a", "a", "source_wins", {}, "none", "a", False),
    ("a", "a", "r", "local_wins", {}, "remote", "r", False),
    ("a", "l", "a", "source_wins", {}, "local", "l", True),
    ("a", "x", "x", "review", {}, "echo", "x", False),  # the agent's own write coming back
    # A conflict, by strategy.
    ("a", "l", "r", "source_wins", {}, "conflict_remote", "r", False),
    ("a", "l", "r", "local_wins", {}, "conflict_local", "l", True),
    ("a", "l", "r", "review", {}, "review", "l", False),
    ("a", "l", "r", "priority", {"priority": {"email": "local"}}, "conflict_local", "l", True),
    ("a", "l", "r", "priority", {"priority": {"email": "source"}}, "conflict_remote", "r", False),
    ("a", "l", "r", "priority", {"priority": {}}, "conflict_remote", "r", False),
    ("a", "l", "r", "last_write_wins", {"local_at": T_LATER, "remote_at": T0},
     "conflict_local", "l", True),
    ("a", "l", "r", "last_write_wins", {"local_at": T0, "remote_at": T_LATER},
     "conflict_remote", "r", False),
    # Clock skew: closer than CLOCK_SKEW_SECONDS, or a time missing: the source wins.
    ("a", "l", "r", "last_write_wins", {"local_at": T_CLOSE, "remote_at": T0},
     "conflict_remote", "r", False),
    ("a", "l", "r", "last_write_wins", {"local_at": T_LATER}, "conflict_remote", "r", False),
    ("a", "l", "r", "last_write_wins", {"local_at": T_LATER, "remote_at": "garbage"},
     "conflict_remote", "r", False),
    # Direction out: the local value is authoritative.
    ("a", "a", "r", "source_wins", {"direction": "out"}, "local", "a", True),
    ("a", "l", "r", "source_wins", {"direction": "out"}, "conflict_local", "l", True),
    ("a", "l", "a", "source_wins", {"direction": "out"}, "local", "l", True),
    ("", "", "", "local_wins", {}, "none", "", False),
    ("a", "", "r", "local_wins", {}, "conflict_local", "", True),  # clearing is a change
]


@pytest.mark.parametrize(("base", "local", "remote", "strategy", "kw", "outcome", "value",
                          "push"), FIELD_SYNC_TABLE)
def test_decide_field_sync_table(base: str, local: str, remote: str, strategy: str,
                                 kw: dict[str, Any], outcome: str, value: str,
                                 push: bool) -> None:
    # Short names in the table, e-mail addresses in the call.
    v = {"a": "base@x.example", "l": "local@x.example", "r": "remote@x.example",
         "x": "same@x.example", "": ""}
    base, local, remote, value = v[base], v[local], v[remote], v[value]
    d = rules.decide_field_sync(base, local, remote, strategy, fld="email", **kw)
    assert (d.outcome, d.value, d.push) == (outcome, value, push)
    assert d.conflict == outcome.startswith(("conflict", "review"))
    assert "email" in d.reason
    # The reason never carries a value.
    for shown in {local, remote, base} - {""}:
        assert shown not in d.reason


def test_every_strategy_has_a_row() -> None:
    assert {row[3] for row in FIELD_SYNC_TABLE} == set(rules.STRATEGIES)
    assert rules.CLOCK_SKEW_SECONDS > 30  # T_CLOSE is inside it


def test_direction_and_strategy_lookup() -> None:
    policy = {"directions": {"default": "in", "email": "both", "extra": "out"},
              "conflicts": {"default": "review", "email": "local_wins"}}
    assert rules.direction_of("email", policy) == "both"
    assert rules.direction_of("phone", policy) == "in"
    assert rules.direction_of("extra:Tags", policy) == "out"
    assert rules.direction_of("phone", None) == "in"
    assert rules.strategy_of("email", policy) == "local_wins"
    assert rules.strategy_of("phone", policy) == "review"
    assert rules.strategy_of("phone", {}) == "source_wins"
    assert rules.two_way(policy) and not rules.two_way({"directions": {"default": "in"}})
    assert not rules.two_way({})


def test_resolve_two_way_keeps_local_and_redoes_the_hash() -> None:
    policy = {"directions": {"email": "both", "phone": "both"},
              "conflicts": {"default": "local_wins"}}
    cur = {"id": 1, **values("John Smith", "l@x.example", "0400 000 001"), "extra": "{}"}
    inc = {**values("John Smith", "r@x.example", "0400 000 009"), "extra": "{}",
           "external_id": "A", "hash": 7}
    out, decisions = rules.resolve_two_way(cur, inc, {"email": "b@x.example"}, policy, "AU")
    assert decisions["email"].outcome == "conflict_local"
    assert decisions["phone"].outcome == "remote"  # no base: only the source changed it
    assert out["email"] == "l@x.example" and out["phone"] == "0400 000 009"
    expect = [out[f] for f in FIELDS]
    assert out["hash"] == rules.signed_hash(_core.content_hash(expect, []))
    assert out["hash"] != 7
