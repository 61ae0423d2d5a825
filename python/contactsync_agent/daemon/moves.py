"""Moving a file the agent took to processed/ or failed/, with an error note for
a refusal; never through a link, and only if the name still stands for that
very file, unchanged.

Moves and writes notes; it must not decide where a file goes (that is `jobs`,
from the run's outcome), nor run a sync or touch the database.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from contactsync_agent.daemon.watch import DEST_PROBLEM, Watch, dest_problem, note_problem
from contactsync_agent.infile import InputFile, identity, private_dir, private_file
from contactsync_agent.safetext import escape_name
from contactsync_agent.store import now_iso

log = logging.getLogger("contactsync_agent.daemon")


def move(w: Watch, f: InputFile, where: str, error: str | None, run_id: int | None) -> None:
    """Moves the file taken (`f`) to processed/ or failed/ with its error note, if
    the name still stands for that very file, unchanged; otherwise whatever has
    the name now is left for a run of its own. Never through a link: the folder
    is opened O_NOFOLLOW and the rename and the note go through its descriptor."""
    path, shown = f.path, escape_name(f.path.name)
    why = f.changed()
    if why is not None:
        log.warning(
            "source %s: %s not moved to %s/: %s; what has the name now is taken as a new file",
            w.name,
            shown,
            where,
            why,
        )
        return
    try:
        dest = _Dest.open(w.folder / where)
    except OSError as e:
        w.kept[path] = (f.st.st_size, f.st.st_mtime_ns)
        if e.errno == errno.ELOOP or isinstance(e, NotADirectoryError):
            note_problem(w, dest_problem(w) or f"{DEST_PROBLEM} {where}/: {e}")
        else:
            log.error("source %s: could not move %s to %s/: %s", w.name, shown, where, e)
        return
    with dest:
        try:
            name = dest.free_name(path.name)
            dest.take(path, name, f)
            if error is not None:
                dest.write_note(
                    name + ".error.txt",
                    f"contactsync-agent refused this file.\n\n"
                    f"source: {w.name}\nfile: {f.shown}\n"
                    f"moved to: {escape_name(dest.path / name)}\n"
                    f"run: {run_id if run_id is not None else '(none)'}\n"
                    f"at: {now_iso()}\n\nwhy:\n{escape_name_lines(error)}\n",
                )
        except _NotOurs as e:
            log.error("source %s: %s: %s", w.name, shown, e)
            return
        except OSError as e:
            # Left in place; the content hash keeps a refused file from running again.
            w.kept[path] = (f.st.st_size, f.st.st_mtime_ns)
            log.error("source %s: could not move %s to %s/: %s", w.name, shown, where, e)
            return
    log.info("source %s: moved %s to %s/%s", w.name, shown, where, escape_name(name))


_DIR_FDS = {os.open, os.rename, os.stat, os.link, os.unlink} <= os.supports_dir_fd
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class _NotOurs(Exception):
    """Another file took the name between the identity check and the rename."""


@dataclass
class _Dest:
    """processed/ or failed/ (created 0700), opened without following a link: files
    and notes go in through its descriptor (by path where the platform has no
    dir_fd, Windows, after an lstat check)."""

    path: Path
    fd: int | None

    @classmethod
    def open(cls, path: Path) -> _Dest:
        private_dir(path)
        if _DIR_FDS:
            return cls(path, os.open(path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW))
        if not stat.S_ISDIR(os.stat(path, follow_symlinks=False).st_mode):
            raise NotADirectoryError(f"{escape_name(path)} is not a folder")
        return cls(path, None)

    def __enter__(self) -> _Dest:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _at(self, name: str) -> str:
        return name if self.fd is not None else str(self.path / name)

    def exists(self, name: str) -> bool:
        try:
            os.stat(self._at(name), dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def free_name(self, name: str) -> str:
        """`name`, or `stem-<UTC time>[-n].ext` when a file of that name is already there."""
        if not self.exists(name):
            return name
        stem, suffix = os.path.splitext(name)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        for n in range(1000):
            cand = f"{stem}-{stamp}" + (f"-{n}" if n else "") + suffix
            if not self.exists(cand):
                return cand
        raise FileExistsError(f"no free name for {escape_name(name)} in {escape_name(self.path)}")

    def take(self, src: Path, name: str, f: InputFile) -> None:
        """Renames `src` in as `name`, and checks that what arrived is the file `f`."""
        target = self._at(name)
        os.rename(src, target, dst_dir_fd=self.fd)
        if identity(os.stat(target, dir_fd=self.fd, follow_symlinks=False)) == f.identity:
            return
        try:  # give it back under its name, unless yet another file has taken it
            os.link(target, src, src_dir_fd=self.fd, follow_symlinks=False)
        except FileExistsError:
            raise _NotOurs(
                "another file took its name just as it was being moved; that file is now "
                f"{escape_name(self.path / name)}: move it back to import it"
            ) from None
        os.unlink(target, dir_fd=self.fd)
        raise _NotOurs(
            "another file took its name just as it was being moved; it was put back and "
            "is taken as a new file"
        )

    def write_note(self, name: str, text: str) -> None:
        """Written whole under a hidden name, then renamed into place: whoever
        watches the folder never reads half a note (or an empty one)."""
        tmp = f".{name}.{os.getpid()}.tmp"
        fd = private_file(self._at(tmp), exclusive=False, dir_fd=self.fd)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
                fh.write(text)
            os.replace(self._at(tmp), self._at(name), src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(self._at(tmp), dir_fd=self.fd)
            raise


def escape_name_lines(text: str) -> str:
    """Multi-line text (an error and its help) with each line escaped, line breaks kept."""
    return "\n".join(escape_name(line) for line in text.split("\n"))
