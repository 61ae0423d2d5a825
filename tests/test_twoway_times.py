"""Two-way sync (issue 15): real modification times for last_write_wins. The
HTTP connector reads `modified_field`, the SQL connector `modified_column`, a
file source a column mapped to `modified_at`; the record's time reaches the
three-way decision of that contact, and the local side's time is when the
local edit was made. The clock-skew rule: the source wins when either time is
missing or the two are less than 120 s apart. Pulled for real: from the fake
system of record on 127.0.0.1, from a CSV file, from a SQLite database."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from contactsync_agent import rules
from contactsync_agent.config import SourceConfig, parse_config
from contactsync_agent.mirror import Mirror
from contactsync_agent.source_runs import sync_source
from fakesor import FakeSor, fakesor_fixture  # noqa: F401  (the fixture)

UTC = dt.UTC
HOUR = dt.timedelta(hours=1)


def iso(t: dt.datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


# ---------------------------------------------------------------- reading a time

T0 = dt.datetime(2026, 11, 30, 3, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("text", "seconds"), [
    ("2026-11-30T03:00:00Z", T0),
    ("2026-11-30T03:00:00.250Z", T0 + 0.25),
    ("2026-11-30T13:00:00+10:00", T0),
    ("2026-11-30 03:00:00", T0),  # no zone: UTC, whatever this machine's zone is
    ("2026-11-30T03:00:00", T0),
    (str(int(T0)), T0),  # epoch seconds
    (f"{T0:.3f}", T0),
    (str(int(T0 * 1000)), T0),  # epoch milliseconds
    (" 2026-11-30T03:00:00Z ", T0),
    ("", None), (None, None), ("yesterday", None), ("-5", None), ("nan", None),
])
def test_modified_seconds(text: str | None, seconds: float | None) -> None:
    assert rules.modified_seconds(text) == seconds


def test_naive_times_are_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time
    monkeypatch.setenv("TZ", "Australia/Sydney")
    time.tzset()
    try:
        assert rules.modified_seconds("2026-11-30 03:00:00") == T0
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


# ---------------------------------------------------------------- over HTTP (the fake SoR)


def http_cfg(sor: FakeSor, *, modified: bool = True) -> SourceConfig:
    opts: dict[str, Any] = {
        "kind": "http", "mode": "full", "url": sor.contacts_url, "items_field": "data",
        "next_field": "links.next", "id_field": "id", "backoff": 0.01, "max_retries": 2,
        "timeout": 5, "push_new": "none",
        "mapping": {"first_name": "given_name", "last_name": "family_name",
                    "address.city": "city", "address.postcode": "postcode"},
        "directions": {"email": "both"}, "conflicts": {"default": "last_write_wins"}}
    if modified:
        opts["modified_field"] = "updated_at"
    return parse_config({"sources": {"sor": opts}}).sources["sor"]


def remote_edit(sor: FakeSor, ext: str, at: dt.datetime, **values: Any) -> None:
    """The system's own user edits the contact; its modification time is `at`."""
    sor.put(ext, **values)
    with sor.lock:
        sor.items[ext]["updated_at"] = iso(at)


def conflict_over_http(m: Mirror, sor: FakeSor, cfg: SourceConfig,
                       remote_at: dt.timedelta) -> tuple[int, str]:
    """A both-sides change of P00000's e-mail: local now, remote at now + remote_at.
    Returns the contact id and the feed's conflict reason."""
    sor.seed(2)
    m.ownership.set_sync_policy("sor", cfg.sync_policy())
    sync_source(m, cfg)
    [cid] = [c.id for c in m.contacts() if c.external_id == "P00000"]
    m.ownership.edit_contact(cid, email="local@example.com")
    remote_edit(sor, "P00000", now() + remote_at, email="remote@example.com")
    sync_source(m, cfg)
    [reason] = [c.reason for c in m.changes() if c.reason_code == "two_way_conflict"]
    return cid, reason


def email(m: Mirror, cid: int) -> str:
    row = m.store.contacts.row(cid)
    assert row is not None
    return str(row["email"])


def open_entries(m: Mirror) -> list[Any]:
    return [e for e in m.store.outbox.entries() if e.status in ("pending", "sent")]


def test_http_remote_newer_wins(mirror: Mirror, fakesor: FakeSor) -> None:
    cid, reason = conflict_over_http(mirror, fakesor, http_cfg(fakesor), +HOUR)
    assert email(mirror, cid) == "remote@example.com"
    assert reason == "conflict on email: last_write_wins, the source's write is later"
    assert open_entries(mirror) == []


def test_http_local_newer_wins_and_is_pushed(mirror: Mirror, fakesor: FakeSor) -> None:
    cfg = http_cfg(fakesor)
    cid, reason = conflict_over_http(mirror, fakesor, cfg, -HOUR)
    assert reason == "conflict on email: last_write_wins, the local write is later"
    assert email(mirror, cid) == "local@example.com"
    [e] = open_entries(mirror)
    assert e.fields == {"email": ("remote@example.com", "local@example.com")}
    assert mirror.push(cfg).counts["confirmed"] == 1
    assert fakesor.get("P00000")["email"] == "local@example.com"
    # The time is carried beside the record, never stored in it.
    row = mirror.store.contacts.row(cid)
    assert row is not None and "updated_at" not in row["extra"]


def test_http_within_the_skew_window_the_source_wins(mirror: Mirror, fakesor: FakeSor) -> None:
    # The remote edit is 60 s after the local one: too close to order.
    cid, reason = conflict_over_http(mirror, fakesor, http_cfg(fakesor),
                                     dt.timedelta(seconds=60))
    assert email(mirror, cid) == "remote@example.com"
    assert reason == ("conflict on email: last_write_wins, the two writes are less than 120s "
                      "apart (clock skew): the source wins")


def test_http_without_a_modified_field_the_source_wins(mirror: Mirror,
                                                       fakesor: FakeSor) -> None:
    cid, reason = conflict_over_http(mirror, fakesor, http_cfg(fakesor, modified=False),
                                     -HOUR)
    assert email(mirror, cid) == "remote@example.com"
    assert reason == ("conflict on email: last_write_wins without a modification time on "
                      "both sides; the source wins")
    row = mirror.store.contacts.row(cid)
    assert row is not None and "updated_at" in row["extra"]  # unmapped: kept, as before


# ---------------------------------------------------------------- a CSV file


def write_csv(path: Path, email_value: str, modified: str) -> Path:
    path.write_text("Client ID,Name,Email Address,Last Modified\n"
                    f"A,John Smith,{email_value},{modified}\n", encoding="utf-8")
    return path


CSV_POLICY = {"directions": {"email": "both"}, "conflicts": {"default": "last_write_wins"}}
CSV_MAPPING = {"Last Modified": "modified_at"}


@pytest.mark.parametrize(("remote_at", "winner"), [
    (+HOUR, "r@x.example"), (-HOUR, "l@x.example"), (dt.timedelta(seconds=-30), "r@x.example"),
])
def test_csv_modified_column(mirror: Mirror, tmp_path: Path, remote_at: dt.timedelta,
                             winner: str) -> None:
    f = tmp_path / "export.csv"
    mirror.sync_file("xpm", write_csv(f, "john@x.example", "2026-01-01T00:00:00Z"),
                     mapping=CSV_MAPPING)
    mirror.ownership.set_sync_policy("xpm", CSV_POLICY)
    cid = mirror.contacts()[0].id
    mirror.ownership.edit_contact(cid, email="l@x.example")
    # Epoch seconds this time: either form is read.
    mirror.sync_file("xpm", write_csv(f, "r@x.example", str(int((now() + remote_at)
                                                                .timestamp()))),
                     mapping=CSV_MAPPING)
    assert email(mirror, cid) == winner
    row = mirror.store.contacts.row(cid)
    assert row is not None and row["extra"] in ("{}", "")  # the time is not stored


def write_vcard(path: Path, email_value: str, rev: str) -> Path:
    path.write_text("BEGIN:VCARD\r\nVERSION:4.0\r\nUID:A\r\nFN:John Smith\r\n"
                    f"N:Smith;John;;;\r\nEMAIL:{email_value}\r\nREV:{rev}\r\n"
                    "END:VCARD\r\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("remote_at", "winner"), [(+HOUR, "r@x.example"),
                                                    (-HOUR, "l@x.example")])
def test_vcard_rev_is_the_cards_modification_time(mirror: Mirror, tmp_path: Path,
                                                  remote_at: dt.timedelta,
                                                  winner: str) -> None:
    f = tmp_path / "cards.vcf"
    mirror.sync_file("xpm", write_vcard(f, "john@x.example", "20260101T000000Z"))
    mirror.ownership.set_sync_policy("xpm", CSV_POLICY)
    cid = mirror.contacts()[0].id
    mirror.ownership.edit_contact(cid, email="l@x.example")
    rev = (now() + remote_at).strftime("%Y%m%dT%H%M%SZ")  # vCard's basic ISO 8601 form
    mirror.sync_file("xpm", write_vcard(f, "r@x.example", rev))
    assert email(mirror, cid) == winner


# ---------------------------------------------------------------- a SQL database


def sql_cfg(db: Path) -> SourceConfig:
    return parse_config({"sources": {"crm": {
        "kind": "sql", "mode": "full", "url": f"sqlite:///{db}", "table": "people",
        "id_column": "id", "modified_column": "changed", "push_new": "none",
        "directions": {"email": "both"},
        "conflicts": {"default": "last_write_wins"}}}}).sources["crm"]


@pytest.mark.parametrize(("remote_at", "winner"), [(+HOUR, "r@x.example"),
                                                    (-HOUR, "l@x.example")])
def test_sql_modified_column(mirror: Mirror, tmp_path: Path, remote_at: dt.timedelta,
                             winner: str) -> None:
    db = tmp_path / "crm.db"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE people (id TEXT PRIMARY KEY, name TEXT, email TEXT, "
                  "changed TEXT)")
        c.execute("INSERT INTO people VALUES ('A', 'John Smith', 'john@x.example', "
                  "'2026-01-01 00:00:00')")
    c.close()
    cfg = sql_cfg(db)
    mirror.ownership.set_sync_policy("crm", cfg.sync_policy())
    sync_source(mirror, cfg)
    cid = mirror.contacts()[0].id
    mirror.ownership.edit_contact(cid, email="l@x.example")
    # A timestamp column without a zone, as many databases keep it: read as UTC.
    changed = (now() + remote_at).strftime("%Y-%m-%d %H:%M:%S")
    with sqlite3.connect(db) as c:
        c.execute("UPDATE people SET email = 'r@x.example', changed = ?", (changed,))
    c.close()
    sync_source(mirror, cfg)
    assert email(mirror, cid) == winner


def test_sql_modified_column_must_exist(mirror: Mirror, tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE people (id TEXT PRIMARY KEY, email TEXT)")
        c.execute("INSERT INTO people VALUES ('A', 'a@x.example')")
    c.close()
    cfg = parse_config({"sources": {"crm": {
        "kind": "sql", "url": f"sqlite:///{db}", "table": "people", "id_column": "id",
        "modified_column": "nope"}}}).sources["crm"]
    with pytest.raises(Exception, match=r"sources\.crm\.modified_column"):
        sync_source(mirror, cfg)
