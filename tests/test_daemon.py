"""The real agent (`contactsync daemon`) as a subprocess on a real watched folder."""

from __future__ import annotations

import itertools
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from agent_helpers import (
    CLI,
    HEADER,
    Agent,
    agent,
    config_text,
    csv_rows,
    env,
    now_iso,
    poll,
    write_csv,
)

pytestmark = pytest.mark.timeout(120)


def setup(tmp_path: Path, **source: object) -> tuple[Path, Path]:
    inbox = tmp_path / "in"
    inbox.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={"xpm": {"path": str(inbox), **source}}))
    return cfg, inbox


def ok_runs(a: Agent) -> list[dict[str, object]]:
    return [r for r in a.runs() if r["status"] == "ok"]


def test_file_written_slowly_in_pieces_is_imported_once_whole(tmp_path: Path) -> None:
    cfg, inbox = setup(tmp_path, settle_seconds=1.0)
    data = (HEADER + csv_rows(500)).encode()
    with agent(tmp_path, cfg) as a:
        target = inbox / "export.csv"
        # Pieces cut mid-line, with pauses shorter than the settle period: a reader
        # taking the file early would import part of it (or a broken last row).
        cuts = [0, 1000, 5000, 12000, 20000, len(data)]
        with open(target, "wb") as f:
            for lo, hi in itertools.pairwise(cuts):
                f.write(data[lo:hi])
                f.flush()
                time.sleep(0.4)  # the slow writer, not a wait for the agent
        written = now_iso()
        done = inbox / "processed" / "export.csv"
        poll(done.exists, what="the import and move")
        assert done.read_bytes() == data
        a.heartbeats_after(written, 3)
        runs = a.runs()
        assert len(runs) == 1, runs
        assert runs[0]["records"] == 500 and runs[0]["created"] == 500
        assert runs[0]["rejected"] == 0
        assert a.contacts("xpm") == 500
        assert not (inbox / "export.csv").exists()


def test_temp_and_editor_files_are_ignored(tmp_path: Path) -> None:
    cfg, inbox = setup(tmp_path, settle_seconds=0.3)
    junk = ["~$export.csv", "export.csv.tmp", "export.csv.part", ".export.csv", "export.tmp"]
    with agent(tmp_path, cfg) as a:
        for name in junk:
            write_csv(inbox / name, 3, start=100)
        write_csv(inbox / "real.csv", 7)
        poll(lambda: ok_runs(a), what="the real file's run")
        a.heartbeats_after(now_iso(), 2)
        runs = a.runs()
        assert len(runs) == 1 and runs[0]["records"] == 7
        assert runs[0]["origin"].endswith("real.csv")
        for name in junk:
            assert (inbox / name).exists(), name
        assert not (inbox / "failed").exists()


def test_file_present_before_start_is_imported(tmp_path: Path) -> None:
    cfg, inbox = setup(tmp_path, settle_seconds=0.3)
    write_csv(inbox / "waiting.csv", 25)
    with agent(tmp_path, cfg) as a:
        poll(lambda: ok_runs(a), what="the import of the waiting file")
        assert a.contacts("xpm") == 25
        poll(lambda: (inbox / "processed" / "waiting.csv").exists(), what="the move")
        assert a.stop() == 0


def test_sigterm_mid_import_exits_0_and_leaves_no_partial_run(tmp_path: Path) -> None:
    """SIGTERM proven to land inside a run: the signal goes only once the agent has
    logged the run's progress (its first batches are written, inside the run's
    transaction), and the run must then be rolled back whole: status aborted, none
    of its contacts or feed entries, the file left for the next start. (Without
    the SIGTERM handler the process dies by the signal; without the check between
    batches the run commits: either way this fails.)"""
    n = 100_000
    inbox = tmp_path / "in"
    inbox.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(
        tmp_path,
        sources={"xpm": {"path": str(inbox), "settle_seconds": 0.2, "chunk_size": 500}},
        agent={"log_level": "DEBUG"},
    ))
    mark = re.compile(r"source xpm: run in progress, (\d+) records so far")
    with agent(tmp_path, cfg) as a:
        write_csv(inbox / "big.csv", n)
        seen = poll(
            lambda: a.log.exists() and mark.search(a.log.read_text()),
            timeout=60,
            what="the run's first progress mark",
            interval=0.005,
        )
        sent = time.monotonic()
        a.signal(signal.SIGTERM)
        assert a.stop(timeout=10) == 0, a.stderr
        assert time.monotonic() - sent < 10
        assert 0 < int(seen.group(1)) < n
        [run] = a.runs()
        assert run["status"] == "aborted", run
        assert run["error"].startswith("stopped:"), run
        assert a.contacts() == 0
        assert a.query("SELECT count(*) FROM changes")[0][0] == 0
        assert a.query("SELECT count(*) FROM contacts")[0][0] == 0
        assert (inbox / "big.csv").exists()
        log = a.log.read_text()
        assert "rolled back (stopping)" in log and "stopped (SIGTERM)" in log
    # The next start converges: the file is imported whole.
    with agent(tmp_path, cfg) as b:
        poll(lambda: ok_runs(b), timeout=90, what="the import after restart")
        assert b.contacts() == n
        assert b.stop() == 0


def test_second_daemon_is_refused_naming_the_pid(tmp_path: Path) -> None:
    cfg, _ = setup(tmp_path)
    with agent(tmp_path, cfg) as a:
        assert a.proc is not None
        second = subprocess.run(
            [*CLI, "--config", str(cfg), "daemon"],
            capture_output=True,
            text=True,
            env=env(),
            timeout=30,
            check=False,
        )
        assert second.returncode != 0
        assert f"locked by process {a.proc.pid}" in second.stderr
        assert a.proc.poll() is None  # the first one is unharmed
        assert a.stop() == 0


def test_refused_file_moves_to_failed_with_reason_and_is_not_retried(tmp_path: Path) -> None:
    cfg, inbox = setup(tmp_path, settle_seconds=0.2)
    bad = "Foo,Bar\n1,2\n"
    with agent(tmp_path, cfg) as a:
        (inbox / "bad.csv").write_text(bad)
        note = inbox / "failed" / "bad.csv.error.txt"
        poll(note.exists, what="the error note")
        assert "no column maps to external_id" in note.read_text()
        assert [r["status"] for r in a.runs()] == ["refused"]
        # The same content again is recognised by its hash: no second run.
        (inbox / "again.csv").write_text(bad)
        poll((inbox / "failed" / "again.csv.error.txt").exists, what="the second note")
        assert (
            "same content was refused in run 1"
            in (inbox / "failed" / "again.csv.error.txt").read_text()
        )
        assert len(a.runs()) == 1


def test_sighup_reloads_the_config(tmp_path: Path) -> None:
    cfg, _inbox = setup(tmp_path, settle_seconds=0.2)
    other = tmp_path / "other"
    other.mkdir()
    with agent(tmp_path, cfg) as a:
        text = cfg.read_text() + (
            f'[sources.other]\nenabled = true\npath = "{other}"\n'
            'settle_seconds = 0.2\ninterval = "1h"\n'
        )
        cfg.write_text(text)
        a.signal(signal.SIGHUP)
        poll(lambda: "config reloaded (SIGHUP)" in a.log.read_text(), what="the reload")
        write_csv(other / "o.csv", 4)
        poll(lambda: a.runs("other"), what="a run of the new source")
        poll(lambda: a.contacts("other") == 4, what="its contacts")
        assert a.stop() == 0


def test_log_lines_carry_no_personal_data(tmp_path: Path) -> None:
    cfg, inbox = setup(tmp_path, settle_seconds=0.2)
    with agent(tmp_path, cfg) as a:
        (inbox / "p.csv").write_text(
            HEADER + "P1,Jessamine,Quackenbush,jessamine.q@example.org,0412 345 678\n"
            "P2,Oswin,Featherstonehaugh,not-an-email,+61 2 9876 5432\n"
        )
        poll(lambda: ok_runs(a), what="the import")
        assert a.stop() == 0
    text = a.log.read_text()
    assert "run 1 ok" in text
    for secret in (
        "Jessamine",
        "Quackenbush",
        "Oswin",
        "Featherstonehaugh",
        "jessamine.q",
        "345 678",
        "9876 5432",
    ):
        assert secret not in text
    assert not re.search(r"[\w.]+@[\w.]+\.\w+", text)


def test_watched_folder_replaced_is_watched_again(tmp_path: Path) -> None:
    cfg, inbox = setup(tmp_path, settle_seconds=0.2)
    with agent(tmp_path, cfg) as a:
        shutil.rmtree(inbox)
        poll(lambda: "not reachable" in a.log.read_text(), what="the vanished folder noticed")
        inbox.mkdir()
        poll(lambda: "ok again" in a.log.read_text(), what="the folder watched again")
        write_csv(inbox / "after.csv", 3)
        poll(lambda: ok_runs(a), what="the import from the new folder")
        assert a.contacts() == 3
        assert a.stop() == 0
