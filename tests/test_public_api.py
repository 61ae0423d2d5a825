"""The few names a user imports come from the package itself (issue 2's example)."""

from __future__ import annotations

from pathlib import Path

import contactsync_agent
from contactsync_agent import Mirror


def test_issue_example_runs_from_the_package(tmp_path: Path) -> None:
    with Mirror.open(tmp_path / "m.db") as m:
        cid = m.add_contact(name="Leila Smith", record_type="manual", source="xpm",
                            external_id="D")
        m.set_forced_manual(cid, True)
        m.add_reference(cid, "case:42")
        report = m.sync("xpm", [{"external_id": "D", "name": "Leila Smith"}], mode="full")
        c = m.get(cid)
        assert (c.record_type, c.forced_manual, c.external_id) == ("sync", True, "D")
        assert report.counts["skipped_forced_manual"] == 1
        assert [ch.contact_id for ch in m.changes(since=0)] == [cid, cid, cid]


def test_public_names() -> None:
    for name in contactsync_agent.__all__:
        assert getattr(contactsync_agent, name) is not None, name
    assert {"Mirror", "link", "dedupe", "ContactSyncError"} <= set(contactsync_agent.__all__)


#: The Mirror's named parts and what each one offers (no mixins, no flat aliases).
PARTS: dict[str, set[str]] = {
    "entities": {"sync", "sync_organisations", "sync_locations", "sync_customer_links",
                 "sync_file", "organisations", "locations", "organisation_of"},
    "review": {"items", "accept", "reject", "summaries", "compare", "select", "accept_many",
               "reject_many", "undo", "resolve_conflict"},
    "access": {"check", "customers"},
    "ownership": {"policy", "set_policy", "edit_contact", "sync_policy", "set_sync_policy"},
    "console": {"review_page", "review_sources", "review_ids", "runs_since", "search",
                "changes", "ensure_search_index", "quarantine"},
}


def test_mirror_is_a_front_door_with_named_parts(tmp_path: Path) -> None:
    with Mirror.open(tmp_path / "m.db") as m:
        for part, names in PARTS.items():
            public = {n for n in dir(getattr(m, part)) if not n.startswith("_")}
            assert public == names, part
        # Contacts, syncs, the feed and runs stay on the front door.
        for name in ("add_contact", "get", "contacts", "sync",
                     "sync_file", "changes", "activities", "close_activity", "runs",
                     "quarantine", "export"):
            assert callable(getattr(m, name)), name
        # The flat names of before are gone (pre-1.0: no aliases).
        flat = {"review_items", "review_accept", "review_reject", "review_summaries",
                "review_compare", "review_select", "review_accept_many", "review_reject_many",
                "sync_entities", "sync_organisations", "sync_locations", "sync_customer_links",
                "sync_entity_file", "organisations", "locations", "organisation_of",
                "customers", "policy", "set_policy", "edit_contact"}
        assert not {n for n in flat if hasattr(m, n)}
        assert type(m).__mro__ == (Mirror, object)  # no mixin

        # Each part works on the same mirror.
        cid = m.add_contact(name="Ann Lee", email="ann@x.example")
        assert m.review.items() == [] and m.review.select() == []
        assert m.entities.organisations() == [] and m.entities.organisation_of(cid) is None
        assert not m.access.check(cid, "5001", "bill_to").allowed
        assert m.access.customers(cid) == []
        m.ownership.set_policy("xpm", {"notes": "local"}, ["email"])
        assert m.ownership.policy("xpm") == ({"notes": "local"}, ["email"])
        assert m.ownership.edit_contact(cid, phone="0400 000 001") == {
            "phone": ["", "0400 000 001"]}
