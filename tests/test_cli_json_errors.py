"""Every --json command answers an error with one JSON object on stdout (a
stranger found `contacts edit --json` silent on stdout: exit 6/7, nothing to
parse), whichever module registered the command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from contactsync_agent.mirror import Mirror

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sample-export.csv"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "m.db"
    with Mirror.open(path) as m:
        m.sync_file("s", SAMPLE)
    return path


@pytest.mark.parametrize(("args", "code"), [
    (["contacts", "edit", "999", "--city", "X", "--json"], 6),   # cli_entities
    (["contacts", "edit", "3", "--city", "X", "--json"], 7),     # a field the source owns
        (["contacts", "show", "999", "--json"], 6),                  # cli.py itself
])
def test_an_error_is_one_json_object_on_stdout(db: Path, args: list[str], code: int) -> None:
    r = subprocess.run([sys.executable, "-m", "contactsync_agent.cli", "--db", str(db), *args],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == code, (r.stdout, r.stderr)
    body = json.loads(r.stdout)
    assert body["status"] in ("error", "refused") and body["exit_code"] == code
    assert body["error"]


def test_a_database_error_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-mirror.db"
    bad.write_bytes(b"\x00garbage" * 600)
    r = subprocess.run([sys.executable, "-m", "contactsync_agent.cli", "--db", str(bad),
                        "contacts", "list", "--json"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 1
    assert f"database error: {bad}: file is not a database" in r.stderr
    assert str(bad) in json.loads(r.stdout)["error"]
