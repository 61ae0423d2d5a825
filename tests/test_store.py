"""Store details that no rule table covers: the page size of new databases."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from contactsync_agent.store import PAGE_SIZE, Store


def test_new_database_uses_16k_pages_and_an_existing_one_keeps_its_own(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "new.db")
    assert s.conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE == 16384
    s.close()
    old = tmp_path / "old.db"
    con = sqlite3.connect(old)
    con.execute("CREATE TABLE x (a)")
    con.close()
    s = Store.open(old)
    assert s.conn.execute("PRAGMA page_size").fetchone()[0] == 4096
    assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()
