"""A realistic mirror for the console's screenshots and timings, built with the
product's own sync: `n` contacts of one source, `review` local contacts that a
later record resembles (each becomes a fuzzy review item), a month of runs
(incremental updates, creates and deletes twice a day, some rows rejected),
a few activities. The runs' start times are then spread over the last 30 days
in the file itself (the one thing a sync cannot do: run in the past).

`python tests/web_demo.py DB --contacts N --review R` builds one."""

from __future__ import annotations

import argparse
import random
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from contactsync_agent.mirror import Mirror

GIVEN = ["Olivia", "Jack", "Charlotte", "Noah", "Amelia", "Leo", "Isla", "Oliver", "Mia",
         "William", "Ava", "Henry", "Grace", "Thomas", "Chloe", "Lucas", "Sophie", "James",
         "Ruby", "Ethan", "Zoe", "Samuel", "Emily", "Harrison", "Lily", "Alexander", "Ella",
         "Max", "Harper", "Archie", "Matilda", "Hudson"]
FAMILY = ["Smith", "Jones", "Williams", "Brown", "Wilson", "Taylor", "Nguyen", "Johnson",
          "Martin", "White", "Anderson", "Walker", "Thompson", "Harris", "Lee", "Ryan",
          "Robinson", "Kelly", "King", "Davis", "Wright", "Evans", "Roberts", "Green",
          "Hall", "Wood", "Jackson", "Clarke", "Patel", "Khan", "Lewis", "Chen"]
STREETS = ["George St", "King St", "Queen St", "Church St", "High St", "Station Rd",
           "Victoria Rd", "Park Ave", "Bridge Rd", "Elizabeth St"]


def record(i: int, rnd: random.Random) -> dict[str, Any]:
    g, f = GIVEN[i % len(GIVEN)], FAMILY[(i // len(GIVEN)) % len(FAMILY)]
    k = i // 1024  # a double-barrelled name keeps 32k name pairs apart
    suffix = "" if k == 0 else "-" + FAMILY[(k - 1) % len(FAMILY)]
    suffix += "" if k <= 32 else str(k // 32)
    return {"external_id": f"C{i:07d}", "given_name": g, "family_name": f"{f}{suffix}",
            "email": f"{g.lower()}.{f.lower()}{i}@example.com",
            "mobile": f"+614{i % 100_000_000:08d}",
            "street": f"{1 + i % 200} {STREETS[i % len(STREETS)]}",
            "city": "Sydney" if i % 3 else "Melbourne", "postcode": f"{2000 + i % 900}",
            "organisation": f"{f} & Co" if i % 7 == 0 else ""}


def build(db: Path, contacts: int = 10_000, review: int = 300, days: int = 30,
          seed: int = 17) -> dict[str, int]:
    """Builds the mirror at `db` (a new file); returns what it holds."""
    rnd = random.Random(seed)
    t0 = time.monotonic()
    with Mirror.open(db) as m:
        # Local contacts first: each resembles a record the source sends later.
        step = max(contacts // max(review, 1), 1)
        resembled = {k * step + step // 2 for k in range(review)}
        for k, i in enumerate(sorted(resembled)):
            r = record(i, rnd)
            g = r["given_name"]
            g = g[0] + g[2] + g[1] + g[3:] if k % 2 else g[:-1]  # a typo: not the same name
            street = r["street"].replace(" St", " Street")
            if k % 3 == 0:  # some pairs agree less: another street, no mobile, old postcode
                street = f"{7 + k % 90} {STREETS[(k + 3) % len(STREETS)]}"
            m.add_contact(name=f"{g} {r['family_name']}", email=r["email"],
                          mobile="" if k % 5 == 0 else "0" + r["mobile"][3:], street=street,
                          postcode=str(int(r["postcode"]) + 1) if k % 4 == 0 else r["postcode"])
        m.sync("crm", (record(i, rnd) for i in range(contacts)), mode="full")
        runs = 1
        # A month of incremental runs: updates, a few creates and deletes.
        next_id = contacts
        for d in range(days * 2 - 1):
            batch: list[dict[str, Any]] = []
            for _ in range(rnd.randint(20, 400)):
                r = record(rnd.randrange(contacts), rnd)
                r["city"] = rnd.choice(["Sydney", "Melbourne", "Brisbane", "Perth", "Hobart"])
                batch.append(r)
            for _ in range(rnd.randint(0, 40)):
                batch.append(record(next_id, rnd))
                next_id += 1
            for _ in range(rnd.randint(0, 12)):
                gone = rnd.randrange(contacts)
                if gone not in resembled:
                    batch.append({"external_id": f"C{gone:07d}", "deleted": "true"})
            if d % 9 == 4:
                batch.append({"external_id": "", "given_name": "No", "family_name": "Id"})
            m.sync("crm", batch, mode="incremental")
            runs += 1
        open_items = len(m.review.items())
    # Spread the runs over the last `days` days, twice a day (the file itself).
    conn = sqlite3.connect(db)
    try:
        ids = [r[0] for r in conn.execute("SELECT id FROM runs ORDER BY id")]
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        for k, run_id in enumerate(ids):
            start = now - timedelta(hours=12 * (len(ids) - 1 - k)) - timedelta(hours=1)
            dur = conn.execute("SELECT coalesce(duration_ms, 0) FROM runs WHERE id = ?",
                               (run_id,)).fetchone()[0]
            end = start + timedelta(milliseconds=dur)
            conn.execute("UPDATE runs SET started_at = ?, finished_at = ? WHERE id = ?",
                         (_iso(start), _iso(end), run_id))
        conn.commit()
    finally:
        conn.close()
    return {"contacts": contacts, "review_items": open_items, "runs": runs,
            "seconds": int(time.monotonic() - t0)}


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("db", type=Path)
    ap.add_argument("--contacts", type=int, default=10_000)
    ap.add_argument("--review", type=int, default=300)
    a = ap.parse_args()
    print(build(a.db, a.contacts, a.review))
