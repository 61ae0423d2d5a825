"""The agent off Linux: the portable writer lock, and the package as Windows would see it.

(a) `locking.WriterLock` on this box (the fcntl path), across real processes.
(b) A child Python made to look like Windows to our code: no `fcntl`, a fake
    `msvcrt`, `sys.platform == "win32"`, none of the os/signal calls Windows lacks.
    The package, its CLI and the daemon must import there, the writer lock must
    work through `msvcrt.locking`, and a whole `contactsync daemon` run must start
    and stop on a Ctrl-Break-like signal that does not interrupt its sleep.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from contactsync_agent.errors import LockedError
from contactsync_agent.locking import WIN_LOCK_OFFSET, WriterLock

HOLDER = """
import sys
from pathlib import Path
from contactsync_agent.locking import WriterLock
lock = WriterLock(Path(sys.argv[1]))
lock.acquire()
print("held", flush=True)
sys.stdin.readline()
lock.release()
print("released", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def holder(db_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the writer lock of `db_path`."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        try:
            assert proc.stdout.readline().strip() == "held"
            yield proc
        finally:
            proc.kill()
            proc.wait(10)


def _step(proc: subprocess.Popen[str]) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


# ---------------------------------------------------------------- (a) this box


def test_second_process_is_refused_with_the_holders_pid(
    db_path: Path, holder: subprocess.Popen[str]
) -> None:
    lock = WriterLock(db_path)
    assert lock.path == db_path.with_name("mirror.db.lock")
    assert lock.path.read_text() == f"{holder.pid}\n"
    with pytest.raises(LockedError, match=f"locked by process {holder.pid} ") as ei:
        lock.acquire()
    assert ei.value.pid == holder.pid
    assert ei.value.path == str(db_path)
    assert ei.value.exit_code == 5
    assert lock.holder() == holder.pid

    assert _step(holder) == "released"
    assert lock.path.read_text() == ""
    assert lock.holder() is None
    lock.acquire()  # let in once released
    try:
        assert lock.path.read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()
    assert lock.path.read_text() == ""
    lock.release()  # not held: nothing to do


def test_a_killed_holder_leaves_a_stale_pid_but_no_lock(
    db_path: Path, holder: subprocess.Popen[str]
) -> None:
    holder.kill()  # SIGKILL; TerminateProcess on Windows
    holder.wait(10)
    lock = WriterLock(db_path)
    assert lock.holder() == holder.pid  # what the dead process wrote
    lock.acquire()
    try:
        assert lock.holder() == os.getpid()
    finally:
        lock.release()


def test_one_holder_per_database_within_a_process_too(tmp_path: Path) -> None:
    a, b = WriterLock(tmp_path / "a.db"), WriterLock(tmp_path / "a.db")
    other = WriterLock(tmp_path / "b.db")
    a.acquire()
    try:
        with pytest.raises(LockedError) as ei:
            b.acquire()
        assert ei.value.pid == os.getpid()
        other.acquire()  # another database: its own lock
        other.release()
    finally:
        a.release()
    b.acquire()
    b.release()


# ---------------------------------------------------------------- (b) as on Windows

FAKE_WINDOWS = r"""
import errno, json, os, signal, sys, threading, time, types
from pathlib import Path

tmp = Path(sys.argv[1])
out = {}

# Libraries pick their own Windows backends (ctypes.windll) when imported: they are
# imported first, under the real platform. Only our code sees the fake one.
import click, platformdirs, subprocess, xxhash  # noqa: E401
import watchdog.events, watchdog.observers, watchdog.observers.polling  # noqa: E401

# What Windows does not have.
sys.modules["fcntl"] = None  # `import fcntl` raises ImportError
for name in ("fchmod", "nice", "getuid", "geteuid", "fork", "setsid", "killpg", "getpgid"):
    delattr(os, name)
del signal.SIGHUP
signal.SIGBREAK = signal.SIGUSR1  # stands in for Ctrl-Break

# msvcrt.locking as Windows does it, in-process: a lock on the byte at the handle's
# position, owned by that handle; LK_NBLCK fails with EACCES while another has it.
held, calls = {}, []
def locking(fd, mode, nbytes):
    st, pos = os.fstat(fd), os.lseek(fd, 0, os.SEEK_CUR)
    key = (st.st_dev, st.st_ino, pos)
    calls.append((mode, pos, nbytes))
    if mode == 2:  # LK_NBLCK
        if key in held:
            raise PermissionError(errno.EACCES, "Permission denied")
        held[key] = fd
    elif mode == 0 and held.get(key) == fd:  # LK_UNLCK
        del held[key]
    else:
        raise PermissionError(errno.EACCES, "Permission denied")
msvcrt = types.ModuleType("msvcrt")
msvcrt.LK_UNLCK, msvcrt.LK_LOCK, msvcrt.LK_NBLCK = 0, 1, 2
msvcrt.locking = locking
sys.modules["msvcrt"] = msvcrt
sys.platform = "win32"

import contactsync_agent, contactsync_agent.cli, contactsync_agent.daemon  # noqa: E401
from contactsync_agent import alerts, locking as L
from contactsync_agent.errors import LockedError
from contactsync_agent.daemon import run_daemon

out["lock_backend"] = "msvcrt" if getattr(L, "msvcrt", None) is msvcrt else "other"
out["fcntl_in_locking"] = hasattr(L, "fcntl")

# The lock round trip, through msvcrt.
db = tmp / "mirror.db"
a, b = L.WriterLock(db), L.WriterLock(db)
a.acquire()
out["content"] = a.path.read_text()
out["size"] = a.path.stat().st_size
out["locked_at"] = sorted({pos for mode, pos, n in calls if mode == 2})
try:
    b.acquire()
    out["second"] = "acquired"
except LockedError as e:
    out["second"] = [e.pid, str(e)]
a.release()
out["after_release"] = a.path.read_text()
b.acquire()
out["reacquired"] = b.path.read_text()
b.release()
out["held_after_all"] = len(held)

# An alert command reaches CreateProcess as written (quotes and all).
seen_args = []
subprocess.run = lambda args, **kw: seen_args.append(args) or types.SimpleNamespace(returncode=0)
cmd = r'"C:\Program Files\notify\notify.exe" --to "ops team"'
alerts.run_command(cmd, {"source": "s", "state": "failing", "previous": "healthy",
                         "summary": "x"}, 5)
out["alert_args"] = seen_args

# A whole daemon run, stopped by "Ctrl-Break". On Windows the console event is
# handled on another thread and does not interrupt select(): here the signals are
# blocked in the main thread and sent to a helper thread, the same situation.
cfg = tmp / "config.toml"
cfg.write_text(f'[agent]\ndatabase = {json.dumps(str(db))}\nheartbeat = "60s"\n')
import select
real_select, asleep = select.select, threading.Event()
def watched_select(*args):
    if threading.current_thread() is threading.main_thread():
        asleep.set()
    return real_select(*args)
select.select = watched_select
done = threading.Event()

def helper():
    if not asleep.wait(10):
        out["error"] = "the daemon never went to sleep"
        print(json.dumps(out), flush=True)
        os._exit(3)
    out["handler"] = getattr(signal.getsignal(signal.SIGBREAK), "__name__", None)
    out["sighup_untouched"] = signal.getsignal(1) == signal.SIG_DFL
    try:
        L.AgentLock(db).acquire()
        out["while_running"] = "acquired"
    except LockedError as e:
        out["while_running"] = e.pid
    w = L.WriterLock(db)  # free while the agent idles: it is taken per write
    out["writer_while_idle"] = w.try_acquire()
    w.release()
    out["sent"] = time.monotonic()
    signal.pthread_kill(threading.get_ident(), signal.SIGBREAK)
    if not done.wait(5):
        out["error"] = "the daemon did not stop within 5 s of the signal"
        print(json.dumps(out), flush=True)
        os._exit(4)

t = threading.Thread(target=helper, daemon=True)
t.start()
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGBREAK})
out["rc"] = run_daemon(cfg, None)
out["stop_s"] = time.monotonic() - out.pop("sent")
done.set()
log = (tmp / "contactsync-agent.log").read_text()
out["stopped_line"] = [line.split(": ", 1)[1] for line in log.splitlines() if "stopped" in line]
c = L.WriterLock(db)
c.acquire()
c.release()
out["pid"] = os.getpid()
print(json.dumps(out), flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="simulates Windows on POSIX")
def test_the_package_imports_and_runs_as_on_windows(tmp_path: Path) -> None:
    script = tmp_path / "fake_windows.py"
    script.write_text(FAKE_WINDOWS, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTSYNC_")}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    pid = out["pid"]

    assert out["lock_backend"] == "msvcrt"
    assert out["fcntl_in_locking"] is False
    # The pid is readable by anyone: Windows locks are mandatory, so the locked
    # byte lies beyond everything the file holds.
    assert out["content"] == f"{pid}\n"
    assert out["locked_at"] == [WIN_LOCK_OFFSET]
    assert out["size"] < WIN_LOCK_OFFSET
    assert out["second"] == [
        pid,
        f"{tmp_path / 'mirror.db'} is locked by process {pid} (one writer at a time)",
    ]
    assert out["after_release"] == ""
    assert out["reacquired"] == f"{pid}\n"
    assert out["held_after_all"] == 0

    assert out["alert_args"] == [r'"C:\Program Files\notify\notify.exe" --to "ops team"']

    assert out["handler"] == "_on_signal"
    assert out["sighup_untouched"] is True
    assert out["while_running"] == pid  # the daemon holds the agent lock (msvcrt)
    assert out["writer_while_idle"] is True
    assert out["rc"] == 0
    assert out["stop_s"] < 3.0  # not the 60 s heartbeat sleep
    assert out["stopped_line"] == ["stopped (SIGUSR1)"]
