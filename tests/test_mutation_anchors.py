"""The hand mutants of `benches/mutation.py signals` still find their text.

Each hand mutant is a text edit anchored on code (so it survives files moving);
when the code is reworded the edit finds nothing and the mutation run stops
half-way. This keeps every anchor pointing at exactly one place in the package.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import contactsync_agent

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(contactsync_agent.__file__).resolve().parent


def _mutation_module():  # type: ignore[no-untyped-def]
    path = ROOT / "benches" / "mutation.py"
    spec = importlib.util.spec_from_file_location("mutation_bench", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


def test_every_hand_mutant_edit_is_found_exactly_once() -> None:
    mutants = _mutation_module().SIGNAL_MUTANTS
    texts = [p.read_text(encoding="utf-8") for p in sorted(PACKAGE.rglob("*.py"))]
    assert len(mutants) >= 20
    stale = [f"{m.name}: found {n} times: {old[:60]!r}"
             for m in mutants for old, _ in m.edits
             if (n := sum(t.count(old) for t in texts)) != 1]
    assert not stale, "hand mutants whose text moved:\n" + "\n".join(stale)
