"""Headline figures of the mirror at N records (default 1,000,000).

    python benches/headline.py --n 1000000 [--repeat 3] [--json]

Generates a seeded export (and a copy with 1 % of records changed) under
benches/data/, then runs each repetition in a fresh child process so peak RSS
is that process's own: a full import into an empty mirror, re-imports of the
unchanged snapshot, and re-imports with 1 % changed (alternating the two
files, so every run changes 1 %). Prints medians (the machine is noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TARGETS = {"full_import_s": 15.0, "unchanged_reimport_s": 3.0, "changed_1pct_reimport_s": 4.0,
           "peak_rss_mb": 1024.0}


def ensure_data(n: int) -> tuple[Path, Path]:
    from exportgen import generate

    data = HERE / "data"
    data.mkdir(exist_ok=True)
    base, changed = data / f"base-{n}.csv", data / f"changed-{n}.csv"
    if not base.exists():
        print(f"generating {base} …", file=sys.stderr)
        generate(base, n, seed=42)
    if not changed.exists():
        print(f"generating {changed} …", file=sys.stderr)
        generate(changed, n, seed=42, changed_share=0.01)
    return base, changed


def worker(base: str, changed: str, repeat: int) -> None:
    from contactsync_agent.mirror import Mirror

    out: dict[str, list[float]] = {"full": [], "checkpoint": [], "unchanged": [], "changed": []}
    with tempfile.TemporaryDirectory() as tmp, Mirror.open(Path(tmp) / "mirror.db") as m:
        t = time.perf_counter()
        r = m.sync_file("bench", base)
        out["full"].append(time.perf_counter() - t)
        assert r.counts["created"] > 0
        t = time.perf_counter()
        m.checkpoint()
        out["checkpoint"] = [time.perf_counter() - t]
        for _ in range(repeat):
            t = time.perf_counter()
            r = m.sync_file("bench", base)
            out["unchanged"].append(time.perf_counter() - t)
            assert r.counts["unchanged"] == r.counts["records"]
        for i in range(repeat):
            t = time.perf_counter()
            r = m.sync_file("bench", changed if i % 2 == 0 else base)
            out["changed"].append(time.perf_counter() - t)
            assert r.counts["updated"] > 0
        db_bytes = sum(p.stat().st_size for p in Path(tmp).iterdir())
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"times": out, "peak_rss_mb": rss_mb, "db_bytes": db_bytes}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="processes, and re-imports in each")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker[0], a.worker[1], a.repeat)
        return
    base, changed = ensure_data(a.n)
    runs = []
    for i in range(a.repeat):
        print(f"run {i + 1}/{a.repeat} …", file=sys.stderr)
        p = subprocess.run([sys.executable, __file__, "--repeat", str(a.repeat), "--worker",
                            str(base), str(changed)], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    full = [r["times"]["full"][0] for r in runs]
    unchanged = [t for r in runs for t in r["times"]["unchanged"]]
    changed_t = [t for r in runs for t in r["times"]["changed"]]
    result = {
        "n": a.n,
        "cpus": os.cpu_count(),
        "full_import_s": statistics.median(full),
        "checkpoint_after_full_s": statistics.median(r["times"]["checkpoint"][0] for r in runs),
        "unchanged_reimport_s": statistics.median(unchanged),
        "changed_1pct_reimport_s": statistics.median(changed_t),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "db_mb": runs[-1]["db_bytes"] / 1e6,
        "samples": {"full": full, "unchanged": unchanged, "changed": changed_t},
    }
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(f"contactsync-agent headline figures, N = {a.n:,} records, {os.cpu_count()} cores, "
          f"median of {len(full)} / {len(unchanged)} / {len(changed_t)} runs")
    for key, label in [("full_import_s", "full import into an empty mirror"),
                       ("unchanged_reimport_s", "re-import, unchanged snapshot"),
                       ("changed_1pct_reimport_s", "re-import, 1 % of records changed"),
                       ("peak_rss_mb", "peak RSS (MB)")]:
        v, target = result[key], TARGETS[key]
        verdict = "meets" if v <= target else f"misses by {v / target:.1f}x"
        unit = "" if key == "peak_rss_mb" else " s"
        print(f"  {label:38s} {v:8.2f}{unit}   target ≤ {target:g}{unit}: {verdict}")
    print(f"  WAL checkpoint after the full import    {result['checkpoint_after_full_s']:8.2f} s"
          "   (the agent runs it after the commit, while idle)")
    print(f"  database size after the runs            {result['db_mb']:8.1f} MB")


if __name__ == "__main__":
    main()
