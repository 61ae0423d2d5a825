"""The `_core` batch API keeps its changes explicit: reading a batch's create
rows links nothing; `Differ.add_created` records the creates' links."""

from __future__ import annotations

from contactsync_agent import _core

MAPPING = {"id": "external_id", "email": "email", "name": "display_name"}


def test_create_rows_link_nothing_until_the_differ_is_told() -> None:
    differ = _core.Differ()
    differ.load(["OLD"], [1], [5], [0])
    batch = _core.Batch.from_dicts(
        [{"id": "N1", "email": "n1@example.org"}, {"id": "OLD", "email": "o@example.org"},
         {"id": "N2", "name": "Nora Two"}],
        MAPPING, differ)
    assert batch.create_count == 2
    rows = batch.create_rows(100, "crm")
    assert [(r[0], r[1], r[2]) for r in rows] == [(100, "crm", "N1"), (101, "crm", "N2")]
    assert differ.entries() == [("OLD", 1, 5, 0)], "create_rows changed the differ"

    differ.add_created(batch, 100)
    hashes = {r[2]: r[-1] for r in rows}
    assert differ.entries() == [("N1", 100, hashes["N1"], 0), ("N2", 101, hashes["N2"], 0),
                                ("OLD", 1, 5, 0)]
    # The ids are the ones create_rows wrote, and the feed rows use the same.
    assert [cid for cid, _ in batch.create_feed(100, "crm")] == [100, 101]
