"""The SQL writer: applies a batch of outbound changes to a sql source's own table.

An update is one conditional statement, `UPDATE t SET col = :new, ... WHERE id = :id
AND col = :base AND ...`: zero rows means the row changed meanwhile (a conflict,
never a success); a create is an `INSERT` that returns the new id. A batch is one
transaction. It is tried first without savepoints (on PostgreSQL the updates of one
shape go in one pipelined round trip); when the database refuses a change (a
constraint, a bad value) that attempt is rolled back whole and the batch runs again
with a savepoint per change, so the refused change is `rejected` by the constraint's
name and the others still commit. A connection lost before the commit leaves
nothing applied and every change of the batch is `retry`.

A base is compared by the database's own `=` (a text base against a date column is
read as a date), so it must be the value as the reader gave it; the reader reads
NULL as empty, so the base "" matches NULL or ''.

Idempotency (a replay of a batch whose commit is unknown): an applied update no
longer matches its base, so a zero-row update whose row already holds every new
value is `confirmed`, not a conflict. A create is applied once only with
`idempotency_table` (keys of applied creates, written in the create's savepoint) or
`new_id = "uuid"` (the id is derived from the key); otherwise creates are
at-least-once: a replay after a lost commit reply inserts the contact again.

It writes only the configured table (and the idempotency table): it never opens
the mirror, never decides a conflict strategy and never logs or returns a value
(field names, counts and the database's masked reason only).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from contactsync_agent.config import SourceConfig
from contactsync_agent.errors import ConfigError
from contactsync_agent.mapping import RELATION_TARGETS, build_mapping
from contactsync_agent.sources.base import text_value
from contactsync_agent.sources.sql import SqlSource, driver_message
from contactsync_agent.sources.writer import OutboundChange, PushResult

log = logging.getLogger("contactsync_agent.sources.sql_writer")

#: uuid5 namespace of ids the writer assigns (`new_id = "uuid"`): the same key
#: always gives the same id, so a replayed create finds its row.
ID_NAMESPACE = uuid.UUID("5b0c3f2e-8f0d-4f3a-9d43-3c9a3f1f6a11")

NEW_ID = ("database", "uuid")
EMPTY_VALUE = ("null", "empty")


@dataclass(frozen=True)
class _Target:
    """The write table as the database has it: field -> column, the id column."""

    table: str  # quoted, ready for a statement
    id_column: str
    columns: dict[str, str]  # canonical field ("extra:KEY" for an extra) -> column
    cursor_column: str | None


class _Careful(Exception):
    """A change was refused in a batch without savepoints: run it again with them."""


class _Undo(Exception):
    """A change wrote and must be rolled back: `result` is its outcome."""

    def __init__(self, result: PushResult) -> None:
        super().__init__(result.reason)
        self.result = result


class _BatchLost(Exception):
    """The connection went (or the commit failed): nothing of the batch is known applied."""


class SqlWriter:
    """Writes outbound changes to [sources.NAME] kind = "sql". Options (besides the
    source's url, table, id_column and mapping, which say where the fields live):

    write_table          the table to write ("schema.table"; default: `table`;
                         needed when the source reads a `query`)
    new_id               "database" (default: the id column's default assigns it,
                         read back with RETURNING) or "uuid" (the writer assigns a
                         uuid derived from the change's key: creates apply once)
    idempotency_table    a table (created if missing) recording the key and id of
                         every applied create, in the create's own savepoint: a
                         replayed create is confirmed with the first id
    empty_value          an emptied field is written as "null" (default, as the
                         reader reads NULL as empty) or "empty" ('')
    """

    def __init__(self, cfg: SourceConfig) -> None:
        self.source = SqlSource(cfg)
        self.name = cfg.name
        src = self.source
        if not src.id_column:
            raise ConfigError("writing to a sql source needs its id_column",
                              key=src.key("id_column"))
        table = src.option("write_table") or src.table
        if not table:
            raise ConfigError(
                "a sql source that reads a query needs write_table to be written to",
                key=src.key("write_table"),
            )
        self.table_name: str = table
        self.new_id: str = _choice(src, "new_id", NEW_ID)
        self.empty_value: str = _choice(src, "empty_value", EMPTY_VALUE)
        self.idempotency_table: str | None = src.option("idempotency_table")
        self._target: _Target | None = None
        self._idem_ready = False

    # -------------------------------------------------------------- the contract

    def push(self, changes: Sequence[OutboundChange]) -> list[PushResult]:
        """One result per change. Raises (ContactSyncError) only when the database
        cannot be reached or the table is not as configured; a connection lost
        mid-batch makes every change `retry` (the transaction was not committed)."""
        if not changes:
            return []
        engine = self.source.engine()
        try:
            conn = engine.connect()
        except SQLAlchemyError as e:
            raise self.source.fail(f"cannot connect to {self.source.safe_url}: {_first_line(e)}"
                                   ) from None
        try:
            with conn:
                target = self._describe(conn)
                if self.idempotency_table and not self._idem_ready:
                    self._ensure_idempotency_table(conn)
                results = self._apply_batch(conn, target, changes)
        except _BatchLost as e:
            reason = str(e)
            log.warning("source %s: batch of %d not applied (%s); all will be retried",
                        self.name, len(changes), reason)
            return [PushResult(c.entry_id, "retry", reason=reason) for c in changes]
        counts: dict[str, int] = {}
        for r in results:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
        log.info("source %s: pushed %d change(s): %s", self.name, len(changes),
                 ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        return results

    def close(self) -> None:
        self.source.close()

    # -------------------------------------------------------------- the batch

    def _apply_batch(
        self, conn: sa.Connection, target: _Target, changes: Sequence[OutboundChange]
    ) -> list[PushResult]:
        """One transaction. First without savepoints (a third of the round trips);
        when the database refuses a change, that attempt is rolled back whole and the
        batch runs again with a savepoint per change, so only the refused ones fail."""
        try:
            try:
                return self._transaction(conn, target, changes, careful=False)
            except _Careful:
                return self._transaction(conn, target, changes, careful=True)
        except (DataError, IntegrityError) as e:  # by the commit itself (a deferred check)
            raise _BatchLost(f"the commit was refused: {_first_line(e)}") from None
        except SQLAlchemyError as e:
            if isinstance(e, sa.exc.ProgrammingError) and not _disconnected(e):
                raise self.source.fail(
                    f"cannot write {self.table_name} on {self.source.safe_url}: {_first_line(e)}"
                ) from None
            raise _BatchLost(f"connection lost: {_first_line(e)}") from None

    def _transaction(self, conn: sa.Connection, target: _Target,
                     changes: Sequence[OutboundChange], *, careful: bool) -> list[PushResult]:
        results: list[PushResult] = []
        try:
            with conn.begin():
                if careful and conn.dialect.name == "postgresql":
                    # A deferred constraint is checked in the change's own savepoint.
                    conn.execute(sa.text("SET CONSTRAINTS ALL IMMEDIATE"))
                sent: dict[int, PushResult] = {}
                if not careful and conn.dialect.driver == "psycopg":
                    sent = self._send_updates(conn, target, changes)
                for i, change in enumerate(changes):
                    done = sent.get(i)
                    results.append(done if done is not None else
                                   self._apply_one(conn, target, change, careful=careful))
            # Leaving the block committed: only now is anything applied.
        except (DataError, IntegrityError) as e:
            if careful or _disconnected(e):
                raise
            raise _Careful from None
        return results

    def _send_updates(self, conn: sa.Connection, target: _Target,
                      changes: Sequence[OutboundChange]) -> dict[int, PushResult]:
        """PostgreSQL: the updates of one shape sent together (psycopg's executemany
        pipelines them: one round trip, one result set per change), index -> result.
        The optimistic pass only: any refusal is `_Careful` (the batch runs again)."""
        names = [target.table, *target.columns.values(), target.cursor_column or ""]
        if any("%" in n for n in names):
            return {}  # the driver's own parameter style would read it
        groups: dict[str, list[tuple[int, OutboundChange, dict[str, Any]]]] = {}
        for i, change in enumerate(changes):
            if change.kind != "update" or any(f not in target.columns for f in change.fields):
                continue
            sql, params = self._update_statement(conn, target, change,
                                                 mark=lambda name: f"%({name})s")
            if sql:
                groups.setdefault(sql, []).append((i, change, params))
        import psycopg  # only here: a SQLite-only install has no psycopg ([sql] extra)

        dbapi: Any = conn.connection.dbapi_connection
        results: dict[int, PushResult] = {}
        for sql, items in groups.items():
            with dbapi.cursor() as cur:
                try:
                    cur.executemany(sql, [params for _, _, params in items], returning=True)
                except (psycopg.IntegrityError, psycopg.DataError):
                    if not dbapi.closed:
                        raise _Careful from None
                    conn.invalidate()
                    raise _BatchLost("connection lost") from None
                except psycopg.Error as e:
                    if dbapi.closed or isinstance(e, psycopg.OperationalError):
                        conn.invalidate()
                        raise _BatchLost(f"connection lost: {_first_line(e)}") from None
                    raise self.source.fail(f"cannot write {self.table_name} on "
                                           f"{self.source.safe_url}: {_first_line(e)}") from None
                for i, change, _params in items:
                    rows = cur.fetchall()
                    try:
                        results[i] = self._updated(conn, target, change, rows)
                    except _Undo:
                        raise _Careful from None
                    cur.nextset()
        return results

    def _apply_one(self, conn: sa.Connection, target: _Target, change: OutboundChange, *,
                   careful: bool) -> PushResult:
        missing = [f for f in change.fields if f not in target.columns]
        if missing:
            return PushResult(
                change.entry_id, "rejected", fields=tuple(change.fields),
                reason=f"{self.table_name} has no column for {', '.join(sorted(missing))}",
            )
        if not careful:
            try:
                return self._write(conn, target, change)
            except _Undo:
                raise _Careful from None
        savepoint = conn.begin_nested()
        try:
            result = self._write(conn, target, change)
        except _Undo as undo:
            savepoint.rollback()
            return undo.result
        except (IntegrityError, DataError) as e:
            if _disconnected(e):
                raise
            savepoint.rollback()
            return PushResult(change.entry_id, "rejected", fields=tuple(change.fields),
                              reason=_constraint_reason(e))
        savepoint.commit()
        return result

    def _write(self, conn: sa.Connection, target: _Target, change: OutboundChange
               ) -> PushResult:
        """The change's statements. A result that is not `confirmed` has written
        nothing, or is raised as `_Undo` (its writes must be rolled back)."""
        if change.kind == "update":
            return self._update(conn, target, change)
        return self._create(conn, target, change)

    # -------------------------------------------------------------- update

    def _update(self, conn: sa.Connection, target: _Target, change: OutboundChange
                ) -> PushResult:
        sql, params = self._update_statement(conn, target, change)
        if not sql:
            return PushResult(change.entry_id, "confirmed")
        res = conn.execute(sa.text(sql), params)
        if conn.dialect.update_returning:
            return self._updated(conn, target, change, res.fetchall())
        return self._updated(conn, target, change, [()] * res.rowcount)

    def _update_statement(self, conn: sa.Connection, target: _Target, change: OutboundChange,
                          mark: Callable[[str], str] = lambda name: f":{name}",
                          ) -> tuple[str, dict[str, Any]]:
        """`UPDATE ... WHERE id = :id AND col = :base ...`: the text depends only on
        the change's shape (its fields, which bases are empty), so changes of one
        shape share it. `mark` writes a parameter in the driver's own style."""
        q = conn.dialect.identifier_preparer.quote
        sets: list[str] = []
        where = [f"{q(target.id_column)} = {mark('id')}"]
        params: dict[str, Any] = {"id": change.external_id}
        for i, (field, (base, new)) in enumerate(sorted(change.fields.items())):
            col = q(target.columns[field])
            if new == "" and self.empty_value == "null":
                sets.append(f"{col} = NULL")
            else:
                sets.append(f"{col} = {mark(f'n{i}')}")
                params[f"n{i}"] = new
            if base == "":
                # The reader reads NULL as empty: either is the base "".
                where.append(f"({col} IS NULL OR CAST({col} AS VARCHAR(1)) = '')")
            else:
                where.append(f"{col} = {mark(f'b{i}')}")
                params[f"b{i}"] = base
        if not sets:
            return "", {}
        sql = f"UPDATE {target.table} SET {', '.join(sets)} WHERE {' AND '.join(where)}"
        if conn.dialect.update_returning:
            sql += f" RETURNING {q(target.id_column)}"
            if target.cursor_column:
                sql += f", {q(target.cursor_column)}"
        return sql, params

    def _updated(self, conn: sa.Connection, target: _Target, change: OutboundChange,
                 rows: Sequence[Sequence[Any]]) -> PushResult:
        """The result of a change's UPDATE from the rows it touched (RETURNING id,
        cursor; without RETURNING, one empty row per row)."""
        if len(rows) == 1:
            row = rows[0]
            return PushResult(change.entry_id, "confirmed",
                              modified_at=_modified(row[1] if len(row) > 1 else None))
        if len(rows) > 1:
            raise _Undo(PushResult(
                change.entry_id, "rejected", fields=tuple(change.fields),
                reason=f"{len(rows)} rows of {self.table_name} have this id "
                       f"({target.id_column} is not unique)",
            ))
        return self._why_not(conn, target, change)

    def _why_not(self, conn: sa.Connection, target: _Target, change: OutboundChange
                 ) -> PushResult:
        """A zero-row update: the row is gone, already holds the new values (a replay
        of a batch whose commit was unknown: confirmed), or changed meanwhile."""
        q = conn.dialect.identifier_preparer.quote
        fields = sorted(change.fields)
        cols = ", ".join(q(target.columns[f]) for f in fields)
        extra = f", {q(target.cursor_column)}" if target.cursor_column else ""
        row = conn.execute(
            sa.text(f"SELECT {cols}{extra} FROM {target.table} WHERE {q(target.id_column)} = :id"),
            {"id": change.external_id},
        ).first()
        if row is None:
            return PushResult(change.entry_id, "rejected", fields=tuple(fields),
                              reason=f"no row of {self.table_name} has this id (deleted?)")
        current = {f: _as_text(row[i]) for i, f in enumerate(fields)}
        if all(current[f] == change.fields[f][1] for f in fields):
            return PushResult(change.entry_id, "confirmed",
                              modified_at=_modified(row[len(fields)] if extra else None))
        changed = tuple(f for f in fields if current[f] != change.fields[f][0]) or tuple(fields)
        return PushResult(change.entry_id, "conflict", fields=changed,
                          reason=f"changed in {self.table_name} since the last pull")

    # -------------------------------------------------------------- create

    def _create(self, conn: sa.Connection, target: _Target, change: OutboundChange
                ) -> PushResult:
        q = conn.dialect.identifier_preparer.quote
        idq = q(target.id_column)
        if self.idempotency_table:
            known = conn.execute(
                sa.text(f"SELECT external_id FROM {self._idem_name(conn)} "
                        "WHERE idempotency_key = :k"),
                {"k": change.key},
            ).scalar()
            if known is not None:
                return PushResult(change.entry_id, "confirmed", external_id=str(known))
        columns: list[str] = []
        params: dict[str, Any] = {}
        new_id: str | None = None
        if self.new_id == "uuid":
            new_id = str(uuid.uuid5(ID_NAMESPACE, change.key))
            if conn.execute(sa.text(f"SELECT 1 FROM {target.table} WHERE {idq} = :id"),
                            {"id": new_id}).first() is not None:
                return PushResult(change.entry_id, "confirmed", external_id=new_id)
            columns.append(idq)
            params["id"] = new_id
        for i, (field, (_base, new)) in enumerate(sorted(change.fields.items())):
            if new == "" and self.empty_value == "null":
                continue  # the column's default (or NULL)
            columns.append(q(target.columns[field]))
            params[f"n{i}"] = new
        body = (f"({', '.join(columns)}) VALUES ({', '.join(':' + k for k in params)})"
                if columns else "DEFAULT VALUES")
        returning = conn.dialect.insert_returning
        extra = f", {q(target.cursor_column)}" if target.cursor_column else ""
        sql = f"INSERT INTO {target.table} {body}"
        if returning:
            sql += f" RETURNING {idq}{extra}"
        res = conn.execute(sa.text(sql), params)
        modified: str | None = None
        if returning:
            row = res.first()
            assigned = None if row is None else row[0]
            modified = _modified(row[1]) if row is not None and extra else None
        else:
            assigned = new_id if new_id else res.lastrowid
        if assigned is None:
            raise _Undo(PushResult(
                change.entry_id, "rejected", fields=tuple(change.fields),
                reason=f"{self.table_name} gave no id for the new row "
                       f"(give {target.id_column} a default, or new_id = \"uuid\")"))
        external_id = str(text_value(assigned))
        if self.idempotency_table:
            conn.execute(
                sa.text(f"INSERT INTO {self._idem_name(conn)} "
                        "(idempotency_key, external_id, applied_at) VALUES (:k, :id, :at)"),
                {"k": change.key, "id": external_id,
                 "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
            )
        return PushResult(change.entry_id, "confirmed", external_id=external_id,
                          modified_at=modified)

    # -------------------------------------------------------------- the table

    def _describe(self, conn: sa.Connection) -> _Target:
        """The write table's columns (one empty SELECT), matched to fields the way
        a pull maps them: the source's mapping, then the default headings; any other
        column is the extra of its own name."""
        if self._target is not None:
            return self._target
        q = conn.dialect.identifier_preparer.quote
        quoted = ".".join(q(part) for part in self.table_name.split("."))
        try:
            result = conn.execute(sa.text(f"SELECT * FROM {quoted} WHERE 1 = 0"))
            names: list[str] = list(result.keys())
            conn.rollback()  # read only: ends the implicit transaction
        except SQLAlchemyError as e:
            raise self.source.fail(
                f"cannot read the columns of {self.table_name} on {self.source.safe_url}: "
                f"{_first_line(e)}") from None
        lower = {n.lower(): n for n in names}
        src = self.source

        def column(option: str) -> str | None:
            wanted: str | None = src.option(option)
            if wanted is None:
                return None
            if wanted.lower() not in lower:
                raise ConfigError(f"{self.table_name} has no column {wanted!r} "
                                  f"(it has: {', '.join(names)})", key=src.key(option))
            return lower[wanted.lower()]

        id_column = column("id_column")
        assert id_column is not None  # checked in __init__
        table = build_mapping(src.mapping(), where=src.key("mapping"))
        columns: dict[str, str] = {}
        for name in [id_column, *[n for n in names if n != id_column]]:
            t = table.get(name.strip().lower(), "extra")
            if t in ("external_id", "ignore", "deleted", "name"):
                continue
            field = (f"extra:{name}" if t == "extra"
                     else f"extra:{t}" if t in RELATION_TARGETS else t)
            columns.setdefault(field, name)  # the first column mapped to a target wins
        self._target = _Target(quoted, id_column, columns, column("cursor_column"))
        return self._target

    def _idem_name(self, conn: sa.Connection) -> str:
        assert self.idempotency_table is not None
        q = conn.dialect.identifier_preparer.quote
        return ".".join(q(part) for part in self.idempotency_table.split("."))

    def _ensure_idempotency_table(self, conn: sa.Connection) -> None:
        try:
            with conn.begin():
                conn.execute(sa.text(
                    f"CREATE TABLE IF NOT EXISTS {self._idem_name(conn)} ("
                    "idempotency_key VARCHAR(200) PRIMARY KEY, "
                    "external_id VARCHAR(200) NOT NULL, applied_at VARCHAR(40) NOT NULL)"))
        except SQLAlchemyError as e:
            raise self.source.fail(
                f"cannot create the idempotency_table {self.idempotency_table}: "
                f"{_first_line(e)}") from None
        self._idem_ready = True


# ------------------------------------------------------------------ helpers


def _choice(src: SqlSource, option: str, allowed: tuple[str, ...]) -> str:
    value = src.option(option, allowed[0])
    if value not in allowed:
        raise ConfigError(f"must be one of {', '.join(map(repr, allowed))}, got {value!r}",
                          key=src.key(option))
    return str(value)


def _as_text(value: Any) -> str:
    """A column's value as the reader hands it on: NULL is empty."""
    v = text_value(value)
    return "" if v is None else str(v)


def _modified(value: Any) -> str | None:
    """The cursor column's value after the write, when it is a time."""
    return value.isoformat() if isinstance(value, dt.datetime | dt.date) else None


def _first_line(e: BaseException) -> str:
    """The driver's own message, first line, values masked (SQLAlchemy's adds the statement)."""
    orig = getattr(e, "orig", None) or e
    text = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return driver_message(text)


def _constraint_reason(e: SQLAlchemyError) -> str:
    """What the database refused, by the constraint's name: never the values (PostgreSQL's
    DETAIL line has them, so only the first line is kept, and quoted values are masked)."""
    reason = _first_line(e)
    diag = getattr(getattr(e, "orig", None), "diag", None)
    name = getattr(diag, "constraint_name", None)
    if name and name not in reason:
        reason += f" (constraint {name})"
    return reason


def _disconnected(e: SQLAlchemyError) -> bool:
    return bool(getattr(e, "connection_invalidated", False))

