"""What every part of the store shares: the `Part` base (a part reaches the
store's one connection through it) and the small helpers the parts' SQL uses.

A part is an attribute of `Store` (`store.contacts`, `store.feed`, ...), not a
mixin: it owns the SQL of one concept and nothing else. It must not open
connections, take locks or begin transactions of its own (the `Store` does),
and decides nothing about a sync (the rules do).
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from contactsync_agent.store.core import Store


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sql_quote(text: str) -> str:
    """A constant of ours as an SQL string literal (never used for input values)."""
    return "'" + text.replace("'", "''") + "'"


def readonly_uri(path: str | os.PathLike[str]) -> str:
    """The `file:` URI that opens `path` read-only (`uri=True`), with `#`, `?`, `%`
    and the like percent-escaped: pasted raw, `#` would end the path and `?` start
    the query, opening another file (or dropping `mode=ro`)."""
    return Path(path).absolute().as_uri() + "?mode=ro"


FEED_JSON = json.JSONEncoder(ensure_ascii=False)


class Part:
    """One concept's SQL on the store's connection."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def conn(self) -> sqlite3.Connection:
        # Looked up on each use, never kept: the connection is the store's
        # (a test swaps it for one that fails on purpose).
        return self._store.conn
