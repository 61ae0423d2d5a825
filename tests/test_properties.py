"""Properties of the mirror, checked with Hypothesis on small random snapshots.

- syncing a snapshot twice equals syncing it once;
- S1 then S2 leaves the source's records exactly as S2 says (convergence);
- manual and external contacts are never modified except by the rules that
  allow it (an identity match converts a manual contact; nothing touches an
  external one), and a forced-manual contact's fields never change;
- local ids are never reused, not even after a purge hard-deletes;
- the change feed replayed from zero reproduces the contacts table.

Records come from small pools of names, e-mails and phones so identity
matches, conversions, ambiguities and deletions happen often.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from contactsync_agent import maintenance
from contactsync_agent.mapping import FIELDS
from contactsync_agent.mirror import Mirror
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

NAMES = ["John Smith", "Mary Smith", "Zoë Ångström", "Chris Lee", "chris lee", ""]
EMAILS = ["john@smith.com", "JOHN@smith.com ", "mary@x.org", "c@lee.net", ""]
PHONES = ["0400 000 001", "+61 400 000 001", "(02) 9123 4567", ""]
ORGS = ["", "Acme Pty Ltd", "=HYPERLINK(\"x\")"]
EXT_IDS = [f"E{i}" for i in range(8)]

record = st.fixed_dictionaries({
    "name": st.sampled_from(NAMES),
    "email": st.sampled_from(EMAILS),
    "phone": st.sampled_from(PHONES),
    "organisation": st.sampled_from(ORGS),
}, optional={"Partner": st.sampled_from(["AB", "CD"])})


@st.composite
def snapshot(draw: st.DrawFn) -> list[dict[str, str]]:
    ids = draw(st.lists(st.sampled_from(EXT_IDS), unique=True, max_size=len(EXT_IDS)))
    return [{"external_id": e, **draw(record)} for e in ids]


local = st.fixed_dictionaries({
    "record_type": st.sampled_from(["manual", "manual", "external"]),
    "name": st.sampled_from(NAMES[:-1]),
    "email": st.sampled_from(EMAILS),
    "phone": st.sampled_from(PHONES),
})


@contextmanager
def fresh(locals_: list[dict[str, str]]) -> Iterator[tuple[Mirror, Path, dict[int, dict]]]:
    """A new mirror holding `locals_`; yields it with the local rows as first written."""
    with tempfile.TemporaryDirectory() as d, Mirror.open(Path(d) / "m.db") as m:
        ids = [m.add_contact(name=c["name"], email=c["email"], phone=c["phone"],
                             record_type=c["record_type"],
                             source="other" if c["record_type"] == "external" else None,
                             external_id=f"O{k}" if c["record_type"] == "external" else None)
               for k, c in enumerate(locals_)]
        yield m, Path(d) / "m.db", {cid: row(m, cid) for cid in ids}


def sync(m: Mirror, snap: list[dict[str, str]]) -> None:
    m.sync("xpm", snap, allow_mass_delete=True)


def row(m: Mirror, cid: int) -> dict[str, Any]:
    r = m.store.contacts.row(cid)
    assert r is not None
    return r


def state(db: Path) -> list[tuple]:
    """Contacts, feed, activities and review items (what downstream apps read)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [(t, *r) for t, sql in (
            ("c", "SELECT * FROM contacts ORDER BY id"),
            ("f", "SELECT * FROM changes ORDER BY seq"),
            ("a", "SELECT * FROM activities ORDER BY id"),
            ("r", "SELECT * FROM review_items ORDER BY id"),
        ) for r in con.execute(sql)]
    finally:
        con.close()


def source_view(m: Mirror) -> dict[str, tuple]:
    """The source's live records: external id -> mirrored values."""
    return {c.external_id: (c.record_type, *(getattr(c, f) for f in FIELDS), c.extra)
            for c in m.contacts(source="xpm") if c.external_id is not None}


# ---------------------------------------------------------------- idempotence


@SETTINGS
@given(locals_=st.lists(local, max_size=4), s0=snapshot(), s=snapshot())
def test_the_same_snapshot_twice_equals_once(locals_: list, s0: list, s: list) -> None:
    with fresh(locals_) as (m, db, _):
        sync(m, s0)
        sync(m, s)
        once = state(db)
        report = m.sync("xpm", s, allow_mass_delete=True)
        assert state(db) == once
        c = report.counts
        assert c["created"] == c["updated"] == c["converted"] == c["deleted"] == 0


# ---------------------------------------------------------------- convergence


@SETTINGS
@given(locals_=st.lists(local, max_size=4), s1=snapshot(), s2=snapshot())
def test_s1_then_s2_leaves_exactly_what_s2_says(locals_: list, s1: list, s2: list) -> None:
    with fresh(locals_) as (m, _, _):
        sync(m, s2)
        direct = source_view(m)
    with fresh(locals_) as (m, _, _):
        sync(m, s1)
        sync(m, s2)
        via = source_view(m)
    assert set(via) == {r["external_id"] for r in s2}
    assert via == direct


# ---------------------------------------------------------------- locals


@SETTINGS
@given(locals_=st.lists(local, min_size=1, max_size=5),
       snaps=st.lists(snapshot(), min_size=1, max_size=4), force=st.booleans())
def test_manual_and_external_contacts_change_only_as_the_rules_allow(
    locals_: list, snaps: list, force: bool,
) -> None:
    with fresh(locals_) as (m, _, initial):
        forced: dict[int, dict] = {}
        for k, s in enumerate(snaps):
            sync(m, s)
            if k == 0 and force and s:
                cid = next(c.id for c in m.contacts(source="xpm") if c.external_id)
                m.set_forced_manual(cid)
                forced[cid] = row(m, cid)
            for cid, first in initial.items():
                now = row(m, cid)
                if first["record_type"] == "external":
                    assert now == first  # never touched, not even its timestamps
                    continue
                feed = [c for c in m.changes() if c.contact_id == cid]
                if now["record_type"] == "manual" and now["external_id"] is None:
                    if not any(c.op == "convert" for c in feed):
                        assert now == first
                        assert [c.op for c in feed] == ["create"]
                else:
                    # Left manual only by an identity conversion.
                    first_change = feed[1]
                    assert first_change.reason_code == "converted_identity", feed
            for cid, was in forced.items():
                now = row(m, cid)
                assert all(now[f] == was[f] for f in (*FIELDS, "extra")) or now["deleted_at"]


# ---------------------------------------------------------------- ids


@SETTINGS
@given(locals_=st.lists(local, max_size=3),
       steps=st.lists(st.one_of(snapshot(), st.just("purge"), st.just("add")), min_size=1,
                      max_size=6))
def test_local_ids_are_never_reused(locals_: list, steps: list) -> None:
    with fresh(locals_) as (m, _, initial):
        seen: set[int] = set(initial)
        for step in steps:
            if step == "purge":
                maintenance.purge(m.store, 0)
            elif step == "add":
                m.add_contact(name="Added Here")
            else:
                sync(m, step)
            ids = {r[0] for r in m.store.conn.execute("SELECT id FROM contacts")}
            new = ids - seen
            assert not new or min(new) > max(seen, default=0), (sorted(seen), sorted(new))
            seen |= ids


# ---------------------------------------------------------------- the feed


def replay_changes(changes: list[Any]) -> dict[int, dict[str, Any]]:
    """The contacts table rebuilt from the change feed alone."""
    out: dict[int, dict[str, Any]] = {}
    for ch in changes:
        if ch.contact_id is None:  # organisations, locations, links: not contacts
            continue
        if ch.op == "purge":
            out.pop(ch.contact_id, None)
            continue
        c = out.setdefault(ch.contact_id, {
            "record_type": "manual", "source": None, "external_id": None,
            "forced_manual": False, "extra": {}, "deleted": False, **dict.fromkeys(FIELDS, ""),
        })
        for f, (_, after) in ch.fields.items():
            c[f] = after if f != "forced_manual" else bool(after)
        if ch.op == "delete":
            c["deleted"] = True
    return out


def table(m: Mirror) -> dict[int, dict[str, Any]]:
    return {c.id: {"record_type": c.record_type, "source": c.source,
                   "external_id": c.external_id, "forced_manual": c.forced_manual,
                   "extra": c.extra, "deleted": c.deleted_at is not None,
                   **{f: getattr(c, f) for f in FIELDS}}
            for c in m.contacts(include_deleted=True)}


@SETTINGS
@given(locals_=st.lists(local, max_size=4),
       steps=st.lists(st.one_of(snapshot(), st.just("purge"), st.just("force")), min_size=1,
                      max_size=5))
def test_the_feed_replayed_from_zero_is_the_contacts_table(locals_: list, steps: list) -> None:
    with fresh(locals_) as (m, _, _):
        for step in steps:
            if step == "purge":
                maintenance.purge(m.store, 0)
            elif step == "force":
                linked = [c.id for c in m.contacts(source="xpm")]
                if linked:
                    m.set_forced_manual(linked[0], not m.get(linked[0]).forced_manual)
            else:
                sync(m, step)
            assert replay_changes(m.changes()) == table(m)
        assert json.dumps(replay_changes(m.changes()), sort_keys=True, default=str)


def test_forced_manual_survives_unlink_and_identity_relink() -> None:
    """Found by the property above: a forced-manual contact the source deleted
    (unlinked, kept as manual) was overwritten when a new record of the source
    matched it by identity. It is linked again now, and no field changes."""
    with fresh([]) as (m, _, _):
        sync(m, [{"external_id": "E1", "name": "John Smith", "email": "JOHN@smith.com ",
                  "phone": "+61 400 000 001", "organisation": "Kept Pty Ltd"}])
        m.set_forced_manual(1)
        sync(m, [])
        assert (m.get(1).record_type, m.get(1).external_id) == ("manual", None)
        report = m.sync("xpm", [{"external_id": "E2", "name": "John Smith",
                                 "email": "john@smith.com", "phone": "0400 000 001"}])
        c = m.get(1)
        assert (c.record_type, c.external_id, c.forced_manual) == ("sync", "E2", True)
        assert (c.email, c.phone, c.organisation) == ("JOHN@smith.com", "+61 400 000 001",
                                                       "Kept Pty Ltd")
        assert report.decision_for(1).reason == "converted, not updated: forced manual"  # type: ignore[union-attr]
        [act] = [a for a in m.activities() if a.kind == "forced_manual"]
        assert act.contact_id == 1 and "organisation" in act.fields


# Every mirrored field and an unmapped column, non-empty: a create or update
# feed entry that leaves one out is caught on every path, not by chance.
FULL_RECORD = {
    "external_id": "F1", "given_name": "Zoë", "family_name": "Ångström",
    "display_name": "Zoë Ångström", "organisation": "Acme Pty Ltd",
    "email": "zoe@acme.example", "phone": "(02) 9123 4567", "mobile": "0400 000 009",
    "street": "1 George St", "city": "Sydney", "region": "NSW", "postcode": "2000",
    "country": "AU", "date_of_birth": "1980-02-29", "notes": "likes tea", "Partner": "AB",
}
CHANGED = {**FULL_RECORD, **{f: f"{v}x" for f, v in FULL_RECORD.items()
                             if f not in ("external_id", "date_of_birth", "country")}}


def _write(path: Path, fmt: str, records: list[dict[str, str]]) -> Path:
    import csv

    if fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(records[0]))
            w.writeheader()
            w.writerows(records)
    elif fmt == "ndjson":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records), encoding="utf-8")
    return path


def test_every_field_reaches_the_feed_on_every_path(tmp_path: Path) -> None:
    """Create (the bulk first import and a later one), update, delete, through
    the API and every file format: the feed replayed is the table, field by field."""
    ids = iter(range(100))
    for way in ("api", "csv", "ndjson", "json"):
        with Mirror.open(tmp_path / f"{way}.db") as m:
            def sync_(records: list[dict[str, str]], way: str = way, m: Mirror = m) -> None:
                if way == "api":
                    m.sync("xpm", records, allow_mass_delete=True)
                else:
                    f = _write(tmp_path / f"{way}{next(ids)}.{way}", way, records)
                    m.sync_file("xpm", f, allow_mass_delete=True)

            m.add_contact(name="Someone Local", email="local@example.org")
            # An external record with F3's identity: F3 is created by the rules'
            # own path (the only match was an external record), not the bulk one.
            m.add_contact(name="Zoë Ångström", email="zoe3@acme.example",
                          phone="(02) 9123 4567", record_type="external", source="other",
                          external_id="O1")
            f3 = {**FULL_RECORD, "external_id": "F3", "email": "zoe3@acme.example"}
            sync_([FULL_RECORD, f3])  # the first import: the bulk create path
            assert replay_changes(m.changes()) == table(m), way
            assert m.contacts(source="xpm")[1].external_id == "F3"
            assert m.changes()[-1].reason_code == "created_external_only", way
            sync_([FULL_RECORD, f3, {**FULL_RECORD, "external_id": "F2"}])  # a later create
            assert replay_changes(m.changes()) == table(m), way
            sync_([CHANGED, f3, {**FULL_RECORD, "external_id": "F2"}])  # every field updated
            assert replay_changes(m.changes()) == table(m), way
            created = {f: v for f, v in table(m)[m.contacts(source="xpm")[0].id].items()}
            assert all(created[f] for f in FIELDS if f != "date_of_birth"), (way, created)
            sync_([f3, {**FULL_RECORD, "external_id": "F2"}])  # F1 deleted
            assert replay_changes(m.changes()) == table(m), way
