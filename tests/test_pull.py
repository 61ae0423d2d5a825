"""`contactsync sync --source NAME` without a FILE (issue 12): one pull of a
configured http or sql source (by its cursor, the mark moving with the commit),
or of a folder source's waiting files through the agent's own file handling.
The API twin is `runner.pull_source`."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import CLI, config_text, env, write_csv
from conftest_pg import postgres  # noqa: F401  (the session fixture of test_source_sql's db)
from contactsync_agent.config import load_config
from contactsync_agent.mirror import Mirror
from contactsync_agent.runner import pull_source
from test_source_http import Server, server  # noqa: F401  (the local API fixture)
from test_source_sql import SourceDb


def pull(cfg: Path, *args: str, extra_env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--config", str(cfg), "sync", *args], capture_output=True,
                          text=True, env={**env(), **(extra_env or {})}, timeout=120,
                          check=False)


def mark(db_file: Path, source: str) -> str | None:
    conn = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key LIKE ?",
                           (f"%{source}%mark%",)).fetchone()
        return None if row is None else str(row[0])
    finally:
        conn.close()


def runs(db_file: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT id, source, status, records FROM runs ORDER BY id").fetchall()
    finally:
        conn.close()


def test_an_http_source_is_pulled_once_by_its_cursor(request: pytest.FixtureRequest,
                                                     tmp_path: Path) -> None:
    api_server: Server = request.getfixturevalue("server")
    api = api_server.api
    api.seed(25)
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={"api": {
        "kind": "http", "mode": "incremental", "url": f"{api_server.url}/contacts",
        "items_field": "data", "next_field": "links.next", "cursor_field": "updated_at",
        "page_size": 10, "id_field": "id", "timeout": 5, "max_retries": 0,
        "mapping": {"first_name": "given_name", "last_name": "family_name"}}}))
    db_file = tmp_path / "mirror.db"

    first = pull(cfg, "--source", "api", "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert (report["source"], report["mode"], report["status"]) == ("api", "incremental", "ok")
    assert report["counts"]["created"] == 25 and report["counts"]["records"] == 25
    assert not any("modified_since" in r["query"] for r in api.requests)
    first_mark = mark(db_file, "api")
    assert first_mark is not None

    api.put("P003", first_name="Changed")
    api.put("P030", first_name="New", last_name="Person")
    api.requests.clear()
    second = pull(cfg, "--source", "api")
    assert second.returncode == 0, second.stderr
    assert "(incremental) of api: 2 records" in second.stdout
    assert "1 created" in second.stdout and "1 updated" in second.stdout
    assert api.requests[0]["query"].get("modified_since")  # from the stored cursor
    second_mark = mark(db_file, "api")
    assert second_mark != first_mark

    # A pull that fails leaves the cursor where the last committed run put it.
    api.put("P004", first_name="Later")
    api.always_fail = 500
    failed = pull(cfg, "--source", "api")
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert mark(db_file, "api") == second_mark
    api.always_fail = None
    again = pull(cfg, "--source", "api", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["counts"]["updated"] == 1
    with Mirror.open(db_file, readonly=True) as m:
        names = {c.external_id: c.given_name for c in m.contacts()}
    assert (names["P003"], names["P004"], names["P030"]) == ("Changed", "Later", "New")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_sql_source_is_pulled_once_by_its_cursor(backend: str, request: pytest.FixtureRequest,
                                                   tmp_path: Path) -> None:
    if backend == "sqlite":
        db = SourceDb(f"sqlite:///{tmp_path / 'pms.sqlite'}", "sqlite")
    else:
        db = SourceDb(request.getfixturevalue("postgres").url(), "postgresql")
    request.addfinalizer(db.engine.dispose)
    db.add(12, minute=0)
    src = db.source()
    cfg = tmp_path / "config.toml"
    options = {k: v for k, v in src.options.items() if k != "url"}
    cfg.write_text(config_text(tmp_path, sources={"pms": {
        "kind": "sql", "mode": "incremental", "url_env": "PMS_URL", **options,
        "mapping": dict(src.mapping)}}))
    db_file = tmp_path / "mirror.db"
    secret = {"PMS_URL": db.url}

    first = pull(cfg, "--source", "pms", "--json", extra_env=secret)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["counts"]["created"] == 12
    db.touch(["C0002"], minute=5, suburb="Penrith")
    db.add(1, start=12, minute=6)
    second = pull(cfg, "--source", "pms", "--json", extra_env=secret)
    assert second.returncode == 0, second.stderr
    counts = json.loads(second.stdout)["counts"]
    assert (counts["records"], counts["updated"], counts["created"]) == (2, 1, 1)
    assert [r[1:] for r in runs(db_file)] == [("pms", "ok", 12), ("pms", "ok", 2)]
    with Mirror.open(db_file, readonly=True) as m:
        assert {c.external_id: c.city for c in m.contacts()}["C0002"] == "Penrith"


def _folder_config(tmp_path: Path) -> tuple[Path, Path]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={"drop": {"path": str(inbox),
                                                           "settle_seconds": 30}}))
    return cfg, inbox


def test_a_folder_source_syncs_its_waiting_files_as_the_agent_would(tmp_path: Path) -> None:
    cfg, inbox = _folder_config(tmp_path)
    db_file = tmp_path / "mirror.db"
    write_csv(inbox / "a.csv", 5)
    os.utime(inbox / "a.csv", (1_000_000, 1_000_000))  # the older file goes first
    (inbox / "bad.csv").write_text("Foo,Bar\n1,2\n")
    (inbox / "notes.txt").write_text("not an export")

    p = pull(cfg, "--source", "drop", "--json")
    assert p.returncode == 4, p.stdout + p.stderr  # a file was refused
    out = json.loads(p.stdout)
    assert [(f["file"], f["status"], f["moved_to"]) for f in out["files"]] == [
        ("a.csv", "ok", "processed"), ("bad.csv", "refused", "failed")]
    assert out["files"][0]["run"]["counts"]["created"] == 5
    assert "no column maps to external_id" in out["files"][1]["run"]["error"]
    assert sorted(x.name for x in inbox.iterdir()) == ["failed", "notes.txt", "processed"]
    assert (inbox / "processed" / "a.csv").exists()
    assert (inbox / "failed" / "bad.csv.error.txt").exists()  # the agent's own note
    assert [r[1:3] for r in runs(db_file)] == [("drop", "ok"), ("drop", "refused")]

    # The same refused content again: not run again (the agent's memory), moved aside.
    (inbox / "bad2.csv").write_text("Foo,Bar\n1,2\n")
    write_csv(inbox / "b.csv", 7)
    config = load_config(cfg)
    with Mirror.open(db_file) as m:
        report = pull_source(m, config, "drop")  # the API twin
    got = {f.file: (f.status, f.moved_to) for f in report.files}
    assert got == {"b.csv": ("ok", "processed"), "bad2.csv": ("refused", "failed")}
    assert report.files and not report.ok
    assert len(runs(db_file)) == 3  # b.csv's run only

    empty = pull(cfg, "--source", "drop")
    assert empty.returncode == 0 and "no files waiting" in empty.stdout


def test_a_pull_needs_a_configured_source(tmp_path: Path) -> None:
    cfg, _ = _folder_config(tmp_path)
    p = pull(cfg, "--source", "drpo")
    assert p.returncode == 2 and "no source 'drpo' in the config (sources: drop)" in p.stderr
    p = pull(cfg, "--source", "drop", "--format", "csv")
    assert p.returncode == 2 and "applies to a FILE" in p.stderr
    p = pull(cfg, "--source", "drop", "--allow-mass-delete")
    assert p.returncode == 1 and "confirm a refused file by naming it" in p.stderr


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
