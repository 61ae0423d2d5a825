"""Kill-point harness: SIGKILL a real `contactsync sync` at seeded random moments.

A mirror holding a generated export (the *before* state, with manual,
external, forced-manual and in-use contacts so every rule has work) gets a
second snapshot with creates, updates, identity conversions and deletions.
One uninterrupted run of it gives the *after* state. Then, for each kill
point, a copy of the before state is synced again and the process is killed
with SIGKILL at a seeded moment, spread over the run's phases as seen from
outside the process (no hook in the product): preparing (links loaded),
reading the export, applying after it, committing (the WAL grows), and
committed (another connection reads the run's row as 'ok' while the process
still checkpoints and closes). Only
kills that landed count: the harness waits for the run's row before it aims,
and an attempt whose process exited before the signal (its exit status is not
SIGKILL) is tried again, not counted. After each kill:

1. `PRAGMA integrity_check` is `ok` (read-only connection, as a downstream
   reader would open it);
2. the canonical dump (contacts, change feed, activities, review items,
   quarantine, the id high-water mark and the runs with status ok; without
   timestamps and run ids) equals the before state or the after state;
3. running the same sync again converges to exactly the after state.

Used by `tests/test_crash.py` (small: every phase must get its kills) and by
hand at scale:

    .venv/bin/python benches/killpoints.py --n 1000000 --kills 20

By hand, a phase that cannot be observed from outside at that size (at a
million records the page cache spills into the WAL while the reader is still
going, so the run goes from reading straight to committing) is dropped after
UNSEEN_LIMIT attempts aimed at it saw it never once, and the output says so
("NOT TESTED"); `--every-phase` fails instead, as the tests do.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from exportgen import generate

CLI = [sys.executable, "-m", "contactsync_agent.cli"]
SOURCE = "xpm"


def child_env(verify: bool = False) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTSYNC_")}
    e["XDG_CONFIG_HOME"] = "/nonexistent/contactsync-killpoints"
    if verify:
        e["CONTACTSYNC_VERIFY_SNAPSHOT"] = "1"
    return e


# ---------------------------------------------------------------- the data


@dataclass
class Scenario:
    dir: Path
    before_db: Path
    target_csv: Path
    n: int
    setup_s: float = 0.0


def prepare(dir: Path, n: int, seed: int = 7) -> Scenario:
    """Writes the two exports and builds the before state (in this process)."""
    from contactsync_agent.mirror import Mirror

    t0 = time.monotonic()
    dir.mkdir(parents=True, exist_ok=True)
    n_base = int(n * 0.9)
    base_csv, full_csv, target_csv = dir / "base.csv", dir / "full.csv", dir / "target.csv"
    generate(base_csv, n_base, seed)
    generate(full_csv, n, seed, changed_share=0.05)
    with full_csv.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    # Every 50th record of the base disappears: 2 % deletions, under the guard's 20 %.
    dropped = {i for i in range(n_base) if i % 50 == 17}
    kept = [r for i, r in enumerate(body) if i not in dropped]
    with target_csv.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(kept)
    full_csv.unlink()
    db = dir / "before.db"
    for p in dir.glob("before.db*"):
        p.unlink()
    with Mirror.open(db) as m:
        m.sync_file(SOURCE, base_csv)
        new = body[n_base:]
        rng = random.Random(seed)
        for r in rng.sample(new, min(len(new), max(3, n // 2000))):
            # Identity matches of new records: manual ones convert, external ones are ignored.
            kind = "external" if rng.random() < 0.3 else "manual"
            m.add_contact(given_name=r[1], family_name=r[2], email=r[3], phone=r[4],
                          mobile=r[5], record_type=kind,
                          source="other" if kind == "external" else None)
        linked = {c.external_id: c.id for c in m.contacts(source=SOURCE, limit=n_base)}
        dropped_ids = [linked[body[i][0]] for i in sorted(dropped)]
        for cid in dropped_ids[: max(1, len(dropped_ids) // 10)]:
            m.add_reference(cid, f"case:{cid}")  # in use: unlinked, not deleted
        for cid in list(linked.values())[: max(2, n // 5000)]:
            m.set_forced_manual(cid, True)
    base_csv.unlink()
    return Scenario(dir, db, target_csv, n, time.monotonic() - t0)


# ---------------------------------------------------------------- the dump


def _feed_rows(con: sqlite3.Connection, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def canonical_dump(db: Path) -> dict[str, str]:
    """A digest per table of everything a downstream app sees, timestamps and
    run ids left out (a re-run after a kill has other ones), review scores
    rounded to 9 places."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cols = [r[1] for r in con.execute("PRAGMA table_info(contacts)")]
        keep = [c for c in cols if c not in ("created_at", "updated_at", "deleted_at")]
        queries = {
            "contacts": f"SELECT {', '.join(keep)}, deleted_at IS NOT NULL FROM contacts "
            "ORDER BY id",
            "changes": "SELECT seq, contact_id, op, fields, reason_code, reason FROM changes "
            "ORDER BY seq",
            "activities": "SELECT id, contact_id, source, external_id, kind, fields, reason, "
            "status FROM activities ORDER BY id",
            # Scores to 9 places: the matching engine's EM training is not
            # bit-reproducible (parallel float sums differ in the last ulp).
            "review_items": "SELECT id, source, external_id, contact_id, candidate_id, kind, "
            "round(score, 9), explanation, reason, status FROM review_items ORDER BY id",
            "quarantine": "SELECT id, source, file, line, reason, raw FROM quarantine ORDER BY id",
            "meta": "SELECT key, value FROM meta WHERE key = 'contact_id_hwm'",
            "runs_ok": "SELECT source, mode, origin, origin_hash, records, created, converted, "
            "updated, unchanged, skipped_forced_manual, ignored_external, unlinked, deleted, "
            "review_items, activities, rejected, allow_mass_delete FROM runs "
            "WHERE status = 'ok' ORDER BY id",
        }
        out: dict[str, str] = {}
        for name, sql in queries.items():
            h = hashlib.sha256()
            n = 0
            for row in con.execute(sql):
                h.update(json.dumps(row, ensure_ascii=False, default=repr).encode())
                n += 1
            out[name] = f"{n}:{h.hexdigest()[:16]}"
        return out
    finally:
        con.close()


@contextmanager
def read_only(db: Path, timeout: float = 5.0) -> Iterator[sqlite3.Connection]:
    """A read-only connection, as a downstream reader opens the mirror."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=timeout)
    try:
        yield con
    finally:
        con.close()


def integrity(db: Path) -> str:
    with read_only(db) as con:
        return "; ".join(r[0] for r in con.execute("PRAGMA integrity_check"))


def run_statuses(db: Path) -> list[str]:
    with read_only(db) as con:
        return [r[0] for r in con.execute("SELECT status FROM runs ORDER BY id")]


# ---------------------------------------------------------------- the runs


def fresh_copy(sc: Scenario, name: str) -> Path:
    db = sc.dir / name
    for p in sc.dir.glob(name + "*"):
        p.unlink()
    shutil.copyfile(sc.before_db, db)
    os.chmod(db, 0o600)
    return db


def sync_cmd(db: Path, sc: Scenario) -> list[str]:
    return [*CLI, "--db", str(db), "sync", "--source", SOURCE, str(sc.target_csv), "--json"]


def run_to_end(db: Path, sc: Scenario, verify: bool = False) -> tuple[float, dict]:
    t0 = time.monotonic()
    p = subprocess.run(sync_cmd(db, sc), capture_output=True, text=True,
                       env=child_env(verify), check=False, timeout=3600)
    took = time.monotonic() - t0
    if p.returncode != 0:
        raise AssertionError(f"sync failed ({p.returncode}): {p.stderr.strip()}")
    return took, json.loads(p.stdout)


@dataclass
class Kill:
    phase: str  # where the run was when the signal was sent (see PHASES)
    offset: float  # seconds after the run's row appeared
    fraction: float
    outcome: str  # 'before' | 'after'
    aborted_recorded: bool
    rerun_s: float


@dataclass
class Result:
    n: int
    reference_s: float
    counts: dict[str, int]
    kills: list[Kill] = field(default_factory=list)
    missed: int = 0  # attempts that exited before the signal or overshot their phase
    total_s: float = 0.0
    # Phases never seen from outside in UNSEEN_LIMIT attempts aimed at them,
    # dropped (only with `drop_unobserved`: by hand at scale, never in the tests).
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        by: dict[str, int] = {}
        for k in self.kills:
            key = f"{k.phase}->{k.outcome}"
            by[key] = by.get(key, 0) + 1
        c = self.counts
        return (
            f"{self.n:,} records; uninterrupted run {self.reference_s:.2f}s "
            f"({c['created']:,} created, {c['converted']:,} converted, {c['updated']:,} "
            f"updated, {c['deleted']:,} deleted, {c['unlinked']:,} unlinked, "
            f"{c['ignored_external']:,} external ignored, {c['activities']:,} activities); "
            f"{len(self.kills)} SIGKILLs delivered inside the run "
            f"({', '.join(f'{v} {k}' for k, v in sorted(by.items()))}; "
            f"{self.missed} attempts missed and not counted); every one converged on re-run; "
            f"{self.total_s:.1f}s in all"
            + (f"; NOT TESTED: phase(s) {', '.join(self.dropped)} never observable from "
               f"outside at this size ({UNSEEN_LIMIT} attempts each), dropped"
               if self.dropped else "")
        )


# Where a run can be, as seen from outside the process (no hook in the product):
#   preparing   the run's row is 'running', the core's reader thread has not started
#               (the links and the identity index are loaded)
#   reading     the core's reader thread is alive (Python applies its batches meanwhile)
#   applying    the reader is done, the transaction has not reached the WAL yet
#   committing  the WAL grows past the opening frames, the run's row is still 'running'
#   committed   the run's row reads 'ok' to another connection; the process has not exited
PHASES: tuple[str, ...] = ("preparing", "reading", "applying", "committing", "committed")

# Attempts aimed at a phase that never once saw it (the run went from the phase
# before straight to a later one) before `drop_unobserved` gives it up. At a
# million records the page cache spills into the WAL while the reader is still
# going, so "applying" (reader done, WAL still small) does not happen there.
UNSEEN_LIMIT = 6

# The run's transaction reaches the WAL when it commits (or when the page cache
# spills, on big runs); the opening writes before it are a few frames only.
WAL_COMMIT_BYTES = 256 * 1024


@dataclass(frozen=True)
class KillPlan:
    phase: str  # the phase to wait for
    delay: float  # then this many seconds (bounded by the reference run's length)


def kill_plan(duration: float, kills: int, seed: int) -> list[KillPlan]:
    """Seeded kill points spread over the phases: half while reading (the bulk of
    a run), the rest over applying, committing and the moment after the commit."""
    rng = random.Random(seed)
    weights = {"preparing": 0.1, "reading": 0.35, "applying": 0.2, "committing": 0.2,
               "committed": 0.15}
    plan: list[KillPlan] = []
    for phase, w in weights.items():
        n = max(1, round(kills * w))
        for _ in range(n):
            spread = 0.3 * duration if phase == "reading" else 0.0
            plan.append(KillPlan(phase, rng.uniform(0.0, spread)))
    return plan[:kills] if len(plan) > kills else plan


class _Observer:
    """Reads a running `contactsync sync` from outside: /proc for its reader
    thread, the WAL's size, and a read-only connection for its run's row."""

    def __init__(self, proc: subprocess.Popen[bytes], db: Path) -> None:
        self.proc, self.db = proc, db
        self.wal = db.with_name(db.name + "-wal")
        self.reader_seen = False
        self.seen: set[str] = set()  # every phase this attempt saw

    def _reading(self) -> bool:
        """The core's reader thread (named `contactsync-reader`) is alive: it
        parses, maps and hashes the export while Python applies its batches."""
        try:
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                try:
                    if (task / "comm").read_text().startswith("contactsync-rea"):
                        return True
                except OSError:
                    continue
        except OSError:
            pass
        return False

    def _wal_size(self) -> int:
        try:
            return self.wal.stat().st_size
        except FileNotFoundError:
            return 0

    def phase(self, runs_before: int) -> str | None:
        """The run's phase now, or None before its row appears (start-up)."""
        now = self._phase(runs_before)
        if now is not None:
            self.seen.add(now)
        return now

    def _phase(self, runs_before: int) -> str | None:
        con_status = self._run_status_after(runs_before)
        if con_status is None:
            return None
        if con_status != "running":
            return "committed"
        if self._reading():
            self.reader_seen = True
            return "reading"
        if self._wal_size() > WAL_COMMIT_BYTES:
            return "committing"
        return "applying" if self.reader_seen else "preparing"

    def _run_status_after(self, runs_before: int) -> str | None:
        try:
            with read_only(self.db, timeout=0.05) as con:
                row = con.execute("SELECT status FROM runs WHERE id > ? ORDER BY id DESC "
                                  "LIMIT 1", (runs_before,)).fetchone()
        except sqlite3.Error:
            return None
        return row[0] if row else None


def _max_run_id(db: Path) -> int:
    with read_only(db) as con:
        return int(con.execute("SELECT coalesce(max(id), 0) FROM runs").fetchone()[0])


def _wait_and_kill(obs: _Observer, k: KillPlan, runs_before: int,
                   deadline: float) -> tuple[str, float] | None:
    """Waits for the planned phase (or a later one), then for the planned delay
    while the run stays in it, and sends SIGKILL. Returns (the phase seen just
    before the signal, seconds since the run's row appeared), or None when the
    process exited first or the signal did not kill it (not a kill to count)."""
    proc = obs.proc
    order = {p: i for i, p in enumerate(PHASES)}
    t_start = time.monotonic()
    t_row: float | None = None
    t_phase: float | None = None
    seen = None
    while True:
        if proc.poll() is not None or time.monotonic() - t_start > deadline:
            return None
        seen = obs.phase(runs_before)
        now = time.monotonic()
        if seen is not None and t_row is None:
            t_row = now
        if seen is not None and order[seen] >= order[k.phase]:
            if t_phase is None:
                t_phase = now
            # Past the planned phase already, or the delay is over: kill now.
            if order[seen] > order[k.phase] or now - t_phase >= k.delay:
                break
        time.sleep(0.0005 if k.phase in ("committing", "committed") else 0.002)
    os.kill(proc.pid, signal.SIGKILL)
    rc = proc.wait()
    if rc != -signal.SIGKILL:
        return None  # it exited on its own between the last look and the signal
    assert t_row is not None
    return seen, time.monotonic() - t_row


def _before(phase: str) -> str:
    i = PHASES.index(phase)
    return PHASES[i - 1] if i else "start-up"


def run(sc: Scenario, kills: int = 20, seed: int = 11, verify: bool = False,
        log: Callable[[str], None] = print, max_attempts: int | None = None,
        drop_unobserved: bool = False) -> Result:
    """Kills `kills` runs over the phases. Every phase must get its kills;
    `drop_unobserved` (by hand at scale) instead drops a phase that
    UNSEEN_LIMIT attempts aimed at it never once saw, and says so."""
    t_all = time.monotonic()
    before = canonical_dump(sc.before_db)
    ref = fresh_copy(sc, "reference.db")
    took, report = run_to_end(ref, sc, verify)
    after = canonical_dump(ref)
    if after == before:
        raise AssertionError("the second snapshot changed nothing: no test")
    result = Result(sc.n, took, report["counts"])
    # When the kill came after the commit, the re-run is a second run of the
    # same snapshot: it writes nothing but its own (ok) run row.
    _, again = run_to_end(ref, sc, verify)
    if any(again["counts"][k] for k in ("created", "converted", "updated", "deleted",
                                         "unlinked", "activities", "review_items")):
        raise AssertionError(f"the same snapshot twice was not a no-op: {again['counts']}")
    after_twice = canonical_dump(ref)
    log(f"reference run: {took:.2f}s, counts {report['counts']}")
    plan = kill_plan(took, kills, seed)
    attempts = 0
    limit = max_attempts if max_attempts is not None else 4 * len(plan)
    queue = list(plan)
    ever_seen: set[str] = set()
    unseen: dict[str, int] = {}
    while queue:
        if attempts >= limit:
            raise AssertionError(
                f"only {len(result.kills)} of {len(plan)} kills landed inside a run in "
                f"{attempts} attempts (phases still wanted: {[k.phase for k in queue]})")
        k = queue.pop(0)
        attempts += 1
        db = fresh_copy(sc, "killed.db")
        runs_before = _max_run_id(db)
        proc = subprocess.Popen(sync_cmd(db, sc), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=child_env())
        obs = _Observer(proc, db)
        landed = _wait_and_kill(obs, k, runs_before, deadline=10 * took + 10)
        ever_seen |= obs.seen
        if landed is None:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            result.missed += 1
            queue.append(k)  # try that phase again
            continue
        phase, at = landed
        if phase != k.phase:
            # The run was already past the planned phase (a short phase, or the
            # delay outlasted it): not the kill planned. Try that phase again,
            # sooner into it, so that every phase gets its kills.
            result.missed += 1
            if k.phase not in ever_seen:
                unseen[k.phase] = unseen.get(k.phase, 0) + 1
                if drop_unobserved and unseen[k.phase] >= UNSEEN_LIMIT:
                    result.dropped.append(k.phase)
                    queue = [q for q in queue if q.phase != k.phase]
                    log(f"phase {k.phase!r} dropped: never observable from outside at "
                        f"{sc.n:,} records in {UNSEEN_LIMIT} attempts (the run went from "
                        f"{_before(k.phase)} straight to a later phase); its kills are "
                        "NOT tested at this size")
                    continue
            queue.append(KillPlan(k.phase, k.delay / 2))
            continue
        fraction = at / took
        check = integrity(db)
        if check != "ok":
            raise AssertionError(f"kill at {phase} {at:.3f}s: integrity_check: {check}")
        state = canonical_dump(db)
        if state == before:
            outcome = "before"
        elif state == after:
            outcome = "after"
        else:
            diff = [t for t in state if state[t] not in (before[t], after[t])]
            raise AssertionError(
                f"kill at {phase} {at:.3f}s: neither the before nor the after state "
                f"(tables {diff}: {[state[t] for t in diff]}; before "
                f"{[before[t] for t in diff]}, after {[after[t] for t in diff]})")
        if phase in ("preparing", "reading", "applying") and outcome != "before":
            raise AssertionError(f"kill while {phase} left the after state: the run "
                                 "committed before its end")
        if phase == "committed" and outcome != "after":
            raise AssertionError("kill after the run's row read 'ok' lost the run")
        rerun_s, _ = run_to_end(db, sc, verify)
        converged = canonical_dump(db)
        expected = after if outcome == "before" else after_twice
        if converged != expected:
            diff = [t for t in after if converged[t] != expected[t]]
            raise AssertionError(f"kill at {phase} {at:.3f}s ({outcome}): the re-run did not "
                                 f"converge on {diff}")
        statuses = run_statuses(db)
        aborted = "aborted" in statuses
        if outcome == "before" and statuses.count("running"):
            raise AssertionError(f"kill at {phase}: a run left 'running' after the next open")
        result.kills.append(Kill(phase, at, fraction, outcome, aborted, rerun_s))
        log(f"kill {len(result.kills):>2}/{len(plan)} while {phase:>10} at {at:6.3f}s "
            f"({fraction:4.0%} of the run): {outcome} state, integrity ok"
            + (", killed run recorded as aborted" if aborted else "")
            + f"; re-run {rerun_s:.2f}s converged")
    result.total_s = time.monotonic() - t_all
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/contactsync-killpoints"))
    ap.add_argument("--keep", action="store_true", help="Keep the working folder.")
    ap.add_argument("--every-phase", action="store_true",
                    help="Fail when a phase cannot be observed (the tests' rule) instead "
                         "of dropping it and saying so.")
    a = ap.parse_args()
    sc = prepare(a.dir, a.n, a.seed)
    print(f"prepared {a.n:,} records in {sc.setup_s:.1f}s under {a.dir}")
    try:
        res = run(sc, a.kills, a.seed, drop_unobserved=not a.every_phase)
        print(res.summary())
    finally:
        if not a.keep:
            shutil.rmtree(a.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
