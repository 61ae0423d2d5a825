"""Writes `mirror.sql` (a schema-5 mirror as SQL text) and `expected.json`
(what its `changes` and `contacts` said) with the code of schema 5.

Run it with that code first on the path (it refuses any other schema):

    git archive 6603d3a python | tar -x -C /tmp/s5
    cp python/contactsync_agent/_core.abi3.so /tmp/s5/python/contactsync_agent/
    PYTHONPATH=/tmp/s5/python .venv/bin/python tests/data/schema5/make.py

tests/test_migration_6.py migrates the database and compares. The people in
it are made up.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import sys
import tempfile
from pathlib import Path

from contactsync_agent.mirror import Mirror
from contactsync_agent.store import schema

HERE = Path(__file__).resolve().parent
HEAD = ["id", "given_name", "family_name", "email", "phone", "mobile", "organisation",
        "notes", "Partner"]


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(HEAD)
        w.writerows(rows)
    return path


def main() -> None:
    if schema.SCHEMA_VERSION != 5:
        sys.exit(f"run with the code of schema 5 (this is {schema.SCHEMA_VERSION})")
    rows = [
        ["A1", "Zoë", "Ångström", "zoe@example.org", "(02) 9123 4567", "", "Acme", "", "AB"],
        ["A2", "Bob", "Quote\"s", "bob@example.org", "", "0400 000 002", "", "line1\nline2", ""],
        ["A3", "Cleo", "Tab\tName", "", "", "", "", "", ""],
        ["A4", "Dan", "Deleted", "dan@example.org", "", "", "", "", "X"],
        ["A5", "Eve", "Forced", "eve@example.org", "", "", "", "", ""],
        ["A6", "Manu", "Al", "manual@example.org", "", "", "", "", ""],
    ]
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "mirror.db"
        with Mirror.open(db) as m:
            m.add_contact(name="Manu Al", email="manual@example.org")
            m.sync_file("xpm", write_csv(Path(tmp) / "a.csv", rows))
            m.sync("crm", [{"external_id": "C1", "given_name": "Api", "email": "api@x.org"}])
            eve = next(c.id for c in m.contacts() if c.external_id == "A5")
            m.set_forced_manual(eve)
            rows2 = [r[:] for r in rows if r[0] != "A4"]
            rows2[0][3] = "zoe@new.example.org"
            rows2[3][2] = "Forced-changed"
            m.sync_file("xpm", write_csv(Path(tmp) / "b.csv", rows2))
            m.purge(0)
            m.sync_file("xpm", write_csv(Path(tmp) / "c.csv", [
                *rows2, ["A7", "Gus", "Late", "gus@example.org", "", "", "", "", ""]]))
        conn = sqlite3.connect(db)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        assert version == 5, version
        expected = {
            "changes": [list(r) for r in conn.execute("SELECT * FROM changes ORDER BY seq")],
            "contacts": [list(r) for r in conn.execute("SELECT * FROM contacts ORDER BY id")],
        }
        dump = "\n".join(conn.iterdump()) + f"\nPRAGMA user_version = {version};\n"
        conn.close()
    (HERE / "mirror.sql").write_text(dump, encoding="utf-8")
    (HERE / "expected.json").write_text(json.dumps(expected, ensure_ascii=False, indent=1)
                                        + "\n", encoding="utf-8")
    print(f"{len(expected['changes'])} changes, {len(expected['contacts'])} contacts")


if __name__ == "__main__":
    main()
