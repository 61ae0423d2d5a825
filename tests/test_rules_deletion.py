"""The deletion rules called directly, as tables: the mass-deletion guard, the
column-drop guard and what a source deletion does to one contact. The end-to-end
tests show the same through real runs; these pin every field of the result
(the structured error a caller reads, the feed payload a reader replays, the
activity an admin resolves), so a change to any of them fails here first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from contactsync_agent import rules
from contactsync_agent.defaults import MASS_DELETE_LIMIT
from contactsync_agent.errors import SafetyLimitError
from contactsync_agent.mirror import Mirror

# ---------------------------------------------------------------- the mass-deletion guard

GUARD = [
    # would_delete, linked, incoming, limit, allowed -> refused?
    (0, 0, 0, 0.20, False, False),  # nothing linked yet: a first import is never refused
    (0, 10, 10, 0.20, False, False),
    (2, 10, 8, 0.20, False, False),  # exactly the limit: allowed
    (3, 10, 57, 0.20, False, True),  # over it, whatever the snapshot also adds
    (8, 10, 52, 0.20, False, True),  # issue 12, defect 1
    (8, 10, 52, 0.20, True, False),  # confirmed
    (10, 10, 0, 0.20, False, True),  # an empty export
    (10, 10, 0, 0.20, True, False),  # an empty export, confirmed
    (5, 10, 5, 0.50, False, False),  # a source's own limit
    (6, 10, 4, 0.50, False, True),
    (1, 5, 4, MASS_DELETE_LIMIT, False, False),  # the default limit (20 %), exactly
    (20, 100, 80, MASS_DELETE_LIMIT, False, False),
    (21, 100, 79, MASS_DELETE_LIMIT, False, True),  # just over it
]


@pytest.mark.parametrize(("would", "linked", "incoming", "limit", "allowed", "refused"), GUARD)
def test_the_mass_deletion_guard(would: int, linked: int, incoming: int, limit: float,
                                 allowed: bool, refused: bool) -> None:
    def check() -> None:
        rules.check_deletion_guard("xpm", would_delete=would, linked=linked, incoming=incoming,
                                   limit=limit, allowed=allowed)

    if not refused:
        check()
        return
    with pytest.raises(SafetyLimitError) as e:
        check()
    err = e.value
    assert (err.would_delete, err.total, err.limit) == (would, linked, limit)
    assert err.exit_code == 4
    text = str(err)
    assert text.startswith("refused: ") and "'xpm'" in text
    assert text.endswith("(re-run with --allow-mass-delete to confirm)")
    if incoming == 0:
        assert "has no records" in text and f"holds {linked} of its contacts" in text
    else:
        assert f"would delete {would} of {linked} contacts" in text
        assert f"({would / linked:.0%}, over the {limit:.0%} limit)" in text


@pytest.mark.parametrize(("missing", "allowed", "refused"), [
    ({}, False, False),
    ({"mobile": "Mobile"}, True, False),
    ({"mobile": "Mobile"}, False, True),
    ({"mobile": "Mobile", "email": "Email"}, False, True),
])
def test_the_column_drop_guard(missing: dict[str, str], allowed: bool, refused: bool) -> None:
    if not refused:
        rules.check_column_drop("xpm", missing, allowed=allowed)
        return
    with pytest.raises(SafetyLimitError) as e:
        rules.check_column_drop("xpm", missing, allowed=allowed)
    text = str(e.value)
    assert "'xpm'" in text and text.endswith("(re-run with --allow-column-drop to confirm)")
    for f, h in missing.items():
        assert f"{h!r} ({f})" in text
    assert ("those fields" if len(missing) > 1 else "that field") in text


# ---------------------------------------------------------------- one source deletion


def contact(record_type: str = "sync", forced: bool = False) -> dict[str, Any]:
    return {"id": 7, "external_id": "K7", "record_type": record_type, "forced_manual": forced,
            "source": "xpm" if record_type == "sync" else None}


UNLINK_WRITE = {"record_type": "manual", "external_id": None, "source": None,
                "source_hash": None}
UNLINK_FEED = {"record_type": ["sync", "manual"], "external_id": ["K7", None],
               "source": ["xpm", None]}


def test_a_deletion_of_an_unused_sync_contact_deletes_it() -> None:
    a = rules.decide_deletion(contact(), [])
    assert (a.kind, a.counter, a.reason_code, a.reason) == (
        "delete", "deleted", "deleted", "deleted: removed from the source")
    assert (a.contact_id, a.external_id, a.op, a.feed, a.write, a.activity) == (
        7, "K7", "delete", {}, {}, None)


@pytest.mark.parametrize("record_type", ["manual", "external"])
def test_a_deletion_of_a_contact_that_is_not_a_sync_record_touches_nothing(
        record_type: str) -> None:
    a = rules.decide_deletion(contact(record_type), ["case:1"])
    assert (a.kind, a.counter, a.reason_code) == ("untouched", "", "delete_not_sync")
    assert a.reason == "untouched: delete for a contact that is not a sync record"
    assert (a.contact_id, a.external_id, a.op, a.write, a.feed, a.activity) == (
        7, "K7", None, {}, {}, None)


@pytest.mark.parametrize(("refs", "shown"), [
    (["case:1"], "case:1"),
    ([f"case:{i}" for i in range(5)], "case:0, case:1, case:2, case:3, case:4"),
    ([f"case:{i}" for i in range(6)], "case:0, case:1, case:2, case:3, case:4 …"),
])
def test_a_deletion_of_a_contact_in_use_unlinks_it(refs: list[str], shown: str) -> None:
    a = rules.decide_deletion(contact(), refs)
    assert (a.kind, a.counter, a.reason_code, a.op) == (
        "unlink", "unlinked", "unlinked_in_use", "unlink")
    assert a.reason == f"unlinked, kept as manual: removed from the source but in use ({shown})"
    assert (a.contact_id, a.external_id) == (7, "K7")
    assert a.write == UNLINK_WRITE and a.feed == UNLINK_FEED
    assert a.activity == {"kind": "source_deletion", "fields": {"references": refs},
                          "reason": a.reason}


def test_a_deletion_of_a_forced_manual_contact_in_use_names_its_references() -> None:
    a = rules.decide_deletion(contact(forced=True), ["case:1"])
    assert (a.kind, a.reason_code) == ("unlink", "unlinked_in_use")
    assert a.activity is not None and a.activity["fields"] == {"references": ["case:1"]}


def test_a_deletion_of_a_forced_manual_contact_unlinks_it() -> None:
    a = rules.decide_deletion(contact(forced=True), [])
    assert (a.kind, a.counter, a.reason_code, a.op) == (
        "unlink", "unlinked", "unlinked_forced_manual", "unlink")
    assert a.reason == ("unlinked, kept as manual: removed from the source but forced manual")
    assert a.write == UNLINK_WRITE and a.feed == UNLINK_FEED
    assert a.activity == {"kind": "source_deletion", "fields": {"references": []},
                          "reason": a.reason}


# ---------------------------------------------------------------- what a run reports


def test_a_run_reports_every_deletion_decision(tmp_path: Path) -> None:
    """Explicit deletes of unknown ids are reported as ignored; deletions skipped
    because a row could not be identified are reported per contact, and counted."""
    with Mirror.open(tmp_path / "m.db") as m:
        m.sync("xpm", [{"external_id": f"K{i}", "name": f"P{i} Lee"} for i in range(10)])
        inc = m.sync("xpm", [{"external_id": "NOPE", "deleted": "true"}], mode="incremental")
        [d] = [d for d in inc.decisions if d.external_id == "NOPE"]
        assert (d.contact_id, d.action, d.reason_code, d.reason) == (
            None, "ignored", "delete_unknown", rules.REASONS["delete_unknown"])
        f = tmp_path / "e.csv"
        f.write_text("Client ID,Name\n" + "".join(f"K{i},P{i} Lee\n" for i in range(8))
                     + ",No Id\n", encoding="utf-8")
        full = m.sync_file("xpm", f)
        assert full.counts["deletions_skipped"] == 2 and full.counts["deleted"] == 0
        kept = sorted((d.contact_id, d.external_id, d.action, d.reason_code, d.reason)
                      for d in full.decisions if d.reason_code == "deletion_skipped")
        ids = {c.external_id: c.id for c in m.contacts(source="xpm")}
        assert kept == [(ids[e], e, "kept", "deletion_skipped",
                         rules.REASONS["deletion_skipped"]) for e in ("K8", "K9")]
        assert any("2 contact(s) absent from this snapshot were kept" in w
                   for w in full.warnings)


def test_a_run_refuses_a_column_drop_naming_the_source_until_confirmed(tmp_path: Path) -> None:
    with Mirror.open(tmp_path / "m.db") as m:
        a = tmp_path / "a.csv"
        a.write_text("Client ID,Name,Mobile\nK1,Ann Lee,0400 000 001\n", encoding="utf-8")
        m.sync_file("xpm", a)
        b = tmp_path / "b.csv"
        b.write_text("Client ID,Name\nK1,Ann Lee\n", encoding="utf-8")
        with pytest.raises(SafetyLimitError, match="of source 'xpm' has no column for 'Mobile'"):
            m.sync_file("xpm", b)
        assert m.contacts(source="xpm")[0].mobile == "0400 000 001"
        report = m.sync_file("xpm", b, allow_column_drop=True)
        assert report.counts["updated"] == 1 and m.contacts(source="xpm")[0].mobile == ""
        # The confirmed header is the source's now: the same file again goes through.
        assert m.sync_file("xpm", b).counts["unchanged"] == 1


def test_a_run_refused_by_the_mass_deletion_guard_names_its_source(tmp_path: Path) -> None:
    with Mirror.open(tmp_path / "m.db") as m:
        m.sync("crm", [{"external_id": f"K{i}", "name": f"P{i} Lee"} for i in range(10)])
        with pytest.raises(SafetyLimitError, match="would delete 8 of 10 contacts of source "
                                                   "'crm'") as e:
            m.sync("crm", [{"external_id": f"K{i}", "name": f"P{i} Lee"} for i in range(2)])
        assert (e.value.would_delete, e.value.total) == (8, 10)
        assert len(m.contacts(source="crm")) == 10
