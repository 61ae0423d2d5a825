"""Server-side timings of the web console at N contacts / R review items
(default 1,000,000 / 10,000): the dashboard, the review page, contact search.

    python benches/web_timings.py [--contacts 1000000] [--review 10000] [--repeat 15]
                                  [--db PATH] [--json]

Builds the mirror once with the product's own sync (`tests/web_demo.py`: R
local contacts a later record resembles, a full import of N records, a month
of incremental runs), keeps it at `--db` (default benches/data/web-N.db) for
later runs, then asks each page `--repeat` times through the real app
in-process and reports the median of the server's own time for it (the
`Server-Timing` header the app sets: routing, the mirror's reads, the
template). Targets: each <= 100 ms median. The dashboard counts the contacts
only after a change or a run (`status.CountsCache`); that first dashboard's
time is reported on its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

TARGET_MS = 100.0
SEARCHES = ("olivia", "smith", "jack wil", "amelia.brown", "+6140001", "0400 123 456")


def server_ms(client, url: str) -> float:  # type: ignore[no-untyped-def]
    r = client.get(url)
    assert r.status_code == 200, (url, r.status_code)
    return float(r.headers["server-timing"].split("dur=")[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contacts", type=int, default=1_000_000)
    ap.add_argument("--review", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--db", type=Path, default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    db = a.db or HERE / "data" / f"web-{a.contacts}.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    built = None
    if not db.exists():
        from web_demo import build

        print(f"building {db} ({a.contacts:,} contacts, {a.review:,} review items) …",
              file=sys.stderr)
        built = build(db, a.contacts, a.review)
        print(f"built in {built['seconds']} s", file=sys.stderr)

    from contactsync_agent.mirror import Mirror
    from contactsync_agent.web import ConsoleState, create_app
    from starlette.testclient import TestClient

    with Mirror.open(db, readonly=True) as m:
        contacts = m.count_contacts()
        review = len(m.console.review_ids())
        middle = m.console.review_ids()[review // 2] if review else 0
    pages = {
        "dashboard": ["/"],
        "review page": ["/review", f"/review?item={middle}", "/review?min_score=90",
                        "/review?page=100"],
        "contact search": [f"/contacts?q={q}" for q in SEARCHES],
    }
    out: dict[str, dict[str, float]] = {}
    # The first dashboard counts the contacts (kept until the next change or run).
    with TestClient(create_app(ConsoleState(db)), base_url="http://127.0.0.1") as client:
        server_ms(client, "/contacts")  # opens the mirror
        cold = server_ms(client, "/")
    with TestClient(create_app(ConsoleState(db)), base_url="http://127.0.0.1") as client:
        for name, urls in pages.items():
            for u in urls:  # warm: the first request opens the mirror
                server_ms(client, u)
            times = []
            t0 = time.perf_counter()
            for _ in range(a.repeat):
                times.extend(server_ms(client, u) for u in urls)
            out[name] = {"median_ms": round(statistics.median(times), 1),
                         "max_ms": round(max(times), 1), "requests": len(times),
                         "wall_s": round(time.perf_counter() - t0, 2)}
    out["dashboard"]["first_ms"] = round(cold, 1)
    result = {"contacts": contacts, "open_review_items": review, "target_ms": TARGET_MS,
              "pages": out, "built": built}
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{contacts:,} contacts, {review:,} open review items (server time, median of "
          f"{a.repeat} rounds)")
    for name, r in out.items():
        ok = "ok" if r["median_ms"] <= TARGET_MS else "OVER TARGET"
        print(f"  {name:<15} median {r['median_ms']:>7.1f} ms  max {r['max_ms']:>7.1f} ms  "
              f"({r['requests']} requests)  {ok}")
    print(f"  first dashboard after a change (contacts counted): "
          f"{out['dashboard']['first_ms']:.0f} ms")


if __name__ == "__main__":
    main()
