"""Headline numbers of the matching engine: dedupe of N generated contacts.

Prints precision, recall, F1, blocking recall, pairs compared, time and peak
RSS for each size, each run in its own subprocess (so peak RSS is that run's).
When Splink is installed, runs the same file through Splink (DuckDB backend,
its documented settings style) and prints its time and F1 beside ours.
Generation is not timed; the timed part is the `dedupe` call from CSV path
to result.

    python benches/match_headline.py                # N = 100,000 and 1,000,000
    python benches/match_headline.py --n 100000 --no-splink
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import matchgen


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _truth(path: Path) -> set[tuple[str, str]]:
    ids, labels = [], []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            ids.append(row["id"])
            labels.append(row["cluster"])
    return matchgen.true_pairs(labels, ids)


def _scores(pred: set[tuple[str, str]], truth: set[tuple[str, str]]) -> dict[str, float]:
    tp = len(pred & truth)
    p = tp / len(pred) if pred else 0.0
    r = tp / len(truth) if truth else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def child_ours(path: Path, threshold: float) -> dict[str, object]:
    from contactsync_agent.matching import MatchConfig, dedupe

    cfg = MatchConfig.contacts(threshold=threshold)
    t = time.perf_counter()
    res = dedupe(path, cfg, truth_column="cluster")
    elapsed = time.perf_counter() - t
    rss = _peak_rss_mb()
    s = res.stats
    # the blocking-recall check is evaluation, not matching: not counted
    evaluation = s.seconds.get("blocking recall", 0.0)
    pred = {(a, b) if a < b else (b, a) for a, b in res.id_pairs()}
    out: dict[str, object] = {
        "engine": "contactsync",
        "seconds": elapsed - evaluation,
        "peak_rss_mb": rss,
        "pairs_compared": s.pairs_compared,
        "blocking_recall": s.blocking_recall,
        "capped_blocks": s.capped_blocks,
        "stages": s.seconds,
    }
    out.update(_scores(pred, _truth(path)))
    return out


def child_splink(path: Path, threshold: float) -> dict[str, object]:
    import duckdb  # noqa: F401  (the backend)
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    t = time.perf_counter()
    db_api = DuckDBAPI()
    # Splink's documented style: clean in SQL first, then compare.
    db_api._execute_sql_against_backend(  # registers a cleaned table
        f"""
        CREATE TABLE contacts AS
        SELECT id AS unique_id, cluster,
               lower(trim(coalesce(nullif(given_name, ''),
                   split_part(display_name, ' ', 1)))) AS first_name,
               lower(trim(coalesce(nullif(family_name, ''),
                   split_part(display_name, ' ', -1)))) AS surname,
               nullif(lower(trim(email)), '') AS email,
               nullif(right(regexp_replace(mobile, '[^0-9]', '', 'g'), 9), '') AS mobile,
               nullif(right(regexp_replace(phone, '[^0-9]', '', 'g'), 9), '') AS phone,
               nullif(lower(street), '') AS street,
               nullif(lower(city), '') AS city,
               nullif(postcode, '') AS postcode,
               CASE WHEN date_of_birth LIKE '%/%'
                    THEN strftime(try_strptime(date_of_birth, '%d/%m/%Y'), '%Y-%m-%d')
                    ELSE nullif(date_of_birth, '') END AS dob
        FROM read_csv('{path}', all_varchar=true)
        """
    )
    df = db_api.table_to_splink_dataframe("contacts", "contacts")
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=[
            cl.ForenameSurnameComparison("first_name", "surname"),
            cl.EmailComparison("email"),
            cl.ExactMatch("mobile"),
            cl.ExactMatch("phone"),
            cl.LevenshteinAtThresholds("street", [2]),
            cl.ExactMatch("city").configure(term_frequency_adjustments=True),
            cl.PostcodeComparison("postcode"),
            cl.DateOfBirthComparison("dob", input_is_string=True),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("email"),
            block_on("mobile"),
            block_on("phone"),
            block_on("first_name", "substr(surname, 1, 3)"),
            block_on("postcode", "substr(surname, 1, 3)"),
            block_on("dob"),
        ],
        retain_intermediate_calculation_columns=False,
    )
    linker = Linker(df, settings, log_level=40)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("email"), block_on("mobile")], recall=0.8
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("first_name", "surname")
    )
    pred = linker.inference.predict(threshold_match_probability=threshold)
    rows = pred.as_duckdbpyrelation().select("unique_id_l, unique_id_r").fetchall()
    elapsed = time.perf_counter() - t
    rss = _peak_rss_mb()
    pairs = {(a, b) if a < b else (b, a) for a, b in rows}
    out: dict[str, object] = {"engine": "splink", "seconds": elapsed, "peak_rss_mb": rss}
    out.update(_scores(pairs, _truth(path)))
    return out


def _run_child(engine: str, path: Path, threshold: float) -> dict[str, object] | None:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        engine,
        "--csv",
        str(path),
        "--threshold",
        str(threshold),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  {engine} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _splink_available() -> bool:
    try:
        import splink  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, action="append", help="records (repeatable)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--no-splink", action="store_true")
    ap.add_argument("--json", action="store_true", help="one JSON line per run")
    ap.add_argument("--child", choices=["ours", "splink"], help=argparse.SUPPRESS)
    ap.add_argument("--csv", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        fn = child_ours if a.child == "ours" else child_splink
        print(json.dumps(fn(Path(a.csv), a.threshold)))
        return
    sizes = a.n or [100_000, 1_000_000]
    use_splink = not a.no_splink and _splink_available()
    if not a.no_splink and not use_splink:
        print("(splink is not installed: `pip install splink` to compare)")
    for n in sizes:
        path = matchgen.cached_csv(n, a.seed)
        runs = [r for r in [_run_child("ours", path, a.threshold)] if r]
        if use_splink:
            s = _run_child("splink", path, a.threshold)
            if s:
                runs.append(s)
        for r in runs:
            if a.json:
                print(json.dumps({"n": n, **r}))
                continue
            line = (
                f"N={n:>9,} {r['engine']:<11} P={r['precision']:.4f} R={r['recall']:.4f} "
                f"F1={r['f1']:.4f}  time={r['seconds']:.1f}s  peak RSS={r['peak_rss_mb']:.0f} MB"
            )
            if "pairs_compared" in r:
                line += (
                    f"  pairs compared={r['pairs_compared']:,}"
                    f"  blocking recall={r['blocking_recall']:.4f}"
                    f"  capped blocks={r['capped_blocks']}"
                )
            print(line, flush=True)
        if not a.json and len(runs) == 2:
            ours, theirs = runs
            print(
                f"N={n:>9,} speed-up {theirs['seconds'] / ours['seconds']:.1f}x, "
                f"F1 {ours['f1']:.4f} vs {theirs['f1']:.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
