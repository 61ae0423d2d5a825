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
