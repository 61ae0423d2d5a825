"""Seeded generator of a labelled practice-management export (CSV) of N contacts.

Deterministic for a seed; `--changed-share` writes a second snapshot in which
that share of records differ (a field edited) for the 1 %-changed benchmark.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

GIVEN = ["John", "Mary", "Chris", "Leila", "Harry", "Cleo", "Ava", "Noah", "Olivia", "Liam",
         "Mia", "Jack", "Isla", "Ethan", "Zoë", "José", "Siobhan", "Wei", "Priya", "Tom",
         "Charlotte", "William", "Amelia", "Oliver", "Grace", "Lucas", "Chloe", "Henry"]
FAMILY = ["Smith", "Nguyen", "Brown", "Wilson", "Taylor", "Johnson", "White", "Martin",
          "Anderson", "Thompson", "Lee", "O'Brien", "García", "Kelly", "Walker", "Harris",
          "Ryan", "Robinson", "Clarke", "Young", "King", "Wright", "Scott", "Green"]
STREETS = ["George", "King", "Queen", "High", "Church", "Station", "Victoria", "Albert"]
CITIES = [("Sydney", "NSW", "2000"), ("Melbourne", "VIC", "3000"), ("Brisbane", "QLD", "4000"),
          ("Perth", "WA", "6000"), ("Hobart", "TAS", "7000"), ("Adelaide", "SA", "5000"),
          ("Darwin", "NT", "0800"), ("Canberra", "ACT", "2600")]
HEADER = ["Client ID", "First Name", "Surname", "Email Address", "Phone", "Mobile",
          "Business Name", "Address", "Suburb", "State", "Postcode", "Date of Birth",
          "Client Code", "Partner"]


def row(i: int, rng: random.Random) -> list[str]:
    g, f = rng.choice(GIVEN), rng.choice(FAMILY)
    city, state, pc = rng.choice(CITIES)
    fmt = rng.random()
    n = rng.randrange(10_000_000, 99_999_999)
    mobile = (f"04{n // 1_000_000:02d} {n // 1000 % 1000:03d} {n % 1000:03d}" if fmt < 0.7
              else f"+61 4{n // 1_000_000:02d} {n // 1000 % 1000:03d} {n % 1000:03d}")
    phone = f"(02) 9{n % 1000:03d} {n // 1000 % 10000:04d}" if rng.random() < 0.4 else ""
    return [
        f"{i:08x}-{(i * 2654435761) % (1 << 32):08x}",
        g, f, f"{g.lower()}.{f.lower().replace(chr(39), '')}{i}@example.com", phone, mobile,
        rng.choice(["", "", "", "Acme Pty Ltd", f"{f} & Co"]),
        f"{rng.randint(1, 400)} {rng.choice(STREETS)} St", city, state, pc,
        f"{rng.randint(1940, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        f"C{i:07d}", rng.choice(["AB", "CD", "EF"]),
    ]


def generate(path: Path, n: int, seed: int = 42, changed_share: float = 0.0) -> int:
    """Writes the export; returns how many records were changed against the base."""
    rng = random.Random(seed)
    change_rng = random.Random(seed + 1)
    changed = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for i in range(1, n + 1):
            r = row(i, rng)
            if changed_share and change_rng.random() < changed_share:
                r[5] = f"04{change_rng.randrange(10_000_000, 99_999_999)}"
                changed += 1
            w.writerow(r)
    return changed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("path", type=Path)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--changed-share", type=float, default=0.0)
    a = ap.parse_args()
    changed = generate(a.path, a.n, a.seed, a.changed_share)
    print(f"wrote {a.n} records ({changed} changed) to {a.path}")


if __name__ == "__main__":
    main()
