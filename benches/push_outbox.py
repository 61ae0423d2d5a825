"""Two-way sync through the outbox: N local edits pushed to a real target (issue 15).

Unlike push_http.py / push_sql.py (which call a writer directly), this goes the
whole way an admin's edits go: a mirror pulled from the target through its
connector, N local edits made through the API (`Mirror.ownership.edit_contact`,
each one transaction recording its outbox entry), then `Mirror.push(cfg)`
(outbox -> writer -> confirmations, batches of 500 entries), then the next pull
(the N values coming back: the agent's own writes, nothing to take). Targets:

    http        tests/fakesor.py as its own process, one PATCH per change
    http-batch  the same with batch_path = "/$batch" (100 changes per request)
    sql         a throw-away PostgreSQL (tests/conftest_pg.py's way), conditional
                UPDATEs in one transaction per batch

Each run is a fresh mirror and a fresh target; prints the median of --runs of
each phase and the push's cost per change.

    .venv/bin/python benches/push_outbox.py --target http --n 10000 --runs 3 [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from contactsync_agent.config import SourceConfig, parse_config
from contactsync_agent.mirror import Mirror
from contactsync_agent.source_runs import sync_source
from fakesor import SorProcess

TARGETS = ("http", "http-batch", "sql")


def source(name: str, kind: str, options: dict[str, Any], mapping: dict[str, str]
           ) -> SourceConfig:
    return parse_config({"sources": {name: {
        "kind": kind, **options, "mapping": mapping,
        "directions": {"email": "both"}, "push_new": "none"}}}).sources[name]


@contextmanager
def http_target(n: int, batch: bool) -> Iterator[tuple[SourceConfig, Callable[[], int]]]:
    with SorProcess(record=False) as sor:
        sor.seed(n)
        cfg = source("sor", "http", {
            "url": sor.contacts_url, "items_field": "data", "next_field": "links.next",
            "cursor_field": "updated_at", "mode": "incremental", "id_field": "id",
            "page_size": 1000, "backoff": 0.05, "max_retries": 3, "timeout": 60,
            **({"batch_path": "/$batch", "batch_size": 100} if batch else {})},
            {"first_name": "given_name", "last_name": "family_name", "address.city": "city",
             "address.postcode": "postcode", "updated_at": "ignore"})

        def applied() -> int:
            return len(sor.state()["applied"])

        yield cfg, applied


@contextmanager
def sql_target(n: int, url: str) -> Iterator[tuple[SourceConfig, Callable[[], int]]]:
    table = f"bench_{uuid.uuid4().hex[:8]}"
    eng = sa.create_engine(url, poolclass=NullPool)
    with eng.begin() as c:
        c.execute(sa.text(
            f"CREATE TABLE {table} (client_id bigserial PRIMARY KEY, first_name text, "
            "last_name text, email text, mobile text, suburb text)"))
        c.execute(sa.text(
            f"INSERT INTO {table} (first_name, last_name, email, mobile, suburb) "
            "SELECT 'Given' || i, 'Family' || i, 'client' || i || '@example.com', "
            "'04' || lpad(i::text, 8, '0'), 'Parramatta' FROM generate_series(1, :n) i"),
            {"n": n})
    cfg = source("crm", "sql", {"url": url, "table": table, "id_column": "client_id",
                                "mode": "full"},
                 {"suburb": "city", "first_name": "given_name", "last_name": "family_name"})

    def applied() -> int:
        with eng.connect() as c:
            return int(c.execute(sa.text(
                f"SELECT count(*) FROM {table} WHERE email LIKE 'pushed%'")).scalar() or 0)

    try:
        yield cfg, applied
    finally:
        with eng.begin() as c:
            c.execute(sa.text(f"DROP TABLE {table}"))
        eng.dispose()


def one_run(target: str, n: int, pg_url: str | None) -> dict[str, float]:
    ctx = sql_target(n, pg_url or "") if target == "sql" else http_target(
        n, target == "http-batch")
    with (ctx as (cfg, applied), tempfile.TemporaryDirectory() as tmp,
          Mirror.open(Path(tmp) / "mirror.db") as m):
        m.ownership.set_sync_policy(cfg.name, cfg.sync_policy())
        t = time.perf_counter()
        r = sync_source(m, cfg)
        pull_s = time.perf_counter() - t
        assert r.counts["created"] == n, r.counts
        ids = [c.id for c in m.contacts(limit=n + 10)]
        assert len(ids) == n
        t = time.perf_counter()
        for i, cid in enumerate(ids):
            m.ownership.edit_contact(cid, email=f"pushed{i}@local.example")
        fill_s = time.perf_counter() - t
        assert len(m.store.outbox.entries(statuses=("pending",), limit=n + 10)) == n
        t = time.perf_counter()
        report = m.push(cfg)
        push_s = time.perf_counter() - t
        assert report.counts["confirmed"] == n, report.counts
        assert applied() == n
        seq = m.changes()[-1].seq
        t = time.perf_counter()
        r = sync_source(m, cfg)
        echo_s = time.perf_counter() - t
        assert r.counts["updated"] == 0 and r.counts["created"] == 0, r.counts
        assert [c for c in m.changes(since=seq) if c.op == "update"] == []
        assert m.store.outbox.entries(statuses=("pending", "sent")) == []
        return {"pull_s": pull_s, "fill_s": fill_s, "push_s": push_s, "echo_pull_s": echo_s,
                "echo_records": float(r.counts["records"])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", choices=TARGETS, default="http")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    pg_gen: Any = None
    pg_url = None
    if args.target == "sql":
        from conftest_pg import postgres

        pg_gen = postgres.__wrapped__()  # type: ignore[attr-defined]
        pg_url = next(pg_gen).url()
    try:
        runs = []
        for i in range(args.runs):
            runs.append(one_run(args.target, args.n, pg_url))
            if not args.json:
                print(f"run {i + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[-1].items()),
                      file=sys.stderr)
    finally:
        if pg_gen is not None:
            next(pg_gen, None)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    figures = {"target": args.target, "n": args.n, "runs": args.runs,
               "median": {k: round(v, 3) for k, v in med.items()},
               "push_ms_per_change": round(med["push_s"] * 1000 / args.n, 3),
               "fill_ms_per_edit": round(med["fill_s"] * 1000 / args.n, 3),
               "all": runs}
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"{args.target}: {args.n} local edits; medians of {args.runs}: edits into the "
              f"outbox {med['fill_s']:.2f} s ({figures['fill_ms_per_edit']} ms each), push "
              f"{med['push_s']:.2f} s ({figures['push_ms_per_change']} ms per change, "
              f"{args.n / med['push_s']:,.0f}/s), the echo pull {med['echo_pull_s']:.2f} s "
              f"(first pull {med['pull_s']:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
