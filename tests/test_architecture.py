"""Architecture rules checked on the source itself (issue 14).

Every SQL statement on the mirror's connection lives in `store/`: no other module
of the package calls `.execute(`, `.executemany(`, `.executescript(` or
`sqlite3.connect(`. The check parses each module (ast), so a comment or a string
that mentions one of them does not count, and a call through any name does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import contactsync_agent

PACKAGE = Path(contactsync_agent.__file__).resolve().parent

#: Method names whose call runs SQL on a connection.
SQL_CALLS = frozenset({"execute", "executemany", "executescript"})

#: Modules (relative to the package) allowed to run SQL outside `store/`, and why.
ALLOWED: dict[str, str] = {
    # The SQL source reads the SOURCE's own database through SQLAlchemy
    # (`connection.execute(...)`): never the mirror.
    "sources/sql.py": "the source database, through SQLAlchemy",
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
