"""Two figures of the background agent, measured on this machine.

1. Idle CPU: utime + stime of the `contactsync daemon` process (all threads, from
   /proc/<pid>/stat) over --idle seconds while nothing arrives.
2. File-to-commit delay: from an export file's last write (its mtime) to the
   commit of its run (`runs.finished_at`), for --files files of --rows rows,
   with the shipped settle period unless --settle says otherwise.

    .venv/bin/python benches/daemon_figures.py [--idle 60] [--files 7] [--settle 5]

Linux only (reads /proc). Runs the real agent in a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # Fields 14 and 15 (utime, stime) of the whole process; [0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def query(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def wait_for(fn, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of idle measurement")
    ap.add_argument("--files", type=int, default=7, help="files for the delay figure")
    ap.add_argument("--rows", type=int, default=1000, help="rows per file")
    ap.add_argument("--settle", type=float, default=5.0, help="settle_seconds of the source")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="contactsync-figures-"))
    inbox = tmp / "in"
    inbox.mkdir()
    db = tmp / "mirror.db"
    cfg = tmp / "config.toml"
    # The shipped defaults (heartbeat 15s, rescan 60s, file events) except the settle.
    cfg.write_text(
        f'[agent]\ndatabase = "{db}"\n\n[sources.xpm]\nenabled = true\n'
        f'path = "{inbox}"\nsettle_seconds = {args.settle}\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTSYNC_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "contactsync_agent.cli", "--config", str(cfg), "daemon"],
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_for(
            lambda: (
                query(db, "SELECT value FROM meta WHERE key = 'daemon.state'") == [("running",)]
            ),
            30,
            "the agent to start",
        )
        time.sleep(2.0)  # let start-up work finish before the idle window
        before, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.idle)
        used, span = cpu_seconds(proc.pid) - before, time.monotonic() - t0
        print(
            f"idle CPU over {span:.0f}s: {used:.3f} CPU-seconds = "
            f"{100 * used / span:.3f} % of one core"
        )

        delays = []
        header = "Client ID,First Name,Surname,Email Address\n"
        for i in range(args.files):
            name = f"export-{i}.csv"
            path = inbox / name
            with open(path, "w") as f:
                f.write(header)
                for j in range(args.rows):
                    f.write(f"X{j},Given{j},Family{j},p{j}.{i}@example.com\n")
            mtime = path.stat().st_mtime
            row = wait_for(
                lambda n=name: query(
                    db,
                    "SELECT finished_at FROM runs WHERE origin LIKE ? AND status = 'ok'",
                    (f"%{n}",),
                ),
                120,
                f"the run of {name}",
            )
            done = datetime.fromisoformat(str(row[0][0]).replace("Z", "+00:00")).timestamp()
            delays.append(done - mtime)
            print(f"  {name}: last write -> commit {done - mtime:.2f}s")
        print(
            f"file-to-commit delay ({args.files} files of {args.rows} rows, settle "
            f"{args.settle:g}s): median {statistics.median(delays):.2f}s, "
            f"min {min(delays):.2f}s, max {max(delays):.2f}s"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


if __name__ == "__main__":
    main()
