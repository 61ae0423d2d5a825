"""What a refusal of the column-drop guard says, word for word: the columns
the snapshot lacks (heading and field), that they would be cleared, that
nothing changed and how to confirm. A person reads this to decide whether to
re-run with `--allow-column-drop`; "that field" or "those fields" must match
what was named. The file is named first.

Found by the mutation check (RELIABILITY.md, "The guarantees' own tests,
mutated"): the message's words could change and no test noticed (the tests
matched a field's name only). Real CSV files, a real mirror file, through
`Mirror.sync_file`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from contactsync_agent.errors import SafetyLimitError
from contactsync_agent.mirror import Mirror

HEADER = ["Client ID", "First Name", "Surname", "Email Address", "Mobile"]
ROWS = [["K1", "Ann", "Lee", "ann.lee@x.example", "0412 000 001"],
        ["K2", "Bo", "Chan", "bo.chan@x.example", "0412 000 002"]]


def csv(path: Path, drop: set[str]) -> Path:
    keep = [i for i, h in enumerate(HEADER) if h not in drop]
    lines = [[r[i] for i in keep] for r in [HEADER, *ROWS]]
    path.write_text("".join(",".join(line) + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize(("drop", "named", "what"), [
    ({"Mobile"}, "'Mobile' (mobile)", "that field"),
    ({"Mobile", "Email Address"}, "'Email Address' (email), 'Mobile' (mobile)", "those fields"),
])
def test_a_refused_column_drop_names_the_columns_and_what_it_would_clear(
        tmp_path: Path, drop: set[str], named: str, what: str) -> None:
    with Mirror.open(tmp_path / "mirror.db") as m:
        assert m.sync_file("xpm", csv(tmp_path / "full.csv", set())).counts["created"] == 2
        less = csv(tmp_path / "less.csv", drop)
        with pytest.raises(SafetyLimitError) as e:
            m.sync_file("xpm", less)
        assert str(e.value) == (
            f"{less}: refused: the full snapshot of source 'xpm' has no column for {named}, which "
            f"its last full snapshot carried; applying it would clear {what} on every "
            "contact of the source; nothing was changed (re-run with --allow-column-drop "
            "to confirm)")
        # Nothing was changed: the values the snapshot lacks are still there.
        assert sorted((c.email, c.mobile) for c in m.contacts()) == [
            ("ann.lee@x.example", "0412 000 001"), ("bo.chan@x.example", "0412 000 002")]
