"""The SQL writer against SQLite and the real PostgreSQL server conftest_pg starts:
conditional updates (applied, conflict, NULL as empty), creates returning the new
id, a constraint refusal that keeps the rest of the batch, a connection killed
mid-batch (pg_terminate_backend from another session) leaving nothing applied,
and a replay of a batch whose commit was unknown applying once."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest_pg import PgServer, free_port, postgres  # noqa: F401  (the session fixture)
from contactsync_agent.config import SourceConfig
from contactsync_agent.errors import ConfigError, ContactSyncError
from contactsync_agent.sources import open_writer, validate_sources
from contactsync_agent.sources.sql_writer import SqlWriter
from contactsync_agent.sources.writer import OutboundChange, PushResult
from sqlalchemy.pool import NullPool

MAPPING = {"suburb": "city", "first_name": "given_name", "last_name": "family_name"}


class TargetDb:
    """A system of record with one contacts table: a generated id, a unique e-mail and
    a CHECK constraint, both named."""

    def __init__(self, url: str, backend: str) -> None:
        self.url = url
        self.backend = backend
        self.table = f"clients_{uuid.uuid4().hex[:8]}"
        self.engine = sa.create_engine(url, poolclass=NullPool)
        if backend == "postgresql":
            idcol, ts = "client_id bigserial PRIMARY KEY", "timestamptz NOT NULL DEFAULT now()"
        else:
            idcol, ts = "client_id INTEGER PRIMARY KEY", "text NOT NULL DEFAULT CURRENT_TIMESTAMP"
        self.run(
            f"CREATE TABLE {self.table} ({idcol}, first_name text, last_name text, "
            f"email text, mobile text, suburb text, tier text, modified {ts}, "
            f"CONSTRAINT {self.table}_email_key UNIQUE (email), "
            f"CONSTRAINT {self.table}_email_at CHECK (email IS NULL OR email LIKE '%@%'))"
        )

    def run(self, sql: str, rows: list[dict[str, Any]] | dict[str, Any] | None = None) -> Any:
        with self.engine.begin() as c:
            return c.execute(sa.text(sql), rows or {})

    def add(self, n: int, start: int = 0) -> list[str]:
        self.run(
            f"INSERT INTO {self.table} (client_id, first_name, last_name, email, mobile, suburb)"
            " VALUES (:id, :first, :last, :email, :mobile, :suburb)",
            [
                {"id": i, "first": f"Given{i}", "last": f"Family{i}",
                 "email": f"client{i}@example.com", "mobile": None, "suburb": "Parramatta"}
                for i in range(start + 1, start + n + 1)
            ],
        )
        if self.backend == "postgresql":  # the ids above were given, not drawn
            self.run(f"SELECT setval('{self.table}_client_id_seq', "
                     f"(SELECT max(client_id) FROM {self.table}))")
        return [str(i) for i in range(start + 1, start + n + 1)]

    def row(self, cid: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            r = c.execute(sa.text(f"SELECT * FROM {self.table} WHERE client_id = :id"),
                          {"id": int(cid)}).mappings().first()
        return dict(r) if r is not None else None

    def count(self) -> int:
        with self.engine.connect() as c:
            return int(c.execute(sa.text(f"SELECT count(*) FROM {self.table}")).scalar_one())

    def source(self, **options: Any) -> SourceConfig:
        opts: dict[str, Any] = {"url": self.url, "table": self.table, "id_column": "client_id",
                                "cursor_column": "modified", **options}
        return SourceConfig(name="pms", kind="sql", mode="full", mapping=dict(MAPPING),
                            options={k: v for k, v in opts.items() if v is not None})


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TargetDb]:
    if request.param == "sqlite":
        target = TargetDb(f"sqlite:///{tmp_path / 'pms.sqlite'}", "sqlite")
    else:
        server: PgServer = request.getfixturevalue("postgres")
        target = TargetDb(server.url(), "postgresql")
    yield target
    target.engine.dispose()


@pytest.fixture
def pg(postgres: PgServer) -> Iterator[TargetDb]:  # noqa: F811  (the imported fixture)
    target = TargetDb(postgres.url(), "postgresql")
    yield target
    target.engine.dispose()


def update(entry: int, cid: str, **fields: tuple[str, str]) -> OutboundChange:
    return OutboundChange(entry, f"key-{entry}", "update", cid, fields)


def create(entry: int, key: str | None = None, **fields: str) -> OutboundChange:
    return OutboundChange(entry, key or f"key-{entry}", "create", None,
                          {f: ("", v) for f, v in fields.items()})


def by_entry(results: list[PushResult]) -> dict[int, PushResult]:
    return {r.entry_id: r for r in results}


def push(cfg: SourceConfig, changes: list[OutboundChange]) -> dict[int, PushResult]:
    w = SqlWriter(cfg)
    try:
        results = w.push(changes)
    finally:
        w.close()
    assert sorted(r.entry_id for r in results) == sorted(c.entry_id for c in changes)
    return by_entry(results)


# ------------------------------------------------------------------ updates


def test_update_applies_when_the_base_matches(db: TargetDb) -> None:
    ids = db.add(2)
    out = push(db.source(), [
        update(1, ids[0], email=("client1@example.com", "new1@example.com"),
               city=("Parramatta", "Penrith"), **{"extra:tier": ("", "gold")}),
    ])
    assert out[1].outcome == "confirmed", out[1]
    row = db.row(ids[0])
    assert row is not None
    assert (row["email"], row["suburb"], row["tier"]) == ("new1@example.com", "Penrith", "gold")
    assert row["first_name"] == "Given1"  # a field not in the change is not written
    assert db.row(ids[1])["email"] == "client2@example.com"  # type: ignore[index]
    if db.backend == "postgresql":  # the cursor column, read back with RETURNING
        assert out[1].modified_at is not None and out[1].modified_at.startswith("20")


def test_a_changed_field_is_a_conflict_and_nothing_of_the_change_applies(db: TargetDb) -> None:
    ids = db.add(1)
    db.run(f"UPDATE {db.table} SET email = 'remote@example.com' WHERE client_id = 1")
    out = push(db.source(), [
        update(1, ids[0], email=("client1@example.com", "local@example.com"),
               family_name=("Family1", "Local")),
    ])
    assert out[1].outcome == "conflict"
    assert out[1].fields == ("email",)
    row = db.row(ids[0])
    assert row is not None and (row["email"], row["last_name"]) == ("remote@example.com", "Family1")


def test_null_is_the_empty_base_and_emptying_writes_null(db: TargetDb) -> None:
    ids = db.add(2)
    db.run(f"UPDATE {db.table} SET tier = '' WHERE client_id = 2")
    out = push(db.source(), [
        update(1, ids[0], mobile=("", "0400000001"), city=("Parramatta", "")),
        update(2, ids[1], **{"extra:tier": ("", "silver")}),
    ])
    assert [out[1].outcome, out[2].outcome] == ["confirmed", "confirmed"]
    row1, row2 = db.row(ids[0]), db.row(ids[1])
    assert row1 is not None and row2 is not None
    assert (row1["mobile"], row1["suburb"]) == ("0400000001", None)
    assert row2["tier"] == "silver"
    # empty_value = "empty" writes '' instead
    out = push(db.source(empty_value="empty"), [
        update(3, ids[0], city=("", "Ryde")),
        update(4, ids[1], **{"extra:tier": ("silver", "")}),
    ])
    assert [out[3].outcome, out[4].outcome] == ["confirmed", "confirmed"]
    assert db.row(ids[1])["tier"] == ""  # type: ignore[index]


def test_gone_row_and_unknown_field_are_rejected(db: TargetDb) -> None:
    ids = db.add(1)
    out = push(db.source(), [
        update(1, "999", email=("a@example.com", "b@example.com")),
        update(2, ids[0], postcode=("", "2150")),  # the table has no postcode column
        update(3, ids[0], email=("client1@example.com", "ok@example.com")),
    ])
    assert out[1].outcome == "rejected" and "no row" in out[1].reason
    assert out[2].outcome == "rejected" and "postcode" in out[2].reason
    assert out[2].fields == ("postcode",)
    assert out[3].outcome == "confirmed"


# ------------------------------------------------------------------ creates


def test_create_returns_the_new_id(db: TargetDb) -> None:
    db.add(3)
    out = push(db.source(), [create(1, given_name="Ada", email="ada@example.com",
                                    mobile="")])
    assert out[1].outcome == "confirmed", out[1]
    assert out[1].external_id == "4"
    row = db.row("4")
    assert row is not None and (row["first_name"], row["email"], row["mobile"]) == (
        "Ada", "ada@example.com", None)


def test_a_constraint_refusal_is_rejected_by_name_and_the_batch_goes_on(
    db: TargetDb, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ids = db.add(3)
    out = push(db.source(), [
        update(1, ids[0], family_name=("Family1", "Changed1")),
        update(2, ids[1], email=("client2@example.com", "client3@example.com")),  # unique
        update(3, ids[2], email=("client3@example.com", "no-at-sign")),  # check
        create(4, email="client1@example.com"),  # unique, on insert
        create(5, given_name="Bea"),
    ])
    assert out[1].outcome == "confirmed" and out[5].outcome == "confirmed"
    for entry, constraint in ((2, "email_key"), (3, "email_at"), (4, "email_key")):
        r = out[entry]
        assert r.outcome == "rejected", r
        assert r.fields == ("email",)
        if db.backend == "postgresql":
            assert f"{db.table}_{constraint}" in r.reason, r.reason
        else:
            assert "constraint failed" in r.reason.lower(), r.reason
        assert "example.com" not in r.reason and "no-at-sign" not in r.reason
    assert db.row(ids[0])["last_name"] == "Changed1"  # type: ignore[index]
    assert db.row(ids[1])["email"] == "client2@example.com"  # type: ignore[index]
    assert db.count() == 4
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "example.com" not in logged and "Changed1" not in logged and "Bea" not in logged


def test_replay_of_a_committed_batch_applies_once(db: TargetDb, tmp_path: Path) -> None:
    """A batch whose commit reply was lost is sent again with the same keys: updates
    find their new values (confirmed, not conflict), creates find their key."""
    ids = db.add(2)
    batch = [
        update(1, ids[0], email=("client1@example.com", "moved@example.com")),
        create(2, given_name="Cy", email="cy@example.com"),
    ]
    cfg = db.source(idempotency_table=f"{db.table}_applied")
    first = push(cfg, batch)
    again = push(cfg, batch)
    assert [first[1].outcome, first[2].outcome] == ["confirmed", "confirmed"]
    assert [again[1].outcome, again[2].outcome] == ["confirmed", "confirmed"]
    assert again[2].external_id == first[2].external_id
    assert db.count() == 3
    assert db.row(ids[0])["email"] == "moved@example.com"  # type: ignore[index]


def test_uuid_ids_make_creates_idempotent_without_a_table(tmp_path: Path) -> None:
    target = TargetDb(f"sqlite:///{tmp_path / 'u.sqlite'}", "sqlite")
    target.run("CREATE TABLE people (pid text PRIMARY KEY, email text)")
    cfg = SourceConfig(name="pms", kind="sql", mode="full",
                       options={"url": target.url, "table": "people", "id_column": "pid",
                                "new_id": "uuid"})
    batch = [create(1, "outbox-7", email="u@example.com")]
    first, again = push(cfg, batch), push(cfg, batch)
    assert first[1].outcome == again[1].outcome == "confirmed"
    assert first[1].external_id == again[1].external_id
    assert uuid.UUID(str(first[1].external_id))
    with target.engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM people")).scalar_one() == 1
    target.engine.dispose()


def test_without_idempotency_a_replayed_create_is_inserted_again(db: TargetDb) -> None:
    """The documented limit (at-least-once): no key is kept at the target."""
    batch = [create(1, given_name="Dee")]
    first, again = push(db.source(), batch), push(db.source(), batch)
    assert first[1].external_id != again[1].external_id
    assert db.count() == 2


# ------------------------------------------------------------------ lost connections


def test_a_connection_killed_mid_batch_leaves_nothing_applied(pg: TargetDb) -> None:
    """The writer's backend is held on the 4th row's update (a trigger waits for an
    advisory lock this test holds) and terminated from this other session."""
    ids = pg.add(5)
    pg.run(f"CREATE FUNCTION {pg.table}_hold() RETURNS trigger LANGUAGE plpgsql AS "
           "$$ BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NEW; END $$")
    pg.run(f"CREATE TRIGGER hold BEFORE UPDATE ON {pg.table} FOR EACH ROW "
           f"WHEN (NEW.client_id = 4) EXECUTE FUNCTION {pg.table}_hold()")
    batch = [update(i + 1, cid, family_name=(f"Family{i + 1}", f"New{i + 1}"))
             for i, cid in enumerate(ids)]
    batch.append(create(6, given_name="Eve"))
    cfg = pg.source(idempotency_table=f"{pg.table}_applied")
    writer = SqlWriter(cfg)
    out: dict[int, PushResult] = {}
    with pg.engine.connect() as admin:
        admin.execute(sa.text("SELECT pg_advisory_lock(4242)"))
        pusher = threading.Thread(target=lambda: out.update(by_entry(writer.push(batch))))
        pusher.start()
        deadline = time.monotonic() + 20
        pid = None
        while pid is None and time.monotonic() < deadline:
            pid = admin.execute(sa.text(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND wait_event = 'advisory' AND pid <> pg_backend_pid()")).scalar()
            admin.rollback()  # a fresh snapshot of pg_stat_activity each time
            if pid is None:
                pusher.join(0.05)
        assert pid is not None, "the writer never reached the 4th row"
        assert admin.execute(sa.text("SELECT pg_terminate_backend(:pid, 10000)"),
                             {"pid": pid}).scalar() is True
        pusher.join(20)
        admin.execute(sa.text("SELECT pg_advisory_unlock(4242)"))
        admin.commit()
    writer.close()
    assert not pusher.is_alive()
    assert sorted(out) == [1, 2, 3, 4, 5, 6]
    assert {r.outcome for r in out.values()} == {"retry"}
    assert "connection" in out[1].reason
    assert [pg.row(c)["last_name"] for c in ids] == [f"Family{i}" for i in range(1, 6)]  # type: ignore[index]
    assert pg.count() == 5
    # The outbox sends the same entries again: all applied, once.
    out2 = push(cfg, batch)
    assert {r.outcome for r in out2.values()} == {"confirmed"}
    assert [pg.row(c)["last_name"] for c in ids] == [f"New{i}" for i in range(1, 6)]  # type: ignore[index]
    assert pg.count() == 6


def test_a_connection_killed_at_commit_is_retried_and_then_applied_once(pg: TargetDb) -> None:
    ids = pg.add(2)
    batch = [update(1, ids[0], email=("client1@example.com", "c1@example.com")),
             update(2, ids[1], email=("client2@example.com", "c2@example.com"))]
    writer = SqlWriter(pg.source())
    engine = writer.source.engine()
    fired: list[int] = []

    @sa.event.listens_for(engine, "commit")
    def kill(conn: sa.Connection) -> None:
        fired.append(1)
        pid = conn.connection.driver_connection.info.backend_pid  # type: ignore[union-attr]
        pg.run("SELECT pg_terminate_backend(:pid, 10000)", {"pid": pid})

    out = by_entry(writer.push(batch))
    sa.event.remove(engine, "commit", kill)
    assert fired
    assert {r.outcome for r in out.values()} == {"retry"}
    assert pg.row(ids[0])["email"] == "client1@example.com"  # type: ignore[index]
    again = by_entry(writer.push(batch))
    again2 = by_entry(writer.push(batch))  # and a lost reply of that one: still once
    writer.close()
    assert {r.outcome for r in again.values()} == {"confirmed"}
    assert {r.outcome for r in again2.values()} == {"confirmed"}
    assert pg.row(ids[1])["email"] == "c2@example.com"  # type: ignore[index]


def test_an_unreachable_database_raises() -> None:
    url = f"postgresql+psycopg://tester:x@127.0.0.1:{free_port()}/postgres"
    cfg = SourceConfig(name="pms", kind="sql", mode="full",
                       options={"url": url, "table": "t", "id_column": "id", "timeout": 2})
    w = SqlWriter(cfg)
    with pytest.raises(ContactSyncError, match="cannot connect") as e:
        w.push([update(1, "1", email=("a", "b"))])
    assert ":x@" not in str(e.value)


# ------------------------------------------------------------------ configuration


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    eng = sa.create_engine(url, poolclass=NullPool)
    with eng.begin() as c:
        c.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, email text)"))
    eng.dispose()

    def cfg(**options: Any) -> SourceConfig:
        return SourceConfig(name="pms", kind="sql", mode="full",
                            options={"url": url, **options})

    cases: list[tuple[dict[str, Any], str]] = [
        ({"table": "t"}, "sources.pms.id_column"),
        ({"query": "SELECT * FROM t", "id_column": "id"}, "sources.pms.write_table"),
        ({"table": "t", "id_column": "id", "new_id": "serial"}, "sources.pms.new_id"),
        ({"table": "t", "id_column": "id", "empty_value": "blank"}, "sources.pms.empty_value"),
        ({"table": "t", "id_column": "id", "write_table": 3}, "sources.pms.write_table"),
    ]
    for options, key in cases:
        with pytest.raises(ConfigError) as e:
            SqlWriter(cfg(**options))
        assert e.value.key == key, (options, e.value)
    with pytest.raises(ConfigError) as e:
        SqlWriter(cfg(table="t", id_column="client_id")).push([update(1, "1", email=("", "x"))])
    assert e.value.key == "sources.pms.id_column"
    # the write options pass the start-up check, and open_writer gives the sql writer
    from contactsync_agent.config import AgentConfig

    good = cfg(query="SELECT * FROM t", id_column="id", write_table="t",
               idempotency_table="applied", new_id="database", empty_value="null")
    validate_sources(AgentConfig(sources={"pms": good}))
    w = open_writer(good)
    assert isinstance(w, SqlWriter)
    out = by_entry(w.push([create(1, email="q@example.com")]))
    w.close()
    assert out[1].outcome == "confirmed" and out[1].external_id == "1"


def test_an_id_matching_two_rows_is_rejected_and_rolled_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.sqlite'}"
    eng = sa.create_engine(url, poolclass=NullPool)
    with eng.begin() as c:
        c.execute(sa.text("CREATE TABLE t (id text, email text)"))
        c.execute(sa.text("INSERT INTO t VALUES ('1', 'a@x.org'), ('1', 'a@x.org'), "
                          "('2', 'b@x.org')"))
    cfg = SourceConfig(name="pms", kind="sql", mode="full",
                       options={"url": url, "table": "t", "id_column": "id"})
    out = push(cfg, [update(1, "1", email=("a@x.org", "n@x.org")),
                     update(2, "2", email=("b@x.org", "m@x.org"))])
    assert out[1].outcome == "rejected" and "not unique" in out[1].reason
    assert out[2].outcome == "confirmed"
    with eng.connect() as c:
        assert sorted(c.execute(sa.text("SELECT email FROM t")).scalars()) == [
            "a@x.org", "a@x.org", "m@x.org"]
    eng.dispose()


def test_a_deferred_constraint_is_rejected_by_name_not_the_whole_batch(pg: TargetDb) -> None:
    """A constraint checked at commit would refuse the whole batch: the careful pass
    checks it in each change's savepoint."""
    ids = pg.add(3)
    pg.run(f"ALTER TABLE {pg.table} ADD CONSTRAINT {pg.table}_mobile_key UNIQUE (mobile) "
           "DEFERRABLE INITIALLY DEFERRED")
    pg.run(f"UPDATE {pg.table} SET mobile = '0411111111' WHERE client_id = 3")
    out = push(pg.source(), [update(1, ids[0], mobile=("", "0400000001")),
                             update(2, ids[1], mobile=("", "0411111111"))])
    assert out[1].outcome == "confirmed"
    assert out[2].outcome == "rejected" and f"{pg.table}_mobile_key" in out[2].reason
    assert "0411111111" not in out[2].reason
    assert pg.row(ids[0])["mobile"] == "0400000001"  # type: ignore[index]


def test_a_locked_sqlite_database_makes_the_batch_retry(tmp_path: Path) -> None:
    """SQLite's transient failure: another connection holds the write lock past the
    writer's timeout. Nothing is applied, every change is `retry`, and the same
    batch applies once the lock is gone."""
    db = TargetDb(f"sqlite:///{tmp_path / 'l.sqlite'}", "sqlite")
    ids = db.add(2)
    cfg = db.source(timeout=0.2)
    batch = [update(1, ids[0], email=("client1@example.com", "l1@example.com")),
             create(2, given_name="Flo")]
    with db.engine.connect() as other:
        other.exec_driver_sql("BEGIN IMMEDIATE")
        out = push(cfg, batch)
        other.rollback()
    assert {r.outcome for r in out.values()} == {"retry"}
    assert "locked" in out[1].reason
    assert db.row(ids[0])["email"] == "client1@example.com"  # type: ignore[index]
    assert db.count() == 2
    out = push(cfg, batch)
    assert {r.outcome for r in out.values()} == {"confirmed"}
    assert db.count() == 3
    db.engine.dispose()


def test_typed_columns_compare_and_take_the_text_the_reader_gives(db: TargetDb) -> None:
    """A date and an integer column: the base is the reader's text of the value
    (ISO date, digits), compared and written by the database's own types."""
    ids = db.add(2)
    db.run(f"ALTER TABLE {db.table} ADD COLUMN dob date")
    db.run(f"ALTER TABLE {db.table} ADD COLUMN visits integer")
    db.run(f"UPDATE {db.table} SET dob = '1980-01-31', visits = 7")
    cfg = db.source()
    cfg.mapping["dob"] = "date_of_birth"
    out = push(cfg, [
        update(1, ids[0], date_of_birth=("1980-01-31", "1981-02-01"),
               **{"extra:visits": ("7", "8")}),
        update(2, ids[1], date_of_birth=("1979-12-31", "1981-02-01")),
    ])
    assert out[1].outcome == "confirmed", out[1]
    assert out[2].outcome == "conflict" and out[2].fields == ("date_of_birth",)
    with db.engine.connect() as c:
        dob, visits = c.execute(sa.text(f"SELECT dob, visits FROM {db.table} "
                                        "WHERE client_id = 1")).one()
    assert (str(dob), int(visits)) == ("1981-02-01", 8)
