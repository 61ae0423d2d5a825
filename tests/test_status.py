"""`contactsync status`: read-only, fast during an import, exit codes 0 / 1 / 2
(3, unknown, and the monitoring forms: tests/test_monitoring.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_helpers import CLI, agent, cli, config_text, env, poll, write_csv
from contactsync_agent.errors import SafetyLimitError, SourceFormatError
from contactsync_agent.mirror import Mirror

pytestmark = pytest.mark.timeout(120)


def status(db: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("--db", str(db), "status", *extra)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "mirror.db"


def test_exit_0_when_healthy(db: Path, tmp_path: Path) -> None:
    with Mirror.open(db) as m:
        m.sync_file("xpm", write_csv(tmp_path / "a.csv", 5))
    r = status(db, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["health"] == "healthy"
    assert data["contacts"]["total"] == 5
    [src] = data["sources"]
    assert src["name"] == "xpm" and src["last_run"]["created"] == 5
    assert data["daemon"]["state"] == "never started"
    # The table for a person says the same.
    r = status(db)
    assert r.returncode == 0 and "xpm" in r.stdout and "healthy" in r.stdout


def test_exit_1_when_degraded(db: Path, tmp_path: Path) -> None:
    bad_row = tmp_path / "b.csv"
    bad_row.write_text("Client ID,First Name\nX1,Ann\n,no id\n")
    with Mirror.open(db) as m:
        m.sync_file("xpm", bad_row)
    r = status(db, "--json")
    assert r.returncode == 1, r.stdout
    data = json.loads(r.stdout)
    assert data["health"] == "degraded" and data["quarantined_rows"] == 1
    assert "rejected 1 row" in data["sources"][0]["why"]


def test_exit_2_when_failing(db: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("Foo,Bar\n1,2\n")
    with Mirror.open(db) as m, pytest.raises(SourceFormatError):
        m.sync_file("xpm", bad)
    r = status(db, "--json")
    assert r.returncode == 2, r.stdout
    assert json.loads(r.stdout)["sources"][0]["health"] == "failing"


def test_exit_2_when_the_agent_died(db: Path, tmp_path: Path) -> None:
    with Mirror.open(db) as m:
        m.sync_file("xpm", write_csv(tmp_path / "a.csv", 2))
        dead = subprocess.Popen(["true"])
        dead.wait()
        with m.store.transaction():
            for k, v in {
                "daemon.pid": str(dead.pid),
                "daemon.state": "running",
                "daemon.host": __import__("socket").gethostname(),
                "daemon.started_at": "2025-01-01T00:00:00Z",
                "daemon.heartbeat_at": "2025-01-01T00:00:00Z",
            }.items():
                m.store.set_meta(k, v)
    r = status(db, "--json")
    assert r.returncode == 2
    d = json.loads(r.stdout)["daemon"]
    assert d["state"] == "died" and not d["running"]


def test_status_json_answers_during_an_import_without_waiting_for_it(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        config_text(
            tmp_path,
            sources={"xpm": {"path": str(inbox), "settle_seconds": 0.2, "chunk_size": 2000}},
        )
    )
    with agent(tmp_path, cfg) as a:
        write_csv(inbox / "big.csv", 60_000)
        poll(
            lambda: any(r["status"] == "running" for r in a.runs()),
            interval=0.01,
            what="the import to start",
        )
        timings = []
        during = 0
        for _ in range(3):
            t = time.monotonic()
            r = subprocess.run(
                [*CLI, "--config", str(cfg), "status", "--json"],
                capture_output=True,
                text=True,
                env=env(),
                timeout=30,
                check=False,
            )
            timings.append(time.monotonic() - t)
            assert r.returncode in (0, 1), r.stderr
            data = json.loads(r.stdout)
            assert data["daemon"]["running"] is True
            # Answered while the run was still open: status never waits for a run.
            during += bool(data["daemon"]["current_run"])
        assert data["daemon"]["pid"] == a.proc.pid  # type: ignore[union-attr]
        assert during >= 1, "no status answer came while the import was running"
        print(f"status during an import: {', '.join(f'{t:.2f}s' for t in timings)} "
              f"(the CLI alone imports in {_cli_import_seconds():.2f}s)")
        poll(lambda: a.contacts() == 60_000, timeout=60, what="the import to finish")
        assert a.stop() == 0


def _cli_import_seconds() -> float:
    """How long loading the CLI with all its extensions takes (the usual culprit)."""
    code = (
        "import time; t = time.monotonic(); import contactsync_agent.cli as c; "
        "c._load_extensions(); print(time.monotonic() - t)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env(),
        timeout=30,
        check=True,
    )
    return float(r.stdout)


def test_only_enabled_configured_sources_are_judged_when_a_config_exists(
    db: Path, tmp_path: Path
) -> None:
    """A one-off import into a source the config does not list (refused, or with a
    quarantined row) is listed with its last run but does not set the health."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    bad = tmp_path / "bad.csv"
    bad.write_text("Foo,Bar\n1,2\n")
    bad_row = tmp_path / "b.csv"
    bad_row.write_text("Client ID,First Name\nX1,Ann\n,no id\n")
    with Mirror.open(db) as m:
        m.sync_file("xpm", write_csv(tmp_path / "a.csv", 5))
        with pytest.raises(SourceFormatError):
            m.sync_file("t2", bad)
        m.sync_file("t3", bad_row)
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={"xpm": {"path": str(inbox)}}))
    r = cli("--config", str(cfg), "--db", str(db), "status", "--json")
    # Degraded only because no agent runs for the enabled xpm (t2's refusal
    # would be failing, exit 2, were it judged).
    assert r.returncode == 1, r.stdout
    data = json.loads(r.stdout)
    assert data["health"] == "degraded" and data["daemon"]["health"] == "degraded"
    by = {s["name"]: s for s in data["sources"]}
    assert by["xpm"]["health"] == "healthy"
    assert by["xpm"]["judged"] is True
    assert by["t2"]["judged"] is False and by["t2"]["last_run"]["status"] == "refused"
    assert by["t3"]["judged"] is False and by["t3"]["last_run"]["status"] == "ok"
    wide = {**env(), "COLUMNS": "250"}  # one table row per source, whatever the terminal
    r = subprocess.run([*CLI, "--config", str(cfg), "--db", str(db), "status", "--format",
                        "table"],
                       capture_output=True, text=True, env=wide, timeout=30, check=False)
    assert r.returncode == 1, r.stdout
    t2 = next(line for line in r.stdout.splitlines() if line.strip("│ ").startswith("t2"))
    # In a pipe (TSV, the default there) the same says judged = false.
    piped = cli("--config", str(cfg), "--db", str(db), "status")
    assert "t2\tfalse\tfalse\t" in piped.stdout
    assert "not judged" in t2
    # Without a config file every source with runs is judged, as before.
    r = cli("--config", str(tmp_path / "absent.toml"), "--db", str(db), "status", "--json")
    assert r.returncode == 3  # the named config file is missing: unknown, not a verdict
    r = status(db, "--json")
    assert r.returncode == 2, r.stdout
    assert all(s["judged"] for s in json.loads(r.stdout)["sources"])


def test_a_missing_database_is_failing_and_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "mirorr.db"
    r = status(missing)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"no mirror database at {missing}" in r.stdout + r.stderr
    assert "--db / CONTACTSYNC_DB" in r.stdout + r.stderr
    r = status(missing, "--json")
    assert r.returncode == 2, (r.stdout, r.stderr)
    data = json.loads(r.stdout)
    assert data["health"] == "failing" and data["database"] == str(missing)
    assert f"no mirror database at {missing}" in data["why"]
    assert not missing.exists() and not missing.parent.exists()


def test_a_refusal_reads_once_and_names_the_file(db: Path, tmp_path: Path) -> None:
    bad = tmp_path / "export\x1b[2J.csv"
    write_csv(bad, 10)
    with Mirror.open(db) as m:
        m.sync_file("xpm", write_csv(tmp_path / "a.csv", 10))
        with pytest.raises(SafetyLimitError):
            m.sync_file("xpm", write_csv(bad, 1))
    r = status(db, "--json")
    assert r.returncode == 2, r.stdout
    why = json.loads(r.stdout)["sources"][0]["why"]
    assert "refused: refused" not in why and why.count("refused") == 1, why
    assert "export\\x1b[2J.csv" in why and "\x1b" not in why, why
