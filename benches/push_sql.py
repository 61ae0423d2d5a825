"""Pushing changed contacts to PostgreSQL through the SQL writer (issue 15).

Starts a throw-away PostgreSQL server (tests/conftest_pg.py's way: initdb on a
free 127.0.0.1 port, removed at the end), fills a contacts table with N rows,
then pushes N updates (two changed fields each, conditional on their bases) in
batches of --batch through `SqlWriter`, and reports the time and rate (median of
--runs; each run changes the values again, so every update applies).

    .venv/bin/python benches/push_sql.py --n 10000 --batch 500 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from conftest_pg import postgres
from contactsync_agent.config import SourceConfig
from contactsync_agent.sources.sql_writer import SqlWriter
from contactsync_agent.sources.writer import OutboundChange


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    server_gen = postgres.__wrapped__()  # type: ignore[attr-defined]
    server = next(server_gen)
    try:
        url = server.url()
        table = f"bench_{uuid.uuid4().hex[:8]}"
        eng = sa.create_engine(url, poolclass=NullPool)
        with eng.begin() as c:
            c.execute(sa.text(
                f"CREATE TABLE {table} (client_id bigserial PRIMARY KEY, first_name text, "
                "last_name text, email text UNIQUE, mobile text, suburb text, "
                "modified timestamptz NOT NULL DEFAULT now())"))
            c.execute(sa.text(
                f"INSERT INTO {table} (first_name, last_name, email, mobile, suburb) "
                "SELECT 'Given' || i, 'Family' || i, 'client' || i || '@example.com', "
                "'04' || lpad(i::text, 8, '0'), 'Parramatta' FROM generate_series(1, :n) i"),
                {"n": args.n})
        eng.dispose()
        cfg = SourceConfig(name="bench", kind="sql", mode="full",
                           mapping={"suburb": "city", "first_name": "given_name",
                                    "last_name": "family_name"},
                           options={"url": url, "table": table, "id_column": "client_id",
                                    "cursor_column": "modified"})
        times: list[float] = []
        for run in range(args.runs):
            old_city = "Parramatta" if run == 0 else f"Suburb{run - 1}"
            def email(i: int, run: int) -> str:
                return f"client{i}@example.com" if run < 0 else f"c{run}.{i}@example.com"

            changes = [
                OutboundChange(i, f"r{run}-{i}", "update", str(i), {
                    "email": (email(i, run - 1), email(i, run)),
                    "city": (old_city, f"Suburb{run}"),
                })
                for i in range(1, args.n + 1)
            ]
            writer = SqlWriter(cfg)
            t0 = time.perf_counter()
            outcomes: dict[str, int] = {}
            for start in range(0, len(changes), args.batch):
                for r in writer.push(changes[start:start + args.batch]):
                    outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
            elapsed = time.perf_counter() - t0
            writer.close()
            if outcomes != {"confirmed": args.n}:
                print(f"unexpected outcomes: {outcomes}", file=sys.stderr)
                return 1
            times.append(elapsed)
            print(f"run {run + 1}: {args.n} updates in {elapsed:.2f} s "
                  f"({args.n / elapsed:,.0f}/s)")
        med = statistics.median(times)
        print(f"median: {args.n} changed contacts pushed to PostgreSQL in {med:.2f} s "
              f"({args.n / med:,.0f}/s, batches of {args.batch})")
    finally:
        next(server_gen, None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
