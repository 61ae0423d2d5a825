"""pytest-benchmark cases for issue 6 at a small N (quick): an import of 20,000
contacts plain, and with 2,000 organisations and 4,000 locations first. The
headline (200,000 contacts, ratio) is `benches/org_overhead.py`."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import org_overhead
from exportgen import generate

N = 20_000
_count = itertools.count()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("orgbench")
    plain = folder / "plain.csv"
    generate(plain, N)
    contacts, orgs, locs = org_overhead.generate_related(folder, N)
    return {"folder": folder, "plain": plain, "contacts": contacts, "orgs": orgs, "locs": locs}


def test_import_contacts_only(benchmark, files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    def run() -> float:
        return org_overhead.plain_run(files["folder"] / f"p{next(_count)}.db", files["plain"])

    benchmark.pedantic(run, rounds=3, iterations=1)


def test_import_with_organisations(benchmark, files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    def run() -> float:
        return org_overhead.related_run(files["folder"] / f"r{next(_count)}.db",
                                        files["contacts"], files["orgs"], files["locs"])

    benchmark.pedantic(run, rounds=3, iterations=1)
