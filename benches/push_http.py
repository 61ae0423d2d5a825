"""Two-way sync: pushing N changed contacts through the HTTP writer (issue 15).

Starts the fake system of record (tests/fakesor.py, a threaded HTTP server on
127.0.0.1 in this process), seeds it with N contacts, and pushes one update of
two fields per contact through `HttpWriter` (one `PATCH` per contact, each with
its Idempotency-Key and If-Match, as the outbox hands them over in batches of
--batch). Prints the time, the rate and every outcome; the server's state is
checked afterwards (each contact written exactly once).

Two ways, as the API allows: one `PATCH` per contact (the default, any API),
or `--batch-endpoint`: the fake's `POST /$batch` (Microsoft Graph's JSON
batching shape, the writer's `batch_path`), --batch changes per request, each
change still with its own If-Match, idempotency key and outcome.

    .venv/bin/python benches/push_http.py --n 10000 [--batch-endpoint]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from contactsync_agent.config import SourceConfig
from contactsync_agent.sources.http_writer import HttpWriter
from contactsync_agent.sources.writer import OutboundChange
from fakesor import FakeSor, applied_counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=100, help="changes per push() and per batch")
    ap.add_argument(
        "--batch-endpoint", action="store_true", help="send batches to POST /$batch"
    )
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    with FakeSor.start(record=False) as sor:
        ids = sor.seed(args.n)
        cfg = SourceConfig(
            name="sor",
            kind="http",
            mapping={"first_name": "given_name", "address.city": "city"},
            options={
                "url": sor.contacts_url,
                "id_field": "id",
                "backoff": 0.05,
                **({"batch_path": "/$batch", "batch_size": args.batch}
                   if args.batch_endpoint else {}),
            },
        )
        changes = [
            OutboundChange(
                entry_id=i,
                key=f"bench-{i}",
                kind="update",
                external_id=ext,
                fields={
                    "given_name": (f"Given{i}", f"Pushed{i}"),
                    "city": ("Newcastle", "Maitland"),
                },
                version=sor.etag(ext),
            )
            for i, ext in enumerate(ids)
        ]
        writer = HttpWriter(cfg)
        outcomes: Counter[str] = Counter()
        started = time.perf_counter()
        for at in range(0, len(changes), args.batch):
            for result in writer.push(changes[at : at + args.batch]):
                outcomes[result.outcome] += 1
        took = time.perf_counter() - started
        writer.close()
        counts = applied_counts(sor)
        assert all(counts[ext] == 1 for ext in ids), "a contact was not written exactly once"
        assert sor.get(ids[-1])["first_name"] == f"Pushed{args.n - 1}"
    figures = {
        "contacts": args.n,
        "mode": "batch endpoint" if args.batch_endpoint else "one PATCH per contact",
        "seconds": round(took, 2),
        "per_second": round(args.n / took),
        "requests": writer.requests,
        "retries": writer.retries,
        "outcomes": dict(outcomes),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(
            f"{figures['mode']}: pushed {args.n} changed contacts in {took:.2f}s "
            f"({args.n / took:.0f}/s), "
            f"{writer.requests} requests, {writer.retries} retries, outcomes {dict(outcomes)}"
        )


if __name__ == "__main__":
    main()
