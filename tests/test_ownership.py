"""Field ownership (source / local / locked) and unique fields: refused local
edits with who owns the field, local-owned fields surviving syncs, activities
on collisions, and unique-value clashes naming both contacts."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from contactsync_agent import rules
from contactsync_agent.cli import _load_extensions, cli
from contactsync_agent.errors import ContactSyncError, OwnershipError
from contactsync_agent.mirror import Mirror

OWN = {"notes": "local", "extra:Tags": "local", "email": "locked"}


def rec(ext: str, name: str, **kw: str) -> dict[str, str]:
    return {"id": ext, "name": name, **kw}


@pytest.fixture
def synced(mirror: Mirror) -> tuple[Mirror, int]:
    mirror.sync("xpm", [rec("A", "John Smith", email="john@x.example", phone="0400 000 001",
                            notes="from source", Tags="vip")], ownership=OWN)
    return mirror, mirror.contacts()[0].id


def test_owner_of() -> None:
    assert rules.owner_of("phone", None) == "source"
    assert rules.owner_of("notes", OWN) == "local"
    assert rules.owner_of("extra:Tags", OWN) == "local"
    assert rules.owner_of("extra:Other", {"extra": "local"}) == "local"
    assert rules.owner_of("extra:Other", OWN) == "source"


def test_source_owned_edit_is_refused_with_who_owns_it(synced) -> None:
    m, cid = synced
    with pytest.raises(OwnershipError) as e:
        m.ownership.edit_contact(cid, phone="0400 999 999")
    msg = str(e.value)
    assert "phone of contact" in msg and "owned by source 'xpm'" in msg
    assert f"contactsync contacts force-manual {cid}" in msg
    assert e.value.fields == {"phone": "source"} and e.value.contact_id == cid
    assert m.get(cid).phone == "0400 000 001"  # nothing written


def test_locked_field_refused_even_when_forced_manual(synced) -> None:
    m, cid = synced
    m.set_forced_manual(cid)
    with pytest.raises(OwnershipError, match="locked"):
        m.ownership.edit_contact(cid, email="other@x.example")
    # Forced manual takes the source-owned fields over.
    m.ownership.edit_contact(cid, phone="0400 999 999")
    assert m.get(cid).phone == "0400 999 999"


def test_local_edit_goes_through_the_feed(synced) -> None:
    m, cid = synced
    written = m.ownership.edit_contact(cid, notes="called 3 May", extra={"Tags": "vip, late payer"})
    assert written == {"notes": ["from source", "called 3 May"],
                       "extra": [{"Tags": "vip"}, {"Tags": "vip, late payer"}]}
    last = m.changes()[-1]
    assert (last.contact_id, last.op, last.reason) == (cid, "update", "edited locally")
    # Manual contacts have no owner but their users.
    manual = m.add_contact(name="Walk In", phone="0400 123 123")
    m.ownership.edit_contact(manual, phone="0400 123 124")
    assert m.get(manual).phone == "0400 123 124"


def test_local_owned_fields_survive_syncs(synced) -> None:
    m, cid = synced
    m.ownership.edit_contact(cid, notes="ours", extra={"Tags": "ours"})
    # The source changes another field: its unchanged notes/tags do not come back.
    m.sync("xpm", [rec("A", "John Smith", email="john@x.example", phone="0400 000 002",
                       notes="from source", Tags="vip")])
    c = m.get(cid)
    assert (c.phone, c.notes, c.extra["Tags"]) == ("0400 000 002", "ours", "ours")
    assert m.activities() == []  # the source did not change them: no collision


def test_source_change_to_a_local_field_raises_an_activity(synced) -> None:
    m, cid = synced
    m.ownership.edit_contact(cid, notes="ours")
    m.sync("xpm", [rec("A", "John Smith", email="john@x.example", phone="0400 000 001",
                       notes="source rewrote it", Tags="vip")])
    assert m.get(cid).notes == "ours"
    (act,) = m.activities()
    assert act.kind == "local_owned" and act.contact_id == cid
    assert act.fields["notes"] == {"current": "ours", "incoming": "source rewrote it",
                                   "previous_source": "from source"}
    assert "not applied" in act.reason
    # The same source value again is no new collision.
    m.sync("xpm", [rec("A", "John Smith", email="john@x.example", phone="0400 000 003",
                       notes="source rewrote it", Tags="vip")])
    assert len(m.activities()) == 1
    # A local field never edited locally is still not overwritten.
    m.sync("xpm", [rec("A", "John Smith", email="john@x.example", phone="0400 000 003",
                       notes="source rewrote it", Tags="gold")])
    assert m.get(cid).extra["Tags"] == "vip"
    assert m.activities()[-1].fields["extra:Tags"]["incoming"] == "gold"


def test_locked_and_source_fields_follow_the_source(synced) -> None:
    m, cid = synced
    m.sync("xpm", [rec("A", "John Smith", email="new@x.example", phone="0400 000 001",
                       notes="from source", Tags="vip")])
    assert m.get(cid).email == "new@x.example"


def test_cli_edit(synced, db_path, tmp_path) -> None:
    m, cid = synced
    m.close()
    _load_extensions()
    run = CliRunner()
    r = run.invoke(cli, ["--db", str(db_path), "contacts", "edit", str(cid), "--phone", "1"])
    assert r.exit_code == 7
    assert "owned by source 'xpm'" in r.output and "force-manual" in r.output
    r = run.invoke(cli, ["--db", str(db_path), "contacts", "edit", str(cid), "--notes", "hi",
                         "--extra", "Tags=x"])
    assert r.exit_code == 0, r.output
    assert "edited extra, notes" in r.output


# ---------------------------------------------------------------- unique fields

UNIQ = ["extra:ABN", "email"]


def test_unique_clash_on_create_names_both_contacts(mirror: Mirror) -> None:
    mirror.sync("xpm", [rec("A", "Ann Lee", ABN="11 111", email="a@x.example"),
                        rec("B", "Bob Lee", ABN="22 222", email="b@x.example")], unique=UNIQ)
    mirror.sync("xpm", [rec("A", "Ann Lee", ABN="11 111", email="a@x.example"),
                        rec("B", "Bob Lee", ABN="22 222", email="b@x.example"),
                        rec("C", "Cid Lee", ABN="11 111", email="c@x.example")],
                mode="full")
    ids = {c.external_id: c.id for c in mirror.contacts()}
    assert mirror.get(ids["C"]).extra.get("ABN") is None  # not applied
    assert mirror.get(ids["A"]).extra["ABN"] == "11 111"
    (act,) = mirror.activities()
    assert act.kind == "unique_clash" and act.contact_id == ids["C"]
    assert f"held by contact {ids['A']}" in act.reason and f"contact {ids['C']}" in act.reason
    assert act.fields == {"extra:ABN": {"value": "11 111", "held_by": ids["A"], "kept": ""}}
    # The feed tells readers the value was not kept.
    last = mirror.changes()[-1]
    assert last.contact_id == ids["C"] and last.reason_code == "unique_clash"


def test_unique_clash_on_update_keeps_the_old_value(mirror: Mirror) -> None:
    base = [rec("A", "Ann Lee", email="a@x.example"), rec("B", "Bob Lee", email="b@x.example")]
    mirror.sync("xpm", base, unique=UNIQ)
    ids = {c.external_id: c.id for c in mirror.contacts()}
    report = mirror.sync("xpm", [base[0], rec("B", "Bob Lee", email="a@x.example")])
    assert report.counts["activities"] == 1
    assert mirror.get(ids["B"]).email == "b@x.example"
    assert mirror.get(ids["A"]).email == "a@x.example"
    act = mirror.activities()[0]
    assert act.fields["email"]["held_by"] == ids["A"]
    # Not raised again for the same clash while it is open.
    mirror.sync("xpm", [base[0], rec("B", "Bob Lee", email="a@x.example", phone="0400 1")])
    assert len(mirror.activities()) == 1


def test_swap_within_one_run_is_no_clash(mirror: Mirror) -> None:
    mirror.sync("xpm", [rec("A", "Ann", email="a@x.example"), rec("B", "Bob", email="b@x.example")],
                unique=["email"])
    mirror.sync("xpm", [rec("A", "Ann", email="b@x.example"), rec("B", "Bob", email="a@x.example")])
    assert mirror.activities() == []
    assert {c.external_id: c.email for c in mirror.contacts()} == {
        "A": "b@x.example", "B": "a@x.example"}


def test_two_new_records_with_one_value(mirror: Mirror) -> None:
    mirror.sync("xpm", [rec("A", "Ann", ABN="9"), rec("B", "Bob", ABN="9")], unique=UNIQ)
    ids = {c.external_id: c.id for c in mirror.contacts()}
    assert mirror.get(ids["A"]).extra["ABN"] == "9"
    assert "ABN" not in mirror.get(ids["B"]).extra
    assert mirror.activities()[0].contact_id == ids["B"]


def test_local_edit_to_a_taken_unique_value_is_refused(mirror: Mirror) -> None:
    mirror.sync("xpm", [rec("A", "Ann", email="a@x.example")], unique=["email"])
    manual = mirror.add_contact(name="Walk In")
    with pytest.raises(ContactSyncError, match="already used by contact"):
        mirror.ownership.edit_contact(manual, email="a@x.example")


def test_bad_unique_key_is_a_config_error(mirror: Mirror) -> None:
    with pytest.raises(ContactSyncError, match="unknown unique field"):
        mirror.ownership.set_policy("xpm", unique=["nope"])
