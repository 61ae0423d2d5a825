"""Export files: encodings, delimiters, formats, and rows quarantined with their line."""

from __future__ import annotations

from pathlib import Path

import pytest
from contactsync_agent.errors import SourceFormatError
from contactsync_agent.mirror import Mirror


def names(m: Mirror) -> list[str]:
    return [c.name for c in m.contacts()]


@pytest.mark.parametrize(("data", "expected"), [
    (b"\xef\xbb\xbfID,Name\nA,Zo\xc3\xab Smith\n", "Zoë Smith"),
    (b"ID,Name\nA,Zo\xeb Smith\n", "Zoë Smith"),
    (b"ID;Name;Email\nA;Zo\xc3\xab Smith;z@x.com\n", "Zoë Smith"),
    (b"ID\tName\nA\tZo\xc3\xab Smith\n", "Zoë Smith"),
    (b'ID,Name\r\nA,"Smith, Zo\xc3\xab"\r\n', "Smith, Zoë"),
])
def test_csv_encodings_and_delimiters(mirror: Mirror, tmp_path: Path, data: bytes,
                                      expected: str) -> None:
    f = tmp_path / "export.csv"
    f.write_bytes(data)
    mirror.sync_file("xpm", f)
    assert names(mirror) == [expected]


def test_json_and_ndjson(mirror: Mirror, tmp_path: Path) -> None:
    j = tmp_path / "a.json"
    j.write_text('[{"id": "A", "first name": "John", "surname": "Smith", "vip": true}]')
    mirror.sync_file("json-src", j)
    n = tmp_path / "b.ndjson"
    n.write_text('{"id": 1, "name": "Mary Smith"}\n\n{"id": 2, "name": "Ann Lee"}\n')
    mirror.sync_file("nd-src", n)
    assert names(mirror) == ["John Smith", "Mary Smith", "Ann Lee"]
    assert mirror.get(1).extra == {"vip": "true"}


def test_malformed_rows_are_quarantined_with_lines(mirror: Mirror, tmp_path: Path) -> None:
    f = tmp_path / "export.csv"
    f.write_text("ID,Name,Email\nA,John Smith,j@x.com\nB,Mary Smith\n,No Id,n@x.com\n"
                 "C,Chris Smith,c@x.com\nA,Dup Licate,d@x.com\n")
    report = mirror.sync_file("xpm", f)
    assert names(mirror) == ["John Smith", "Chris Smith"]
    assert report.counts["rejected"] == 3
    rows = {(q["line"], q["reason"]) for q in mirror.quarantine()}
    assert rows == {
        (3, "expected 3 fields, found 2"),
        (4, "empty external id"),
        (6, 'duplicate external id "A" (first seen at line 2)'),
    }
    assert all(q["file"] == str(f) and q["run_id"] == report.run_id
               for q in mirror.quarantine())
    assert [q["raw"] for q in mirror.quarantine() if q["line"] == 3] == ["B,Mary Smith"]


def test_truncated_json_refuses_the_file(mirror: Mirror, tmp_path: Path) -> None:
    mirror.sync("xpm", [{"external_id": "Z", "name": "Kept Contact"}])
    f = tmp_path / "broken.json"
    f.write_text('[{"id": "A", "name": "John Smith"},\n {"id": "B", "na')
    with pytest.raises(SourceFormatError) as e:
        mirror.sync_file("xpm", f)
    assert e.value.line == 2 and "truncated JSON" in str(e.value) and str(f) in str(e.value)
    assert names(mirror) == ["Kept Contact"]
    assert mirror.runs("xpm", 1)[0]["status"] == "refused"


def test_missing_id_column_refuses_the_file(mirror: Mirror, tmp_path: Path) -> None:
    f = tmp_path / "export.csv"
    f.write_text("Name,Email\nJohn Smith,j@x.com\n")
    with pytest.raises(SourceFormatError, match="no column maps to external_id"):
        mirror.sync_file("xpm", f)


def test_config_mapping_overrides_defaults(mirror: Mirror, tmp_path: Path) -> None:
    f = tmp_path / "export.csv"
    f.write_text("Key,Given,Family,Tel\nK1,Ann,Lee,0400 000 009\n")
    mirror.sync_file("xpm", f, mapping={"Key": "external_id", "Given": "given_name",
                                        "Family": "family_name", "Tel": "mobile"})
    c = mirror.get(1)
    assert (c.external_id, c.name, c.mobile_e164) == ("K1", "Ann Lee", "+61400000009")


def test_rows_known_by_their_bytes_still_show_every_change(mirror: Mirror,
                                                           tmp_path: Path) -> None:
    """Unchanged rows are recognised by a hash of their raw bytes; an edited row,
    another mapping or a contact needing a rule must still take the full path."""
    f = tmp_path / "export.csv"
    rows = [f"K{i},Person {i},p{i}@x.com" for i in range(20)]
    f.write_text("ID,Name,Email\n" + "\n".join(rows) + "\n")
    mirror.sync_file("xpm", f)
    assert mirror.sync_file("xpm", f).counts["unchanged"] == 20  # learns the raw hashes
    assert mirror.sync_file("xpm", f).counts["unchanged"] == 20  # uses them
    rows[3] = "K3,Person 3,new@x.com"
    f.write_text("ID,Name,Email\n" + "\n".join(rows) + "\n")
    report = mirror.sync_file("xpm", f)
    assert (report.counts["updated"], report.counts["unchanged"]) == (1, 19)
    assert mirror.get(4).email == "new@x.com"
    # The same bytes under another mapping are another record (and since no
    # column carries the e-mail any more, the column-drop guard wants a confirmation).
    report = mirror.sync_file("xpm", f, mapping={"Email": "notes"}, allow_column_drop=True)
    assert report.counts["updated"] == 20
    assert mirror.get(1).notes == "p0@x.com"
    # A forced-manual contact always goes to the rules (it may need an activity).
    mirror.set_forced_manual(2, True)
    rows[1] = "K1,Person 1,changed@x.com"
    f.write_text("ID,Name,Email\n" + "\n".join(rows) + "\n")
    mirror.sync_file("xpm", f, mapping={"Email": "notes"})
    assert mirror.get(2).notes == "p1@x.com" and len(mirror.activities()) == 1
