"""The database's locks, on POSIX and on Windows.

Two locks, both small files beside the database's *real* path (symlinks
resolved, so `--db link.db` and `--db ./m.db` lock the same files as `m.db`),
each holding its owner's pid (`"<pid>\\n"`) so a refused or waiting process can
say who holds it:

- `<db>.lock`, the **writer lock** (`WriterLock`): whoever writes to the
  database or checkpoints it holds it, for the length of that write only: a
  CLI or API transaction, or one agent run with its checkpoint. So two SQLite
  connections never write or checkpoint one database at the same instant (the
  precondition of SQLite's WAL-reset race before 3.51.3), yet a CLI write works
  while the agent runs: it waits for the agent's current run, bounded.
- `<db>.agent.lock`, the **agent lock** (`AgentLock`): held by the daemon for
  its whole life; a second agent on the same database is refused.

The lock belongs to the open file: it goes away when the holder exits or is
killed, whatever the file still says, and a stale pid left in the file is simply
overwritten by the next holder.

POSIX: `fcntl.flock(LOCK_EX | LOCK_NB)` on the whole file (advisory; reading the
file is never blocked). flock locks the inode, so two paths to one lock file
(a bind mount) still exclude each other.

Windows: `msvcrt.locking(LK_NBLCK)` on one byte. Windows byte-range locks are
mandatory: no other handle can read a locked byte. Locking byte 0 would hide the
pid from the very process that needs to name the holder, so the lock is taken on
one byte far past the end of the file (`WIN_LOCK_OFFSET`, 1 GiB; Windows allows
locking beyond the end of a file and SQLite locks its own files the same way)
and the file keeps the same contents as on POSIX: the pid, from byte 0,
readable by anyone. The file never grows: nothing is written at the locked byte.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from contactsync_agent.errors import LockedError

#: Where the Windows lock byte sits: far beyond the pid, never written.
WIN_LOCK_OFFSET = 1 << 30

# Text-mode translation of the Windows C runtime stays off for the pid.
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0)

# A shared lock announces a waiter (POSIX only; None on Windows).
_try_lock_shared: Callable[[int], bool] | None = None

if sys.platform == "win32":
    import errno
    import msvcrt

    # LK_NBLCK fails with EACCES when another handle holds the byte (EDEADLOCK
    # is what LK_LOCK reports after its retries; accepted for safety).
    _HELD = frozenset({errno.EACCES, getattr(errno, "EDEADLOCK", errno.EACCES)})

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, WIN_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as e:
            if e.errno in _HELD:
                return False
            raise
        finally:
            os.lseek(fd, 0, os.SEEK_SET)
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, WIN_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

    def _try_lock_shared_posix(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    _try_lock_shared = _try_lock_shared_posix


def real_db_path(db_path: str | os.PathLike[str]) -> Path:
    """The database's real path (symlinks and `..` resolved, relative made absolute):
    what every lock is keyed by, never the string the user typed."""
    return Path(os.path.realpath(Path(db_path).expanduser()))


class FileLock:
    """An exclusive lock on one small file that holds the owner's pid.

    `acquire()` takes it at once or raises `LockedError`; `wait()` polls for it
    up to a deadline. The lock belongs to this object's open file description:
    two `FileLock`s of one file exclude each other even in one process.
    """

    #: What a refusal says the lock is for (ends the LockedError message).
    purpose = "one agent per database"

    def __init__(self, path: Path, db_path: Path) -> None:
        self.path = path
        self.db_path = db_path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Takes the lock if it is free (True), else False; never waits."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, _OPEN_FLAGS, 0o600)
        try:
            locked = _try_lock(fd)
        except BaseException:
            os.close(fd)
            raise
        if not locked:
            os.close(fd)
            return False
        # The pid only tells a waiter who holds the lock: on a full disk it is
        # not written (a waiter then says "unknown"), the lock still holds.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def acquire(self) -> None:
        """Takes the lock at once, or raises `LockedError` naming the holder's pid."""
        if not self.try_acquire():
            raise LockedError(str(self.db_path), self.holder(), purpose=self.purpose)

    def holder(self) -> int | None:
        """The pid written by the current (or last) holder; None if unknown."""
        try:
            text = self.path.read_text().strip()
            return int(text) if text else None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        """Clears the pid and lets the next holder in; does nothing if not held."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            with contextlib.suppress(OSError):
                _unlock(fd)  # closing releases it too; Windows may do so lazily
            os.close(fd)


class AgentLock(FileLock):
    """`<real db>.agent.lock`: held by the daemon for its whole life, so a second
    agent on the same database is refused. It guards no write by itself."""

    purpose = "one agent per database"

    def __init__(self, db_path: Path) -> None:
        real = real_db_path(db_path)
        super().__init__(real.with_name(real.name + ".agent.lock"), Path(db_path))


class WriterLock(FileLock):
    """`<real db>.lock`: held by whoever writes or checkpoints the database, for
    the length of that write (a transaction, or an agent run with its checkpoint).

    `wait()` waits for it; a waiter announces itself with a shared lock on
    `<real db>.lock-wait` (POSIX), and a *polite* acquirer (the agent, before a
    run) lets every announced waiter go first, so a CLI write is not starved by
    back-to-back runs. Windows has no shared file locks: there a polite acquirer
    does not see the waiters (a waiter may then wait for more than one run).
    """

    purpose = "one writer at a time"

    def __init__(self, db_path: Path) -> None:
        real = real_db_path(db_path)
        super().__init__(real.with_name(real.name + ".lock"), Path(db_path))
        self.queue_path = real.with_name(real.name + ".lock-wait")

    def _waiters(self) -> bool:
        """True when another process or object announced that it waits for the lock."""
        if _try_lock_shared is None:
            return False
        fd = os.open(self.queue_path, _OPEN_FLAGS, 0o600)
        try:
            return not _try_lock(fd)  # exclusive fails while any waiter holds it shared
        finally:
            os.close(fd)

    def wait(
        self,
        timeout: float,
        *,
        polite: bool = False,
        on_wait: Callable[[int | None], None] | None = None,
        interrupt: Callable[[], None] | None = None,
    ) -> None:
        """Takes the lock, waiting up to `timeout` seconds (`math.inf`: no bound).

        `on_wait(holder pid)` is called once if the lock is busy; `interrupt()` is
        called while waiting and may raise to give up. A timeout raises
        `LockedError` naming the holder and the time waited."""
        if not polite and self.try_acquire():
            return
        start = time.monotonic()
        deadline = start + timeout
        announced: int | None = None
        told = False
        pause = 0.005
        try:
            while True:
                if polite and self._waiters():
                    pass  # let them go first
                elif self.try_acquire():
                    return
                if not polite and announced is None and _try_lock_shared is not None:
                    announced = os.open(self.queue_path, _OPEN_FLAGS, 0o600)
                    if not _try_lock_shared(announced):
                        os.close(announced)
                        announced = None
                if not told and on_wait is not None:
                    told = True
                    on_wait(self.holder())
                if interrupt is not None:
                    interrupt()
                now = time.monotonic()
                if now >= deadline:
                    raise LockedError(
                        str(self.db_path), self.holder(), purpose=self.purpose,
                        waited=now - start,
                    )
                time.sleep(min(pause, max(deadline - now, 0.0)))
                pause = min(pause * 2, 0.05)
        finally:
            if announced is not None:
                os.close(announced)  # drops the shared lock


__all__ = ["WIN_LOCK_OFFSET", "AgentLock", "FileLock", "WriterLock", "real_db_path"]
