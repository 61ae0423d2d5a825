"""Opening an input file once and safely; creating the agent's own files owner-only.

`open_input` opens an export file by descriptor: only a regular file; not
through a symbolic link where the caller says so (the daemon's watched
folders); never one of the mirror's own files (database, WAL, shared memory,
journal, lock), whether by a link, a hard link or its own name, because
opening and closing a second descriptor on the database drops SQLite's POSIX
locks. The digest, the reader (which reads the descriptor's file through
/proc/self/fd) and the identity check before a move all concern that one
opened file, whatever happens to the name meanwhile.

`private_file`, `open_private_text` and `private_dir` create what the agent
writes (exports, error notes, processed/ and failed/, temp files) owner-only
(0600 / 0700) whatever the umask.

It must not decide what a file means (the readers do) nor where it goes (the
daemon does).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

import xxhash

from contactsync_agent.errors import ContactSyncError
from contactsync_agent.safetext import escape_name

#: The mirror's own files, by suffix of the database path.
OWN_SUFFIXES = ("", "-wal", "-shm", "-journal", ".lock")
CHUNK = 1 << 20
_BINARY = getattr(os, "O_BINARY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO must not block the open

#: (device, inode, size, mtime in ns): one version of one file.
Identity = tuple[int, int, int, int]


class InputRefused(ContactSyncError):
    """A path that is never read as an export: a symbolic link (where links are
    not followed), not a regular file, or one of the mirror's own files."""

    exit_code = 3

    def __init__(self, shown: str, reason: str) -> None:
        self.shown = shown
        self.reason = reason
        super().__init__(f"{shown}: {reason}")


def identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _kind(mode: int) -> str:
    for test, what in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return what
    return "not a regular file"


LINK_REASON = (
    "is a symbolic link; links in a watched folder are never followed "
    "(copy or move the export itself into the folder)"
)
OWN_REASON = (
    "is the mirror's own database file (or its WAL, shared memory or lock) under "
    "another name; it is never read as an export"
)


def fd_digest(fd: int) -> str:
    """XXH3-128 of the bytes of the open file `fd` (read with pread: the
    descriptor's offset is left alone): how the agent recognises a file it has
    seen, whatever name it comes under."""
    h = xxhash.xxh3_128()
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest()


@dataclass
class OwnFiles:
    """The mirror's own files, which are never opened as input.

    A descriptor opened on one of them anyway (the name was swapped between the
    check and the open) is kept open until the mirror closes: closing it would
    drop the process's SQLite locks on the database."""

    db_path: Path
    held: list[int] = field(default_factory=list)

    def ids(self) -> frozenset[tuple[int, int]]:
        bases = {str(self.db_path)}
        with contextlib.suppress(OSError):
            bases.add(os.path.realpath(self.db_path))
        out: set[tuple[int, int]] = set()
        for base in bases:
            for suffix in OWN_SUFFIXES:
                try:
                    st = os.stat(base + suffix)
                except OSError:
                    continue
                out.add((st.st_dev, st.st_ino))
        return frozenset(out)

    def is_own(self, st: os.stat_result) -> bool:
        return (st.st_dev, st.st_ino) in self.ids()

    def keep(self, fd: int) -> None:
        self.held.append(fd)

    def release(self) -> None:
        """After the database is closed."""
        while self.held:
            with contextlib.suppress(OSError):
                os.close(self.held.pop())


#: How much of a file `is_blank` needs: a file this long is not blank.
BLANK_PROBE = 4096


def is_blank(head: bytes, size: int) -> bool:
    """A file of `size` bytes whose first `BLANK_PROBE` bytes are `head` holds not
    even a header line: nothing but whitespace (and a UTF-8 BOM)."""
    return size < BLANK_PROBE and not head.removeprefix(b"\xef\xbb\xbf").strip()


@dataclass
class InputFile:
    """An export file opened once; read, hashed and checked through its descriptor."""

    path: Path
    fd: int
    st: os.stat_result

    @property
    def shown(self) -> str:
        """The path as stored and shown (escaped: see safetext.escape_name)."""
        return escape_name(self.path)

    @property
    def size(self) -> int:
        return self.st.st_size

    @property
    def identity(self) -> Identity:
        return identity(self.st)

    def reader_path(self) -> str:
        """A path that opens this very file (not whatever now has its name), for a
        reader that takes a path: /proc/self/fd/N on Linux, /dev/fd/N elsewhere on
        POSIX (where it may share the offset: rewound first), else the path."""
        os.lseek(self.fd, 0, os.SEEK_SET)
        for base in ("/proc/self/fd", "/dev/fd"):
            if os.path.isdir(base):
                return f"{base}/{self.fd}"
        return str(self.path)

    def head(self, n: int) -> bytes:
        return os.pread(self.fd, n, 0)

    def digest(self) -> str:
        """XXH3-128 of the file's bytes (`fd_digest`)."""
        return fd_digest(self.fd)

    def changed(self) -> str | None:
        """Why the name no longer stands for the file as opened (None: it does, and
        the file was not written to since it was opened)."""
        now = os.fstat(self.fd)
        if (now.st_size, now.st_mtime_ns) != (self.st.st_size, self.st.st_mtime_ns):
            return "it was written to during its run"
        try:
            at = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return "it was removed during its run"
        if identity(at) != self.identity:
            return "another file took its name during its run"
        return None

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> InputFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_input(
    path: str | os.PathLike[str], *, follow_links: bool = True, own: OwnFiles | None = None
) -> InputFile:
    """Opens an export for reading. `follow_links=False`: a symbolic link is refused
    (the name itself must be the file). `own`: the mirror's files, refused by
    device and inode before they are ever opened.

    Raises InputRefused, ContactSyncError (no such file) or OSError."""
    p = Path(path)
    shown = escape_name(p)
    try:
        st = os.stat(p, follow_symlinks=follow_links)
    except FileNotFoundError:
        raise ContactSyncError(f"{shown}: no such file") from None
    if stat.S_ISLNK(st.st_mode):
        raise InputRefused(shown, LINK_REASON)
    if not stat.S_ISREG(st.st_mode):
        raise InputRefused(shown, f"is {_kind(st.st_mode)}, not a regular file")
    if own is not None and own.is_own(st):
        raise InputRefused(shown, OWN_REASON)
    flags = os.O_RDONLY | _BINARY | _CLOEXEC | _NONBLOCK | (0 if follow_links else _NOFOLLOW)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise ContactSyncError(f"{shown}: no such file") from None
    except OSError as e:
        if e.errno == errno.ELOOP and not follow_links:
            raise InputRefused(shown, LINK_REASON) from None
        raise
    try:
        fst = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if own is not None and own.is_own(fst):
        own.keep(fd)  # swapped in between: closing it would drop SQLite's locks
        raise InputRefused(shown, OWN_REASON)
    if not stat.S_ISREG(fst.st_mode):
        os.close(fd)
        raise InputRefused(shown, f"is {_kind(fst.st_mode)}, not a regular file")
    return InputFile(p, fd, fst)


# ------------------------------------------------------------------ owner-only output


def private_file(
    path: str | os.PathLike[str], *, exclusive: bool = True, dir_fd: int | None = None,
    follow_links: bool = False,
) -> int:
    """A new file, readable and writable by its owner only (0600 whatever the umask),
    opened for writing; not through a symbolic link unless `follow_links` (a path
    the user named, such as /dev/stdout). Without `exclusive` an existing regular
    file is truncated and made owner-only too."""
    flags = os.O_WRONLY | os.O_CREAT | _BINARY | _CLOEXEC | (0 if follow_links else _NOFOLLOW)
    flags |= os.O_EXCL if exclusive else os.O_TRUNC
    fd = os.open(path, flags, 0o600, dir_fd=dir_fd)
    if not exclusive and hasattr(os, "fchmod"):
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.fchmod(fd, 0o600)
    return fd


def open_private_text(
    path: str | os.PathLike[str], *, exclusive: bool = True, follow_links: bool = False
) -> IO[str]:
    """`private_file` as a UTF-8 text stream (newline="" so csv and CRLF stay as written)."""
    fd = private_file(path, exclusive=exclusive, follow_links=follow_links)
    return os.fdopen(fd, "w", encoding="utf-8", newline="")


def private_dir(path: str | os.PathLike[str]) -> None:
    """Creates a folder owner-only (0700) if it is missing."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)


__all__ = [
    "InputFile",
    "InputRefused",
    "OwnFiles",
    "identity",
    "open_input",
    "open_private_text",
    "private_dir",
    "private_file",
]
