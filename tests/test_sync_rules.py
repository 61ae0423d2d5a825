"""Mirror-rule behaviour beyond the spec's examples: identity keys, ambiguity,
deletions, safety guards, idempotence, the change feed and local ids."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from contactsync_agent.errors import LockedError, SafetyLimitError
from contactsync_agent.mirror import Mirror


def dump(db: Path) -> list[tuple]:
    """Every contact row and feed entry: what 'nothing changed' is checked against."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return (con.execute("SELECT * FROM contacts ORDER BY id").fetchall()
                + con.execute("SELECT * FROM changes ORDER BY seq").fetchall()
                + con.execute("SELECT * FROM activities ORDER BY id").fetchall())
    finally:
        con.close()


def rec(ext: str, name: str, email: str = "", phone: str = "", **kw: str) -> dict[str, str]:
    return dict(external_id=ext, name=name, email=email, phone=phone, **kw)


@pytest.mark.parametrize(("local_email", "local_phone", "incoming_email", "incoming_phone"), [
    ("John@Smith.com", "0400 000 001", "john@smith.com ", "+61 400 000 001"),
    ("john@smith.com", "+61400000001", "JOHN@SMITH.COM", "0400-000-001"),
    ("john@smith.com", "(02) 9123 4567", "john@smith.com", "+61 2 9123 4567"),
])
def test_normalised_email_and_phone_make_an_identity_match(
    mirror: Mirror, local_email: str, local_phone: str, incoming_email: str,
    incoming_phone: str,
) -> None:
    cid = mirror.add_contact(name="John  Smith", email=local_email, phone=local_phone)
    report = mirror.sync("xpm", [rec("A", "john smith", incoming_email, incoming_phone)])
    c = mirror.get(cid)
    assert (c.record_type, c.external_id) == ("sync", "A")
    assert report.decision_for(cid).reason == "converted: name, e-mail and phone matched"  # type: ignore[union-attr]
    assert len(mirror.contacts()) == 1


def test_accents_and_case_in_names_match(mirror: Mirror) -> None:
    cid = mirror.add_contact(name="Zoë Ångström", email="zoe@x.com")
    mirror.sync("xpm", [rec("A", "ZOE ANGSTROM", "zoe@x.com")])
    assert mirror.get(cid).external_id == "A"


def test_empty_matches_only_empty(mirror: Mirror) -> None:
    cid = mirror.add_contact(name="John Smith", email="john@smith.com", phone="")
    mirror.sync("xpm", [rec("A", "John Smith", "john@smith.com", "0400 000 001")])
    assert mirror.get(cid).record_type == "manual"


def test_two_local_candidates_are_ambiguous(mirror: Mirror) -> None:
    a = mirror.add_contact(name="John Smith", email="john@smith.com")
    b = mirror.add_contact(name="John Smith", email="john@smith.com")
    report = mirror.sync("xpm", [rec("A", "John Smith", "john@smith.com")])
    assert mirror.get(a).record_type == mirror.get(b).record_type == "manual"
    [created] = [d for d in report.decisions if d.action == "create"]
    assert created.reason == "created: 2 local contacts matched, sent to review"
    items = mirror.review.items()
    assert {i.candidate_id for i in items} == {a, b}
    assert {i.contact_id for i in items} == {created.contact_id}
    assert report.counts["review_items"] == 2 and report.counts["converted"] == 0


def test_two_incoming_records_claiming_one_contact(mirror: Mirror) -> None:
    cid = mirror.add_contact(name="John Smith", email="john@smith.com")
    report = mirror.sync("xpm", [rec("A", "John Smith", "john@smith.com"),
                                 rec("B", "John Smith", "john@smith.com")])
    assert mirror.get(cid).record_type == "manual"
    created = [d for d in report.decisions if d.action == "create"]
    assert len(created) == 2
    assert all("2 incoming records matched one local contact" in d.reason for d in created)
    assert [i.candidate_id for i in mirror.review.items()] == [cid, cid]
    assert report.decision_for(cid).reason == "untouched: ambiguous match, sent to review"  # type: ignore[union-attr]


def test_deletion_of_contact_not_in_use_is_soft(mirror: Mirror) -> None:
    mirror.sync("xpm", [rec(str(i), f"P{i} Smith") for i in range(10)])
    report = mirror.sync("xpm", [rec(str(i), f"P{i} Smith") for i in range(1, 10)])
    assert report.counts["deleted"] == 1
    gone = mirror.get(1)
    assert gone.deleted_at is not None and gone.external_id == "0"
    assert 1 not in [c.id for c in mirror.contacts()]
    last = mirror.changes()[-1]
    assert (last.contact_id, last.op, last.reason) == (1, "delete",
                                                       "deleted: removed from the source")


def test_deletion_of_contact_in_use_unlinks_it(mirror: Mirror) -> None:
    mirror.sync("xpm", [rec(str(i), f"P{i} Smith") for i in range(10)])
    mirror.add_reference(1, "case:42")
    report = mirror.sync("xpm", [rec(str(i), f"P{i} Smith") for i in range(1, 10)])
    c = mirror.get(1)
    assert (c.deleted_at, c.record_type, c.external_id, c.source) == (None, "manual", None, None)
    assert report.counts["unlinked"] == 1 and report.counts["deleted"] == 0
    [act] = mirror.activities()
    assert act.contact_id == 1 and act.kind == "source_deletion"
    assert "in use (case:42)" in act.reason
    last = mirror.changes()[-1]
    assert last.op == "unlink" and last.fields["external_id"] == ["0", None]


def test_explicit_delete_in_incremental_feed(mirror: Mirror) -> None:
    mirror.sync("xpm", [rec(str(i), f"P{i} Smith") for i in range(5)])
    report = mirror.sync("xpm", [{"external_id": "3", "deleted": "true"},
                                 rec("9", "New Person")], mode="incremental")
    assert report.counts["deleted"] == 1 and report.counts["created"] == 1
    assert mirror.get(4).deleted_at is not None  # external id "3" is contact 4
    assert len(mirror.contacts()) == 5  # absent records are not deletions in incremental mode


def test_mass_deletion_guard_refuses_and_changes_nothing(mirror: Mirror, db_path: Path) -> None:
    mirror.sync("xpm", [rec(str(i), f"P{i} Smith") for i in range(10)])
    before = dump(db_path)
    with pytest.raises(SafetyLimitError, match=r"delete 3 of 10 contacts .*30%.*20%"):
        mirror.sync("xpm", [rec(str(i), f"P{i} Smith", "changed@x.com") for i in range(7)])
    assert dump(db_path) == before
    refused = mirror.runs("xpm", 1)[0]
    assert refused["status"] == "refused" and "20%" in refused["error"]
    # Confirmed: the same snapshot goes through and the override is on the run's record.
    report = mirror.sync("xpm", [rec(str(i), f"P{i} Smith") for i in range(7)],
                         allow_mass_delete=True)
    assert report.counts["deleted"] == 3
    assert mirror.runs("xpm", 1)[0]["allow_mass_delete"] == 1


def test_empty_export_never_wipes_the_mirror(mirror: Mirror, db_path: Path) -> None:
    mirror.sync("xpm", [rec("1", "A Smith")])
    before = dump(db_path)
    with pytest.raises(SafetyLimitError, match="no records"):
        mirror.sync("xpm", [])
    assert dump(db_path) == before


def test_same_snapshot_twice_writes_nothing(mirror: Mirror, db_path: Path) -> None:
    records = [rec(str(i), f"P{i} Smith", f"p{i}@x.com", "0400 000 00" + str(i % 10))
               for i in range(50)]
    mirror.sync("xpm", records)
    before = dump(db_path)
    report = mirror.sync("xpm", records)
    assert report.counts["unchanged"] == 50
    assert sum(report.counts[k] for k in ("created", "updated", "converted", "deleted")) == 0
    assert dump(db_path) == before


def test_change_feed_records_before_and_after(mirror: Mirror) -> None:
    mirror.sync("xpm", [rec("A", "John Smith", "john@smith.com", "0400 000 001")])
    since = mirror.changes()[-1].seq
    mirror.sync("xpm", [rec("A", "John Smith", "john@work.com", "0400 000 001",
                            organisation="Acme")])
    [ch] = mirror.changes(since=since)
    assert ch.op == "update"
    assert ch.fields == {"email": ["john@smith.com", "john@work.com"],
                         "organisation": ["", "Acme"]}
    assert ch.reason == "updated: external id matched (organisation, email)"
    assert mirror.get(ch.contact_id).phone_e164 == "+61400000001"


def test_create_feed_entry_carries_the_values(mirror: Mirror) -> None:
    mirror.sync("xpm", [rec("A", "John Smith", "john@smith.com", Fax="123")])
    [ch] = mirror.changes()
    assert ch.op == "create"
    assert ch.fields["email"] == [None, "john@smith.com"]
    assert ch.fields["external_id"] == [None, "A"]
    assert ch.fields["extra"] == [None, {"Fax": "123"}]


def test_local_ids_are_never_reused(mirror: Mirror) -> None:
    mirror.sync("xpm", [rec(str(i), f"P{i} Smith") for i in range(3)])
    # Even a hard-deleted highest id stays retired.
    mirror.store.conn.execute("DELETE FROM contacts WHERE id = 3")
    cid = mirror.add_contact(name="Local Person")
    assert cid == 4
    report = mirror.sync("xpm", [rec("9", "Another")], mode="incremental")
    assert [d.contact_id for d in report.decisions if d.action == "create"] == [5]


def test_ids_ignore_the_sources_ids(mirror: Mirror) -> None:
    mirror.sync("xpm", [rec("1000", "A Smith"), rec("7", "B Smith")])
    assert [(c.id, c.external_id) for c in mirror.contacts()] == [(1, "1000"), (2, "7")]


def test_forced_manual_activity_is_not_repeated(mirror: Mirror) -> None:
    mirror.sync("xpm", [rec("A", "John Smith", "john@smith.com")])
    mirror.set_forced_manual(1, True)
    mirror.sync("xpm", [rec("A", "John Smith", "john@work.com")])
    mirror.sync("xpm", [rec("A", "John Smith", "john@work.com")])
    assert len(mirror.activities()) == 1
    assert mirror.get(1).email == "john@smith.com"


def test_unmapped_columns_are_kept_in_extra(mirror: Mirror) -> None:
    mirror.sync("xpm", [{"Client ID": "A", "First Name": "John", "Surname": "Smith",
                         "Partner": "AB", "Client Code": "C1"}])
    c = mirror.get(1)
    assert (c.given_name, c.family_name, c.external_id) == ("John", "Smith", "A")
    assert c.extra == {"Client Code": "C1", "Partner": "AB"}


def test_a_second_writer_waits_for_the_first_ones_write(db_path: Path, mirror: Mirror) -> None:
    # Two read-write mirrors may be open; their writes take turns (issue 12).
    with Mirror.open(db_path, wait=0.2) as second:
        with mirror.store.transaction(), pytest.raises(LockedError, match="still locked by"):
            second.add_contact(name="Too Soon")
        second.add_contact(name="In Turn")
    with Mirror.open(db_path, readonly=True) as ro:
        assert [c.name for c in ro.contacts()] == ["In Turn"]


def test_database_is_owner_only(db_path: Path, mirror: Mirror) -> None:
    mirror.sync("xpm", [rec("A", "John Smith")])
    for p in db_path.parent.iterdir():
        if p.name.startswith(db_path.name):
            assert p.stat().st_mode & 0o077 == 0, p


def test_run_row_records_counts(mirror: Mirror) -> None:
    report = mirror.sync("xpm", [rec("A", "John Smith"), rec("B", "Mary Smith")])
    run = mirror.runs("xpm", 1)[0]
    assert run["id"] == report.run_id and run["status"] == "ok"
    assert (run["records"], run["created"], run["mode"]) == (2, 2, "full")
    assert json.loads(json.dumps(report.to_dict()))["counts"]["created"] == 2
