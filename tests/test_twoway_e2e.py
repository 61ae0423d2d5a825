"""Two-way sync end to end, every part a real process: the agent (`contactsync
daemon`, `contactsync push`), an HTTP system of record (tests/fakesor.py run as
its own process, driven over HTTP) and the real PostgreSQL the suite starts.

- A local edit goes through the outbox to the target (a PATCH at the fake, a
  conditional UPDATE in PostgreSQL; a new local contact an INSERT, linked by
  the id it returns), the next pull sees the value come back as the agent's own
  write and reports nothing, and `status` shows the outbox empty.
- A `contactsync push` SIGKILLed after the target applied a write and before
  the outbox entry was confirmed: held there deterministically (the fake holds
  its answer back; PostgreSQL: the mirror's writer lock is held while the
  agent's commit goes through), then restarted: the change is applied exactly
  once at the target and the entry ends confirmed, not a conflict.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from agent_helpers import CLI, agent, cli, config_text, env, poll
from conftest_pg import PgServer, audited_clients, postgres  # noqa: F401  (the session fixture)
from contactsync_agent.config import parse_config
from contactsync_agent.locking import WriterLock
from contactsync_agent.mirror import Mirror
from contactsync_agent.source_runs import sync_source
from contactsync_agent.sources.writer import OutboundChange, PushResult
from fakesor import FakeSor, SorProcess, fakesor_fixture  # noqa: F401  (the fixture)
from sqlalchemy.pool import NullPool

pytestmark = pytest.mark.timeout(180)

MAPPING = {"first_name": "given_name", "last_name": "family_name", "address.city": "city",
           "updated_at": "ignore"}
DIRECTIONS = '[sources.{name}.directions]\nemail = "both"\nmobile = "out"\n'


def q(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The mirror, read-only, as any process but the agent reads it."""
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def outbox(db: Path) -> list[tuple[Any, ...]]:
    return q(db, "SELECT id, key, contact_id, kind, status, attempts, fields FROM outbox "
                 "ORDER BY id")


def contact_id(db: Path, ext: str) -> int:
    return int(q(db, "SELECT id FROM contacts WHERE external_id = ?", (ext,))[0][0])


def field_updates_since(db: Path, seq: int) -> list[tuple[Any, ...]]:
    """Feed entries that changed a contact after `seq` (an echo must add none)."""
    return q(db, "SELECT seq, contact_id, op, reason_code FROM changes WHERE seq > ? "
                 "AND op != 'delete'", (seq,))


def last_seq(db: Path) -> int:
    return int(q(db, "SELECT coalesce(max(seq), 0) FROM changes")[0][0])


def ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r


def status_outbox(cfg: Path) -> dict[str, Any]:
    """`status --json`'s outbox part (its exit code is the agent's health: no agent runs)."""
    r = cli("--config", str(cfg), "status", "--json")
    assert r.stdout, r.stderr
    return dict(json.loads(r.stdout)["outbox"])


# ---------------------------------------------------------------- the fake system of record


@pytest.fixture
def sor(tmp_path: Path) -> Iterator[SorProcess]:
    with SorProcess(state=tmp_path / "sor-state.json", token="t0ken-e2e") as s:
        yield s


def http_config(tmp_path: Path, sor: SorProcess, **more: Any) -> Path:
    token = tmp_path / "token"
    token.write_text("t0ken-e2e\n", encoding="utf-8")
    os.chmod(token, 0o600)
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={"sor": {
        "kind": "http", "url": sor.contacts_url, "token_file": str(token),
        "items_field": "data", "next_field": "links.next", "cursor_field": "updated_at",
        "mode": "incremental", "id_field": "id", "page_size": 50, "interval": "0.5s",
        "timeout": 60, "page_timeout": 120, "max_retries": 2, "backoff": 0.05,
        "mapping": MAPPING, **more}}) + DIRECTIONS.format(name="sor"))
    return cfg


def seed(sor: SorProcess, n: int) -> None:
    for i in range(1, n + 1):
        sor.put(f"P{i}", first_name=f"Given{i}", last_name=f"Family{i}",
                email=f"p{i}@example.com", mobile=f"04120000{i:02d}",
                address={"city": "Newcastle"})


def test_daemon_pushes_a_local_edit_to_the_http_target_and_the_echo_is_nothing(
        tmp_path: Path, sor: SorProcess) -> None:
    seed(sor, 3)
    cfg = http_config(tmp_path, sor)
    db = tmp_path / "mirror.db"
    with agent(tmp_path, cfg) as a:
        poll(lambda: a.contacts("sor") == 3, what="the first pull")
        cid = contact_id(db, "P2")
        ok(cli("--config", str(cfg), "contacts", "edit", str(cid),
               "--email", "ann@local.example", "--mobile", "0499000002"))
        # The agent pushes after its next pull: a PATCH of the two fields only.
        poll(lambda: sor.state()["items"]["P2"]["email"] == "ann@local.example",
             timeout=30, what="the PATCH at the target")
        [(_, key, _, kind, _, _, fields)] = outbox(db)
        assert kind == "update" and set(json.loads(fields)) == {"email", "mobile"}
        st = sor.state()
        [write] = [w for w in st["applied"] if w["key"] == key]
        assert write["method"] == "PATCH" and write["id"] == "P2"
        assert write["body"] == {"email": "ann@local.example", "mobile": "0499000002"}
        poll(lambda: outbox(db)[0][4] == "confirmed", what="the entry confirmed")
        # The next pull fetches the record the PATCH changed (its updated_at moved):
        # the agent's own values, nothing to take and nothing to push back.
        seq = last_seq(db)
        run = max(r["id"] for r in a.runs("sor"))
        poll(lambda: [r for r in a.runs("sor") if r["id"] > run and r["status"] == "ok"
                      and r["records"] >= 1], timeout=30, what="a pull after the push")
        assert field_updates_since(db, seq) == []
        assert len(outbox(db)) == 1 and sor.applied_with_key(key) == 1
        row = q(db, "SELECT email, mobile, record_type, forced_manual FROM contacts "
                    "WHERE id = ?", (cid,))
        assert row == [("ann@local.example", "0499000002", "sync", 0)]
        # Pulls still take what the source changes (the silence above is an echo).
        sor.put("P3", email="p3@remote.example")
        poll(lambda: q(db, "SELECT email FROM contacts WHERE external_id = 'P3'")
             == [("p3@remote.example",)], timeout=30, what="a remote change pulled")
        assert a.stop() == 0
    o = status_outbox(cfg)
    assert (o["depth"], o["pending"], o["sent"], o["conflicts_open"]) == (0, 0, 0, 0)
    assert sor.applied_with_key(key) == 1
    assert len([w for w in sor.state()["applied"] if w["method"] == "PATCH"]) == 1


def pull(cfg: Path, source: str) -> dict[str, Any]:
    r = ok(cli("--config", str(cfg), "sync", "--source", source, "--json", timeout=60))
    return dict(json.loads(r.stdout))


def push_process(cfg: Path, source: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, "--config", str(cfg), "push", "--source", source, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env())


def sigkill(p: subprocess.Popen[str]) -> None:
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    assert p.returncode == -signal.SIGKILL
    for stream in (p.stdout, p.stderr):
        if stream is not None:
            stream.close()


def push(cfg: Path, source: str) -> dict[str, Any]:
    r = ok(cli("--config", str(cfg), "push", "--source", source, "--json", timeout=60))
    return dict(json.loads(r.stdout))


def test_push_killed_after_the_http_target_applied_is_applied_once_after_restart(
        tmp_path: Path, sor: SorProcess) -> None:
    seed(sor, 2)
    cfg = http_config(tmp_path, sor)
    db = tmp_path / "mirror.db"
    pull(cfg, "sor")
    cid = contact_id(db, "P1")
    ok(cli("--config", str(cfg), "contacts", "edit", str(cid), "--email", "v1@local.example"))
    sor.knobs(hold_after_apply=1)  # applied, then the answer waits
    p = push_process(cfg, "sor")
    try:
        poll(lambda: sor.state()["held"] == 1, timeout=30, what="the write applied and held")
        [(_, key, _, _, status, attempts, _)] = outbox(db)
        assert (status, attempts) == ("sent", 1)  # the agent waits for the answer
        assert sor.applied_with_key(key) == 1
        sigkill(p)
    finally:
        if p.poll() is None:
            p.kill()
    sor.release()
    assert outbox(db)[0][4] == "sent"
    # Edited again while nobody knew whether v1 went through.
    ok(cli("--config", str(cfg), "contacts", "edit", str(cid), "--email", "v2@local.example"))
    report = push(cfg, "sor")
    assert report["counts"]["confirmed"] == 2, report
    assert report["counts"]["conflict"] == 0 and report["counts"]["retry"] == 0
    st = sor.state()
    assert sor.applied_with_key(key) == 1 and st["replays"] == 1  # v1: replayed, not re-applied
    assert [w["body"] for w in st["applied"] if w["id"] == "P1"] == [
        {"email": "v1@local.example"}, {"email": "v2@local.example"}]
    assert st["items"]["P1"]["email"] == "v2@local.example"
    assert [(e[4], e[5]) for e in outbox(db)] == [("confirmed", 2), ("confirmed", 1)]
    # The pull bringing v2 back is the echo: nothing changes, nothing goes out.
    seq = last_seq(db)
    pull(cfg, "sor")
    assert field_updates_since(db, seq) == []
    assert push(cfg, "sor")["counts"]["confirmed"] == 0
    assert status_outbox(cfg)["depth"] == 0


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg(postgres: PgServer, tmp_path: Path) -> Iterator[tuple[sa.Engine, str]]:  # noqa: F811
    table = f"clients_{tmp_path.name[-8:].replace('-', '_')}".lower()
    eng = sa.create_engine(postgres.url(), poolclass=NullPool)
    audited_clients(eng, table)
    try:
        yield eng, table
    finally:
        eng.dispose()


def sql_config(tmp_path: Path, url: str, table: str, **more: Any) -> Path:
    secret = tmp_path / "db-url"
    secret.write_text(url + "\n", encoding="utf-8")
    os.chmod(secret, 0o600)
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={"crm": {
        "kind": "sql", "url_file": str(secret), "table": table, "id_column": "client_id",
        "mode": "full", "interval": "0.5s", "timeout": 10,
        "mapping": {"first_name": "given_name", "last_name": "family_name"}, **more}})
        + DIRECTIONS.format(name="crm"))
    return cfg


def pg_rows(eng: sa.Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with eng.connect() as c:
        return [tuple(r) for r in c.execute(sa.text(sql), params)]


def test_daemon_pushes_to_postgresql_updates_and_inserts_and_the_echo_is_nothing(
        tmp_path: Path, postgres: PgServer, pg: tuple[sa.Engine, str]) -> None:  # noqa: F811
    eng, table = pg
    cfg = sql_config(tmp_path, postgres.url(), table, push_new="all")
    db = tmp_path / "mirror.db"
    with agent(tmp_path, cfg) as a:
        poll(lambda: a.contacts("crm") == 3, what="the first pull")
        cid = contact_id(db, "2")
        ok(cli("--config", str(cfg), "contacts", "edit", str(cid),
               "--email", "bob@local.example"))
        new = json.loads(ok(cli("--config", str(cfg), "contacts", "add", "--given-name", "Dee",
                                "--family-name", "New", "--email", "dee@local.example",
                                "--json")).stdout)["id"]
        # The conditional UPDATE, and the INSERT whose returned id links the contact.
        poll(lambda: pg_rows(eng, f"SELECT email FROM {table} WHERE client_id = 2")
             == [("bob@local.example",)], timeout=30, what="the UPDATE")
        poll(lambda: q(db, "SELECT record_type, source, external_id FROM contacts "
                           "WHERE id = ?", (new,))[0][0] == "sync",
             timeout=30, what="the new contact linked")
        [(rtype, source, ext)] = q(db, "SELECT record_type, source, external_id FROM contacts "
                                       "WHERE id = ?", (new,))
        assert (rtype, source) == ("sync", "crm")
        assert pg_rows(eng, f"SELECT client_id::text, first_name, email FROM {table} "
                            "WHERE first_name = 'Dee'") == [(ext, "Dee", "dee@local.example")]
        poll(lambda: {e[4] for e in outbox(db)} == {"confirmed"}, what="both confirmed")
        assert sorted(e[3] for e in outbox(db)) == ["create", "update"]
        [(_, _, link_reason)] = q(db, "SELECT seq, op, reason_code FROM changes "
                                      "WHERE contact_id = ? AND reason_code = 'linked_by_push'",
                                  (new,))
        assert link_reason == "linked_by_push"
        # The next full pull reads both rows back: the agent's own writes, nothing to report.
        seq = last_seq(db)
        run = max(r["id"] for r in a.runs("crm"))
        poll(lambda: [r for r in a.runs("crm") if r["id"] > run and r["status"] == "ok"],
             timeout=30, what="a pull after the push")
        assert field_updates_since(db, seq) == []
        assert a.contacts("crm") == 4 and len(outbox(db)) == 2
        assert a.stop() == 0
    assert pg_rows(eng, f"SELECT client_id, email FROM {table}_audit") == [
        (2, "bob@local.example")]
    assert pg_rows(eng, f"SELECT count(*) FROM {table}") == [(4,)]
    o = status_outbox(cfg)
    assert (o["depth"], o["conflicts_open"]) == (0, 0)


def test_push_killed_after_postgresql_committed_is_applied_once_after_restart(
        tmp_path: Path, postgres: PgServer, pg: tuple[sa.Engine, str]) -> None:  # noqa: F811
    """Held between PostgreSQL's commit and the outbox's confirmation: the test
    locks the table so the agent's UPDATE waits (the entry is `sent`), takes the
    mirror's writer lock, lets the UPDATE go; the agent commits at PostgreSQL
    and then waits for the writer lock to confirm: SIGKILL it there."""
    eng, table = pg
    cfg = sql_config(tmp_path, postgres.url(), table)
    db = tmp_path / "mirror.db"
    pull(cfg, "crm")
    cid = contact_id(db, "1")
    ok(cli("--config", str(cfg), "contacts", "edit", str(cid), "--email", "v1@local.example"))
    blocker = eng.connect()
    writer_lock = WriterLock(db)
    p: subprocess.Popen[str] | None = None
    try:
        tx = blocker.begin()
        blocker.execute(sa.text(f"LOCK TABLE {table} IN EXCLUSIVE MODE"))
        p = push_process(cfg, "crm")
        poll(lambda: outbox(db)[0][4] == "sent", timeout=30, what="the entry sent")
        poll(lambda: pg_rows(eng, "SELECT count(*) FROM pg_stat_activity WHERE "
                                  "wait_event_type = 'Lock' AND query LIKE 'UPDATE%'")
             == [(1,)], timeout=30, what="the agent's UPDATE waiting")
        assert writer_lock.try_acquire()  # between the agent's two transactions
        tx.commit()  # the UPDATE goes through and commits ...
        poll(lambda: pg_rows(eng, f"SELECT email FROM {table} WHERE client_id = 1")
             == [("v1@local.example",)], timeout=30, what="the UPDATE committed")
        assert p.poll() is None and outbox(db)[0][4] == "sent"  # ... unconfirmed
        sigkill(p)
    finally:
        blocker.close()
        writer_lock.release()
        if p is not None and p.poll() is None:
            p.kill()
    # Edited again before the restart: a second entry whose base the first changed.
    ok(cli("--config", str(cfg), "contacts", "edit", str(cid), "--email", "v2@local.example"))
    report = push(cfg, "crm")
    assert report["counts"]["conflict"] == 0, report  # the replay is not a conflict
    assert report["counts"]["confirmed"] == 2, report
    assert [(e[4], e[5]) for e in outbox(db)] == [("confirmed", 2), ("confirmed", 1)]
    assert pg_rows(eng, f"SELECT email FROM {table}_audit WHERE client_id = 1") == [
        ("v1@local.example",), ("v2@local.example",)]  # each applied once, in order
    seq = last_seq(db)
    pull(cfg, "crm")
    assert field_updates_since(db, seq) == []
    assert status_outbox(cfg)["depth"] == 0
    row = q(db, "SELECT email FROM contacts WHERE id = ?", (cid,))
    assert row == [("v2@local.example",)]


# ---------------------------------------------------------------- order (in process)


def test_a_later_entry_waits_for_an_earlier_unanswered_one_of_its_contact(
        tmp_path: Path, fakesor: FakeSor) -> None:
    """E1 was sent and its answer lost (a crash); E2 edits the same field again.
    When E1 now gets no final answer (the target says 503), E2 must not go out
    before it: E1 sent again later would put the older value over the newer."""
    fakesor.seed(2)
    cfg = parse_config({"sources": {"sor": {
        "kind": "http", "url": fakesor.contacts_url, "items_field": "data",
        "next_field": "links.next", "cursor_field": "updated_at", "id_field": "id",
        "max_retries": 0, "backoff": 0.01, "mapping": MAPPING,
        "directions": {"email": "both"}}}}).sources["sor"]
    with Mirror.open(tmp_path / "m.db") as m:
        m.ownership.set_sync_policy("sor", cfg.sync_policy())
        sync_source(m, cfg)
        cid = next(c.id for c in m.contacts() if c.external_id == "P00001")
        m.ownership.edit_contact(cid, email="v1@local.example")

        class Dies:
            def push(self, changes: Sequence[OutboundChange]) -> list[PushResult]:
                raise SystemExit("killed")

            def close(self) -> None:
                pass

        with pytest.raises(SystemExit):
            m.push(cfg, writer=Dies())
        m.ownership.edit_contact(cid, email="v2@local.example")
        fakesor.fail_writes = [503]
        report = m.push(cfg)
        assert report.counts["retry"] == 1 and report.counts["confirmed"] == 0, report.counts
        assert [e.status for e in m.store.outbox.entries()] == ["pending", "pending"]
        assert fakesor.applied == []
        report = m.push(cfg)
        assert report.counts["confirmed"] == 2, report.counts
        assert [w.body for w in fakesor.applied] == [{"email": "v1@local.example"},
                                                     {"email": "v2@local.example"}]
        assert fakesor.get("P00001")["email"] == "v2@local.example"


# ---------------------------------------------------------------- cost per entry


def test_an_edit_and_a_confirmation_find_the_pending_entry_by_index(tmp_path: Path) -> None:
    """Each local edit and each confirmed entry looks up the contact's pending
    entry. The outbox keeps every confirmed entry, so a scan of it made both
    cost O(history): pushing 10,000 edits took 44 s through a batch API, most
    of it in that lookup (benches/push_outbox.py). SQLite's own plan says."""
    cfg = parse_config({"sources": {"xpm": {"kind": "folder",
                                            "directions": {"email": "both"}}}}).sources["xpm"]

    class Confirms:
        def push(self, changes: Sequence[OutboundChange]) -> list[PushResult]:
            return [PushResult(c.entry_id, "confirmed") for c in changes]

        def close(self) -> None:
            pass

    seen: list[str] = []
    with Mirror.open(tmp_path / "m.db") as m:
        m.ownership.set_sync_policy("xpm", cfg.sync_policy())
        m.sync("xpm", [{"id": f"A{i}", "name": f"Ann Lee{i}", "email": f"a{i}@x.example"}
                       for i in range(3)])
        conn = m.store.conn
        conn.set_trace_callback(seen.append)
        for c in m.contacts():
            m.ownership.edit_contact(c.id, email=f"b{c.id}@x.example")
        assert m.push(cfg, writer=Confirms()).counts["confirmed"] == 3
        conn.set_trace_callback(None)
        lookups = {s for s in seen
                   if s.startswith("SELECT") and "FROM outbox WHERE contact_id = " in s}
        assert len(lookups) >= 2  # the edits' and the confirmations'
        for sql in lookups:
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
            assert not any(p.startswith("SCAN outbox") for p in plan), (sql, plan)
