"""pytest-benchmark cases of the sync at a small N (the headline script does 1M).

    .venv/bin/pytest benches/test_bench_sync.py --benchmark-only
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contactsync_agent.mirror import Mirror
from exportgen import generate

N = 20_000


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("exports")
    base, changed = d / "base.csv", d / "changed.csv"
    generate(base, N, seed=42)
    generate(changed, N, seed=42, changed_share=0.01)
    return base, changed


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def test_full_import(benchmark, exports: tuple[Path, Path], tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    base, _ = exports

    def setup() -> tuple[tuple[Mirror], dict[str, object]]:
        return (Mirror.open(tmp_path_factory.mktemp("db") / "m.db"),), {}

    def run(m: Mirror) -> None:
        report = m.sync_file("bench", base)
        assert report.counts["created"] == N
        m.close()

    benchmark.pedantic(run, setup=setup, rounds=3)


def test_unchanged_reimport(benchmark, exports: tuple[Path, Path], fresh: Path) -> None:  # type: ignore[no-untyped-def]
    base, _ = exports
    with Mirror.open(fresh / "m.db") as m:
        m.sync_file("bench", base)
        result = benchmark(m.sync_file, "bench", base)
        assert result.counts["unchanged"] == N


def test_one_percent_changed(benchmark, exports: tuple[Path, Path], fresh: Path) -> None:  # type: ignore[no-untyped-def]
    base, changed = exports
    with Mirror.open(fresh / "m.db") as m:
        m.sync_file("bench", base)
        files = iter([changed, base] * 50)
        result = benchmark(lambda: m.sync_file("bench", next(files)))
        assert 0 < result.counts["updated"] < N // 20
