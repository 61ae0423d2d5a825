"""Blocking that does not explode (issue 16): oversized blocks are scanned by
sorted neighbourhood instead of dropped, pairs several rules find are compared
once, and the comparisons and an estimate of blocking recall are reported (by
the API and by `contactsync dedupe --json`)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from agent_helpers import env
from contactsync_agent.matching import BlockingRule, MatchConfig, dedupe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches"))
import matchgen


def _namesakes(n: int) -> list[dict[str, str]]:
    recs = [
        {"id": f"p{k}", "given_name": "John", "family_name": "Smith",
         "date_of_birth": f"{1930 + k % 70}-{1 + k % 12:02d}-{1 + k % 28:02d}",
         "mobile": f"04{k:08d}"}
        for k in range(n)
    ]
    # a duplicate of p7 hidden in the common-name block
    recs.append({**recs[7], "id": "dup", "given_name": "JOHN"})
    return recs


def test_oversized_block_is_scanned_not_dropped() -> None:
    cfg = MatchConfig.contacts(
        blocking=(BlockingRule(("given_name", "family_name")),), max_block_size=10, window=3)
    res = dedupe(_namesakes(300), cfg)
    s = res.stats
    assert s.capped_blocks == 0 and s.capped_pairs == 0
    [rule] = s.rules
    assert rule.scanned_blocks == 1
    assert rule.scanned_block_pairs == 301 * 300 // 2
    # linear, not quadratic: each record meets at most `window` successors
    assert 0 < s.pairs_compared <= 301 * 3
    assert ("dup", "p7") in {tuple(sorted(p)) for p in res.id_pairs()}


def test_pairs_found_by_several_rules_are_compared_once() -> None:
    recs = _namesakes(30)
    cfg = MatchConfig.contacts(blocking=(
        BlockingRule(("given_name", "family_name")),
        BlockingRule(("mobile",)),
        BlockingRule(("date_of_birth",)),
    ))
    s = dedupe(recs, cfg).stats
    assert s.pairs_compared == 31 * 30 // 2  # the name block holds every pair
    assert [r.pairs for r in s.rules] == [31 * 30 // 2, 0, 0]
    assert s.rules[1].pairs_raw == 1 and s.rules[2].pairs_raw >= 1


def test_estimated_blocking_recall_is_close_to_the_true_one() -> None:
    recs = list(matchgen.generate(5000, seed=5, population="realistic"))
    s = dedupe(recs, truth_column="cluster").stats
    assert s.blocking_recall is not None and s.estimated_blocking_recall is not None
    assert abs(s.estimated_blocking_recall - s.blocking_recall) <= 0.01, (
        s.estimated_blocking_recall, s.blocking_recall)


def test_dedupe_json_reports_comparisons_and_recall_estimate(tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=matchgen.COLUMNS)
        w.writeheader()
        w.writerows(matchgen.generate(2000, seed=5, population="realistic"))
    exe = Path(sys.executable).with_name("contactsync")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "contactsync_agent.cli"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env(),
                              timeout=120, check=False)

    r = run("dedupe", str(path), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["comparisons"] > 0
    assert 0.9 <= doc["estimated_blocking_recall"] <= 1.0
    r = run("dedupe", str(path))
    assert r.returncode == 0, r.stderr
    assert "comparisons; estimated blocking recall 0." in r.stdout
