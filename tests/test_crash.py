"""Crash safety: SIGKILL a real `contactsync sync` at 20 seeded moments inside
an import, spread over its phases (preparing, reading the export, applying, committing,
just after the commit), and check, after each, that the database is intact,
shows the state before or after the run and nothing in between, and that
running the sync again converges on exactly the state of an uninterrupted run.
Only kills that landed inside the run count. The harness is
`benches/killpoints.py` (run it by hand at 1,000,000 records)."""

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
    # Every kill was delivered to a live process inside the run (the harness
    # counts none that hit start-up or an exited process), in every phase.
    assert {k.phase for k in res.kills} == set(killpoints.PHASES)
    # Both outcomes: a kill before the commit leaves the before state, a kill
    # after it (while the process checkpoints and closes) the after state.
    assert {k.outcome for k in res.kills} == {"before", "after"}
    assert all(k.outcome == "before" for k in res.kills
               if k.phase in ("preparing", "reading", "applying"))
    assert all(k.outcome == "after" for k in res.kills if k.phase == "committed")
    # Every kind of work was in the run that was being killed.
    c = res.counts
    assert min(c["created"], c["updated"], c["deleted"], c["unlinked"], c["converted"]) > 0
    # A killed run is recorded as aborted by the next writer, never left 'running'.
    assert all(k.aborted_recorded for k in res.kills if k.outcome == "before")
