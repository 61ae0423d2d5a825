"""Mutation check of the guarantees: mutmut over the code that keeps data safe.

mutmut 3 wants the package under `src/` (it imports the mutated copy from
`mutants/src`), so this script copies the tracked tree into a scratch folder
with `python/` renamed `src/`, adds the built extension and a `[tool.mutmut]`
section, and runs mutmut there on the functions named below, each with the
tests that speak for it. Nothing in the checkout changes.

    .venv/bin/python benches/mutation.py            # every target
    .venv/bin/python benches/mutation.py guard      # one target
    .venv/bin/python benches/mutation.py --keep     # keep the scratch folder
    .venv/bin/python benches/mutation.py signals    # the stop paths, hand mutants

It prints, per target, killed / survived / no tests / timeouts and the names
of the surviving mutants (`mutmut show NAME` in the scratch folder shows one).
Run by hand (minutes to tens of minutes on 2 cores); not part of `make test`.

`signals` is not mutmut: the stop paths run in child processes (the agent, a
`contactsync sync`), where mutmut cannot see which test reaches which line. It
applies each of `SIGNAL_MUTANTS` (small hand-written edits: a handler not
installed, the stop flag not checked, the grace period changed, the abort not
called, the rollback skipped, ...) alone to the scratch copy, runs
`SIGNAL_TESTS` (the children import the scratch copy through PYTHONPATH) and
reports which edits no test noticed. Each edit names the text it replaces, not
a file: it must occur exactly once in the package, wherever the code has moved.

`guard` and `purge` also run a few hand mutants after mutmut, the same way
(`GUARD_MUTANTS`: the source's share counted in `_plan`, a long function whose
other mutants are not the guard's; `PURGE_MUTANTS`: the module-level list of
per-contact tables, which mutmut does not mutate); `--hand-only` runs just
those. A mutmut pattern that matches no mutant (a guarded function renamed or
moved) stops the run with an error instead of passing as "no survivors".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = "contactsync_agent"

# target: (files to mutate, mutant name patterns, the tests that speak for them)
TARGETS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "guard": (
        # Since the two-way work the source's share (`linked_before`) is
        # counted in `_plan` from the links less `Contacts.linked_not_sync`:
        # the store's count is mutated here, the line in `_plan` (a long
        # function, mostly not the guard's) by GUARD_MUTANTS below.
        ["rules.py", "sync.py", "store/contacts.py"],
        [f"{PKG}.rules.x_check_deletion_guard*", f"{PKG}.rules.x_decide_deletion*",
         f"{PKG}.rules.x_check_column_drop*",
         f"{PKG}.sync.x__deletions*", f"{PKG}.sync.x__column_guard*",
         f"{PKG}.sync.xǁ_Runǁguard*", f"{PKG}.store.contacts.xǁContactsǁlinked_not_sync*"],
        # Not the stateful model test: it finds these too, but shrinking a failure
        # takes minutes, which a run over hundreds of mutants cannot pay.
        # The quickest first: the hand mutants' runs stop at a failure.
        ["tests/test_import_speed.py::"  # the share: the source's sync contacts only
         "test_the_deletion_guard_counts_only_the_sources_sync_contacts",
         "tests/test_guard_messages.py", "tests/test_rules_deletion.py",
         "tests/test_data_safety.py", "tests/test_sync_rules.py",
         "tests/test_spec_examples.py", "tests/test_properties.py"],
    ),
    "purge": (
        # The orchestration and, since issue 14, the erasure's SQL in the store.
        ["maintenance.py", "store/maintenance.py"],
        [f"{PKG}.maintenance.x_purge*", f"{PKG}.store.maintenance.xǁMaintenanceǁerase*"],
        ["tests/test_purge_per_contact.py",  # first: the hand mutants' runs stop at a failure
         "tests/test_migration_6.py::test_a_purge_blanks_a_compact_create_and_keeps_its_time",
         "tests/test_maintenance.py::test_purge_erases_deleted_contacts_and_their_payloads",
         "tests/test_maintenance.py::test_purge_of_the_highest_id_never_lets_ids_go_back",
         "tests/test_maintenance.py::test_purge_keeps_contacts_in_use_and_blanks_old_quarantine",
         "tests/test_wal_erasure.py::test_purge_erases_every_table_and_the_wal_before_close",
         "tests/test_wal_erasure.py::test_purge_blanks_values_of_purged_contacts_at_any_age",
         "tests/test_wal_erasure.py::"
         "test_purge_with_a_reader_holding_a_transaction_says_the_erasure_is_pending",
         "tests/test_purge_edges.py",
         # Not the property tests (ids never reused, the feed replayed): the
         # tests above assert both for purge, and shrinking a failure takes
         # minutes per mutant.
         ],
    ),
    "durability": (
        ["store/core.py"],
        [f"{PKG}.store.core.xǁStoreǁopen*"],
        ["tests/test_wal_erasure.py::test_the_durability_pragmas_hold_on_the_writer_connection",
         "tests/test_opening_the_mirror.py", "tests/test_store.py"],
    ),
}


# ---------------------------------------------------------------- signals: hand mutants

#: The tests that speak for the stop paths, quickest first (each run stops at
#: the first failure).
SIGNAL_TESTS = [
    "tests/test_stop_signals.py::test_an_idle_agent_stops_at_once_not_at_its_next_wake_up",
    "tests/test_stop_signals.py::test_ctrl_c_in_contactsync_sync_rolls_the_run_back_and_exits_130",
    "tests/test_stop_signals.py::"
    "test_sigterm_to_contactsync_sync_commits_nothing_and_the_next_open_says_aborted",
    "tests/test_limits.py::test_abort_interrupts_a_running_sql_query_and_the_run_is_aborted",
    "tests/test_limits.py::test_sigterm_ends_the_agent_stuck_in_a_slow_drip_response",
    "tests/test_concurrent_writes.py::test_sigterm_ends_an_agent_that_waits_for_another_write",
    "tests/test_stop_signals.py::"
    "test_a_stop_before_the_agent_knows_the_runs_connector_still_aborts_it",
    "tests/test_stop_signals.py::test_a_run_deaf_to_its_abort_is_cut_off_after_the_grace_period",
    "tests/test_stop_signals.py::test_sigint_mid_import_stops_the_agent_as_sigterm_does",
    "tests/test_daemon.py::test_sigterm_mid_import_exits_0_and_leaves_no_partial_run",
    "tests/test_stop_signals.py::test_a_stopped_agent_leaves_the_program_that_ran_it_alone",
    # Since the web console and /metrics: the shutdown stops them, and tells systemd.
    "tests/test_stop_servers.py",
    "tests/test_monitoring.py::test_ready_watchdog_and_stopping_reach_a_fake_notify_socket",
]


@dataclass(frozen=True)
class HandMutant:
    """One deliberate bug: each (old, new) replaces text found exactly once."""

    name: str
    edits: tuple[tuple[str, str], ...]


def _m(name: str, *edits: tuple[str, str]) -> HandMutant:
    return HandMutant(name, edits)


SIGNAL_MUTANTS = [
    # The agent (daemon): handlers, the stop flag, the wake-up.
    _m("no signal handler installed",
       ("                signal.signal(sig, self._on_signal)", "                pass")),
    _m("SIGINT not a stop",
       ('("SIGTERM", "SIGINT", "SIGBREAK", "SIGHUP")', '("SIGTERM", "SIGBREAK", "SIGHUP")')),
    _m("SIGTERM not a stop",
       ('("SIGTERM", "SIGINT", "SIGBREAK", "SIGHUP")', '("SIGINT", "SIGBREAK", "SIGHUP")')),
    _m("stop flag not set by the handler",
       ("self.state.stop_signal = signal.Signals(signum).name",
        "self.state.stop_signal = None")),
    _m("main loop ignores the stop flag",
       ("        while not self.stopping:", "        while True:")),
    _m("no stop check between batches",
       ("        # Called between batches inside the run's transaction: raising rolls it all"
        " back.\n        if self.state.stopping:",
        "        if False:")),
    _m("wait for the writer lock not interrupted by a stop",
       ("        if self.stopping:\n            raise StopRequested(STOP_MESSAGE)\n\n"
        "    def _waiting",
        "        if False:\n            raise StopRequested(STOP_MESSAGE)\n\n    def _waiting")),
    _m("sleep not woken by the signal (no wake byte, no wake-up fd)",
       ("        self.wake()\n\n    def _cut_off", "        pass\n\n    def _cut_off"),
       ("            self._old_wakeup_fd = signal.set_wakeup_fd(\n"
        "                self._wsock.fileno(), warn_on_full_buffer=False\n            )",
        "            self._old_wakeup_fd = None")),
    _m("no wake byte from the handler (the wake-up fd alone)",
       ("        self.wake()\n\n    def _cut_off", "        pass\n\n    def _cut_off")),
    _m("no wake-up fd (the handler's wake byte alone)",
       ("            self._old_wakeup_fd = signal.set_wakeup_fd(\n"
        "                self._wsock.fileno(), warn_on_full_buffer=False\n            )",
        "            self._old_wakeup_fd = None")),
    _m("sleep does not look at a stop already flagged",
       ("        if self.state.stopping or self.reload_requested:\n"
        "            return\n        with",
        "        if False:\n            return\n        with")),
    _m("stop not recorded in the database at shutdown",
       ('self.mirror.store.set_meta("daemon.state", "stopped")', "pass")),
    # The run's connector: abort.
    _m("handler does not abort the run's connector",
       ("                conn.abort(STOP_MESSAGE)\n            self._grace",
        "                pass\n            self._grace")),
    _m("a stop flagged before the connector was known does not abort it",
       ("            if self.state.stopping:  # the signal came before the connector was known\n"
        "                conn.abort(STOP_MESSAGE)",
        "            if False:\n                conn.abort(STOP_MESSAGE)")),
    _m("the HTTP connector's abort does not shut its socket",
       ('    def _interrupt(self) -> None:\n        self._watch.fire("the run was aborted")',
        "    def _interrupt(self) -> None:\n        pass")),
    _m("the SQL progress handler ignores the abort",
       ("lambda: int(self._aborted is not None or self.remaining() < 0)",
        "lambda: int(self.remaining() < 0)")),
    # The grace period (STOP_GRACE) and the cut-off.
    _m("grace timer never started", ("            self._grace.start()", "            pass")),
    _m("grace period longer than the promised 10 s",
       ("STOP_GRACE = 8.0", "STOP_GRACE = 30.0")),
    _m("grace period cut short", ("STOP_GRACE = 8.0", "STOP_GRACE = 1.0")),
    _m("cut-off does not exit", ("        os._exit(1)", "        pass")),
    _m("cut-off exits 0 (as if the run had ended)", ("        os._exit(1)", "        os._exit(0)")),
    _m("grace timer not cancelled at shutdown",
       ("            self._grace.cancel()", "            pass")),
    # The run: rollback and what is recorded.
    _m("rollback skipped (the failed transaction commits)",
       ('                self.conn.execute("ROLLBACK")\n                raise',
        '                self.conn.execute("COMMIT")\n                raise')),
    _m("an aborted run recorded as failed",
       ('        elif isinstance(exc, RunAborted):\n            status = "aborted"',
        '        elif isinstance(exc, RunAborted):\n            status = "failed"')),
    _m("an interrupted run (KeyboardInterrupt) not recorded",
       ("    except BaseException as exc:\n        if isinstance(exc, SafetyLimitError",
        "    except Exception as exc:\n        if isinstance(exc, SafetyLimitError")),
    _m("a run left running by a killed process never recorded aborted",
       ("\"UPDATE runs SET status = 'aborted', finished_at = ?, \"",
        "\"UPDATE runs SET status = 'running', finished_at = ?, \"")),
    # The shutdown's servers (web console, /metrics) and systemd's STOPPING=1.
    _m("web console not stopped at shutdown",
       ("            self.web.stop()\n            self.web = None", "            pass")),
    _m("/metrics not stopped at shutdown",
       ("            self.metrics.stop()\n            self.metrics = None\n        if self.web",
        "            pass\n        if self.web")),
    _m("systemd not told the agent is stopping",
       ("        self.state.notifier.stopping(\n", "        (lambda _: None)(\n")),
    # contactsync sync (the CLI): Ctrl-C.
    _m("Ctrl-C exit status 1, not 130", ("            sys.exit(130)", "            sys.exit(1)")),
    _m("Ctrl-C not caught by the CLI",
       ("        except KeyboardInterrupt:\n            click.echo",
        "        except ZeroDivisionError:\n            click.echo")),
]


def _apply(pkg: Path, edits: tuple[tuple[str, str], ...]) -> dict[Path, str]:
    """Applies `edits` in the package under `pkg`; returns the originals to restore."""
    originals: dict[Path, str] = {}
    for old, new in edits:
        hits = [(f, f.read_text()) for f in sorted(pkg.rglob("*.py"))]
        hits = [(f, t) for f, t in hits if old in t]
        count = sum(t.count(old) for _, t in hits)
        if count != 1:
            raise SystemExit(f"hand mutant edit found {count} times (must be once): {old!r}")
        f, text = hits[0]
        originals.setdefault(f, text)
        f.write_text(text.replace(old, new))
    return originals


#: The guard's lines mutmut is not pointed at (they sit in `_plan`, whose
#: other hundreds of mutants are not the guard's): run after mutmut by `guard`.
GUARD_MUTANTS = [
    _m("the share counts the links of the source's manual contacts",
       ("run.linked_before = len(differ) - store.contacts.linked_not_sync(source)",
        "run.linked_before = len(differ)")),
    _m("the share never counted (linked_before left 0)",
       ('    if run.mode == "full":  # the source\'s live `sync` contacts',
        '    if False:  # the source\'s live `sync` contacts')),
    _m("the share adds the links of the source's manual contacts twice",
       ("run.linked_before = len(differ) - store.contacts.linked_not_sync(source)",
        "run.linked_before = len(differ) + store.contacts.linked_not_sync(source)")),
]

#: Purge's module-level list of the tables it empties per contact (mutmut does
#: not mutate module constants), and the feed's times it keeps (schema 6): run
#: after mutmut by `purge`.
PURGE_MUTANTS = [
    _m("purge leaves the contact's outbox entries",
       ('PER_CONTACT_TABLES = ("held_values", "contact_organisations", "field_bases", "outbox")',
        'PER_CONTACT_TABLES = ("held_values", "contact_organisations", "field_bases")')),
    _m("purge leaves the contact's two-way field bases",
       ('PER_CONTACT_TABLES = ("held_values", "contact_organisations", "field_bases", "outbox")',
        'PER_CONTACT_TABLES = ("held_values", "contact_organisations", "outbox")')),
    _m("purge leaves the contact's held values",
       ('PER_CONTACT_TABLES = ("held_values", "contact_organisations", "field_bases", "outbox")',
        'PER_CONTACT_TABLES = ("contact_organisations", "field_bases", "outbox")')),
    _m("purge leaves the contact's organisation links",
       ('PER_CONTACT_TABLES = ("held_values", "contact_organisations", "field_bases", "outbox")',
        'PER_CONTACT_TABLES = ("held_values", "field_bases", "outbox")')),
    # Schema 6: a bulk create's entry holds its time by reference (''); purge
    # blanks its payload and writes the time down, other entries keep theirs.
    # Equivalent: purge then deletes the contact, and the trigger
    # change_log_keep_create_delete writes the same created_at into an empty time.
    _m("a blanked bulk create's entry loses its time (equivalent)",
       ("at = iif(at != '', at, (SELECT ", "at = iif(1, at, (SELECT ")),
    _m("every blanked entry takes the contact's creation time",
       ("at = iif(at != '', at, (SELECT ", "at = iif(0, at, (SELECT ")),
    # Schema 8: the link snapshot's parts hold the purged contacts' external ids.
    _m("purge leaves the link snapshot's parts",
       ('"DELETE FROM link_snapshot_parts WHERE source NOT IN "',
        '"DELETE FROM link_snapshot_parts WHERE 0 AND source NOT IN "')),
]

#: Hand mutants run after mutmut by a target (see GUARD_MUTANTS, PURGE_MUTANTS).
HAND_MUTANTS = {"guard": GUARD_MUTANTS, "purge": PURGE_MUTANTS}


def run_signals(keep: bool, only: list[str] | None = None) -> dict[str, list[str]]:
    return run_hand("signals", SIGNAL_MUTANTS, SIGNAL_TESTS, keep, only)


def run_hand(label: str, mutants: list[HandMutant], tests: list[str], keep: bool,
             only: list[str] | None = None) -> dict[str, list[str]]:
    """Applies each of `mutants` alone to a scratch copy and runs `tests` (the
    copy imported through PYTHONPATH, by the tests and the children they start)."""
    dest = Path(tempfile.mkdtemp(prefix=f"contactsync-mutation-{label}-"))
    try:
        scratch_copy(dest)
        pkg = dest / "src" / PKG
        env = {**os.environ, "PYTHONPATH": str(dest / "src")}
        where = subprocess.run([sys.executable, "-c", f"import {PKG}; print({PKG}.__file__)"],
                               cwd=dest, env=env, capture_output=True, text=True, check=True)
        if not where.stdout.strip().startswith(str(pkg)):
            raise SystemExit(f"the scratch copy is not the one imported: {where.stdout}")
        tests = [t for t in tests if (dest / t.split("::")[0]).exists()]
        pytest = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x",
                  "--timeout", "120", *tests]

        def run(show: bool = False) -> tuple[str, float]:
            t0 = time.monotonic()
            try:
                p = subprocess.run(pytest, cwd=dest, env=env, capture_output=True, text=True,
                                   timeout=900, check=False)
            except subprocess.TimeoutExpired:
                return "timeout", time.monotonic() - t0
            status = {0: "survived", 1: "killed"}.get(p.returncode, f"error {p.returncode}")
            if status != "survived":
                failed = [ln for ln in p.stdout.splitlines() if ln.startswith("FAILED")]
                status += f" ({failed[0].split('::')[-1].split(' ')[0]})" if failed else ""
                if show:  # why the unmutated tests failed
                    print("\n".join([ln for ln in p.stdout.splitlines()
                                     if ln.startswith("E ")][:12]))
            return status, time.monotonic() - t0

        base, took = run(show=True)
        if base != "survived":  # timing tests on a loaded machine: once more
            print(f"  unmutated: {base} ({took:.0f}s); again")
            base, took = run(show=True)
        print(f"  unmutated: {'tests pass' if base == 'survived' else base} ({took:.0f}s)")
        if base != "survived":
            return {"not run (the unmutated tests fail)": [m.name for m in mutants]}
        by: dict[str, list[str]] = {}
        for m in mutants:
            if only and not any(o in m.name for o in only):
                continue
            originals = _apply(pkg, m.edits)
            try:
                status, took = run()
            finally:
                for f, text in originals.items():
                    f.write_text(text)
            print(f"  {status}: {m.name} ({took:.0f}s)", flush=True)
            by.setdefault(status.split(" (")[0], []).append(f"{m.name}: {status}")
        return by
    finally:
        if keep:
            print(f"  scratch folder kept: {dest}")
        else:
            shutil.rmtree(dest, ignore_errors=True)


# ---------------------------------------------------------------- mutmut


def scratch_copy(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if not src.is_file():
            continue
        target = dest / ("src" + name[len("python"):] if name.startswith("python/") else name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    for so in (ROOT / "python" / PKG).glob("_core*.so"):
        shutil.copy2(so, dest / "src" / PKG / so.name)


def configure(dest: Path, files: list[str], tests: list[str]) -> None:
    pyproject = dest / "pyproject.toml"
    text = pyproject.read_text()
    so = [str(p.relative_to(dest)) for p in (dest / "src" / PKG).glob("_core*.so")]
    section = {
        "source_paths": [f"src/{PKG}"],
        "only_mutate": [f"src/{PKG}/{f}" for f in files],
        # docs/: a spec test reads the repository's copy of the contract.
        "also_copy": [*so, f"src/{PKG}/_core.pyi", f"src/{PKG}/py.typed", "benches/",
                      "docs/"],
        "pytest_add_cli_args_test_selection": tests,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q", "-x", "--timeout", "120"],
        # Not forked from a process that ran the tests: the core's thread pool
        # does not survive a fork (every mutant would time out).
        "process_isolation": "forkserver",
    }
    lines = ["", "[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in section.items()]
    pyproject.write_text(text + "\n".join(lines) + "\n")


def run_target(name: str, keep: bool, children: int,
               functions: list[str] | None = None) -> dict[str, list[str]]:
    files, patterns, tests = TARGETS[name]
    if functions:  # a part of the target (a re-run of what changed)
        patterns = [p for p in patterns if any(f in p for f in functions)]
        if not patterns:
            raise SystemExit(f"{name}: no pattern contains any of {functions}")
    dest = Path(tempfile.mkdtemp(prefix=f"contactsync-mutation-{name}-"))
    try:
        scratch_copy(dest)
        configure(dest, files, [t for t in tests if (ROOT / t.split("::")[0]).exists()])
        mutmut = [str(Path(sys.executable).with_name("mutmut"))]
        # The CLI processes the tests start import the mutated copy too.
        env = {**os.environ, "PYTHONPATH": str(dest / "mutants" / "src")}
        log = dest / "mutmut-run.log"
        # Seen here: the first `mutmut run` of a fresh folder generates the
        # mutants and the stats but tests none of them; a second one does.
        for _ in range(2):
            with log.open("a") as fh:
                subprocess.run([*mutmut, "run", "--max-children", str(children), *patterns],
                               cwd=dest, check=False, env=env,
                               stdout=fh, stderr=subprocess.STDOUT)
            out = subprocess.run([*mutmut, "results", "--all", "true"], cwd=dest,
                                 capture_output=True, text=True, check=False).stdout
            if any(not line.endswith(": not checked") and any(
                    _match(line.rsplit(":", 1)[0].strip(), p) for p in patterns)
                    for line in out.splitlines() if ":" in line):
                break
        by: dict[str, list[str]] = {}
        found: set[str] = set()
        for line in out.splitlines():
            if ":" not in line:
                continue
            mutant, status = (s.strip() for s in line.rsplit(":", 1))
            hits = [p for p in patterns if _match(mutant, p)]
            found.update(hits)
            if hits:
                by.setdefault(status, []).append(mutant)
        if set(by) == {"not checked"}:
            raise SystemExit(f"{name}: no mutant was tested (did the unmutated tests fail? "
                             f"see {log} with --keep)")
        # A function renamed or moved must not pass as "no survivors".
        missing = [p for p in patterns if p not in found]
        if missing:
            raise SystemExit(f"{name}: no mutant matches {missing}: has the function moved? "
                             f"(see {log} with --keep)")
        return by
    finally:
        if keep:
            print(f"  scratch folder kept: {dest}")
        else:
            shutil.rmtree(dest, ignore_errors=True)


def _match(name: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(name, pattern)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", choices=[*TARGETS, "signals", []], default=[])
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--only", action="append", default=[],
                    help="signals, guard, purge: only the hand mutants whose name contains this")
    ap.add_argument("--functions", action="append", default=[],
                    help="mutmut: only the target's patterns that contain this (e.g. "
                         "linked_not_sync)")
    ap.add_argument("--hand-only", action="store_true",
                    help="guard, purge: only their hand mutants, not mutmut")
    ap.add_argument("--max-children", type=int, default=1,
                    help="mutants tested at once (default 1: the machine is shared)")
    a = ap.parse_args()
    # Started in the background by a shell (`... &`), this process and every
    # child inherit SIGINT ignored, and the Ctrl-C tests cannot pass: give the
    # children the default back (a Python handler is reset to it at exec).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for name in a.targets or [*TARGETS, "signals"]:
        by = (run_signals(a.keep, a.only) if name == "signals"
              else {} if a.hand_only
              else run_target(name, a.keep, a.max_children, a.functions))
        if name in HAND_MUTANTS:
            hand = run_hand(name, HAND_MUTANTS[name], TARGETS[name][2], a.keep, a.only)
            for status, names in hand.items():
                by.setdefault(status, []).extend(f"hand: {n}" for n in names)
        total = sum(len(v) for v in by.values())
        killed = len(by.get("killed", []))
        counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(by.items()))
        score = f"{killed / total:.0%}" if total else "n/a"
        print(f"{name}: {total} mutants, {counts}; score {score}")
        for status in ("survived", "no tests", "timeout", "suspicious"):
            for m in by.get(status, []):
                print(f"  {status}: {m}")


if __name__ == "__main__":
    main()
