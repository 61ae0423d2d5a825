"""Issue 19, re-imports: what a re-import reads of the contacts table.

A re-import of a big source must not visit every contact to find the few that
are not `sync` ones: the deletion guard's count (`linked_not_sync`), the
identity rows (manual and external contacts) and rule 5's manual contacts go
through the partial index `contacts_local`. SQLite's own query plan for the
statements a real re-import runs says so."""

from __future__ import annotations

from pathlib import Path

from contactsync_agent.mirror import Mirror


def test_a_re_import_reads_the_non_sync_contacts_through_their_index(tmp_path: Path) -> None:
    with Mirror.open(tmp_path / "m.db") as m:
        m.sync("xpm", [{"external_id": f"E{i}", "name": f"Ann Lee{i}"} for i in range(300)],
               mode="full")
        m.add_contact(given_name="Dee", family_name="Local", email="dee@x.example")
        conn = m.store.conn
        seen: list[str] = []
        conn.set_trace_callback(seen.append)
        try:
            r = m.sync("xpm", [{"external_id": f"E{i}", "name": f"Ann Lee{i}"}
                               for i in range(300)] + [{"external_id": "N", "name": "Ned New"}],
                       mode="full")
        finally:
            conn.set_trace_callback(None)
        assert r.counts["created"] == 1 and r.counts["unchanged"] == 300
        marks = ("SELECT count(*) FROM contacts",  # the deletion guard's count
                 "CASE record_type WHEN 'manual'",  # the identity rows
                 "record_type = 'manual' AND external_id IS NULL")  # rule 5's manual rows
        wanted = [s for s in seen if any(k in s for k in marks)]
        assert len(wanted) == 3, wanted
        for sql in wanted:
            plan = [str(p[3]) for p in conn.execute("EXPLAIN QUERY PLAN " + sql)]
            assert any("contacts_local" in p for p in plan), (sql, plan)
            assert not any(p.startswith("SCAN contacts") and "INDEX" not in p
                           for p in plan), (sql, plan)
