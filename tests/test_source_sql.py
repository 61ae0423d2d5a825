"""SQL source against SQLite and a real PostgreSQL server (started by conftest_pg):
incremental pulls past a cursor, the mark moving only with a committed run,
deletions in full mode, and credentials kept out of logs and the mirror."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest_pg import PgServer, postgres  # noqa: F401  (the session fixture)
from contactsync_agent import rules
from contactsync_agent.config import SourceConfig, parse_config
from contactsync_agent.errors import ConfigError, ContactSyncError, SafetyLimitError
from contactsync_agent.mirror import Mirror
from contactsync_agent.source_runs import preview_source, stored_mark, sync_source
from contactsync_agent.sources import SqlSource, validate_sources
from contactsync_agent.sources.sql import decode_mark
from sqlalchemy.pool import NullPool

T0 = dt.datetime(2024, 3, 1, 9, 0, tzinfo=dt.UTC)


class SourceDb:
    """A source database with one contacts table; timestamps as the backend keeps them."""

    def __init__(self, url: str, backend: str) -> None:
        self.url = url
        self.backend = backend
        self.table = f"clients_{uuid.uuid4().hex[:8]}"
        self.engine = sa.create_engine(url, poolclass=NullPool)
        ts = "timestamptz" if backend == "postgresql" else "text"
        self.run(
            f"CREATE TABLE {self.table} (client_id text PRIMARY KEY, first_name text, "
            f"last_name text, email text, mobile text, suburb text, is_deleted boolean "
            f"DEFAULT false, modified {ts} NOT NULL)"
        )

    def ts(self, minutes: int) -> Any:
        t = T0 + dt.timedelta(minutes=minutes)
        # sqlite3's datetime adapter is deprecated: SQLite keeps ISO text.
        return t if self.backend == "postgresql" else t.isoformat()

    def run(self, sql: str, rows: list[dict[str, Any]] | None = None) -> None:
        with self.engine.begin() as c:
            c.execute(sa.text(sql), rows or {})

    def add(self, n: int, start: int = 0, minute: int = 0) -> None:
        self.run(
            f"INSERT INTO {self.table} (client_id, first_name, last_name, email, mobile, suburb,"
            " modified) VALUES (:id, :first, :last, :email, :mobile, :suburb, :modified)",
            [
                {
                    "id": f"C{i:04d}",
                    "first": f"Given{i}",
                    "last": f"Family{i}",
                    "email": f"client{i}@example.com",
                    "mobile": f"04{i:08d}",
                    "suburb": "Parramatta",
                    "modified": self.ts(minute),
                }
                for i in range(start, start + n)
            ],
        )

    def touch(self, ids: list[str], minute: int, **values: Any) -> None:
        sets = ", ".join(f"{k} = :{k}" for k in values)
        self.run(
            f"UPDATE {self.table} SET {sets + ', ' if sets else ''}modified = :modified "
            "WHERE client_id = :id",
            [{"id": i, "modified": self.ts(minute), **values} for i in ids],
        )

    def delete(self, ids: list[str]) -> None:
        self.run(f"DELETE FROM {self.table} WHERE client_id = :id", [{"id": i} for i in ids])

    def source(self, mode: str = "incremental", **options: Any) -> SourceConfig:
        opts: dict[str, Any] = {
            "url": self.url,
            "table": self.table,
            "id_column": "client_id",
            "cursor_column": "modified",
            **options,
        }
        return SourceConfig(
            name="pms",
            kind="sql",
            mode=mode,
            mapping={"suburb": "city", "first_name": "given_name", "last_name": "family_name"},
            options={k: v for k, v in opts.items() if v is not None},
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SourceDb]:
    if request.param == "sqlite":
        src = SourceDb(f"sqlite:///{tmp_path / 'pms.sqlite'}", "sqlite")
    else:
        server: PgServer = request.getfixturevalue("postgres")
        src = SourceDb(server.url(), "postgresql")
    yield src
    src.engine.dispose()


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    m = Mirror.open(tmp_path / "mirror.db")
    yield m
    m.close()


def run(mirror: Mirror, cfg: SourceConfig, **kw: Any) -> tuple[Any, SqlSource]:
    conn = SqlSource(cfg)
    report = sync_source(mirror, cfg, connector=conn, **kw)
    return report, conn


def test_incremental_reads_only_changed_rows(db: SourceDb, mirror: Mirror) -> None:
    db.add(20, minute=0)
    cfg = db.source()
    first, conn = run(mirror, cfg)
    assert conn.fetched == 20 and first.counts["created"] == 20
    c = {x.external_id: x for x in mirror.contacts()}["C0003"]
    assert (c.given_name, c.family_name, c.city) == ("Given3", "Family3", "Parramatta")
    assert c.mobile_e164 == "+61400000003"
    assert "modified" in c.extra  # unmapped columns are kept

    again, conn = run(mirror, cfg)
    assert conn.fetched == 0 and again.counts["records"] == 0

    db.touch(["C0005", "C0007"], minute=5, suburb="Penrith")
    db.add(1, start=20, minute=6)
    third, conn = run(mirror, cfg)
    assert conn.fetched == 3
    assert third.counts["updated"] == 2 and third.counts["created"] == 1
    assert {x.external_id: x.city for x in mirror.contacts()}["C0005"] == "Penrith"
    mark = decode_mark(_mark_value(mirror))
    assert str(mark).startswith("2024-03-01") and "09:06" in str(mark)


def _mark_value(mirror: Mirror) -> str:
    import json

    raw = stored_mark(mirror.store, "pms")
    assert raw is not None
    return str(json.loads(raw)["value"])


def test_mark_does_not_advance_when_the_run_fails(
    db: SourceDb, mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    db.add(10, minute=0)
    cfg = db.source()
    run(mirror, cfg)
    before = stored_mark(mirror.store, "pms")
    db.touch(["C0001", "C0002"], minute=10, email="new@example.com")

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("injected failure after every row was read")

    # Fails at the very end of the run, after the records (and the new mark) went in.
    monkeypatch.setattr(rules, "explain_untouched", boom)
    with pytest.raises(RuntimeError, match="injected"):
        run(mirror, cfg)
    assert stored_mark(mirror.store, "pms") == before
    assert mirror.runs()[0]["status"] == "failed"
    monkeypatch.undo()

    retry, conn = run(mirror, cfg)  # the same two rows are read again and applied
    assert conn.fetched == 2 and retry.counts["updated"] == 2
    assert stored_mark(mirror.store, "pms") != before


def test_full_mode_detects_deletions_and_refusal_keeps_the_mark(
    db: SourceDb, mirror: Mirror
) -> None:
    db.add(10, minute=0)
    cfg = db.source(mode="full")
    first, conn = run(mirror, cfg)
    assert first.counts["created"] == 10 and first.mode == "full"
    db.delete(["C0004"])
    db.touch(["C0001"], minute=3)
    second, conn = run(mirror, cfg)
    assert conn.fetched == 9 and second.counts["deleted"] == 1
    assert "C0004" not in {x.external_id for x in mirror.contacts()}
    mark = stored_mark(mirror.store, "pms")
    # Half the source gone: refused, nothing changed, the mark stays.
    db.delete([f"C{i:04d}" for i in range(5, 10)])
    db.touch(["C0002"], minute=9)
    with pytest.raises(SafetyLimitError):
        run(mirror, cfg)
    assert stored_mark(mirror.store, "pms") == mark
    assert len(mirror.contacts()) == 9
    # An incremental run after a full one starts from the full run's mark.
    _, conn = run(mirror, db.source())
    assert conn.fetched == 1  # only C0002, touched after the mark


def test_soft_delete_column_in_incremental_mode(db: SourceDb, mirror: Mirror) -> None:
    db.add(10, minute=0)
    cfg = db.source(delete_column="is_deleted")
    run(mirror, cfg)
    db.touch(["C0003"], minute=2, is_deleted=True)
    report, conn = run(mirror, cfg)
    assert conn.fetched == 1 and report.counts["deleted"] == 1
    assert len(mirror.contacts()) == 9


def test_query_source_and_a_changed_query_starts_afresh(db: SourceDb, mirror: Mirror) -> None:
    db.add(6, minute=0)
    q = (
        f"SELECT client_id, first_name || ' ' || last_name AS full_name, email, modified "
        f"FROM {db.table} WHERE client_id <> 'C0000';"
    )
    cfg = SourceConfig(
        name="pms",
        kind="sql",
        mode="incremental",
        mapping={"full_name": "name"},
        options={"url": db.url, "query": q, "id_column": "client_id", "cursor_column": "modified"},
    )
    _, conn = run(mirror, cfg)
    assert conn.fetched == 5
    c = {x.external_id: x for x in mirror.contacts()}["C0002"]
    assert (c.given_name, c.family_name, c.display_name) == ("Given2", "Family2", "Given2 Family2")
    _, conn = run(mirror, cfg)
    assert conn.fetched == 0
    cfg.options["query"] = q.replace("<> 'C0000'", "<> 'C0001'")
    _, conn = run(mirror, cfg)
    assert conn.fetched == 5  # a different query: its old mark is not trusted


def test_preview_writes_nothing(db: SourceDb, tmp_path: Path) -> None:
    db.add(12, minute=0)
    sample, warnings = preview_source(db.source(), limit=10)
    assert len(sample) == 10 and warnings == []
    fields = {f.source_field: f for f in sample[0].fields}
    assert fields["client_id"].target == "external_id"
    assert fields["suburb"].target == "city"
    assert fields["mobile"].target == "mobile" and "E.164 +614" in fields["mobile"].note
    assert fields["modified"].target == "extra"
    assert not (tmp_path / "mirror.db").exists()


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    with pytest.raises(ConfigError) as e:
        SqlSource(SourceConfig(name="s", kind="sql", options={"url": url, "tabel": "x"}))
    assert e.value.key == "sources.s.tabel"
    with pytest.raises(ConfigError) as e:
        SqlSource(
            SourceConfig(
                name="s", kind="sql", mode="incremental", options={"url": url, "table": "x"}
            )
        )
    assert e.value.key == "sources.s.cursor_column"
    with pytest.raises(ConfigError) as e:
        SqlSource(SourceConfig(name="s", kind="sql", options={"table": "x"}))
    assert e.value.key == "sources.s.url"
    with pytest.raises(ConfigError) as e:
        SqlSource(
            SourceConfig(
                name="s", kind="sql", options={"url_env": "CS_NOT_SET_ANYWHERE", "table": "x"}
            )
        )
    assert "CS_NOT_SET_ANYWHERE" in str(e.value)
    # Checked at start for every source, from the TOML.
    cfg = parse_config(
        {"sources": {"pms": {"kind": "sql", "url": url, "table": "x", "curser_column": "modified"}}}
    )
    with pytest.raises(ConfigError, match="curser_column"):
        validate_sources(cfg)


def test_mapping_naming_a_missing_column_is_a_config_error(db: SourceDb, mirror: Mirror) -> None:
    db.add(2)
    cfg = db.source()
    cfg.mapping["e_mail"] = "email"
    with pytest.raises(ConfigError) as e:
        run(mirror, cfg)
    assert e.value.key == "sources.pms.mapping.e_mail"
    assert stored_mark(mirror.store, "pms") is None


# ------------------------------------------------------------------ credentials


def _all_log_text(caplog: pytest.LogCaptureFixture) -> str:
    return (
        "\n".join(
            f"{r.name} {r.levelname} {r.getMessage()} {r.args!r} {r.exc_text or ''}"
            for r in caplog.records
        )
        + caplog.text
    )


def _db_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_credentials_stay_out_of_logs_and_the_mirror(
    postgres: PgServer,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    src = SourceDb(postgres.url(), "postgresql")
    src.add(5)
    src.engine.dispose()
    monkeypatch.setenv("PMS_DB_URL", postgres.url())
    cfg = SourceConfig(
        name="pms",
        kind="sql",
        mode="incremental",
        options={
            "url_env": "PMS_DB_URL",
            "table": src.table,
            "id_column": "client_id",
            "cursor_column": "modified",
        },
    )
    path = tmp_path / "mirror.db"
    with Mirror.open(path) as m:
        report, conn = run(m, cfg)
        assert report.counts["created"] == 5
        assert postgres.password not in conn.origin
        # A failing connection (wrong password) names the server, not the secret.
        bad = postgres.url().replace(postgres.password, postgres.password + "-wrong")
        monkeypatch.setenv("PMS_DB_URL", bad)
        with pytest.raises(ContactSyncError) as e:
            run(m, cfg)
        assert "password authentication failed" in str(e.value)
        assert postgres.password not in str(e.value)
        # Password from a file, user and host from the URL.
        pw = tmp_path / "pw"
        pw.write_text(postgres.password + "\n", encoding="utf-8")
        pw.chmod(0o600)
        monkeypatch.setenv("PMS_DB_URL", postgres.url(password=False))
        cfg.options["password_file"] = str(pw)
        src.add(1, start=5, minute=1)
        report, conn = run(m, cfg)
        assert conn.fetched == 1
        runs = m.runs()
    assert all(postgres.password not in str(r) for r in runs)
    assert postgres.password not in _all_log_text(caplog)
    assert postgres.password.encode() not in _db_bytes(path)
    assert any("sql:postgresql+psycopg://tester:***@" in str(r["origin"]) for r in runs)


def test_mark_is_written_inside_the_runs_transaction(
    tmp_path: Path, mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = SourceDb(f"sqlite:///{tmp_path / 'pms.sqlite'}", "sqlite")
    src.add(3)
    seen: list[tuple[bool, str | None]] = []
    original = mirror.store.set_meta

    def spy(key: str, value: str) -> None:
        if key == "contact_id_hwm":  # id allocation, not the mark
            original(key, value)
            return
        # In the run's transaction, and before the run row says "ok".
        status = mirror.store.conn.execute(
            "SELECT status FROM runs ORDER BY id DESC LIMIT 1"
        ).fetchone()[0]
        seen.append((mirror.store.conn.in_transaction, status))
        original(key, value)

    monkeypatch.setattr(mirror.store, "set_meta", spy)
    run(mirror, src.source())
    assert seen == [(True, "running")]
    src.engine.dispose()


def test_plain_postgresql_url_uses_the_installed_driver(
    postgres: PgServer,  # noqa: F811
    mirror: Mirror,
) -> None:
    src = SourceDb(postgres.url(), "postgresql")
    src.add(2)
    cfg = src.source()
    cfg.options["url"] = postgres.url().replace("postgresql+psycopg://", "postgresql://")
    report, conn = run(mirror, cfg)
    assert report.counts["created"] == 2 and conn.url.drivername == "postgresql+psycopg"
    src.engine.dispose()
    cfg.options["url"] = "mysql+nosuchdriver://u@h/db"
    with pytest.raises(ConfigError, match="no database driver") as e:
        run(mirror, cfg)
    assert e.value.key == "sources.pms.url"


def test_a_connector_run_keeps_the_configs_ownership_and_thresholds(tmp_path: Path) -> None:
    """A sql/http source's `ownership` and `unique` settings and the mirror's
    thresholds hold for its runs as for a folder's (they were ignored: the
    source overwrote a field the config makes local)."""
    db = SourceDb(f"sqlite:///{tmp_path / 'pms.sqlite'}", "sqlite")
    db.add(3, minute=0)
    cfg = replace(db.source(mode="full"), ownership={"city": "local"})
    with Mirror.open(tmp_path / "m.db", review_threshold=0.99) as m:
        run(m, cfg, ownership=cfg.ownership, unique=cfg.unique)  # as the agent does
        assert m.ownership.policy("pms")[0] == {"city": "local"}
        c = {x.external_id: x for x in m.contacts()}["C0001"]
        m.ownership.edit_contact(c.id, city="Penrith")  # local: no force needed
        db.touch(["C0001"], minute=5, suburb="Blacktown", first_name="Gwen")
        report, _ = run(m, cfg)  # None: the recorded policy
        assert report.counts["updated"] == 1
        after = m.get(c.id)
        assert (after.city, after.given_name) == ("Penrith", "Gwen")
    db.engine.dispose()


@pytest.mark.parametrize("threshold", [0.5, 1.0])
def test_a_connector_run_uses_the_mirrors_review_threshold(tmp_path: Path,
                                                            threshold: float) -> None:
    db = SourceDb(f"sqlite:///{tmp_path / 'pms.sqlite'}", "sqlite")
    db.add(3, minute=0)
    with Mirror.open(tmp_path / "m.db", review_threshold=threshold) as m:
        # A local near-twin of C0001: the same name and mobile, another e-mail.
        m.add_contact(given_name="Given1", family_name="Family1", mobile="0400000001",
                      email="g.family@example.org", city="Parramatta")
        report, _ = run(m, db.source(mode="full"))
        assert (report.counts["review_items"] > 0) == (threshold < 1.0)
    db.engine.dispose()
