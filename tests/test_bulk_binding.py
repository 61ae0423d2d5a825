"""The bulk insert of a run's new contacts through the connection's own SQLite
library (`_core.SqliteLibrary`, `Store.bulk_library`, issue 19): it writes
exactly what `executemany` writes, fails as Python's sqlite3 module fails,
refuses what would be unsafe (no open transaction, a closed or foreign
connection) and falls back to `executemany` where the library is not reachable."""

from __future__ import annotations

import _sqlite3
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from contactsync_agent import _core
from contactsync_agent.mirror import Mirror
from contactsync_agent.store import Store

MAPPING = {"id": "external_id", "email": "email", "name": "display_name",
           "phone": "phone", "notes": "notes"}

CSV = (
    "id,given_name,family_name,email,phone,mobile,street,city,postcode,date_of_birth,Tier\n"
    "A1,Zoë,Ångström,zoe@example.org,02 9374 4000,0412 345 678,1 Main St,Sydney,2000,"
    "1980-01-02,gold\n"
    "A2,José,Nuñez,,,,,,,,\n"
    'A3,"Smith, Jr",O\'Brien,a3@example.org,+61 2 9374 4001,,"2 ""Quoted"" Rd",Perth,6000,,\n'
    "A4,,,,,,,,,,silver\n"
    "A5,李,小龍,lee@example.org,,0400 000 000,,,,,\n"
)


def _rows(db: Path) -> tuple[list[Any], list[Any]]:
    con = sqlite3.connect(db)
    cols = [r[1] for r in con.execute("PRAGMA table_info(contacts)")
            if r[1] not in ("created_at", "updated_at")]  # the run's time
    contacts = con.execute(f"SELECT {', '.join(cols)} FROM contacts ORDER BY id").fetchall()
    feed = con.execute("SELECT contact_id, run_id, op, fields, reason_code, reason, at "
                       "FROM change_log ORDER BY seq").fetchall()
    con.close()
    return contacts, feed


def test_the_library_is_reached_on_this_python(tmp_path: Path) -> None:
    """CPython with `_sqlite3` on a shared libsqlite3 (this machine kind): the
    fast path is the one that runs, and it is Python's own library."""
    with Mirror.open(tmp_path / "m.db") as m:
        library = m.store.bulk_library()
        assert library is not None
        assert library.version() == sqlite3.sqlite_version
        assert Path(library.filename(m.store.conn)).samefile(tmp_path / "m.db")


def test_both_paths_write_the_same_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in.csv"
    src.write_text(CSV, encoding="utf-8")
    out = {}
    for mode in ("rust", "python"):
        if mode == "python":
            monkeypatch.setenv("CONTACTSYNC_BULK_BINDING", "python")
        db = tmp_path / f"{mode}.db"
        with Mirror.open(db) as m:
            assert (m.store.bulk_library() is None) == (mode == "python")
            r = m.sync_file("crm", src)
            assert r.counts["created"] == 5
        out[mode] = _rows(db)
    assert out["rust"] == out["python"]
    contacts = out["rust"][0]
    # Values survive byte for byte (non-ASCII, quotes, commas), hashes are integers.
    names = {row[4]: row for row in contacts}  # by external id
    assert "李" in names["A5"] and "Zoë" in names["A1"] and '2 "Quoted" Rd' in names["A3"]


def _batch(n: int, start: int = 0) -> _core.Batch:
    differ = _core.Differ()
    return _core.Batch.from_dicts(
        [{"id": f"N{i}", "email": f"n{i}@example.org", "name": "Nora"}
         for i in range(start, start + n)],
        MAPPING, differ)


def _sql(store: Store) -> str:
    # The store's own statement, as `insert_created` builds it.
    cols = [r[1] for r in store.conn.execute("PRAGMA table_info(contacts)")]
    assert "hash" in cols
    from contactsync_agent.mapping import FIELDS

    names = ("id", "source", "external_id", *FIELDS, "extra", "phone_e164", "mobile_e164",
             "hash")
    marks = ", ".join(f"?{i}" for i in range(1, len(names) + 1))
    return (f"INSERT INTO contacts ({', '.join(names)}, created_at, updated_at) "
            f"VALUES ({marks}, 'now', 'now')")


def test_a_failure_is_raised_as_sqlite3_raises_it(tmp_path: Path) -> None:
    with Mirror.open(tmp_path / "m.db") as m:
        store = m.store
        library = store.bulk_library()
        assert library is not None
        with store.transaction():
            assert _batch(3).insert_creates(library, store.conn, _sql(store), 10, "crm") == 3
            # Ids 8, 9, 10: 10 is taken, so the primary key refuses the third
            # row; the rows before it stay (as with `executemany`: the caller's
            # transaction decides).
            with pytest.raises(sqlite3.IntegrityError,
                               match=r"UNIQUE constraint failed: contacts\.id") as e:
                _batch(3, start=3).insert_creates(library, store.conn, _sql(store), 8, "crm")
            assert e.value.sqlite_errorcode == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
            assert store.conn.execute("SELECT count(*) FROM contacts").fetchone()[0] == 5
            with pytest.raises(sqlite3.OperationalError, match="no such table: nowhere"):
                _batch(1).insert_creates(library, store.conn, "INSERT INTO nowhere VALUES (?1)",
                                         1, "crm")
            # A statement that does not take the row's values is refused before a row.
            with pytest.raises(sqlite3.OperationalError, match="takes 1 parameters, rows have 21"):
                _batch(1).insert_creates(library, store.conn, "SELECT ?1", 1, "crm")
            store.conn.execute("SELECT 1").fetchone()  # the connection still works
        assert [r[0] for r in store.conn.execute("SELECT id FROM contacts ORDER BY id")] == [
            8, 9, 10, 11, 12]


def test_refused_outside_a_transaction_and_on_a_closed_connection(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        store = m.store
        library = store.bulk_library()
        assert library is not None
        with pytest.raises(RuntimeError, match="inside the caller's transaction"):
            _batch(2).insert_creates(library, store.conn, _sql(store), 1, "crm")
        assert store.conn.execute("SELECT count(*) FROM contacts").fetchone()[0] == 0
    other = sqlite3.connect(tmp_path / "other.db")
    other.close()
    with pytest.raises(RuntimeError, match="closed"):
        library.filename(other)
    with pytest.raises(TypeError, match=r"not a sqlite3\.Connection"):
        library.filename(object())  # type: ignore[arg-type]
    # A library looked up in a module that is not loaded is refused.
    with pytest.raises(RuntimeError, match="not loaded"):
        _core.SqliteLibrary(str(tmp_path / "nothing.so"))
    assert _core.SqliteLibrary(_sqlite3.__file__).version() == sqlite3.sqlite_version


class _Proxy:
    """A wrapped connection (as a test or a tracing tool might install)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.calls = 0

    def executemany(self, sql: str, rows: Any) -> Any:
        self.calls += 1
        return self._conn.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_a_wrapped_or_foreign_connection_falls_back_to_executemany(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text(CSV, encoding="utf-8")
    with Mirror.open(tmp_path / "m.db") as m:
        real = m.store.conn
        proxy = _Proxy(real)
        m.store.conn = proxy  # type: ignore[assignment]
        assert m.store.bulk_library() is None
        m.sync_file("crm", src)
        assert proxy.calls >= 1, "the creates did not go through the wrapper"
        m.store.conn = real
        assert m.store.bulk_library() is not None
    # A store whose handle opens another file than its own path is refused.
    with Mirror.open(tmp_path / "a.db") as a, Mirror.open(tmp_path / "b.db") as b:
        a_conn = a.store.conn
        a.store.conn = b.store.conn
        assert a.store.bulk_library() is None
        a.store.conn = a_conn
