"""Mutation check of the guarantees: mutmut over the code that keeps data safe.

mutmut 3 wants the package under `src/` (it imports the mutated copy from
`mutants/src`), so this script copies the tracked tree into a scratch folder
with `python/` renamed `src/`, adds the built extension and a `[tool.mutmut]`
section, and runs mutmut there on the functions named below, each with the
tests that speak for it. Nothing in the checkout changes.

    .venv/bin/python benches/mutation.py            # every target
    .venv/bin/python benches/mutation.py guard      # one target
    .venv/bin/python benches/mutation.py --keep     # keep the scratch folder

It prints, per target, killed / survived / no tests / timeouts and the names
of the surviving mutants (`mutmut show NAME` in the scratch folder shows one).
Run by hand (minutes to tens of minutes on 2 cores); not part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = "contactsync_agent"

# target: (files to mutate, mutant name patterns, the tests that speak for them)
TARGETS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "guard": (
        ["rules.py", "sync.py"],
        [f"{PKG}.rules.x_check_deletion_guard*", f"{PKG}.rules.x_decide_deletion*",
         f"{PKG}.sync.x__deletions*", f"{PKG}.sync.x__column_guard*",
         f"{PKG}.sync.xǁ_Runǁguard*"],
        # Not the stateful model test: it finds these too, but shrinking a failure
        # takes minutes, which a run over hundreds of mutants cannot pay.
        ["tests/test_rules_deletion.py", "tests/test_data_safety.py", "tests/test_sync_rules.py",
         "tests/test_spec_examples.py", "tests/test_properties.py"],
    ),
    "purge": (
        ["maintenance.py"],
        [f"{PKG}.maintenance.x_purge*"],
        ["tests/test_maintenance.py::test_purge_erases_deleted_contacts_and_their_payloads",
         "tests/test_maintenance.py::test_purge_of_the_highest_id_never_lets_ids_go_back",
         "tests/test_maintenance.py::test_purge_keeps_contacts_in_use_and_blanks_old_quarantine",
         "tests/test_wal_erasure.py::test_purge_erases_every_table_and_the_wal_before_close",
         "tests/test_wal_erasure.py::test_purge_blanks_values_of_purged_contacts_at_any_age",
         "tests/test_wal_erasure.py::"
         "test_purge_with_a_reader_holding_a_transaction_says_the_erasure_is_pending",
         "tests/test_properties.py::test_local_ids_are_never_reused",
         "tests/test_properties.py::test_the_feed_replayed_from_zero_is_the_contacts_table"],
    ),
    "durability": (
        ["store.py"],
        [f"{PKG}.store.xǁStoreǁopen*"],
        ["tests/test_wal_erasure.py::test_the_durability_pragmas_hold_on_the_writer_connection",
         "tests/test_store.py"],
    ),
}


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
        "also_copy": [*so, f"src/{PKG}/_core.pyi", f"src/{PKG}/py.typed", "benches/"],
        "pytest_add_cli_args_test_selection": tests,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q", "-x", "--timeout", "120"],
        # Not forked from a process that ran the tests: the core's thread pool
        # does not survive a fork (every mutant would time out).
        "process_isolation": "forkserver",
    }
    lines = ["", "[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in section.items()]
    pyproject.write_text(text + "\n".join(lines) + "\n")


def run_target(name: str, keep: bool, children: int) -> dict[str, list[str]]:
    files, patterns, tests = TARGETS[name]
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
        for line in out.splitlines():
            if ":" not in line:
                continue
            mutant, status = (s.strip() for s in line.rsplit(":", 1))
            if any(_match(mutant, p) for p in patterns):
                by.setdefault(status, []).append(mutant)
        if not by:
            by["not run"] = patterns
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
    ap.add_argument("targets", nargs="*", choices=[*TARGETS, []], default=[])
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--max-children", type=int, default=1,
                    help="mutants tested at once (default 1: the machine is shared)")
    a = ap.parse_args()
    for name in a.targets or list(TARGETS):
        by = run_target(name, a.keep, a.max_children)
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
