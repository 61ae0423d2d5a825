"""Connectors beyond the CSV/JSON export files: vCard files, SQL databases, HTTP APIs.

Connectors read their own system and yield mappings; they never write the mirror
and know nothing of it (no `Mirror`, no `Store`, no sync here). Writers
(`open_writer`, two-way sync) apply the outbox's changes to their own system
only, on the contract of `writer.py`. Running one
against the mirror, with its high-water mark, and previewing how a sample maps
is `source_runs.py`, the one layer above both the connectors and the sync.

The sql connector and writer need SQLAlchemy (and psycopg for PostgreSQL), which
are optional extras: they are imported only when a sql source is opened, and
their absence is a ConfigError naming the extra to install.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from contactsync_agent.config import AgentConfig, SourceConfig
from contactsync_agent.errors import ContactSyncError
from contactsync_agent.infile import InputFile
from contactsync_agent.sources.base import Connector, check_options, redact_url
from contactsync_agent.sources.http import HttpSource
from contactsync_agent.sources.http_writer import HttpWriter
from contactsync_agent.sources.outfile import FolderWriter
from contactsync_agent.sources.sql_options import SQL_OPTIONS, missing_driver
from contactsync_agent.sources.vcard import VCardSource
from contactsync_agent.sources.writer import Writer

if TYPE_CHECKING:
    from contactsync_agent.sources.sql import SqlSource
    from contactsync_agent.sources.sql_writer import SqlWriter

__all__ = [
    "Connector",
    "FolderWriter",
    "HttpSource",
    "HttpWriter",
    "SqlSource",
    "SqlWriter",
    "VCardSource",
    "open_connector",
    "open_writer",
    "redact_url",
    "validate_sources",
]

VCARD_SUFFIXES = (".vcf", ".vcard")

#: What the optional extras bring (`pip install 'contactsync-agent[sql]'` / `[postgres]`).
_OPTIONAL = ("sqlalchemy", "psycopg")


def __getattr__(name: str) -> Any:
    """`SqlSource` and `SqlWriter`, imported when first asked for (they need SQLAlchemy)."""
    if name == "SqlSource":
        from contactsync_agent.sources.sql import SqlSource

        return SqlSource
    if name == "SqlWriter":
        from contactsync_agent.sources.sql_writer import SqlWriter

        return SqlWriter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _sql_source(cfg: SourceConfig) -> SqlSource:
    try:
        from contactsync_agent.sources.sql import SqlSource
    except ImportError as e:
        raise _missing(cfg, e) from None
    return SqlSource(cfg)


def _sql_writer(cfg: SourceConfig) -> SqlWriter:
    try:
        from contactsync_agent.sources.sql_writer import SqlWriter
    except ImportError as e:
        raise _missing(cfg, e) from None
    return SqlWriter(cfg)


def _missing(cfg: SourceConfig, e: ImportError) -> Exception:
    """The ConfigError naming the extra when an optional package is missing; else `e`."""
    top = (e.name or "").partition(".")[0]
    return missing_driver(cfg, top) if top in _OPTIONAL else e


def open_connector(
    cfg: SourceConfig, *, path: str | Path | InputFile | None = None
) -> Connector:
    """The connector of a configured source (validating its options), or a vCard file."""
    if cfg.kind == "sql":
        return _sql_source(cfg)
    if cfg.kind == "http":
        return HttpSource(cfg)
    named = path.path if isinstance(path, InputFile) else path
    is_vcard = cfg.format == "vcard" or (
        named is not None and Path(named).suffix.lower() in VCARD_SUFFIXES
    )
    if cfg.kind == "folder" and is_vcard:
        return VCardSource(cfg, path)
    raise ContactSyncError(
        f"source {cfg.name!r} is a {cfg.kind} source of {cfg.format} files: sync its files "
        "with `contactsync sync` or the daemon"
    )


def open_writer(cfg: SourceConfig) -> Writer:
    """The writer of a configured source (two-way sync), by its kind, validating its options."""
    if cfg.kind == "http":
        return HttpWriter(cfg)
    if cfg.kind == "sql":
        return _sql_writer(cfg)
    if cfg.kind == "folder":
        return FolderWriter(cfg)
    raise ContactSyncError(f"source {cfg.name!r} is a {cfg.kind} source: it has no writer")


def validate_sources(config: AgentConfig) -> None:
    """Checks every source's connector options at start-up (ConfigError names the key).
    Enabled sources are opened too, so a missing url_env or token file shows now."""
    for cfg in config.sources.values():
        if cfg.kind == "sql":
            check_options(cfg, SQL_OPTIONS)
        elif cfg.kind == "http":
            check_options(cfg, HttpSource.OPTIONS)
        else:
            check_options(cfg, {**(VCardSource.OPTIONS if cfg.format == "vcard" else {}),
                                **FolderWriter.OPTIONS})
        if cfg.enabled and cfg.kind in ("sql", "http"):
            open_connector(cfg).close()
        if cfg.enabled and cfg.kind == "http":
            HttpWriter(cfg).close()  # the write options' values too
