"""What a new user tripped over, through the real `contactsync` command (and the
API twin): `contacts add` with nothing to add, the --wait / CONTACTSYNC_WAIT
texts, and `sync --json` printing its errors as JSON on stdout too.

Real processes throughout; the writer lock is held by another real process, and
waits are on conditions (it printed "held"), never on fixed sleeps."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from agent_helpers import CLI, env
from contactsync_agent.errors import ContactSyncError, LockedError
from contactsync_agent.mirror import Mirror


def run(*args: str, extra_env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True,
                          env={**env(), **(extra_env or {})}, timeout=timeout, check=False)


# ---------------------------------------------------------------- contacts add, nothing given


def test_contacts_add_with_no_field_is_a_usage_error(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    r = run("--db", str(db), "contacts", "add")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "nothing to add" in r.stderr and "--name" in r.stderr
    r = run("--db", str(db), "contacts", "add", "--type", "external", "--source", "other",
            "--external-id", "E1", "--email", "")
    assert r.returncode == 2, r.stdout + r.stderr
    if db.exists():
        with Mirror.open(db, readonly=True) as m:
            assert m.count_contacts() == 0
    ok = run("--db", str(db), "contacts", "add", "--email", "ann@example.com", "--json")
    assert ok.returncode == 0, ok.stderr
    assert isinstance(json.loads(ok.stdout)["id"], int)


def test_add_contact_with_no_field_is_refused_by_the_api(tmp_path: Path) -> None:
    with Mirror.open(tmp_path / "m.db") as m:
        with pytest.raises(ContactSyncError, match="at least one"):
            m.add_contact()
        with pytest.raises(ContactSyncError, match="at least one"):
            m.add_contact(name="  ", email="", record_type="external", source="o",
                          external_id="E1")
        assert m.count_contacts() == 0 and m.changes() == []
        assert m.add_contact(organisation="Acme Pty Ltd") > 0
        assert m.add_contact(extra={"X-ABN": "51 824 753 556"}) > 0


# ---------------------------------------------------------------- --wait under 10 s


def test_a_short_wait_is_told_with_its_decimal(
    holder: tuple[subprocess.Popen[str], Path],
) -> None:
    proc, db = holder
    r = run("--db", str(db), "--wait", "0.5", "contacts", "add", "--name", "Bo Wait")
    assert r.returncode == 5, r.stdout + r.stderr
    assert "(up to 0.5s; --wait to change)" in r.stderr
    assert f"still locked by process {proc.pid} after waiting 0.5s" in r.stderr
    assert "0s" not in r.stderr.replace("0.5s", "")


def test_locked_error_seconds() -> None:
    assert "after waiting 0.5s" in str(LockedError("m.db", 1, waited=0.5))
    assert "after waiting 2.0s" in str(LockedError("m.db", 1, waited=2))
    assert "after waiting 30s" in str(LockedError("m.db", 1, waited=30))


def test_a_bad_contactsync_wait_names_the_variable(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        m.add_contact(name="Ann Example")
    for bad in ("abc", "-1"):
        r = run("--db", str(db), "contacts", "list", extra_env={"CONTACTSYNC_WAIT": bad})
        assert r.returncode == 2, r.stdout + r.stderr
        assert "CONTACTSYNC_WAIT" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    # Typed on the command line, the option alone is named (no variable was involved).
    r = run("--db", str(db), "--wait", "abc", "contacts", "list")
    assert r.returncode == 2 and "'--wait'" in r.stderr and "CONTACTSYNC_WAIT" not in r.stderr
    ok = run("--db", str(db), "contacts", "list", extra_env={"CONTACTSYNC_WAIT": "0.5"})
    assert ok.returncode == 0, ok.stderr


# ---------------------------------------------------------------- sync --json on errors


def test_sync_json_prints_a_refused_file_as_json(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    bad = tmp_path / "x.vcf"
    bad.write_text("name,email\nJane,jane@example.com\n", encoding="utf-8")
    r = run("--db", str(db), "sync", "-s", "cards", str(bad), "--json")
    assert r.returncode == 3, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "refused" and out["exit_code"] == 3
    assert "x.vcf" in out["error"] and "not a vCard" in out["error"]
    assert "contactsync: error:" in r.stderr  # the stderr line stays
    # Without --json: nothing on stdout, as before.
    plain = run("--db", str(db), "sync", "-s", "cards", str(bad))
    assert plain.returncode == 3 and plain.stdout == ""


def test_sync_json_prints_an_unreadable_file_as_json(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    r = run("--db", str(db), "sync", "-s", "cards", str(tmp_path / "missing.csv"), "--json")
    assert r.returncode != 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out == {"status": "error", "error": out["error"], "exit_code": r.returncode}
    assert "missing.csv" in out["error"]
