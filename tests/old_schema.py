"""The mirror as the code of an older schema wrote it, for migration tests.

A test makes an old database by opening it with `store.core.SCHEMA_VERSION`
patched down; `old_snapshot_code` also puts back how the code before schema 8
kept a source's link snapshot (one blob in `link_snapshots.data`, no parts),
so that database holds what that code wrote."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from contactsync_agent import sync
from contactsync_agent.store import core as store_core
from contactsync_agent.store.contacts import Contacts


def _load(self: Contacts, source: str) -> list[bytes] | None:
    row = self.conn.execute("SELECT data FROM link_snapshots WHERE source = ?",
                            (source,)).fetchone()
    return [bytes(row[0])] if row else None


def _save(self: Contacts, source: str, data: bytes, entries: int, at: str) -> None:
    self.conn.execute("INSERT OR REPLACE INTO link_snapshots (source, data, entries, saved_at) "
                      "VALUES (?, ?, ?, ?)", (source, data, entries, at))


def old_code(patch: pytest.MonkeyPatch, version: int) -> None:
    """Inside `patch` (a `monkeypatch.context()`), the mirror opens and
    writes as the code of schema `version` (< 8) did."""
    patch.setattr(store_core, "SCHEMA_VERSION", version)
    patch.setattr(Contacts, "load_snapshot", _load)
    patch.setattr(Contacts, "save_snapshot", _save)
    patch.setattr(sync, "MAX_SNAPSHOT_PARTS", 1)  # always a whole snapshot, no delta


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """`sql`'s rows, read through a separate read-only connection."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()
