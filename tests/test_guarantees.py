"""Guarantees whose tests could not fail before (issue 13): `updated_at` moves
only when mirrored data changes, and every refused file is on record as a run.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from agent_helpers import cli
from contactsync_agent.errors import SourceFormatError
from contactsync_agent.mirror import Mirror

HOSTILE = Path(__file__).parent / "hostile"
ORG_HEADER = "Client ID,First Name,Surname,Email Address,Organisation ID,Location ID,Position\n"
ORG_MAPPING = {"Organisation ID": "organisation_ref", "Location ID": "location_ref",
               "Position": "position"}


def stamps(m: Mirror) -> dict[str, list[tuple]]:
    conn = m.store.conn
    return {
        "contacts": conn.execute("SELECT id, updated_at, hash FROM contacts ORDER BY id")
        .fetchall(),
        "contact_organisations": conn.execute(
            "SELECT contact_id, updated_at FROM contact_organisations ORDER BY contact_id")
        .fetchall(),
    }


def test_updated_at_does_not_move_on_an_unchanged_reimport(tmp_path: Path) -> None:
    """A forced-manual contact (and every other) keeps its `updated_at`, and its
    organisation link its own, when the same export comes again."""
    f = tmp_path / "x.csv"
    f.write_text(ORG_HEADER + "A,Ann,Smith,a@x.org,O1,L1,Partner\n"
                 "B,Bob,Smith,b@x.org,O1,L1,Clerk\n"
                 "C,Cat,Smith,c@x.org,O2,,\n", encoding="utf-8")
    with Mirror.open(tmp_path / "mirror.db") as m:
        m.sync_file("xpm", f, mapping=ORG_MAPPING)
        m.set_forced_manual(1)
        m.sync_file("xpm", f, mapping=ORG_MAPPING)
        before = stamps(m)
        assert len(before["contact_organisations"]) == 3
        for _ in range(2):
            time.sleep(0.002)  # updated_at has millisecond resolution
            r = m.sync_file("xpm", f, mapping=ORG_MAPPING)
            assert r.counts["skipped_forced_manual"] == 1 and r.counts["updated"] == 0
            assert stamps(m) == before
        # A real change still moves it (the test can fail the other way too).
        f.write_text(ORG_HEADER + "A,Ann,Smith,a@x.org,O1,L1,Partner\n"
                     "B,Bob,Smith,b@x.org,O1,L1,Senior Clerk\n"
                     "C,Cat,Smith,c@x.org,O2,,\n", encoding="utf-8")
        time.sleep(0.002)
        m.sync_file("xpm", f, mapping=ORG_MAPPING)
        after = stamps(m)
        assert after["contacts"][1][1] > before["contacts"][1][1]
        assert after["contact_organisations"][1][1] > before["contact_organisations"][1][1]
        assert after["contacts"][0] == before["contacts"][0]
        assert after["contact_organisations"][0] == before["contact_organisations"][0]


def runs(db: Path) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT source, status, origin, error FROM runs ORDER BY id").fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("name", ["empty.csv", "header_only.csv"])
def test_a_refused_empty_file_is_recorded_as_a_run(tmp_path: Path, name: str) -> None:
    db = tmp_path / "mirror.db"
    with Mirror.open(db) as m:
        m.sync("xpm", [{"external_id": "1", "name": "Ann Smith"}])
    p = cli("--db", str(db), "sync", "-s", "xpm", "--mode", "full", str(HOSTILE / name))
    assert p.returncode in (3, 4), p.stderr
    recorded = runs(db)
    assert len(recorded) == 2, recorded
    source, status, origin, error = recorded[1]
    assert (source, status, origin) == ("xpm", "refused", str(HOSTILE / name))
    assert error and error in p.stderr


def test_a_zero_byte_file_through_the_api_is_recorded(tmp_path: Path) -> None:
    f = tmp_path / "empty.csv"
    f.write_bytes(b"")
    with Mirror.open(tmp_path / "mirror.db") as m:
        with pytest.raises(SourceFormatError, match="the file is empty"):
            m.sync_file("xpm", f)
        [run] = m.runs("xpm")
        assert run["status"] == "refused" and "the file is empty" in run["error"]
        assert run["origin_hash"]  # the same file is recognised when it comes again
