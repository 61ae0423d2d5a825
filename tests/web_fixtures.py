"""A small mirror for the web console's tests, built with the product's own
API: two fuzzy review items, an open activity (a source change to a
forced-manual contact), a quarantined row whose raw text is markup, and the
XSS contact `<img src=x onerror=alert(1)>`; `make_conflict` adds a two-way
conflict item."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from contactsync_agent.mirror import Mirror

XSS = "<img src=x onerror=alert(1)>"


@dataclass
class Seeded:
    db: Path
    jon: int  # local contact, candidate of item_jon
    ann: int  # local contact, candidate of item_ann
    item_jon: int
    item_ann: int
    activity: int
    xss: int
    kim: int  # forced-manual synced contact with the activity


def seed(db: Path, tmp: Path) -> Seeded:
    with Mirror.open(db) as m:
        jon = m.add_contact(name="Jon Smith", email="jon.smith@example.com",
                            mobile="0400 000 001", street="12 George St", postcode="2000")
        ann = m.add_contact(name="Ann Lee", email="ann.lee@example.com", mobile="0400 000 002",
                            street="3 King St", postcode="3000")
        xss = m.add_contact(name=XSS, email="xss@example.com", notes="<script>alert(2)</script>")
        m.sync("xpm", [
            {"external_id": "X1", "given_name": "John", "family_name": "SMITH",
             "email": "jon.smith@example.com", "mobile": "+61400000001",
             "street": "12 George Street", "postcode": "2000"},
            {"external_id": "X2", "given_name": "Anne", "family_name": "Lee",
             "email": "ann.lee@example.com", "mobile": "+61400000002",
             "street": "3 King Street", "postcode": "3000"},
            {"external_id": "X3", "given_name": "Kim", "family_name": "Park",
             "email": "kim@example.com"},
        ], mode="incremental")
        items = {i.candidate_id: i.id for i in m.review.items()}
        kim = next(c.id for c in m.contacts() if c.external_id == "X3")
        m.set_forced_manual(kim)
        m.sync("xpm", [{"external_id": "X3", "given_name": "Kim", "family_name": "Park",
                        "email": "kim@new.example.com"}], mode="incremental")
        [act] = m.activities()
        bad = tmp / "bad.csv"
        bad.write_text(f"ID,Name,Email\nQ1,Quinn Fox,q@x.com\nQ2,{XSS}\n", encoding="utf-8")
        m.sync_file("files", bad)
    return Seeded(db, jon, ann, items[jon], items[ann], act.id, xss, kim)


POLICY = {"directions": {"default": "in", "email": "both", "phone": "both"},
          "conflicts": {"default": "review"}, "priority": {}, "push_new": "none"}


def make_conflict(db: Path, local: str = "l@x.example") -> tuple[int, int]:
    """Contact C1 of `twoway` (base c1@x.example) edited locally to `local`, then
    changed at the source to r<b>@x.example: one open conflict item on email."""
    with Mirror.open(db) as m:
        rec = {"id": "C1", "name": "Cora Vance", "email": "c1@x.example"}
        m.sync("twoway", [rec])
        m.ownership.set_sync_policy("twoway", POLICY)
        cid = next(c.id for c in m.contacts() if c.external_id == "C1")
        m.ownership.edit_contact(cid, email=local)
        m.sync("twoway", [{**rec, "email": "r<b>@x.example"}])
        [item] = [i for i in m.review.items("open") if i.kind == "conflict"]
        return cid, item.id
