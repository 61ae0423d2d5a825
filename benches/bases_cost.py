"""The cost of two-way sync's bases on a pull (issue 15): in-only vs every field both ways.

    python benches/bases_cost.py --n 100000 [--repeat 3] [--edits 1000] [--json]

The same seeded N-row export (benches/data/base-N.csv, as headline.py makes it)
into two mirrors in the same run: one whose source is in-only (today's
default), one with `[sources.bench.directions] default = "both"`. For each,
a full import into an empty mirror and a re-import of the unchanged file;
repetitions alternate which goes first; medians and the ratio both / in.

Then, on the two-way mirror: --edits local edits (through the API, each
recording an outbox entry) pushed through a writer that confirms them applied
(in this process: the mirror's side only), which clears those links'
source_hash; the next pull brings the pushed values back (the echo export). It
says how many contacts that pull compared again, how long it took, and how long
the following unchanged re-import takes (back to the plain figure?).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contactsync_agent.config import SourceConfig, parse_config
from contactsync_agent.mirror import Mirror
from contactsync_agent.sources.writer import OutboundChange, PushResult

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


class ConfirmsAll:
    """A target that applies every change (the mirror's side of a push only)."""

    def push(self, changes: Sequence[OutboundChange]) -> list[PushResult]:
        return [PushResult(c.entry_id, "confirmed") for c in changes]

    def close(self) -> None:
        pass


def ensure_data(n: int) -> Path:
    from exportgen import generate

    data = HERE / "data"
    data.mkdir(exist_ok=True)
    base = data / f"base-{n}.csv"
    if not base.exists():
        print(f"generating {base} …", file=sys.stderr)
        generate(base, n, seed=42)
    return base


def source(both: bool) -> SourceConfig:
    spec: dict[str, Any] = {"kind": "folder", "outbox": "/nonexistent"}
    if both:
        spec["directions"] = {"default": "both"}
    return parse_config({"sources": {"bench": spec}}).sources["bench"]


def echo_file(base: Path, out: Path, pushed: dict[str, str]) -> None:
    """`base` with the pushed e-mails (by Client ID): the export after the target applied them."""
    with base.open(encoding="utf-8", newline="") as f, out.open("w", encoding="utf-8",
                                                                  newline="") as g:
        r, w = csv.reader(f), csv.writer(g)
        head = next(r)
        w.writerow(head)
        at = head.index("Email Address")
        for row in r:
            if row[0] in pushed:
                row[at] = pushed[row[0]]
            w.writerow(row)


def timed_imports(base: Path, both: bool, tmp: Path) -> tuple[float, float, Mirror]:
    m = Mirror.open(tmp / f"{'both' if both else 'in'}.db")
    m.ownership.set_sync_policy("bench", source(both).sync_policy())
    t = time.perf_counter()
    r = m.sync_file("bench", base)
    full = time.perf_counter() - t
    assert r.counts["created"] == r.counts["records"], r.counts
    t = time.perf_counter()
    r = m.sync_file("bench", base)
    unchanged = time.perf_counter() - t
    assert r.counts["unchanged"] == r.counts["records"], r.counts
    return full, unchanged, m


def unhashed(m: Mirror) -> int:
    """Links whose source_hash a confirmed push cleared: the next pull compares them."""
    return int(m.store.conn.execute(
        "SELECT count(*) FROM contacts WHERE source = 'bench' AND source_hash IS NULL "
        "AND deleted_at IS NULL").fetchone()[0])


def push_then_pull(m: Mirror, base: Path, tmp: Path, edits: int) -> dict[str, float]:
    cfg = source(True)
    picked = m.contacts(source="bench", limit=edits)
    pushed = {}
    for c in picked:
        new = f"pushed.{c.id}@local.example"
        m.ownership.edit_contact(c.id, email=new)
        pushed[str(c.external_id)] = new
    report = m.push(cfg, writer=ConfirmsAll())
    assert report.counts["confirmed"] == edits, report.counts
    cleared = unhashed(m)
    echo = tmp / "echo.csv"
    echo_file(base, echo, pushed)
    seq = m.changes()[-1].seq
    t = time.perf_counter()
    r = m.sync_file("bench", echo)
    echo_s = time.perf_counter() - t
    assert r.counts["updated"] == 0, r.counts  # the echo: nothing taken
    assert [c for c in m.changes(since=seq) if c.op == "update"] == []
    after = unhashed(m)
    t = time.perf_counter()
    r = m.sync_file("bench", echo)
    again_s = time.perf_counter() - t
    assert r.counts["unchanged"] == r.counts["records"], r.counts
    return {"cleared": float(cleared), "echo_pull_s": echo_s, "still_cleared": float(after),
            "unchanged_after_s": again_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--edits", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    base = ensure_data(a.n)
    times: dict[str, list[float]] = {k: [] for k in ("in_full", "in_unchanged", "both_full",
                                                     "both_unchanged")}
    echo: list[dict[str, float]] = []
    for rep in range(a.repeat):
        order = (False, True) if rep % 2 == 0 else (True, False)
        for both in order:
            with tempfile.TemporaryDirectory() as tmp:
                full, unchanged, m = timed_imports(base, both, Path(tmp))
                try:
                    key = "both" if both else "in"
                    times[f"{key}_full"].append(full)
                    times[f"{key}_unchanged"].append(unchanged)
                    if both:
                        echo.append(push_then_pull(m, base, Path(tmp), a.edits))
                finally:
                    m.close()
            if not a.json:
                print(f"rep {rep + 1} {'both' if both else 'in'}: full {full:.2f} s, "
                      f"unchanged {unchanged:.2f} s", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    emed = {k: statistics.median(e[k] for e in echo) for k in echo[0]}
    out = {
        "n": a.n, "repeat": a.repeat, "median_s": {k: round(v, 3) for k, v in med.items()},
        "ratio_full": round(med["both_full"] / med["in_full"], 3),
        "ratio_unchanged": round(med["both_unchanged"] / med["in_unchanged"], 3),
        "after_push": {"edits": a.edits, **{k: round(v, 3) for k, v in emed.items()}},
        "all": times, "all_after_push": echo,
    }
    if a.json:
        print(json.dumps(out))
    else:
        print(f"N = {a.n:,}, medians of {a.repeat}:")
        print(f"  full import       in-only {med['in_full']:.2f} s   both {med['both_full']:.2f} s"
              f"   ratio {out['ratio_full']}")
        print(f"  unchanged re-imp  in-only {med['in_unchanged']:.2f} s   both "
              f"{med['both_unchanged']:.2f} s   ratio {out['ratio_unchanged']}")
        print(f"  after a confirmed push of {a.edits} edits: {emed['cleared']:.0f} links had "
              f"their source_hash cleared; the echo pull took {emed['echo_pull_s']:.2f} s "
              f"({emed['still_cleared']:.0f} still cleared after it), the next unchanged "
              f"re-import {emed['unchanged_after_s']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
