"""Which pairs the matcher gets wrong on the realistic population, and why.

Runs `matching.dedupe` (default contact config) on `matchgen.py --population
realistic` at --n records and sorts the false pairs at the default threshold
into kinds the generator makes on purpose:

  twins        same family name, birth date and address, another person
  household    same family name and address (or landline), another person
  namesakes    same given and family name, not one household
  other

It prints per kind the count and the most frequent agreement patterns (each
field's level), and the missed true pairs (false negatives) by kind: where
they were lost (not compared by blocking, scored below 0.001, or scored
0.001 to the threshold) and which of the generator's corruptions the pair
carries (given-name variant, family-name typo, e-mail / mobile / birth date
missing or changed, moved house, only the display name exported). With
--model it prints the fitted m, u and weight per field and level. An
evaluation tool: it reads the labels; the matcher never does.

    python benches/match_errors.py --n 200000
"""

from __future__ import annotations

import argparse
import collections
import csv
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import matchgen
from contactsync_agent.matching import MatchConfig, ReadOptions, dedupe

SHORT = {
    "missing": "-", "missing or uninformative": "-", "different": "x", "exact": "=",
    "nickname": "nick", "initial": "ini",
}


def _short(level: str) -> str:
    return SHORT.get(level, level.split(" ")[0][:6])


def _corruptions(x: dict[str, str], y: dict[str, str]) -> list[str]:
    """Which of the generator's corruptions tell records x and y apart."""
    def low(r: dict[str, str], k: str) -> str:
        return r[k].strip().lower()

    def digits(v: str) -> str:
        return "".join(c for c in v if c.isdigit())[-8:]

    tags = []
    if not low(x, "given_name") or not low(y, "given_name"):
        tags.append("display name only")
    else:
        gx, gy = low(x, "given_name").split(" ")[0], low(y, "given_name").split(" ")[0]
        fx, fy = low(x, "family_name"), low(y, "family_name")
        if gx == fy or gy == fx:
            tags.append("names swapped")
        elif gx != gy:
            tags.append("given initial" if min(len(gx), len(gy)) == 1 else "given variant")
        if fx != fy and not (gx == fy or gy == fx):
            tags.append("family typo")
    for k, what in (("email", "e-mail"), ("mobile", "mobile"), ("date_of_birth", "birth date")):
        vx, vy = low(x, k), low(y, k)
        if not vx or not vy:
            tags.append(f"{what} missing")
        elif (digits(vx) != digits(vy)) if k == "mobile" else (vx != vy and k == "email"):
            tags.append(f"{what} changed")
    if not low(x, "postcode") or not low(y, "postcode"):
        tags.append("address missing")
    elif low(x, "postcode") != low(y, "postcode") or \
            low(x, "street").split(" ")[:2] != low(y, "street").split(" ")[:2]:
        tags.append("moved")
    return tags


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--model", action="store_true", help="print the fitted m, u and weights")
    a = ap.parse_args()
    path = matchgen.cached_csv(a.n, a.seed, "realistic")
    rows: dict[str, dict[str, str]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            rows[row["id"]] = row
    cfg = MatchConfig.contacts()
    low_cfg = replace(cfg, threshold=0.001, cluster_threshold=cfg.threshold)
    t = time.perf_counter()
    res = dedupe(path, low_cfg, read=ReadOptions(id_column="id"), truth_column="cluster")
    took = time.perf_counter() - t
    s = res.stats
    print(f"n={a.n:,} time={took:.1f}s comparisons={s.pairs_compared:,} "
          f"prior={s.prior:.3g} blocked_prior={s.blocked_prior:.3g} "
          f"stages={ {k: round(v, 2) for k, v in s.seconds.items()} }")
    if a.model:
        print(f"model source={res.model['source']} prior={res.model['prior']:.3g}")
        for fld in res.model["fields"]:
            print(f"  {fld['field']}: " + ", ".join(
                f"{_short(lv['level'])} {lv['weight']:+.2f}" for lv in fld["levels"]))
        print(f"household context (keys {res.model['household_keys']}, "
              f"{res.model['household_pairs']}): weights there")
        for fld in res.model["fields"]:
            if any(lv["household_weight"] != lv["weight"] for lv in fld["levels"]):
                print(f"  {fld['field']}: " + ", ".join(
                    f"{_short(lv['level'])} {lv['household_weight']:+.2f}"
                    for lv in fld["levels"]))
    truth = matchgen.true_pairs([r["cluster"] for r in rows.values()], list(rows))

    def low(r: dict[str, str], k: str) -> str:
        return r[k].strip().lower()

    def kind(x: dict[str, str], y: dict[str, str]) -> str:
        fam = low(x, "family_name") and low(x, "family_name") == low(y, "family_name")
        giv = low(x, "given_name") and low(x, "given_name").split(" ")[0] == \
            low(y, "given_name").split(" ")[0]
        addr = low(x, "postcode") and low(x, "postcode") == low(y, "postcode") and \
            low(x, "street").split(" ")[0] == low(y, "street").split(" ")[0]
        dob = low(x, "date_of_birth") and low(x, "date_of_birth") == low(y, "date_of_birth")
        if fam and addr and dob and not giv:
            return "twins"
        if fam and addr and not giv:
            return "household"
        if fam and giv and not addr:
            return "namesakes"
        if fam and giv and addr:
            return "namesakes, same street"
        return "other"

    fp: collections.Counter[str] = collections.Counter()
    fp_bins: collections.Counter[tuple[str, str]] = collections.Counter()
    patterns: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    predicted = 0
    found = set()
    missed: collections.Counter[str] = collections.Counter()
    missed_bins: collections.Counter[str] = collections.Counter()
    missed_keys: list[tuple[str, str]] = []
    for p in res:
        k = (p.left_id, p.right_id) if p.left_id < p.right_id else (p.right_id, p.left_id)
        if p.probability < cfg.threshold:
            if k in truth:
                found.add(k)
                missed_keys.append(k)
                missed[" ".join(f"{f[:5]}:{_short(c.level)}" for f, c in p.explanation.items()
                                if c.level not in ("missing", "missing or uninformative"))] += 1
                missed_bins["0.1-0.5" if p.probability >= 0.1 else "0.01-0.1"
                            if p.probability >= 0.01 else "<0.01"] += 1
            continue
        predicted += 1
        if k in truth:
            found.add(k)
            continue
        what = kind(rows[p.left_id], rows[p.right_id])
        fp[what] += 1
        b = "≥0.999" if p.probability >= 0.999 else "0.99-0.999" if p.probability >= 0.99 \
            else "0.9-0.99" if p.probability >= 0.9 else "0.5-0.9"
        fp_bins[(what, b)] += 1
        pat = " ".join(f"{f[:5]}:{_short(c.level)}" for f, c in p.explanation.items()
                       if c.level not in ("missing", "missing or uninformative"))
        patterns[what][pat] += 1
    tp = len(found) - sum(missed.values())
    print(f"predicted={predicted:,} true={len(truth):,} tp={tp:,} "
          f"precision={tp / max(predicted, 1):.4f} recall={tp / len(truth):.4f}")
    print("false pairs by kind:")
    for what, c in fp.most_common():
        bins = ", ".join(f"{b}: {fp_bins[(what, b)]}" for b in
                         ("0.5-0.9", "0.9-0.99", "0.99-0.999", "≥0.999") if fp_bins[(what, b)])
        print(f"  {what:<24} {c:>7,}  ({bins})")
        for pat, n in patterns[what].most_common(a.top):
            print(f"      {n:>6,}  {pat}")
    print(f"missed true pairs: {len(truth) - tp:,}; scored below the threshold: "
          f"{sum(missed.values()):,} ({dict(missed_bins)}), the rest below 0.001 or not "
          "compared")
    for pat, n in missed.most_common(a.top * 2):
        print(f"      {n:>6,}  {pat}")
    lost = [k for k in truth if k not in found]
    blocked = s.true_pairs_blocked or 0
    not_compared = len(truth) - blocked
    print(f"false negatives: {len(truth) - tp:,} = not compared by blocking "
          f"{not_compared:,} + scored below 0.001 {len(lost) - not_compared:,} "
          f"+ scored 0.001 to {cfg.threshold} {sum(missed.values()):,}")
    fn_tags: collections.Counter[str] = collections.Counter()
    fn_combos: collections.Counter[str] = collections.Counter()
    for k in lost + missed_keys:
        tags = _corruptions(rows[k[0]], rows[k[1]])
        fn_tags.update(tags)
        fn_combos[" + ".join(tags) or "(none)"] += 1
    print("false negatives by corruption (a pair counts under each it carries):")
    for t, n in fn_tags.most_common():
        print(f"  {t:<24} {n:>7,}")
    print("false negatives by combination:")
    for t, n in fn_combos.most_common(a.top * 2):
        print(f"      {n:>6,}  {t}")


if __name__ == "__main__":
    main()


