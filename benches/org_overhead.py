"""The cost of organisations and locations on an import (issue 6).

Imports N contacts (benches/exportgen.py's generator) into a fresh mirror, once
plain and once with N/10 organisations and N/5 locations imported first and
every contact carrying its organisation, location and position. Prints both
times (median of --runs, alternating) and the ratio; the target is <= 1.5.

    .venv/bin/python benches/org_overhead.py --n 200000 --runs 3
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from contactsync_agent.mirror import Mirror
from exportgen import HEADER, generate, row

POSITIONS = ["Partner", "Director", "Accountant", "Bookkeeper", "Clerk", "Receptionist", ""]
MAPPING = {"Organisation ID": "organisation_ref", "Location ID": "location_ref",
           "Position": "position"}


def generate_related(folder: Path, n: int, seed: int = 42) -> tuple[Path, Path, Path]:
    """Contacts with relation columns, their organisations and locations (CSV)."""
    n_org, n_loc = max(n // 10, 1), max(n // 5, 1)
    rng = random.Random(seed)
    orgs, locs, contacts = folder / "orgs.csv", folder / "locs.csv", folder / "contacts.csv"
    with orgs.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["Organisation ID", "Name", "Website", "Phone", "ABN"])
        for i in range(n_org):
            w.writerow([f"ORG{i:06d}", f"Company {i} Pty Ltd", f"https://c{i}.example",
                        f"(02) 9{i % 1000:03d} {i % 10000:04d}", f"{rng.randrange(10**10):011d}"])
    with locs.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["Location ID", "Organisation ID", "Name", "Street", "City", "State",
                    "Postcode"])
        for i in range(n_loc):
            w.writerow([f"LOC{i:06d}", f"ORG{i % n_org:06d}", f"Site {i}",
                        f"{rng.randint(1, 400)} George St", "Sydney", "NSW", "2000"])
    rng = random.Random(seed)
    pick = random.Random(seed + 7)
    with contacts.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([*HEADER, "Organisation ID", "Location ID", "Position"])
        for i in range(1, n + 1):
            loc = pick.randrange(n_loc)
            w.writerow([*row(i, rng), f"ORG{loc % n_org:06d}", f"LOC{loc:06d}",
                        pick.choice(POSITIONS)])
    return contacts, orgs, locs


def plain_run(db: Path, contacts: Path) -> float:
    with Mirror.open(db) as m:
        t = time.perf_counter()
        m.sync_file("xpm", contacts)
        return time.perf_counter() - t


def related_run(db: Path, contacts: Path, orgs: Path, locs: Path) -> float:
    with Mirror.open(db) as m:
        t = time.perf_counter()
        m.entities.sync_file("organisation", "xpm", orgs)
        m.entities.sync_file("location", "xpm", locs)
        m.sync_file("xpm", contacts, mapping=MAPPING)
        elapsed = time.perf_counter() - t
        linked = m.store.conn.execute(
            "SELECT count(*) FROM contacts_with_organisation WHERE organisation_id IS NOT NULL "
            "AND location_id IS NOT NULL").fetchone()[0]
        if linked != m.store.conn.execute("SELECT count(*) FROM contacts").fetchone()[0]:
            raise SystemExit(f"only {linked} contacts linked")
        return elapsed


def measure(n: int, runs: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plain = folder / "plain.csv"
        generate(plain, n)
        contacts, orgs, locs = generate_related(folder, n)
        base, rel = [], []
        for k in range(runs):
            base.append(plain_run(folder / f"plain{k}.db", plain))
            rel.append(related_run(folder / f"rel{k}.db", contacts, orgs, locs))
            for p in folder.glob(f"*{k}.db*"):
                p.unlink()
        return base, rel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    base, rel = measure(a.n, a.runs)
    b, r = statistics.median(base), statistics.median(rel)
    print(f"contacts only:                          {', '.join(f'{x:.2f}' for x in base)} s "
          f"(median {b:.2f} s)")
    print(f"with {a.n // 10:,} organisations, {a.n // 5:,} locations: "
          f"{', '.join(f'{x:.2f}' for x in rel)} s (median {r:.2f} s)")
    print(f"ratio {r / b:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
