"""A SQL table or query (any SQLAlchemy database: SQLite, PostgreSQL, ...) as records,
pulled whole (`full`) or past a cursor column's high-water mark (`incremental`).

It only reads the source database; the mark itself is stored by `source_runs.sync_source`.
A run ends after the source's `max_duration` (checked between rows; SQLite's
progress handler and PostgreSQL's statement_timeout end a query that runs past
it), and `abort` (SIGTERM) interrupts the query in flight.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Generator
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from contactsync_agent.config import SourceConfig
from contactsync_agent.errors import ConfigError
from contactsync_agent.sources.base import Connector, positive, read_secret, text_value
from contactsync_agent.sources.sql_options import SQL_OPTIONS, missing_driver

log = logging.getLogger("contactsync_agent.sources.sql")

STREAM_ROWS = 1000

# A quoted part of a driver's message is kept when it names a database object
# ('relation "clients" does not exist'); any other may be a row's value
# ('invalid input syntax for type date: "1980-13-45"') and is masked.
_OBJECTS = ("relation|column|table|schema|database|function|type|role|index|constraint|"
            "sequence|view|operator")
_QUOTED = re.compile(rf"(?P<before>\b(?:{_OBJECTS})\s+)?(?P<q>[\"'])(?P<text>[^\"']*)(?P=q)",
                     re.IGNORECASE)


def driver_message(text: str) -> str:
    """A database driver's error line with quoted values masked (`"…"`): an
    error text stays in `runs.error`, the log and alerts, and must not carry
    personal data; names of tables, columns and types stay."""

    def mask(m: re.Match[str]) -> str:
        return m.group(0) if m.group("before") else f"{m.group('q')}…{m.group('q')}"

    return _QUOTED.sub(mask, text)


class SqlSource(Connector):
    """[sources.NAME] kind = "sql". Options:

    url | url_env | url_file        SQLAlchemy URL (postgresql+psycopg://user@host/db,
                                    sqlite:///path); url_env / url_file keep the password
                                    out of the config file, as does password_env |
                                    password_file with a URL that has none
    table | query                   a table ("schema.table") or a SELECT
    id_column                       the source's id (mapped to external_id)
    cursor_column                   e.g. updated_at: incremental runs read
                                    `WHERE cursor > :mark ORDER BY cursor`; it must only
                                    grow as rows change (rows committed later with an
                                    older value are missed; cursor_inclusive = true reads
                                    `>=` and re-reads the boundary rows, which is free)
    delete_column                   a soft-delete flag (mapped to deleted)
    modified_column                 the row's modification time (a timestamp, ISO 8601
                                    text or epoch seconds/milliseconds; a time without a
                                    zone is UTC): mapped to modified_at, which two-way
                                    sync's last_write_wins compares (often the same
                                    column as cursor_column)
    timeout                         seconds to connect
    write_table, new_id,            where and how two-way sync writes back: see
    idempotency_table, empty_value  `sql_writer.SqlWriter`
    The run as a whole ends after the source's max_duration (default 1 h).
    Rows whose cursor is NULL are read by full runs only.
    """

    kind = "sql"
    OPTIONS: ClassVar[dict[str, type | tuple[type, ...]]] = SQL_OPTIONS

    def __init__(self, cfg: SourceConfig) -> None:
        super().__init__(cfg)
        table, query = self.option("table"), self.option("query")
        if bool(table) == bool(query):
            raise ConfigError(
                "a sql source needs either table or query (one of them)",
                key=self.key("query" if query else "table"),
            )
        self.table: str | None = table
        self.query: str | None = query.strip().rstrip(";").strip() if query else None
        self.id_column: str | None = self.option("id_column")
        self.cursor_column: str | None = self.option("cursor_column")
        self.delete_column: str | None = self.option("delete_column")
        self.inclusive = bool(self.option("cursor_inclusive", False))
        self.timeout = positive(self.option("timeout", 30), self.key("timeout"))
        if cfg.mode == "incremental" and not self.cursor_column:
            raise ConfigError(
                "incremental mode needs a cursor_column (e.g. updated_at)",
                key=self.key("cursor_column"),
            )
        raw = read_secret(cfg, direct="url", env="url_env", file="url_file", what="url")
        if not raw:
            raise ConfigError("a sql source needs url, url_env or url_file", key=self.key("url"))
        try:
            url = make_url(raw)
        except ArgumentError:
            # The message would quote the URL, password and all.
            raise ConfigError(
                "not a database URL (e.g. postgresql+psycopg://user@host/db)", key=self.key("url")
            ) from None
        password = read_secret(
            cfg, direct=None, env="password_env", file="password_file", what="password"
        )
        if password:
            url = url.set(password=password)
        if url.drivername == "postgresql":
            # The driver this package installs (SQLAlchemy's default would be psycopg2).
            url = url.set(drivername="postgresql+psycopg")
        self.url: URL = url
        # Longest first: the whole URL as given, then the password alone.
        self._secrets = [s for s in (raw, url.password) if s]
        self._engine: Engine | None = None
        self._dbapi: Any = None  # the driver connection of the query in flight

    # -------------------------------------------------------------- description

    def default_mapping(self) -> dict[str, str]:
        m: dict[str, str] = {}
        if self.id_column:
            m[self.id_column] = "external_id"
        if self.delete_column:
            m[self.delete_column] = "deleted"
        modified = self.option("modified_column")
        if modified:
            m[modified] = "modified_at"
        return m

    @property
    def safe_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    @property
    def origin(self) -> str:
        return f"sql:{self.safe_url}"

    def fingerprint(self) -> str:
        return json.dumps([self.safe_url, self.table, self.query, self.cursor_column])

    def engine(self) -> Engine:
        if self._engine is None:
            args: dict[str, Any] = {}
            backend = self.url.get_backend_name()
            if backend == "postgresql":
                args["connect_timeout"] = max(1, int(self.timeout))
                # No statement (each FETCH of the streamed result is one) outlives the run.
                ms = int(min(self.max_duration, 86400 * 24) * 1000)
                args["options"] = f"-c statement_timeout={ms}"
            elif backend == "sqlite":
                args["timeout"] = self.timeout
            # NullPool: a poll every 30 minutes holds no idle connection in between.
            try:
                self._engine = sa.create_engine(self.url, poolclass=NullPool, connect_args=args)
            except (ImportError, NoSuchModuleError) as e:
                if self.url.drivername == "postgresql+psycopg":
                    raise missing_driver(self.cfg, "psycopg", "postgres") from None
                raise ConfigError(
                    f"no database driver for {self.url.drivername!r} ({e}); install it or use "
                    "postgresql+psycopg:// (pip install 'contactsync-agent[postgres]') "
                    "or sqlite:///",
                    key=self.key("url"),
                ) from None
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # -------------------------------------------------------------- reading

    def statement(self, incremental: bool, mark: Any) -> tuple[str, dict[str, Any]]:
        """The SELECT to run and its parameters."""
        prep = self.engine().dialect.identifier_preparer
        if self.table:
            source = ".".join(prep.quote(part) for part in self.table.split("."))
        else:
            source = f"({self.query}) AS src"
        sql = f"SELECT * FROM {source}"
        params: dict[str, Any] = {}
        if self.cursor_column:
            cur = prep.quote(self.cursor_column)
            if incremental and mark is not None:
                sql += f" WHERE {cur} {'>=' if self.inclusive else '>'} :mark"
                params["mark"] = mark
            if incremental:
                sql += f" ORDER BY {cur}"
        return sql, params

    def read(self, mode: str, mark: str | None) -> Generator[dict[str, Any], None, None]:
        """Rows as column -> value (id column first). `mark` is a value `next_mark` gave."""
        self.fetched = 0
        self.next_mark = mark
        incremental = mode == "incremental"
        try:
            since = decode_mark(mark) if incremental else None
        except (ValueError, KeyError, TypeError):
            log.warning("source %s: ignoring an unreadable mark; reading everything", self.name)
            since = None
        sql, params = self.statement(incremental, since)
        best: Any = None
        log.debug("source %s: reading %s (%s)", self.name, self.safe_url, mode)
        self.start_clock()
        try:
            with self.engine().connect() as conn:
                self._watch_query(conn)
                result = conn.execution_options(stream_results=True, yield_per=STREAM_ROWS).execute(
                    sa.text(sql), params
                )
                # Closed explicitly: a sample stops early, and PostgreSQL's server-side
                # cursor must go before its connection does.
                with result:
                    columns = list(result.keys())
                    self._check(columns)
                    lower = {c.lower(): c for c in columns}
                    id_col = lower.get(self.id_column.lower()) if self.id_column else None
                    cur_col = lower[self.cursor_column.lower()] if self.cursor_column else None
                    order = ([id_col] if id_col else []) + [c for c in columns if c != id_col]
                    for row in result:
                        self.check()
                        values = row._mapping
                        self.fetched += 1
                        if cur_col is not None:
                            v = values[cur_col]
                            if v is not None and (best is None or v > best):
                                best = v
                        yield {c: text_value(values[c]) for c in order}
        except SQLAlchemyError as e:
            self.check()  # an interrupted query: aborted, or past max_duration
            # The driver's own message, first line only: SQLAlchemy's adds the statement.
            orig = getattr(e, "orig", None) or e
            text = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
            raise self.fail(f"database error on {self.safe_url}: {driver_message(text)}"
                            ) from None
        finally:
            self._dbapi = None
            self.close()
        if best is not None:
            self.next_mark = encode_mark(best)

    def _watch_query(self, conn: sa.Connection) -> None:
        """Lets `abort` and `max_duration` reach a query that is still running."""
        dbapi = conn.connection.driver_connection
        self._dbapi = dbapi
        if self.url.get_backend_name() == "sqlite" and dbapi is not None:
            # Called every few thousand SQLite instructions: non-zero interrupts.
            dbapi.set_progress_handler(
                lambda: int(self._aborted is not None or self.remaining() < 0), 10_000
            )

    def _interrupt(self) -> None:
        dbapi = self._dbapi
        if dbapi is None:
            return
        try:
            if self.url.get_backend_name() == "postgresql":
                dbapi.cancel()  # libpq's cancel request: the query ends with an error
            # SQLite: the progress handler sees the abort within a few ms.
        except Exception as e:  # best effort: the row loop's check still ends the run
            log.warning("source %s: could not cancel the query: %s", self.name, type(e).__name__)

    def _check(self, columns: list[str]) -> None:
        have = {c.lower() for c in columns}
        for opt in ("id_column", "cursor_column", "delete_column", "modified_column"):
            col = self.option(opt)
            if col and col.lower() not in have:
                raise ConfigError(
                    f"the query has no column {col!r} (it has: {', '.join(columns)})",
                    key=self.key(opt),
                )
        self.check_columns(columns)


# ------------------------------------------------------------------ marks


def encode_mark(value: Any) -> str:
    """A cursor value as JSON text that keeps its type (a timestamp stays a timestamp,
    so the next `WHERE cursor > :mark` compares like with like)."""
    if isinstance(value, bool):
        return json.dumps({"type": "str", "value": str(value)})
    if isinstance(value, int):
        return json.dumps({"type": "int", "value": value})
    if isinstance(value, float):
        return json.dumps({"type": "float", "value": value})
    if isinstance(value, dt.datetime):
        return json.dumps({"type": "datetime", "value": value.isoformat()})
    if isinstance(value, dt.date):
        return json.dumps({"type": "date", "value": value.isoformat()})
    return json.dumps({"type": "str", "value": str(text_value(value))})


def decode_mark(mark: str | None) -> Any:
    if mark is None:
        return None
    data = json.loads(mark)
    kind, value = data["type"], data["value"]
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "datetime":
        return dt.datetime.fromisoformat(value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    return str(value)
