"""Deletions skipped because of rows nobody can identify are counted once per
run, however many batches the unidentifiable rows are spread over: the skip is
decided after the last batch, when the absences are known."""

from __future__ import annotations

from pathlib import Path

from contactsync_agent.mirror import Mirror

HEADER = "Client ID,First Name,Surname,Email Address,Mobile\n"


def person(i: int) -> bytes:
    return f"K{i},Given{i},Family{i},person{i}@example.com,0412 000 {i:03d}\n".encode()


def unreadable(n: int) -> bytes:
    # Invalid UTF-8 in the id cell of a UTF-8 file (the file's other non-ASCII
    # text is UTF-8): nothing tells which contact the row was.
    return "Kä".encode("latin-1") + f"{n},Bad,Row,bad{n}@example.com,1\n".encode()


def test_unidentifiable_rows_in_several_batches_skip_each_deletion_once(
        tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    first = tmp_path / "first.csv"
    first.write_bytes(HEADER.encode() + b"".join(person(i) for i in range(10)))
    again = tmp_path / "again.csv"
    # Batches of two rows: an unreadable row in the first and in the last batch;
    # K4..K9 are absent.
    again.write_bytes(HEADER.encode() + unreadable(1) + person(0) + person(1) + person(2)
                      + "K3,Zoë,Family3,person3@example.com,0412 000 003\n".encode()
                      + unreadable(2))
    with Mirror.open(db) as m:
        m.sync_file("xpm", first)
        batches: list[int] = []
        r = m.sync_file("xpm", again, chunk_size=2, progress=batches.append)
        assert len(batches) >= 3, batches  # really several batches
        assert r.counts["rejected"] == 2
        assert (r.counts["deleted"], r.counts["deletions_skipped"]) == (0, 6)
        assert m.count_contacts() == 10
        [last, _] = m.runs("xpm", 2)
        assert last["deletions_skipped"] == 6
