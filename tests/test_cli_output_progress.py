"""Issue 18, progress: a file sync on a terminal shows a bar of the bytes read
(the Rust reader's `ReadMeter`), with rate and time left, updated at least
every 0.2 s and left on screen with a final line; in a pipe, or with -q,
nothing of it is written."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

from agent_helpers import env
from contactsync_agent import _core
from contactsync_agent import cli_output as out
from rich.console import Console

EXE = Path(sys.executable).with_name("contactsync")
CMD = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "contactsync_agent.cli"]
# Big enough that reading it takes several frames of the bar (0.1 s each) now
# that a first import's inserts no longer hold the reader back (20 MB).
ROWS = 300_000
BAR = re.compile(r"(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?) (kB|MB)")


def export(path: Path, rows: int) -> Path:
    with path.open("w", encoding="utf-8") as f:
        f.write("Client ID,First Name,Surname,Email Address,Mobile\n")
        for i in range(rows):
            f.write(f"X{i},Given{i},Family{i},person{i}@example.com,0412{i:06d}\n")
    return path


def sync_on_a_terminal(args: list[str], timeout: float = 300) -> tuple[int, str, str]:
    """Runs the command with stderr on a pseudo-terminal (100 columns) and
    stdout on a pipe; returns (exit code, what the terminal showed, stdout)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    p = subprocess.Popen([*CMD, *args], stdout=subprocess.PIPE, stderr=slave,
                         env={**env(), "TERM": "xterm-256color", "COLUMNS": "100"})
    os.close(slave)
    assert p.stdout is not None
    stdout: list[bytes] = []
    reader = threading.Thread(target=lambda: stdout.append(p.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    shown = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if not ready:
            if p.poll() is not None:
                break
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's last writer is gone
            break
        if not chunk:
            break
        shown += chunk
    code = p.wait(timeout=max(1.0, deadline - time.monotonic()))
    reader.join()
    p.stdout.close()
    os.close(master)
    return code, shown.decode("utf-8", "replace"), b"".join(stdout).decode()


def test_a_file_sync_on_a_terminal_shows_a_bar_of_the_bytes_read(tmp_path: Path) -> None:
    f = export(tmp_path / "big.csv", ROWS)
    size_mb = f.stat().st_size / 1e6
    code, shown, stdout = sync_on_a_terminal(
        ["--db", str(tmp_path / "m.db"), "sync", "-s", "xpm", str(f)])
    assert code == 0, shown
    frames = [(float(a), float(b), unit) for a, b, unit in BAR.findall(shown)]
    assert frames, shown
    assert "/?" not in shown  # the total is known from the first frame
    done, total, unit = frames[-1]
    assert unit == "MB" and abs(total - size_mb) < 0.1 and done == total
    # The bar moved while the file was read: values between none and all.
    between = {a for a, b, _ in frames if 0 < a < b}
    assert len(between) >= 2, frames
    assert "MB/s" in shown  # the rate
    # Left on screen with a final line; the summary goes to stdout, unwrapped.
    assert re.search(r"read \d+\.\d MB \(300,000 records\) in \d+\.\d\ds", shown), shown
    assert stdout.startswith("run 1 (full) of xpm: 300,000 records")
    assert "━" not in stdout and "MB/s" not in stdout


def test_no_progress_in_a_pipe_nor_with_quiet(tmp_path: Path) -> None:
    f = export(tmp_path / "small.csv", 5_000)
    r = subprocess.run([*CMD, "--db", str(tmp_path / "m.db"), "sync", "-s", "xpm", str(f)],
                       capture_output=True, text=True, env=env(), timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "" and "━" not in r.stdout
    code, shown, _ = sync_on_a_terminal(
        ["-q", "--db", str(tmp_path / "m2.db"), "sync", "-s", "xpm", str(f)])
    assert code == 0 and not BAR.search(shown) and "━" not in shown, shown


def test_the_bar_is_updated_at_least_every_fifth_of_a_second() -> None:
    class Meter:
        total_bytes = 10_000_000
        bytes_read = 0

    meter = Meter()
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=100)
    with out.FileProgress("reading x.csv", meter, console=con) as bar:
        started = time.monotonic()
        deadline = started + 20
        while bar.updates < 10 and time.monotonic() < deadline:
            meter.bytes_read += 100_000
            time.sleep(0.01)
        took = time.monotonic() - started
    assert bar.updates >= 10
    assert took / bar.updates <= 0.2, f"{bar.updates} updates in {took:.2f}s"
    assert out.PROGRESS_EVERY <= 0.2


def test_the_bar_never_wraps_at_80_columns() -> None:
    """With "1,000,000 records written" beside it the size column used to wrap,
    leaving a stray "MB" line under every frame (a stranger's finding): the bar
    gives way instead."""
    class Meter:
        total_bytes = 141_000_000
        bytes_read = 12_345_678

    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=80)
    with out.FileProgress("reading base-1000000.csv", Meter(), console=con) as bar:
        bar.written(1_000_000)
        bar.update()
    frames = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", f) for f in buf.getvalue().split("\r")]
    lines = [line for f in frames for line in f.split("\n") if line.strip()]
    assert any("1,000,000 records written" in line and "/141.0 MB" in line for line in lines)
    assert all(len(line) <= 80 for line in lines), lines
    assert not [line for line in lines if line.strip() in ("MB", "kB")], lines


def test_the_read_meter_counts_the_bytes_the_reader_parsed(tmp_path: Path) -> None:
    f = export(tmp_path / "e.csv", 30_000)
    meter = _core.ReadMeter()
    assert (meter.bytes_read, meter.total_bytes) == (0, 0)
    seen = []
    from contactsync_agent.mapping import build_mapping

    reader = _core.open_file(str(f), "csv", build_mapping(None), _core.Differ(),
                             chunk_size=10_000, meter=meter)
    assert meter.total_bytes == f.stat().st_size
    for batch in reader:
        seen.append(meter.bytes_read)
        del batch
    assert seen == sorted(seen) and len(seen) == 3
    assert 0 < seen[0] < meter.total_bytes
    assert meter.bytes_read == meter.total_bytes


def people(path: Path, rows: int) -> Path:
    """Records with namesakes (blocks with pairs to compare)."""
    with path.open("w", encoding="utf-8") as f:
        f.write("Client ID,First Name,Surname,Email Address,Mobile\n")
        for i in range(rows):
            f.write(f"P{i},Given{i % 700},Family{i % 900},p{i % 5000}@example.com,"
                    f"0412{i % 3000:06d}\n")
    return path


def test_dedupe_on_a_terminal_shows_its_phases_with_the_pairs(tmp_path: Path) -> None:
    import json

    f = people(tmp_path / "people.csv", 20_000)
    code, shown, stdout = sync_on_a_terminal(["dedupe", str(f)])
    assert code == 0, shown
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown).replace("\r", "\n")
    for phase in ("reading", "blocking", "comparing", "scoring"):
        assert re.search(rf"^{phase}: \d", plain, re.M), plain
    pairs = int(re.search(r"^comparing: \S+, ([\d,]+) pairs", plain, re.M)[1]  # type: ignore[index]
                .replace(",", ""))
    ran = subprocess.run([*CMD, "dedupe", str(f), "--json"], capture_output=True, text=True,
                         env=env(), timeout=300, check=True)
    assert pairs == json.loads(ran.stdout)["pairs_compared"] > 0
    assert "comparing" not in ran.stderr  # nothing of it in a pipe
    assert "pairs above threshold" in stdout
    assert "blocking…" not in stdout and "comparing:" not in stdout  # stderr only


def test_the_match_meter_ends_done_with_the_exact_pair_count(tmp_path: Path) -> None:
    from contactsync_agent import matching

    meter = _core.MatchMeter()
    assert (meter.phase, meter.pairs) == (0, 0)
    result = matching.dedupe(str(people(tmp_path / "p.csv", 5_000)), meter=meter)
    assert meter.phase == 4
    assert meter.pairs == result.stats.pairs_compared > 0


def test_an_error_on_a_terminal_wraps_between_words(tmp_path: Path) -> None:
    """A refusal's 300-character line broke mid-word at the terminal's edge (a
    stranger's finding): on a terminal it wraps between words; in a pipe it
    stays one line, for grep."""
    db = tmp_path / "m.db"
    a = tmp_path / "a.csv"
    a.write_text("Client ID,First Name,Mobile\n" + "".join(
        f"K{i},Ann{i},0412 000 {i:03d}\n" for i in range(20)), encoding="utf-8")
    b = tmp_path / "b.csv"
    b.write_text("Client ID,First Name\n" + "".join(f"K{i},Ann{i}\n" for i in range(20)),
                 encoding="utf-8")
    code, _, _ = sync_on_a_terminal(["--db", str(db), "sync", "-s", "xpm", str(a)])
    assert code == 0
    code, shown, _ = sync_on_a_terminal(["--db", str(db), "sync", "-s", "xpm", str(b)])
    assert code == 4, shown
    lines = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", x) for x in shown.splitlines()]
    lines = [x.rstrip("\r") for x in lines if x.strip()]
    error = [x for x in lines if "refused" in x or x.startswith("  ")]
    assert len(error) >= 3 and all(len(x) <= 100 for x in error), lines
    joined = " ".join(x.strip() for x in error)
    assert "(re-run with --allow-column-drop to confirm)" in joined, joined
    piped = subprocess.run([*CMD, "--db", str(db), "sync", "-s", "xpm", str(b)],
                           capture_output=True, text=True, env=env(), timeout=120, check=False)
    assert piped.returncode == 4 and len(piped.stderr.strip().splitlines()) == 1, piped.stderr
