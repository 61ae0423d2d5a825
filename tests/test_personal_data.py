"""Personal data where RELIABILITY.md says there is none (issue 13, defect 9).

A file without a header row, an unparsable vCard, and the alert command's
environment, through the real CLI, the real daemon (its log, stderr, error
notes, runs table, alert command and webhook) and a real alert process.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest
from agent_helpers import Webhook, agent, cli, config_text, poll
from contactsync_agent import alerts

pytestmark = pytest.mark.timeout(120)

NAME, GIVEN = "Quillfeather", "Jannike"
EMAIL = "jannike.quill@privacy.example"
PHONE = "0412 555 123"


def leaks(text: str) -> list[str]:
    flat = text.replace(" ", "")
    return [v for v in (NAME, GIVEN, EMAIL, "jannike.quill", PHONE) if v in text] + (
        ["phone"] if PHONE.replace(" ", "") in flat else [])


def headerless(path: Path) -> Path:
    path.write_text(f"C1001,{NAME},{GIVEN},{EMAIL},{PHONE}\n"
                    "C1002,Other,Person,other@privacy.example,0400 000 002\n", encoding="utf-8")
    return path


def test_a_file_without_a_header_row_is_refused_without_quoting_it(tmp_path: Path) -> None:
    db = tmp_path / "mirror.db"
    f = headerless(tmp_path / "export.csv")
    p = cli("--db", str(db), "sync", "-s", "xpm", str(f))
    assert p.returncode == 3, p.stderr
    assert "line 1" in p.stderr and "5 column(s)" in p.stderr and str(f) in p.stderr
    assert leaks(p.stderr + p.stdout) == [], p.stderr
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    [(status, error)] = con.execute("SELECT status, error FROM runs").fetchall()
    con.close()
    assert status == "refused" and "no column maps to external_id" in error
    assert leaks(error) == []


ALERT_SCRIPT = """
import json, os, sys
out = sys.argv[1]
with open(out, "a") as f:
    f.write(json.dumps({"stdin": sys.stdin.read(), "env": dict(os.environ)}) + "\\n")
"""


def test_the_daemon_keeps_a_headerless_files_values_out_of_every_output(
        tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    script = tmp_path / "alert.py"
    script.write_text(ALERT_SCRIPT)
    got = tmp_path / "alerts.jsonl"
    with Webhook() as hook:
        config = tmp_path / "config.toml"
        config.write_text(config_text(
            tmp_path, sources={"xpm": {"path": str(inbox)}},
            alerts={"webhook": hook.url, "command": f"{sys.executable} {script} {got}"}))
        with agent(tmp_path, config) as a:
            headerless(inbox / "export.csv")
            poll(lambda: (inbox / "failed" / "export.csv.error.txt").exists(), timeout=30,
                 what="the refusal")
            poll(lambda: hook.received and got.exists(), timeout=30, what="the alerts")
            runs = a.runs("xpm")
            assert a.stop() == 0
        note = (inbox / "failed" / "export.csv.error.txt").read_text()
        outputs = {
            "note": note,
            "runs.error": " ".join(r["error"] or "" for r in runs),
            "log": a.log.read_text(),
            "stderr": a.stderr,
            "webhook": json.dumps(hook.received),
            "command": got.read_text(),
        }
    assert "no column maps to external_id" in note and runs[0]["status"] == "refused"
    assert {k: leaks(v) for k, v in outputs.items() if leaks(v)} == {}


def test_an_unparsable_vcard_is_quarantined_without_its_values_on_stderr(
        tmp_path: Path) -> None:
    f = tmp_path / "cards.vcf"
    f.write_text(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:ok-1\r\nFN:Fine Person\r\nEND:VCARD\r\n"
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:bad-2\r\n"
        f"FN:{GIVEN} {NAME}\r\nEMAIL;TYPE=INTERNET:{EMAIL}\r\n"
        f"this line has no colon {GIVEN} {EMAIL}\r\nEND:VCARD\r\n"
        f"stray text {NAME} {EMAIL}\r\n",
        encoding="utf-8")
    db = tmp_path / "mirror.db"
    p = cli("--db", str(db), "sync", "-s", "cards", "--format", "vcard", "--mode",
            "incremental", str(f))
    assert p.returncode == 0, p.stderr
    assert "card 2" in p.stderr and "cannot be parsed" in p.stderr
    assert "Traceback" not in p.stderr
    assert leaks(p.stderr + p.stdout) == [], p.stderr
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    reasons = [r[0] for r in con.execute("SELECT reason FROM quarantine")]
    con.close()
    assert len(reasons) == 1 and leaks(reasons[0]) == [], reasons


def test_an_alert_command_gets_a_minimal_environment(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's environment holds database passwords and API tokens; the
    alert command (a real process) sees PATH, HOME, LANG, TZ and the alert."""
    monkeypatch.setenv("PGPASSWORD", "s3cret-db-password")
    monkeypatch.setenv("CONTACTSYNC_HTTP_TOKEN", "s3cret-token")
    monkeypatch.setenv("TZ", "Australia/Sydney")
    monkeypatch.setenv("LANG", "en_AU.UTF-8")
    script = tmp_path / "alert.py"
    script.write_text(ALERT_SCRIPT)
    got = tmp_path / "alert.jsonl"
    alert = alerts.Alert("xpm", "failing", "healthy", ("last run refused",), "2026-01-01T00:00Z")
    alerts.run_command(f"{sys.executable} {script} {got}", alert.to_dict(), 10)
    seen = json.loads(got.read_text())
    env = seen["env"]
    assert json.loads(seen["stdin"])["state"] == "failing"
    assert env["CONTACTSYNC_ALERT_SOURCE"] == "xpm" and env["CONTACTSYNC_ALERT_STATE"] == "failing"
    assert env["TZ"] == "Australia/Sydney" and env["LANG"] == "en_AU.UTF-8"
    assert "PATH" in env
    assert "s3cret" not in json.dumps(env)
    allowed = {"PATH", "HOME", "LANG", "TZ", "CONTACTSYNC_ALERT_SOURCE",
               "CONTACTSYNC_ALERT_STATE", "CONTACTSYNC_ALERT_PREVIOUS",
               "CONTACTSYNC_ALERT_SUMMARY", "LC_CTYPE", "PWD"}  # the last two: Python/libc
    assert set(env) <= allowed, set(env) - allowed


@pytest.mark.parametrize(("message", "shown"), [
    ('invalid input syntax for type date: "1980-13-45"',
     'invalid input syntax for type date: "…"'),
    (f"value too long for type character varying(5): '{EMAIL}'",
     "value too long for type character varying(5): '…'"),
    ('relation "clients" does not exist', 'relation "clients" does not exist'),
    ('column "emial" does not exist', 'column "emial" does not exist'),
])
def test_a_database_drivers_error_keeps_names_of_objects_but_not_values(
        message: str, shown: str) -> None:
    from contactsync_agent.sources.sql import driver_message

    assert driver_message(message) == shown
