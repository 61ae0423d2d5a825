"""Matching end to end: blocking recall, scoring and explanations, clusters,
linking generic records, CSV input and errors raised as Python exceptions."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from contactsync_agent.matching import (
    BlockingRule,
    Field,
    MatchConfig,
    MatchResult,
    ReadOptions,
    dedupe,
    link,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches"))
import itertools

import matchgen


@pytest.fixture(scope="module")
def generated() -> list[dict[str, str]]:
    return list(matchgen.generate(5000, seed=7))


@pytest.fixture(scope="module")
def deduped(generated: list[dict[str, str]]) -> MatchResult:
    return dedupe(generated, truth_column="cluster")


def _truth(records: list[dict[str, str]]) -> set[tuple[str, str]]:
    return matchgen.true_pairs([r["cluster"] for r in records], [r["id"] for r in records])


def test_blocking_recall_on_generated_contacts(deduped: MatchResult) -> None:
    s = deduped.stats
    assert s.true_pairs and s.true_pairs > 1000
    assert s.blocking_recall is not None and s.blocking_recall >= 0.99
    # every rule reports what it did; nothing was capped at this size
    assert len(s.rules) == len(MatchConfig.contacts().blocking)
    assert sum(r.pairs for r in s.rules) == s.pairs_compared
    assert s.capped_blocks == 0


def test_precision_and_recall(generated: list[dict[str, str]], deduped: MatchResult) -> None:
    truth = _truth(generated)
    pred = {(a, b) if a < b else (b, a) for a, b in deduped.id_pairs()}
    tp = len(pred & truth)
    precision, recall = tp / len(pred), tp / len(truth)
    assert precision > 0.97, precision
    assert recall > 0.97, recall


def test_pairs_carry_probability_weight_and_explanation(deduped: MatchResult) -> None:
    pairs = list(deduped)
    assert pairs, "no pairs found"
    assert all(a.probability >= b.probability for a, b in itertools.pairwise(pairs))
    p = pairs[0]
    assert 0.5 <= p.probability <= 1.0
    assert set(p.explanation) == {f.name for f in MatchConfig.contacts().fields}
    # the weight is the prior plus the fields' contributions
    total = sum(c.weight for c in p.explanation.values())
    assert p.weight == pytest.approx(deduped._out.prior_weight + total, abs=1e-6)
    assert any(c.level == "exact" and c.weight > 0 for c in p.explanation.values())


def test_explanation_for_known_duplicate() -> None:
    records = [
        {
            "id": "1",
            "given_name": "Jon",
            "family_name": "Smith",
            "mobile": "0400 000 001",
            "email": "jon.smith@example.com",
            "date_of_birth": "1980-01-02",
        },
        {
            "id": "2",
            "display_name": "SMITH, John",
            "mobile": "+61400000001",
            "email": "jon.smith@example.com",
            "date_of_birth": "02/01/1980",
        },
    ] + [
        {
            "id": f"x{k}",
            "given_name": g,
            "family_name": f,
            "mobile": f"04{k:08d}",
            "email": f"{g}.{f}{k}@example.org",
            "date_of_birth": f"19{50 + k % 40}-0{1 + k % 9}-1{k % 9}",
        }
        for k, (g, f) in enumerate(
            (g, f)
            for g in ("mary", "peter", "anna", "li", "omar")
            for f in ("jones", "wu", "khan", "ross")
        )
    ]
    res = dedupe(records)
    pairs = {(p.left_id, p.right_id): p for p in res}
    assert ("1", "2") in pairs
    e = pairs[("1", "2")].explanation
    assert e["given_name"].level == "nickname"
    assert e["mobile"].level == "exact (E.164)"
    assert e["date_of_birth"].level == "exact"
    assert e["email"].weight > 0
    [cluster] = res.clusters()
    assert cluster.ids == ("1", "2")


def test_swapped_names_are_found() -> None:
    base = [
        {
            "id": f"p{k}",
            "given_name": g,
            "family_name": f,
            "date_of_birth": f"1970-01-{k + 1:02d}",
            "city": "Carlton",
        }
        for k, (g, f) in enumerate(
            [("anna", "lee"), ("omar", "khan"), ("mia", "ross"), ("li", "wu"), ("peter", "jones")]
        )
    ]
    base.append(
        {
            "id": "swap",
            "given_name": "KHAN",
            "family_name": "Omar",
            "date_of_birth": "1970-01-02",
            "city": "Carlton",
        }
    )
    res = dedupe(base)
    assert ("p1", "swap") in {(p.left_id, p.right_id) for p in res}


def test_clusters_report_strongest_and_weakest_links(deduped: MatchResult) -> None:
    clusters = deduped.clusters()
    assert clusters
    big = clusters[0]
    assert len(big.ids) >= 2
    assert big.strongest.weight >= big.weakest.weight
    for link_ in (big.strongest, big.weakest):
        assert link_.left_id in big.ids and link_.right_id in big.ids
    assert deduped.stats.clusters == len(clusters)


PEOPLE_CONFIG = MatchConfig(
    fields=(
        Field("first", "given_name", tf=True),
        Field("surname", "family_name", tf=True),
        Field("address", "address"),
        Field("suburb", "text", tf=True),
        Field("postcode", "postcode"),
        Field("state", "text"),
        Field("dob", "date"),
    ),
    blocking=(
        BlockingRule(("soundex(surname)", "initial(first)")),
        BlockingRule(("postcode", "initial(surname)")),
        BlockingRule(("dob",)),
    ),
    id_field="rec_id",
)


def _people(n: int, tag: str, moved: bool) -> list[dict[str, str]]:
    out = []
    firsts = [
        "alice",
        "bruce",
        "carla",
        "dmitri",
        "elena",
        "farid",
        "greta",
        "hiro",
        "ines",
        "jonas",
    ]
    lasts = ["moreau", "novak", "okafor", "petrov", "quinn", "rahman", "silva", "tanaka"]
    for k in range(n):
        f, s = firsts[k % 10], lasts[(k * 7) % 8]
        out.append(
            {
                "rec_id": f"{tag}{k}",
                "first": f.upper() if tag == "b" else f,
                "surname": s if not (tag == "b" and k % 5 == 0) else s[:-1],  # a dropped letter
                "address": f"{k + 1} {['Oak', 'Elm', 'Pine'][k % 3]} St",
                "suburb": ["Carlton", "Glebe", "Manly"][k % 3],
                "postcode": str(3000 + k),
                "state": "VIC",
                "dob": f"19{40 + k % 50}-{1 + k % 12:02d}-{1 + k % 28:02d}",
            }
        )
        if moved and k % 4 == 0:
            out[-1]["address"] = f"{k + 100} Other Rd"
            out[-1]["postcode"] = str(4000 + k)
    return out


def test_link_generic_records_without_email_or_phone() -> None:
    left = _people(80, "a", moved=False)
    right = _people(80, "b", moved=True)
    res = link(left, right, PEOPLE_CONFIG)
    assert res.is_link
    got = {(p.left_id, p.right_id) for p in res}
    want = {(f"a{k}", f"b{k}") for k in range(80)}
    assert len(got & want) >= 76
    assert len(got - want) <= 2
    p = next(iter(res))
    assert set(p.explanation) == {
        "first",
        "surname",
        "address",
        "suburb",
        "postcode",
        "state",
        "dob",
    }
    with pytest.raises(ValueError, match="dedupe"):
        res.clusters()


def test_csv_path_input_and_outputs(tmp_path: Path, generated: list[dict[str, str]]) -> None:
    path = tmp_path / "contacts.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=matchgen.COLUMNS)
        w.writeheader()
        w.writerows(generated[:2000])
    from_csv = dedupe(path)
    from_dicts = dedupe(generated[:2000])
    assert from_csv.id_pairs() == from_dicts.id_pairs()
    out_csv, out_json = tmp_path / "pairs.csv", tmp_path / "pairs.json"
    from_csv.to_csv(out_csv)
    from_csv.to_json(out_json)
    with open(out_csv, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(from_csv)
    assert {"left_id", "right_id", "probability", "weight", "email_level"} <= set(rows[0])
    doc = json.loads(out_json.read_text(encoding="utf-8"))
    assert len(doc["pairs"]) == len(from_csv)
    assert doc["stats"]["pairs_compared"] == from_csv.stats.pairs_compared
    assert "clusters" in doc and doc["model"]["fields"]


def test_oversized_blocks_are_scanned_and_reported() -> None:
    # issue 16: an oversized block is scanned by sorted neighbourhood, not dropped
    records = [{"id": str(k), "family_name": "smith", "given_name": "john"} for k in range(50)]
    res = dedupe(records, MatchConfig.contacts(max_block_size=10))
    s = res.stats
    assert s.capped_blocks == 0 and s.capped_pairs == 0
    assert sum(r.scanned_blocks for r in s.rules) >= 1
    assert max(r.scanned_block_pairs for r in s.rules) >= 50 * 49 // 2
    assert 0 < s.pairs_compared <= 50 * MatchConfig.contacts().window


def test_config_from_dict() -> None:
    cfg = MatchConfig.from_dict(
        {
            "fields": [{"name": "email", "type": "email"}, {"name": "name", "type": "name"}],
            "blocking": [["email"], {"keys": ["soundex(last(name))"]}],
            "threshold": 0.9,
        }
    )
    others = [
        {"id": f"o{k}", "email": f"person{k}@example.org", "name": f"{g} {f}"}
        for k, (g, f) in enumerate(
            (g, f)
            for g in ("bo", "cy", "di", "ed", "flo", "gus")
            for f in ("chen", "ode", "park", "ruiz")
        )
    ]
    res = dedupe(
        [
            {"id": "a", "email": "x@y.com", "name": "Ann Lee"},
            {"id": "b", "email": "X@Y.COM", "name": "Lee, Ann"},
            *others,
        ],
        cfg,
    )
    assert [(p.left_id, p.right_id) for p in res] == [("a", "b")]


@pytest.mark.parametrize(
    ("records", "config", "exc", "match"),
    [
        ([{"name": "x"}], None, ValueError, "no 'id' field"),
        ([["not", "a", "mapping"]], None, TypeError, "not a mapping"),
        ({"id": 1}, None, TypeError, "iterable of mappings"),
        ([{"id": 1}], {"fields": [], "blocking": []}, ValueError, "no fields"),
        (
            [{"id": 1}],
            {"fields": [{"name": "x", "type": "colour"}], "blocking": ["x"]},
            ValueError,
            "unknown type",
        ),
        (
            [{"id": 1}],
            {"fields": [{"name": "x", "type": "text"}], "blocking": ["soundex(y)"]},
            ValueError,
            "no field named",
        ),
        (
            [{"id": 1}],
            {"fields": [{"name": "x", "type": "text"}], "blocking": ["bogus(x)"]},
            ValueError,
            "unknown function",
        ),
        (
            [{"id": 1}],
            {"fields": [{"name": "x", "type": "id", "m": [0.5]}], "blocking": ["x"]},
            ValueError,
            "needs 2 probabilities",
        ),
        (
            [{"id": 1}],
            {"fields": [{"name": "x", "type": "id"}], "blocking": ["x"], "colour": 1},
            ValueError,
            "unknown keys",
        ),
        (
            [{"id": 1}],
            {"fields": [{"name": "x", "type": "id"}], "blocking": ["x"], "threshold": 2},
            ValueError,
            "threshold",
        ),
    ],
)
def test_errors_are_python_exceptions(
    records: object, config: object, exc: type, match: str
) -> None:
    with pytest.raises(exc, match=match):
        dedupe(records, config)  # type: ignore[arg-type]


def test_missing_csv_and_missing_id_column(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        dedupe(tmp_path / "nope.csv")
    # No id column: the line numbers are the ids (issue 12), and the result says so.
    noid = tmp_path / "noid.csv"
    noid.write_text("name,email\nJo Bloggs,jo@x.com\nJo Bloggs,jo@x.com\n", encoding="utf-8")
    res = dedupe(noid)
    assert res.inputs[0].id_column is None
    assert {(p.left_id, p.right_id) for p in res} <= {("2", "3"), ("3", "2")}
    with pytest.raises(ValueError, match="no column 'code'"):
        dedupe(noid, read=ReadOptions(id_column="code"))


def test_empty_and_single_record_sets() -> None:
    assert len(dedupe([])) == 0
    assert len(dedupe([{"id": "only", "given_name": "x"}])) == 0
    assert len(link([], [{"id": "r"}])) == 0


def test_an_empty_file_is_refused_as_sync_refuses_it(tmp_path: Path) -> None:
    """`dedupe` reads files as `sync` does: an empty one is no input, not a
    finding of no duplicates (it exited 0 with "pairs": 0; found by a stranger)."""
    import subprocess
    import sys

    from contactsync_agent.errors import SourceFormatError
    from contactsync_agent.matching import MatchConfig, dedupe

    for text in ("", "\ufeff\n  \n"):
        empty = tmp_path / "empty.csv"
        empty.write_text(text, encoding="utf-8")
        with pytest.raises(SourceFormatError, match="the file is empty"):
            dedupe(str(empty), MatchConfig.contacts())
    cli = Path(sys.executable).with_name("contactsync")
    r = subprocess.run([str(cli), "dedupe", str(empty), "--json"], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 3, r
    assert "the file is empty" in r.stdout + r.stderr


def test_a_higher_threshold_keeps_exactly_the_pairs_scored_above_it() -> None:
    # Scoring skips the pairs whose comparison pattern cannot reach the
    # threshold whatever their term frequencies (an upper bound per pattern):
    # a bound set too low would lose pairs a run at a lower threshold scores
    # above it. Same pairs, same weights.
    recs = list(matchgen.generate(20_000, seed=5, population="realistic"))
    low = {(p.left_id, p.right_id): p for p in dedupe(recs, MatchConfig.contacts(threshold=0.001))}
    for threshold in (0.5, 0.99):
        high = {(p.left_id, p.right_id): p
                for p in dedupe(recs, MatchConfig.contacts(threshold=threshold))}
        # EM sums in hash order: weights agree to rounding, not bit for bit
        near = {k for k, p in low.items() if abs(p.probability - threshold) < 1e-9}
        want = {k for k, p in low.items() if p.probability >= threshold} - near
        assert set(high) - near == want, threshold
        assert len(want) > 1000
        for k in want:
            assert high[k].weight == pytest.approx(low[k].weight, rel=1e-9, abs=1e-9)


def test_a_csv_file_of_several_chunks_reads_as_its_records(tmp_path: Path) -> None:
    # The file is read streamed, chunk by chunk on a reader thread: more rows
    # than a chunk (32,768), a ragged row past the first chunk (rejected with
    # its line), and the truth labels in an unmapped column whose heading has
    # another case. The same records given as mappings match the same.
    recs = list(matchgen.generate(40_000, seed=9, population="realistic"))
    cols = ["id", "given_name", "family_name", "email", "mobile", "street", "postcode",
            "date_of_birth", "cluster"]
    path = tmp_path / "big.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([c if c != "cluster" else "Cluster " for c in cols])
        for k, r in enumerate(recs):
            if k == 35_000:
                fh.write("ragged,row\n")  # line 35,002
            w.writerow([r.get(c, "") for c in cols])
    res = dedupe(path, read=ReadOptions(id_column="id"), truth_column="cluster")
    assert res.inputs[0].rejected == 1
    assert res.inputs[0].first_rejected[0][0] == 35_002
    assert res.stats.records_left == len(recs)
    assert res.stats.true_pairs == len(_truth(recs))
    plain = dedupe([{c: r.get(c, "") for c in cols} for r in recs], truth_column="cluster")
    assert res.id_pairs() == plain.id_pairs()
    assert len(res.id_pairs()) > 1000
