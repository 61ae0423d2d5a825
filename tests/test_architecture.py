"""Architecture rules checked on the source itself (issue 14).

Every SQL statement on the mirror's connection lives in `store/`: no other module
of the package calls `.execute(`, `.executemany(`, `.executescript(` or
`sqlite3.connect(`. The check parses each module (ast), so a comment or a string
that mentions one of them does not count, and a call through any name does.

The package's layers import one way: the import-linter contract in pyproject.toml
(`[tool.importlinter]`), run here by the real `lint-imports`, on the package and
on a copy given one upward import (which it must refuse).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import contactsync_agent

PACKAGE = Path(contactsync_agent.__file__).resolve().parent
ROOT = PACKAGE.parent.parent  # the checkout: pyproject.toml holds the contract
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

#: Method names whose call runs SQL on a connection.
SQL_CALLS = frozenset({"execute", "executemany", "executescript"})

#: Modules (relative to the package) allowed to run SQL outside `store/`, and why.
ALLOWED: dict[str, str] = {
    # The SQL source reads the SOURCE's own database through SQLAlchemy
    # (`connection.execute(...)`): never the mirror.
    "sources/sql.py": "the source database, through SQLAlchemy",
    # Its writer (two-way sync) writes the SOURCE's own table: never the mirror.
    "sources/sql_writer.py": "the source database's table, through SQLAlchemy",
}


def _sql_calls(path: Path) -> list[str]:
    """`file:line: call` for every SQL call in one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        func = node.func
        if func.attr in SQL_CALLS:
            found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: .{func.attr}(")
        elif (func.attr == "connect" and isinstance(func.value, ast.Name)
              and func.value.id == "sqlite3"):
            found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: sqlite3.connect(")
    return found


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_check_sees_the_package_and_the_store() -> None:
    """The scan is not vacuous: it finds the package's modules and the store's own SQL."""
    modules = [p.relative_to(PACKAGE).as_posix() for p in _modules()]
    assert "sync.py" in modules and "mirror.py" in modules
    store_calls = [c for p in _modules() if p.relative_to(PACKAGE).parts[0] == "store"
                   for c in _sql_calls(p)]
    assert len(store_calls) > 50


def test_no_sql_outside_the_store() -> None:
    offenders: list[str] = []
    for path in _modules():
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "store" or rel.as_posix() in ALLOWED:
            continue
        offenders.extend(_sql_calls(path))
    assert not offenders, (
        "SQL on the mirror belongs in contactsync_agent/store/ (name a store method):\n"
        + "\n".join(offenders)
    )


def test_the_allow_list_is_still_needed() -> None:
    """An allow-listed module that no longer runs SQL leaves the list."""
    for rel in ALLOWED:
        assert _sql_calls(PACKAGE / rel), f"{rel} no longer runs SQL: remove it from ALLOWED"


# ------------------------------------------------------------------ layers


def _lint_imports(pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:  # analyse the package found there instead
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_layers_contract_is_kept() -> None:
    assert (ROOT / "pyproject.toml").is_file() and LINT_IMPORTS.is_file()
    r = _lint_imports()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 kept, 0 broken" in r.stdout, r.stdout


def test_the_contract_refuses_an_upward_import(tmp_path: Path) -> None:
    """Not vacuous: a connector that imports the mirror (as `sources/` once did)
    breaks the contract, and the report names the import."""
    copy = tmp_path / "contactsync_agent"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    base = copy / "sources" / "base.py"
    base.write_text(base.read_text(encoding="utf-8")
                    + "\nfrom contactsync_agent.mirror import Mirror  # noqa\n",
                    encoding="utf-8")
    r = _lint_imports(tmp_path)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "BROKEN" in r.stdout
    assert "contactsync_agent.sources.base -> contactsync_agent.mirror" in r.stdout, r.stdout


def test_only_core_is_taken_from_the_package_root() -> None:
    """The contract leaves out imports of the package root (`_core` looks like one
    to grimp): so no module may take anything else from the root, whose
    __init__ imports the mirror. Submodules named through it are fine."""
    offenders: list[str] = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module == "contactsync_agent":
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name.removeprefix("contactsync_agent.") for a in node.names
                         if a.name.startswith("contactsync_agent")]
            for name in names:
                if name == "_core" or (PACKAGE / f"{name}.py").is_file() \
                        or (PACKAGE / name / "__init__.py").is_file():
                    continue
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {name}")
    assert not offenders, "imported from the package root (import its module instead):\n" \
        + "\n".join(offenders)


def test_every_module_has_a_layer() -> None:
    """A layers contract says nothing of a module it does not name: every
    top-level module and sub-package of the package is in one of its layers."""
    import tomllib

    contract = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    layers = contract["tool"]["importlinter"]["contracts"][0]["layers"]
    named = {m.strip() for layer in layers for m in layer.replace("|", ":").split(":")}
    here = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    here |= {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert here - named == set(), f"modules in no layer of the contract: {sorted(here - named)}"


def test_mypy_checks_the_package_strict() -> None:
    """`make lint` (run by .ci/run) runs mypy on the package with pyproject's settings."""
    import tomllib

    conf = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert conf["tool"]["mypy"]["strict"] is True
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "$(BIN)/mypy python/contactsync_agent" in make and "make lint" in (
        ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_the_cli_goes_through_the_api() -> None:
    """The CLI is a thin layer over the Python API: no command reaches into the
    mirror's store (`m.store...`); what it needs is a Mirror method a library
    user can call too (`history`, `match_records`, `purge`, ...)."""
    offenders: list[str] = []
    # The web console (issue 17) is held to the same rule: no `.store`, no store import.
    web = sorted((PACKAGE / "web").glob("*.py"))
    for path in [*sorted(PACKAGE.glob("cli*.py")), *web]:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        offenders += [f"{path.name}:{n.lineno}" for n in ast.walk(tree)
                      if (isinstance(n, ast.Attribute) and n.attr == "store")
                      or (isinstance(n, ast.ImportFrom) and path in web
                          and (n.module or "").startswith("contactsync_agent.store"))]
    assert len(list(PACKAGE.glob("cli*.py"))) >= 5 and len(web) >= 4
    assert not offenders, "the CLI reaches into the store at: " + ", ".join(offenders)
