"""Crash safety: SIGKILL a real `contactsync sync` at 20 seeded moments of an
import (reading, matching, applying, committing) and check, after each, that
the database is intact, shows the state before or after the run and nothing
in between, and that running the sync again converges on exactly the state of
an uninterrupted run. The harness is `benches/killpoints.py` (run it by hand
at 1,000,000 records)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))

import killpoints

N = 12_000
KILLS = 20


def test_sigkill_at_20_points_leaves_before_or_after_and_converges(tmp_path: Path) -> None:
    sc = killpoints.prepare(tmp_path / "kp", N, seed=5)
    lines: list[str] = []
    res = killpoints.run(sc, kills=KILLS, seed=2024, verify=True, log=lines.append)
    print("\n".join(lines))
    print(res.summary())
    assert len(res.kills) == KILLS
    outcomes = {k.outcome for k in res.kills}
    assert outcomes <= {"before", "after", "finished"}
    assert "before" in outcomes  # the early kills, at least, land mid-run
    # Every kind of work was in the run that was being killed.
    c = res.counts
    assert min(c["created"], c["updated"], c["deleted"], c["unlinked"], c["converted"]) > 0
    # A killed run is recorded as aborted by the next writer, never left 'running'.
    assert any(k.aborted_recorded for k in res.kills if k.outcome == "before")
