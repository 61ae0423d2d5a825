"""A pull settles what a `sent` outbox entry carries (issue 15): against the
real PostgreSQL the suite starts (the SQL writer's conditional UPDATE ... WHERE
field = base) and the fake HTTP system of record.

- An echo: an entry sent and applied but never confirmed (the push died after
  the target's commit) whose values the next pull reads back is settled by that
  pull (confirmed: the target holds them). Left `sent` with its old bases, a
  later push replays it against a row the source changed meanwhile and the
  target refuses it: a false `conflict` in `outbox list`.
- `local_wins` (and an `out` field put back): the pull queues the local value
  over what the source now holds; the sent entry must no longer carry the
  field, or the push writes it twice (HTTP) or reports a false conflict (SQL).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest_pg import PgServer, audited_clients, postgres  # noqa: F401  (the session fixture)
from contactsync_agent.config import SourceConfig, parse_config
from contactsync_agent.mirror import Mirror
from contactsync_agent.source_runs import sync_source
from contactsync_agent.sources import open_writer
from contactsync_agent.sources.writer import OutboundChange, PushResult
from fakesor import FakeSor, fakesor_fixture  # noqa: F401  (the fixture)
from sqlalchemy.pool import NullPool

pytestmark = pytest.mark.timeout(120)


class Killed(BaseException):
    """The push process dying (not an error the push may catch)."""


class DiesBefore:
    """A push killed before the target saw anything: the entries stay `sent`."""

    def push(self, changes: Sequence[OutboundChange]) -> list[PushResult]:
        raise Killed

    def close(self) -> None:
        pass


class DiesAfter:
    """A push killed after the target applied the batch (its commit went
    through) and before the outbox heard the answer: the entries stay `sent`."""

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg

    def push(self, changes: Sequence[OutboundChange]) -> list[PushResult]:
        w = open_writer(self.cfg)
        try:
            results = w.push(changes)
        finally:
            w.close()
        assert [r.outcome for r in results] == ["confirmed"] * len(changes), results
        raise Killed

    def close(self) -> None:
        pass


@pytest.fixture
def pg(postgres: PgServer, tmp_path: Path) -> Iterator[tuple[sa.Engine, str]]:  # noqa: F811
    table = f"settle_{tmp_path.name[-8:].replace('-', '_')}".lower()
    eng = sa.create_engine(postgres.url(), poolclass=NullPool)
    audited_clients(eng, table, rows=2)
    try:
        yield eng, table
    finally:
        eng.dispose()


def sql_source(tmp_path: Path, postgres: PgServer, table: str,  # noqa: F811
               **more: Any) -> SourceConfig:
    secret = tmp_path / "db-url"
    secret.write_text(postgres.url() + "\n", encoding="utf-8")
    os.chmod(secret, 0o600)
    return parse_config({"sources": {"crm": {
        "kind": "sql", "url_file": str(secret), "table": table, "id_column": "client_id",
        "mode": "full", "mapping": {"first_name": "given_name", "last_name": "family_name"},
        **more}}}).sources["crm"]


def pg_set_email(eng: sa.Engine, table: str, client_id: int, email: str) -> None:
    """A person at the source edits the row."""
    with eng.begin() as c:
        c.execute(sa.text(f"UPDATE {table} SET email = :e WHERE client_id = :i"),
                  {"e": email, "i": client_id})


def pg_audit(eng: sa.Engine, table: str) -> list[tuple[Any, ...]]:
    with eng.connect() as c:
        return [tuple(r) for r in c.execute(sa.text(
            f"SELECT client_id, email FROM {table}_audit ORDER BY 1"))]


def contact_of(m: Mirror, ext: str) -> int:
    return next(c.id for c in m.contacts() if c.external_id == ext)


def statuses(m: Mirror) -> list[str]:
    return [e.status for e in m.store.outbox.entries()]


def test_an_echo_of_a_sent_entry_settles_it_and_a_later_source_edit_is_no_conflict(
        tmp_path: Path, postgres: PgServer, pg: tuple[sa.Engine, str]) -> None:  # noqa: F811
    eng, table = pg
    cfg = sql_source(tmp_path, postgres, table, directions={"email": "both"})
    with Mirror.open(tmp_path / "m.db") as m:
        m.ownership.set_sync_policy("crm", cfg.sync_policy())
        sync_source(m, cfg)
        cid = contact_of(m, "1")
        m.ownership.edit_contact(cid, email="v1@local.example")
        with pytest.raises(Killed):
            m.push(cfg, writer=DiesAfter(cfg))
        assert statuses(m) == ["sent"]
        assert pg_audit(eng, table) == [(1, "v1@local.example")]
        # The pull reads the agent's own write back: the entry is settled.
        sync_source(m, cfg)
        [entry] = m.store.outbox.entries()
        assert entry.status == "confirmed", entry
        assert m.outbox() == []
        # A person at the source edits the row before the next push: nothing
        # of the agent's is left to replay against it, so no conflict.
        pg_set_email(eng, table, 1, "ann@source.example")
        report = m.push(cfg)
        assert report.counts["conflict"] == 0, report.counts
        assert m.outbox() == []
        assert pg_audit(eng, table) == [(1, "v1@local.example"), (1, "ann@source.example")]
        sync_source(m, cfg)  # the source's edit comes in as an ordinary change
        assert m.get(cid).email == "ann@source.example"
        assert m.push(cfg).counts["confirmed"] == 0
        assert m.outbox() == []


def test_an_echo_of_one_field_leaves_the_entry_only_what_is_not_back(
        tmp_path: Path, postgres: PgServer, pg: tuple[sa.Engine, str]) -> None:  # noqa: F811
    """Two fields sent and applied; the source then changed one of them back
    (an `out` field: the local value goes again over it). The pull settles the
    echoed field: the entry (or its successor) carries the other alone, so the
    push writes the e-mail exactly once and finds no conflict."""
    eng, table = pg
    cfg = sql_source(tmp_path, postgres, table, directions={"email": "both", "mobile": "out"})
    with Mirror.open(tmp_path / "m.db") as m:
        m.ownership.set_sync_policy("crm", cfg.sync_policy())
        sync_source(m, cfg)
        cid = contact_of(m, "2")
        m.ownership.edit_contact(cid, email="v1@local.example", mobile="0499000002")
        with pytest.raises(Killed):
            m.push(cfg, writer=DiesAfter(cfg))
        with eng.begin() as c:
            c.execute(sa.text(f"UPDATE {table} SET mobile = '0412999999' WHERE client_id = 2"))
        sync_source(m, cfg)
        carried = [sorted(e.fields) for e in m.store.outbox.entries(statuses=("pending", "sent"))]
        assert carried == [["mobile"]], carried
        report = m.push(cfg)
        assert (report.counts["conflict"], report.counts["confirmed"]) == (0, 1), report.counts
        assert m.outbox() == []
        with eng.connect() as c:
            assert c.execute(sa.text(f"SELECT email, mobile FROM {table} WHERE client_id = 2")
                             ).one() == ("v1@local.example", "0499000002")
        assert pg_audit(eng, table) == [(2, "v1@local.example")]


def test_local_wins_over_a_sent_entry_writes_once_with_the_new_base_on_postgresql(
        tmp_path: Path, postgres: PgServer, pg: tuple[sa.Engine, str]) -> None:  # noqa: F811
    eng, table = pg
    cfg = sql_source(tmp_path, postgres, table, directions={"email": "both"},
                     conflicts={"email": "local_wins"})
    with Mirror.open(tmp_path / "m.db") as m:
        m.ownership.set_sync_policy("crm", cfg.sync_policy())
        sync_source(m, cfg)
        cid = contact_of(m, "1")
        m.ownership.edit_contact(cid, email="v1@local.example")
        with pytest.raises(Killed):
            m.push(cfg, writer=DiesBefore())
        assert statuses(m) == ["sent"]
        pg_set_email(eng, table, 1, "ann@source.example")  # both sides changed
        sync_source(m, cfg)  # local_wins: the local value goes over the source's
        open_entries = m.store.outbox.entries(statuses=("pending", "sent"))
        carrying = [e.fields["email"] for e in open_entries if "email" in e.fields]
        assert carrying == [("ann@source.example", "v1@local.example")], open_entries
        report = m.push(cfg)
        assert (report.counts["conflict"], report.counts["confirmed"]) == (0, 1), report.counts
        assert m.outbox() == []
        assert pg_audit(eng, table) == [(1, "ann@source.example"), (1, "v1@local.example")]
        sync_source(m, cfg)  # the echo: nothing more to push
        assert m.get(cid).email == "v1@local.example"
        assert m.push(cfg).counts == {"confirmed": 0, "rejected": 0, "conflict": 0,
                                      "retry": 0, "queued_new": 0}


def test_local_wins_over_a_sent_entry_is_one_http_write(tmp_path: Path,
                                                        fakesor: FakeSor) -> None:
    fakesor.seed(2)
    cfg = parse_config({"sources": {"sor": {
        "kind": "http", "url": fakesor.contacts_url, "items_field": "data",
        "next_field": "links.next", "cursor_field": "updated_at", "id_field": "id",
        "max_retries": 0, "backoff": 0.01,
        "mapping": {"first_name": "given_name", "last_name": "family_name",
                    "address.city": "city", "address.postcode": "postcode",
                    "updated_at": "ignore"},
        "directions": {"email": "both"}, "conflicts": {"email": "local_wins"}}}}).sources["sor"]
    with Mirror.open(tmp_path / "m.db") as m:
        m.ownership.set_sync_policy("sor", cfg.sync_policy())
        sync_source(m, cfg)
        cid = contact_of(m, "P00001")
        m.ownership.edit_contact(cid, email="v1@local.example")
        with pytest.raises(Killed):
            m.push(cfg, writer=DiesBefore())
        fakesor.put("P00001", email="p1@source.example")  # both sides changed
        sync_source(m, cfg)
        report = m.push(cfg)
        assert (report.counts["conflict"], report.counts["confirmed"]) == (0, 1), report.counts
        assert [w.body for w in fakesor.applied] == [{"email": "v1@local.example"}]
        assert fakesor.get("P00001")["email"] == "v1@local.example"
        assert m.outbox() == []
