"""Two-way sync (issue 15): conflicts a person resolves. With strategy
`review`, a field changed on both sides becomes a review item with its three
values; `Mirror.review.resolve_conflict` (CLI `review resolve ID --take
source|local | --value TEXT`) takes the source's value, keeps the local one
(pushed through the outbox) or stores a typed one (pushed too), each with a
feed entry and its reason; a stale item is refused, and a later pull closes
the items it made stale. Real mirror files, real folder and HTTP writers (the
fake system of record on 127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from contactsync_agent.cli import _load_extensions, cli
from contactsync_agent.config import SourceConfig, parse_config
from contactsync_agent.errors import ContactSyncError, NotFoundError
from contactsync_agent.mirror import Mirror
from contactsync_agent.source_runs import sync_source
from fakesor import FakeSor, fakesor_fixture  # noqa: F401  (the fixture)

POLICY = {"directions": {"default": "in", "email": "both", "phone": "both"},
          "conflicts": {"default": "review"}, "priority": {}, "push_new": "none"}


def rec(email: str, *, phone: str = "0400 000 001", name: str = "John Smith") -> dict[str, str]:
    return {"id": "A", "name": name, "email": email, "phone": phone}


def pull(m: Mirror, email: str, **kw: str) -> None:
    m.sync("xpm", [rec(email, **kw)])


@pytest.fixture
def conflict(mirror: Mirror) -> tuple[Mirror, int, int]:
    """Contact A (base john@x.example), edited locally to l@, changed at the
    source to r@: one open conflict item."""
    mirror.sync("xpm", [rec("john@x.example")])
    mirror.ownership.set_sync_policy("xpm", POLICY)
    cid = mirror.contacts()[0].id
    mirror.ownership.edit_contact(cid, email="l@x.example")
    pull(mirror, "r@x.example")
    [item] = conflicts(mirror)
    return mirror, cid, item.id


def conflicts(m: Mirror, status: str | None = "open") -> list[Any]:
    return [i for i in m.review.items(status) if i.kind == "conflict"]


def row(m: Mirror, cid: int) -> dict[str, Any]:
    r = m.store.contacts.row(cid)
    assert r is not None
    return r


def open_entries(m: Mirror) -> list[Any]:
    return [e for e in m.store.outbox.entries() if e.status in ("pending", "sent")]


def resolved_feed(m: Mirror) -> list[Any]:
    return [c for c in m.changes() if c.reason_code == "conflict_resolved"]


def folder_cfg(tmp_path: Path) -> SourceConfig:
    return parse_config({"sources": {"xpm": {
        "kind": "folder", "outbox": str(tmp_path / "out"), "push_new": "none",
        "mapping": {"Client ID": "external_id", "Email Address": "email"},
        "directions": {"email": "both", "phone": "both"},
        "conflicts": {"default": "review"}}}}).sources["xpm"]


# ---------------------------------------------------------------- the three choices


def test_the_item_holds_the_three_values(conflict: tuple[Mirror, int, int]) -> None:
    m, cid, item_id = conflict
    assert row(m, cid)["email"] == "l@x.example"  # the local value stays meanwhile
    [s] = [s for s in m.review.summaries() if s["id"] == item_id]
    assert s["conflict"] == {"field": "email", "base": "john@x.example",
                             "local": "l@x.example", "remote": "r@x.example"}
    cmp = m.review.compare(item_id)
    assert cmp["conflict"]["remote"] == "r@x.example"


def test_take_source(conflict: tuple[Mirror, int, int], tmp_path: Path) -> None:
    m, cid, item_id = conflict
    out = m.review.resolve_conflict(item_id, take="source")
    assert out["resolution"] == "source" and out["pushed"] is False
    r = row(m, cid)
    assert r["email"] == "r@x.example" and r["record_type"] == "sync"
    assert m.store.outbox.bases([cid]) == {}  # the mirror holds what the source holds
    assert open_entries(m) == []
    [item] = conflicts(m, None)
    assert item.status == "accepted" and item.explanation["resolution"] == "source"
    [c] = resolved_feed(m)
    assert c.fields == {"email": ["l@x.example", "r@x.example"]}
    assert c.reason == (f"conflict on email resolved by a person (review item {item_id}): "
                        "the source's value taken")
    assert m.push(folder_cfg(tmp_path)).counts["confirmed"] == 0
    # The same record again is no conflict, and a change elsewhere is no conflict either.
    pull(m, "r@x.example", name="Johnny Smith")
    assert conflicts(m) == [] and row(m, cid)["email"] == "r@x.example"


def test_take_local_pushes_it_over_the_source(conflict: tuple[Mirror, int, int],
                                             tmp_path: Path) -> None:
    m, cid, item_id = conflict
    out = m.review.resolve_conflict(item_id, take="local")
    assert out["resolution"] == "local" and out["pushed"] is True
    assert row(m, cid)["email"] == "l@x.example"
    # The source holds r@: it is the base the local value goes out over.
    assert m.store.outbox.bases([cid]) == {cid: {"email": "r@x.example"}}
    [e] = open_entries(m)
    assert e.id == out["outbox_entry"] and e.kind == "update" and e.external_id == "A"
    assert e.fields == {"email": ("r@x.example", "l@x.example")}
    [c] = resolved_feed(m)
    assert c.fields == {} and "the local value kept and queued to push to xpm" in c.reason
    report = m.push(folder_cfg(tmp_path))
    assert report.counts["confirmed"] == 1
    [csv] = sorted((tmp_path / "out").glob("*.csv"))
    assert csv.read_text(encoding="utf-8").splitlines() == ["Client ID,Email Address",
                                                           "A,l@x.example"]
    # The source imports it and sends it back: an echo, not a conflict.
    pull(m, "l@x.example")
    assert conflicts(m) == [] and m.store.outbox.bases([cid]) == {}
    assert [c.reason_code for c in m.changes()].count("two_way_conflict") == 1


def test_a_typed_value_is_stored_and_pushed(conflict: tuple[Mirror, int, int]) -> None:
    m, cid, item_id = conflict
    out = m.review.resolve_conflict(item_id, value="  both@x.example ")
    assert out["resolution"] == "value" and out["pushed"] is True
    assert row(m, cid)["email"] == "both@x.example"  # cleaned as any edit
    [e] = open_entries(m)
    assert e.fields == {"email": ("r@x.example", "both@x.example")}
    [c] = resolved_feed(m)
    assert c.fields == {"email": ["l@x.example", "both@x.example"]}
    assert "a value typed by a person stored and queued to push to xpm" in c.reason
    assert "both@" not in c.reason and "r@x" not in c.reason  # field names only
    [item] = conflicts(m, None)
    assert item.explanation["value"] == "both@x.example"


def test_a_typed_phone_gets_its_e164_key(conflict: tuple[Mirror, int, int]) -> None:
    m, cid, _ = conflict
    m.ownership.edit_contact(cid, phone="0400 000 002")
    pull(m, "r@x.example", phone="0400 000 003")
    [item] = [i for i in conflicts(m) if i.explanation["field"] == "phone"]
    m.review.resolve_conflict(item.id, value="0400 000 004")
    r = row(m, cid)
    assert (r["phone"], r["phone_e164"]) == ("0400 000 004", "+61400000004")


def test_typing_the_sources_value_pushes_nothing(conflict: tuple[Mirror, int, int]) -> None:
    m, cid, item_id = conflict
    out = m.review.resolve_conflict(item_id, value="r@x.example")
    assert out["pushed"] is False and out["outbox_entry"] is None
    assert row(m, cid)["email"] == "r@x.example" and open_entries(m) == []
    assert m.store.outbox.bases([cid]) == {}


def test_resolving_joins_the_contacts_pending_entry(conflict: tuple[Mirror, int, int]) -> None:
    m, cid, item_id = conflict
    m.ownership.edit_contact(cid, phone="0400 000 009")  # another field, pending
    m.review.resolve_conflict(item_id, take="local")
    [e] = open_entries(m)
    assert e.fields == {"phone": ("0400 000 001", "0400 000 009"),
                        "email": ("r@x.example", "l@x.example")}


# ---------------------------------------------------------------- refusals and stale items


def test_stale_after_a_local_edit_is_refused_and_closed(
        conflict: tuple[Mirror, int, int]) -> None:
    m, cid, item_id = conflict
    m.ownership.edit_contact(cid, email="again@x.example")
    seq = m.changes()[-1].seq
    with pytest.raises(ContactSyncError, match=rf"review item {item_id} is stale: email of "
                       rf"contact {cid} was edited locally since the conflict was recorded"):
        m.review.resolve_conflict(item_id, take="source")
    assert row(m, cid)["email"] == "again@x.example"  # nothing changed
    assert m.changes(since=seq) == []
    [item] = conflicts(m, None)
    assert item.status == "rejected" and "edited locally" in item.explanation["closed"]
    with pytest.raises(ContactSyncError, match="is stale: email of contact"):
        m.review.resolve_conflict(item_id, take="local")


def test_a_later_pull_replaces_a_stale_item(conflict: tuple[Mirror, int, int]) -> None:
    m, cid, item_id = conflict
    pull(m, "r2@x.example")  # the source changed the field again
    [old] = [i for i in conflicts(m, None) if i.id == item_id]
    [new] = conflicts(m)
    assert old.status == "rejected" and new.explanation["remote"] == "r2@x.example"
    with pytest.raises(ContactSyncError, match=rf"is stale: a later pull changed email again "
                       rf"\(review item {new.id} replaces it\); nothing changed"):
        m.review.resolve_conflict(item_id, take="source")
    assert row(m, cid)["email"] == "l@x.example"
    m.review.resolve_conflict(new.id, take="source")
    assert row(m, cid)["email"] == "r2@x.example"


def test_the_same_conflict_again_is_one_item_and_one_alert(
        conflict: tuple[Mirror, int, int]) -> None:
    m, _, item_id = conflict
    pull(m, "r@x.example", name="Johnny Smith")  # another field changed; email as before
    assert [i.id for i in conflicts(m)] == [item_id]
    assert [c.reason_code for c in m.changes()].count("two_way_conflict") == 1


def test_a_duplicate_item_is_closed_in_favour_of_the_first(
        conflict: tuple[Mirror, int, int]) -> None:
    m, cid, item_id = conflict
    [item] = conflicts(m)
    with m.store.transaction():  # as an older agent made them: one per pull
        dup = m.store.review.add_item(
            run_id=None, source="xpm", external_id="A", contact_id=cid, candidate_id=cid,
            kind="conflict", score=None, explanation=item.explanation, reason=item.reason,
            at=item.created_at)
    pull(m, "r@x.example", name="Johnny Smith")
    assert [i.id for i in conflicts(m)] == [item_id]
    [closed] = [i for i in conflicts(m, None) if i.id == dup]
    assert closed.explanation["closed"] == f"the same conflict on email waits in review item " \
                                           f"{item_id}"


def test_a_pull_that_settles_the_field_closes_the_item(
        conflict: tuple[Mirror, int, int]) -> None:
    m, cid, _ = conflict
    pull(m, "john@x.example")  # the source went back to the base: only local changed
    assert conflicts(m) == []
    [item] = conflicts(m, None)
    assert item.status == "rejected"
    assert item.explanation["closed"].startswith("a later pull settled email")
    assert row(m, cid)["email"] == "l@x.example"
    [e] = open_entries(m)  # the local value goes out again
    assert e.fields["email"][1] == "l@x.example"


def test_a_contact_deleted_at_the_source_makes_the_item_stale(
        conflict: tuple[Mirror, int, int]) -> None:
    m, cid, item_id = conflict
    m.sync("xpm", [{"id": "B", "name": "Other One"}], allow_mass_delete=True)  # A is gone
    assert row(m, cid)["deleted_at"] is not None
    with pytest.raises(ContactSyncError, match=rf"is stale: contact {cid} is no longer a "
                       "synced contact of xpm 'A'"):
        m.review.resolve_conflict(item_id, take="local")
    assert open_entries(m) == []


def test_an_item_whose_values_a_purge_erased_is_stale(
        conflict: tuple[Mirror, int, int]) -> None:
    m, cid, item_id = conflict
    m.sync("xpm", [{"id": "B", "name": "Other One"}], allow_mass_delete=True)
    m.purge(older_than_days=0)
    assert m.store.contacts.row(cid) is None
    with pytest.raises(ContactSyncError, match=r"is stale: its values were erased \(purge\)"):
        m.review.resolve_conflict(item_id, take="source")


def test_wrong_calls_are_refused(conflict: tuple[Mirror, int, int]) -> None:
    m, _, item_id = conflict
    with pytest.raises(ContactSyncError, match="not both"):
        m.review.resolve_conflict(item_id)
    with pytest.raises(ContactSyncError, match="not both"):
        m.review.resolve_conflict(item_id, take="local", value="x")
    with pytest.raises(ContactSyncError, match="take must be"):
        m.review.resolve_conflict(item_id, take="both")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        m.review.resolve_conflict(999, take="local")
    with pytest.raises(ContactSyncError, match="is a two-way conflict"):
        m.review.accept(item_id)
    with pytest.raises(ContactSyncError, match="is a two-way conflict"):
        m.review.reject(item_id)
    assert m.review.select() == []  # accept --all never takes conflicts
    m.review.resolve_conflict(item_id, take="local")
    with pytest.raises(ContactSyncError, match=r"already resolved \(local\)"):
        m.review.resolve_conflict(item_id, take="source")


def test_a_field_that_goes_in_only_now_takes_only_the_source(
        conflict: tuple[Mirror, int, int]) -> None:
    m, cid, item_id = conflict
    m.ownership.set_sync_policy("xpm", {**POLICY, "directions": {"default": "in"}})
    with pytest.raises(ContactSyncError, match="goes in only now"):
        m.review.resolve_conflict(item_id, take="local")
    assert row(m, cid)["email"] == "l@x.example" and len(conflicts(m)) == 1
    m.review.resolve_conflict(item_id, take="source")
    assert row(m, cid)["email"] == "r@x.example"


# ---------------------------------------------------------------- the command line


def run(db: Path, *args: str) -> Any:
    _load_extensions()
    return CliRunner().invoke(cli, ["--db", str(db), *args])


def test_cli_list_show_and_resolve(conflict: tuple[Mirror, int, int], db_path: Path) -> None:
    _, cid, item_id = conflict
    r = run(db_path, "review", "list")
    assert r.exit_code == 0, r.output
    assert f"#{item_id}" in r.output and "conflict" in r.output
    assert "email" in r.output and "base john@x.example" in r.output
    assert "local l@x.example" in r.output and "source r@x.example" in r.output
    r = run(db_path, "review", "list", "--json")
    [one] = json.loads(r.output)
    assert one["conflict"]["local"] == "l@x.example"
    r = run(db_path, "review", "show", str(item_id))
    assert r.exit_code == 0, r.output
    assert "two-way conflict on email" in r.output
    for label, value in (("base", "john@x.example"), ("local", "l@x.example"),
                         ("source", "r@x.example")):
        assert any(line.split()[:2] == [label, value] for line in r.output.splitlines()), \
            r.output
    assert f"review resolve {item_id} --take source|local" in r.output
    r = run(db_path, "review", "resolve", str(item_id))
    assert r.exit_code == 2 and "--take" in r.output
    r = run(db_path, "review", "resolve", str(item_id), "--take", "local", "--value", "x")
    assert r.exit_code == 2
    r = run(db_path, "review", "resolve", str(item_id), "--take", "local", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert (out["resolution"], out["pushed"], out["contact"]) == ("local", True, cid)
    r = run(db_path, "review", "resolve", str(item_id), "--take", "source")
    assert r.exit_code == 1 and "already resolved" in r.output
    r = run(db_path, "review", "resolve", "999", "--take", "source")
    assert r.exit_code == 6


def test_cli_value_and_stale(conflict: tuple[Mirror, int, int], db_path: Path) -> None:
    m, cid, item_id = conflict
    m.ownership.edit_contact(cid, phone="0400 000 002")
    pull(m, "r@x.example", phone="0400 000 003")
    [phone] = [i for i in conflicts(m) if i.explanation["field"] == "phone"]
    m.ownership.edit_contact(cid, email="again@x.example")  # email's item is stale now
    r = run(db_path, "review", "resolve", str(phone.id), "--value", "0400 000 004")
    assert r.exit_code == 0, r.output
    assert f"review item {phone.id} resolved: phone of contact {cid}" in r.output
    assert "0400" not in r.output  # no value echoed
    r = run(db_path, "review", "resolve", str(item_id), "--take", "source", "--json")
    assert r.exit_code == 1
    assert "is stale: email of contact" in r.output
    assert json.loads(r.stdout)["status"] == "error"
    with Mirror.open(db_path) as m2:
        assert row(m2, cid)["phone"] == "0400 000 004"
        assert row(m2, cid)["email"] == "again@x.example"


# ---------------------------------------------------------------- end to end, over HTTP


def http_cfg(sor: FakeSor) -> SourceConfig:
    return parse_config({"sources": {"sor": {
        "kind": "http", "mode": "full", "url": sor.contacts_url, "items_field": "data",
        "next_field": "links.next", "id_field": "id", "backoff": 0.01, "max_retries": 2,
        "timeout": 5, "modified_field": "updated_at", "push_new": "none",
        "mapping": {"first_name": "given_name", "last_name": "family_name",
                    "address.city": "city", "address.postcode": "postcode"},
        "directions": {"email": "both"}, "conflicts": {"email": "review"}}}}).sources["sor"]


def test_review_resolved_locally_reaches_the_system_of_record(
        mirror: Mirror, fakesor: FakeSor) -> None:
    sor = fakesor
    sor.seed(2)
    cfg = http_cfg(sor)
    mirror.ownership.set_sync_policy("sor", cfg.sync_policy())
    sync_source(mirror, cfg)
    [cid] = [c.id for c in mirror.contacts() if c.external_id == "P00000"]
    mirror.ownership.edit_contact(cid, email="local@example.com")
    sor.put("P00000", email="remote@example.com")
    sync_source(mirror, cfg)
    [item] = conflicts(mirror)
    assert item.explanation == {"field": "email", "base": "p0@example.com",
                                "local": "local@example.com", "remote": "remote@example.com"}
    mirror.review.resolve_conflict(item.id, take="local")
    report = mirror.push(cfg)
    assert report.counts["confirmed"] == 1
    assert sor.get("P00000")["email"] == "local@example.com"
    # The next pull brings the pushed value back: an echo, nothing more to do.
    sync_source(mirror, cfg)
    assert conflicts(mirror) == [] and mirror.store.outbox.bases([cid]) == {}
    assert row(mirror, cid)["email"] == "local@example.com"
    assert mirror.push(cfg).counts["confirmed"] == 0
