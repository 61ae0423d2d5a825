"""Purge erases the rows later schemas keep per contact, with the contact:
two-way sync's outbox entries (the local values waiting to go out) and field
bases (the values both sides last agreed on), and the contact's organisation
link (its position there).

Found by the mutation check (RELIABILITY.md, "The guarantees' own tests,
mutated"): purge's list of per-contact tables could lose `outbox`,
`field_bases` or `contact_organisations` and no test noticed. Real mirror
file; the values are looked for in every text cell through a separate
read-only connection and in the raw bytes of the database and its WAL while
the writer is still open.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from contactsync_agent.mirror import Mirror

POLICY = {"directions": {"default": "in", "email": "both", "phone": "both"},
          "conflicts": {"default": "review"}, "priority": {}, "push_new": "none"}
# Each side of the conflict has its own value, so each table's copy is seen.
BASE = "qwobble.base@erasure.example"
LOCAL = "qwobble.local@erasure.example"
REMOTE = "qwobble.remote@erasure.example"
OTHER = {"id": "B", "name": "Other One", "email": "other@x.example"}


def contact(email: str) -> dict[str, str]:
    return {"id": "A", "name": "Quentin Qwobble", "email": email, "phone": "0400 000 001"}


def cells(db: Path) -> list[tuple[str, str]]:
    """(table, value) of every text cell of every table, read by another connection."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        out = []
        for t in tables:
            for row in con.execute(f'SELECT * FROM "{t}"'):
                out += [(t, v) for v in row if isinstance(v, str)]
        return out
    finally:
        con.close()


def per_contact(db: Path, cid: int,
                tables: tuple[str, ...] = ("outbox", "field_bases")) -> dict[str, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: int(con.execute(f"SELECT count(*) FROM {t} WHERE contact_id = ?",
                                   (cid,)).fetchone()[0])
                for t in tables}
    finally:
        con.close()


def raw(db: Path) -> bytes:
    wal = db.with_name(db.name + "-wal")
    return db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def where(db: Path, value: str) -> set[str]:
    return {t for t, v in cells(db) if value in v}


def test_purge_erases_a_two_way_contacts_outbox_entries_and_field_bases(
        tmp_path: Path) -> None:
    db = tmp_path / "mirror.db"
    with Mirror.open(db) as m:
        m.sync("xpm", [contact(BASE), OTHER])
        m.ownership.set_sync_policy("xpm", POLICY)
        [cid] = [c.id for c in m.contacts() if c.external_id == "A"]
        m.ownership.edit_contact(cid, email=LOCAL)  # an outbox entry, from BASE to LOCAL
        m.sync("xpm", [contact(REMOTE), OTHER])  # both sides changed: a conflict
        # The two-way tables hold the contact's values before the purge.
        held = per_contact(db, cid)
        assert held["outbox"] >= 1 and held["field_bases"] >= 1, held
        assert "outbox" in where(db, LOCAL) and "field_bases" in where(db, BASE)

        m.sync("xpm", [OTHER], allow_mass_delete=True)  # A deleted at the source
        report = m.purge(older_than_days=0)
        assert report.contacts == 1 and report.complete

        assert per_contact(db, cid) == {"outbox": 0, "field_bases": 0}
        left: dict[str, Any] = {v: where(db, v) for v in (BASE, LOCAL, REMOTE)}
        assert left == {BASE: set(), LOCAL: set(), REMOTE: set()}
        data = raw(db)  # the writer still open: no close() truncating the WAL
        assert [v for v in (BASE, LOCAL, REMOTE) if v.encode() in data] == []
        # The other contact's entries are not touched.
        assert [c.external_id for c in m.contacts()] == ["B"]


def test_purge_erases_a_contacts_organisation_link_and_position(tmp_path: Path) -> None:
    db = tmp_path / "mirror.db"
    position = "Qwobble Wrangler-in-Chief"
    mapping = {"Company ID": "organisation_ref", "Position": "position"}
    people = [{"id": "A", "name": "Quentin Qwobble", "Company ID": "CO1", "Position": position},
              {"id": "B", "name": "Other One", "Company ID": "CO1", "Position": "Partner"}]
    with Mirror.open(db) as m:
        m.entities.sync_organisations("xpm", [{"ID": "CO1", "Name": "CompanyName"}])
        m.sync("xpm", people, mapping=mapping)
        [cid] = [c.id for c in m.contacts() if c.external_id == "A"]
        link = m.entities.organisation_of(cid)
        assert link is not None and link["position"] == position
        assert "contact_organisations" in where(db, position)

        m.sync("xpm", people[1:], mapping=mapping, allow_mass_delete=True)
        assert m.purge(older_than_days=0).contacts == 1

        assert m.entities.organisation_of(cid) is None
        assert per_contact(db, cid, ("contact_organisations",)) == {"contact_organisations": 0}
        assert where(db, position) == set()
        assert position.encode() not in raw(db)
        [other] = m.contacts()  # the other contact keeps its link
        link = m.entities.organisation_of(other.id)
        assert link is not None and link["position"] == "Partner"


def test_purge_keeps_the_times_of_the_contacts_feed_entries(tmp_path: Path) -> None:
    """Purge blanks a purged contact's feed payloads, not when they happened:
    an update keeps its own time (not the contact's creation time), and a bulk
    create's entry, whose time was held by reference, gets its real one."""
    with Mirror.open(tmp_path / "mirror.db") as m:
        m.sync("xpm", [contact(BASE), OTHER])
        m.sync("xpm", [contact(REMOTE), OTHER])  # an update of A, later
        [cid] = [c.id for c in m.contacts() if c.external_id == "A"]
        before = [(c.op, c.at) for c in m.changes() if c.contact_id == cid]
        assert [op for op, _ in before] == ["create", "update"]
        assert before[0][1] != before[1][1] and all(at for _, at in before)
        m.sync("xpm", [OTHER], allow_mass_delete=True)
        assert m.purge(older_than_days=0).contacts == 1
        after = [(c.op, c.at, c.fields) for c in m.changes() if c.contact_id == cid]
        assert [(op, at) for op, at, _ in after][:2] == before
        assert all(fields == {} for _, _, fields in after)


def test_purge_erases_a_contacts_external_id_from_the_saved_link_snapshot(
        tmp_path: Path) -> None:
    """The link snapshot is kept in parts (schema 8): a whole one and the deltas
    of later runs. A purged contact's link must not live on in an older part."""
    db = tmp_path / "mirror.db"
    ext = "QWOBBLE-EXT-7731"
    a = {**contact(BASE), "id": ext}
    # Enough others that the deletion is a small delta over the whole part.
    others = [{"id": f"B{i}", "name": f"Other {i}", "email": f"o{i}@x.example"}
              for i in range(60)]
    with Mirror.open(db) as m:
        m.sync("xpm", [a, *others])
        m.sync("xpm", others, allow_mass_delete=True)
        parts = [p for t, p in cells(db) if t == "link_snapshot_parts"]
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        blobs = [bytes(r[0]) for r in con.execute("SELECT data FROM link_snapshot_parts")]
        con.close()
        assert len(blobs) == 2 and all(ext.encode() in b for b in blobs), parts
        assert m.purge(older_than_days=0).contacts == 1
        assert where(db, ext) == set()
        assert ext.encode() not in raw(db)
        m.sync("xpm", others)  # the next run still works (a whole snapshot again)
        assert len(m.contacts()) == 60


def test_purge_erases_a_contacts_external_id_from_review_items_and_rejections(
        tmp_path: Path) -> None:
    """A review item names the incoming record's external id, and a rejected
    pair is remembered by it: both are the purged contact's (found by a
    stranger's try: `strings` still found the id after purge)."""
    db = tmp_path / "mirror.db"
    ext = "PURGE-QWOBBLE-4417"
    twin = {"id": ext, "name": "Quentin Qwobble", "mobile": "0400 000 001",
            "email": "q.qwobble@erasure.example"}
    with Mirror.open(db) as m:
        local = m.add_contact(given_name="Quentin", family_name="Qwobble",
                              mobile="0400 000 001", email="quentin@other.example")
        m.sync("xpm", [twin, OTHER])
        [item] = m.review.items()
        assert item.candidate_id == local and "review_items" in where(db, ext)
        m.review.reject(item.id)
        assert "review_rejections" in where(db, ext)
        m.sync("xpm", [OTHER], allow_mass_delete=True)
        assert m.purge(older_than_days=0).contacts == 1
        assert where(db, ext) == set()
        assert ext.encode() not in raw(db)
        assert m.get(local) is not None  # the local contact stays
