"""pytest-benchmark cases for matching at a small N (quick): dedupe of 20,000
generated contacts from a CSV path and from mappings, and one comparator."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import matchgen
from contactsync_agent import _core
from contactsync_agent.matching import dedupe

N = 20_000


@pytest.fixture(scope="module")
def csv_path() -> Path:
    return matchgen.cached_csv(N, 1)


@pytest.fixture(scope="module")
def records() -> list[dict[str, str]]:
    return list(matchgen.generate(N, 1))


def test_dedupe_csv_20k(benchmark, csv_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = benchmark(dedupe, csv_path)
    assert len(res) > N // 10


def test_dedupe_mappings_20k(benchmark, records: list[dict[str, str]]) -> None:  # type: ignore[no-untyped-def]
    res = benchmark(dedupe, records)
    assert res.stats.pairs_compared > 0


def test_jaro_winkler(benchmark) -> None:  # type: ignore[no-untyped-def]
    assert benchmark(_core.jaro_winkler, "martha", "marhta") > 0.96
