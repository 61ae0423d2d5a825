"""Writes rust/src/matching/reference.json: the reference population's m and u per field type.

The engine falls back on these when an input is too small for EM (fewer than
`MIN_EM_PAIRS` compared pairs: a six-row file) and mixes the u values into the
sampled u as 1,000 pseudo-pairs. The reference population is the labelled
`matchgen.py --population realistic` set (100,000 records, seed 7, not the
seed the benches score), matched with the default contact configuration plus
the display name as a `name` field:

* m per level: the share of each agreement level among the compared pairs
  that are true matches (from the labels, not from EM), either side missing
  left out;
* u per level: the engine's u from random pairs of the same records;
* `duplicates_per_record`: true matching pairs per record.

Types the contact fields do not cover (`id`) are absent: the engine keeps its
starting m and add-one smoothing for them. Run after changing a comparator:

    python benches/reference_model.py
"""

from __future__ import annotations

import collections
import csv
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import matchgen

OUT = Path(__file__).resolve().parent.parent / "rust" / "src" / "matching" / "reference.json"
N, SEED = 100_000, 7


def main() -> None:
    from contactsync_agent.matching import Field, MatchConfig, dedupe, field_levels

    path = matchgen.cached_csv(N, SEED, "realistic")
    base = MatchConfig.contacts()
    cfg = replace(base, fields=(*base.fields, Field("display_name", "name")),
                  threshold=0.0, cluster_threshold=1.0)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    ids = [r["id"] for r in rows]
    truth = matchgen.true_pairs([r["cluster"] for r in rows], ids)
    res = dedupe(path, cfg)
    kinds = {f.name: f.type for f in cfg.fields}
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for p in res:
        key = (p.left_id, p.right_id) if p.left_id < p.right_id else (p.right_id, p.left_id)
        if key not in truth:
            continue
        for f, c in p.explanation.items():
            counts[f][c.level] += 1
    types: dict[str, dict[str, list[float]]] = {}
    seen: dict[str, float] = {}
    for fm in res.model["fields"]:
        name = fm["field"]
        kind = kinds[name]
        levels = field_levels(kind)[1:]
        c = counts[name]
        total = sum(c[lv] for lv in levels)
        if seen.get(kind, -1) >= total:
            continue  # the type's most often compared field speaks for it (city, not org)
        seen[kind] = total
        # half a pair per level: no level impossible
        m = [(c[lv] + 0.5) / (total + 0.5 * len(levels)) for lv in levels]
        u = [max(lvl["u"], 1e-7) for lvl in fm["levels"]]
        types[kind] = {"m": [round(x, 7) for x in m], "u": [round(x, 9) for x in u]}
    doc = {
        "about": "m and u per field type measured on the labelled reference population "
                 f"(benches/matchgen.py realistic, {N:,} records, seed {SEED}); "
                 "written by benches/reference_model.py",
        "duplicates_per_record": round(len(truth) / len(rows), 4),
        "types": types,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(types)} types, {len(truth):,} true pairs)")


if __name__ == "__main__":
    main()
