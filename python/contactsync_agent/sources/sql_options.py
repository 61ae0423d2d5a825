"""A sql source's option names, and the error for a sql source whose extra is not installed.

SQLAlchemy and psycopg are optional (`pip install 'contactsync-agent[sql]'`, or
`[postgres]` for PostgreSQL): this module imports neither, so a config that names
a sql source can be checked, and refused with the extra to install, without
them. It reads no database and opens no connection.
"""

from __future__ import annotations

from contactsync_agent.config import SourceConfig
from contactsync_agent.errors import ConfigError

#: [sources.NAME] kind = "sql": every option and its type (`sql.SqlSource` documents them).
SQL_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "url": str,
    "url_env": str,
    "url_file": str,
    "password_env": str,
    "password_file": str,
    "table": str,
    "query": str,
    "id_column": str,
    "cursor_column": str,
    "delete_column": str,
    "modified_column": str,
    "cursor_inclusive": bool,
    "timeout": (int, float),
    # Two-way sync's writer (sources/sql_writer.py reads them).
    "write_table": str,
    "new_id": str,
    "idempotency_table": str,
    "empty_value": str,
}

def wants_postgres(cfg: SourceConfig) -> bool:
    """Whether the source's URL, as far as the config shows it, is PostgreSQL's (a URL
    from url_env/url_file is read only by the connector: then the answer is no)."""
    url = cfg.options.get("url")
    return isinstance(url, str) and url.strip().lower().startswith("postgres")


def missing_driver(cfg: SourceConfig, module: str, extra: str | None = None) -> ConfigError:
    """The error for a sql source when `module` (sqlalchemy, psycopg) cannot be imported:
    names the source and the extra that installs it."""
    if extra is None:
        extra = "postgres" if wants_postgres(cfg) or module == "psycopg" else "sql"
    also = "" if extra == "postgres" else " (or '[postgres]' for PostgreSQL)"
    return ConfigError(
        f"a sql source needs the optional package {module}, which is not installed: "
        f"pip install 'contactsync-agent[{extra}]'{also}",
        key=f"sources.{cfg.name}.kind",
    )
