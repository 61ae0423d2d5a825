"""The database's writer lock, on POSIX and on Windows.

One process at a time may write to a mirror: it holds an exclusive lock on
`<db>.lock`, a small file beside the database that also holds the owner's pid
(`"<pid>\\n"`), so a refused process can say who holds it. The lock belongs to
the open file: it goes away when the holder exits or is killed, whatever the
file still says, and a stale pid left in the file is simply overwritten by the
next holder.

POSIX: `fcntl.flock(LOCK_EX | LOCK_NB)` on the whole file (advisory; reading the
file is never blocked).

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
from pathlib import Path

from contactsync_agent.errors import LockedError

#: Where the Windows lock byte sits: far beyond the pid, never written.
WIN_LOCK_OFFSET = 1 << 30

# Text-mode translation of the Windows C runtime stays off for the pid.
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0)

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


class WriterLock:
    """An exclusive lock on `<db>.lock` holding the owner's pid."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Takes the lock at once, or raises `LockedError` naming the holder's pid."""
        fd = os.open(self.path, _OPEN_FLAGS, 0o600)
        try:
            locked = _try_lock(fd)
        except BaseException:
            os.close(fd)
            raise
        if not locked:
            holder = self.holder()
            os.close(fd)
            raise LockedError(str(self.path.with_suffix("")), holder)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def holder(self) -> int | None:
        """The pid written by the current (or last) holder; None if unknown."""
        try:
            text = self.path.read_text().strip()
            return int(text) if text else None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        """Clears the pid and lets the next writer in; does nothing if not held."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            with contextlib.suppress(OSError):
                _unlock(fd)  # closing releases it too; Windows may do so lazily
            os.close(fd)


__all__ = ["WIN_LOCK_OFFSET", "WriterLock"]
