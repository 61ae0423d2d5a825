"""Watching the source folders: an observer per folder (watchdog file events, or
polling), the rescans that find what events missed, the settle wait, and the
checks that keep the agent off links, pipes, devices and its own files.

Decides which file (or connector run) is next and when; it must not open,
read or move a file, nor run a sync or write to the database: that is
`jobs`. Observer threads only hint (`hint`): the scan decides what they mean.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from contactsync_agent.config import SourceConfig
from contactsync_agent.daemon.state import AgentState, Part
from contactsync_agent.infile import LINK_REASON, OWN_REASON
from contactsync_agent.safetext import escape_name

# One logger for the whole agent: its lines read as before the split into parts.
log = logging.getLogger("contactsync_agent.daemon")

PROCESSED, FAILED = "processed", "failed"
#: How a problem with processed/ or failed/ begins (it clears when they are fixed).
DEST_PROBLEM = "cannot move files:"
IGNORED_PREFIXES = ("~$", ".")
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~")
HINT_EVENTS = frozenset({"created", "modified", "moved", "closed", "deleted"})
CONNECTOR_KINDS = ("sql", "http")


def ignored_name(name: str) -> bool:
    """Temp and editor files that are never an export (`~$x.csv`, `x.tmp`, `.x`, ...)."""
    low = name.lower()
    return low.startswith(IGNORED_PREFIXES) or low.endswith(IGNORED_SUFFIXES)


@dataclass
class Seen:
    """A candidate file as last stat'ed; it settles once unchanged for `settle_seconds`."""

    size: int
    mtime_ns: int
    since: float
    # Which file: another one renamed over the name starts settling afresh.
    dev: int = 0
    ino: int = 0

    @classmethod
    def of(cls, st: os.stat_result, since: float) -> Seen:
        return cls(st.st_size, st.st_mtime_ns, since, st.st_dev, st.st_ino)

    def same(self, st: os.stat_result) -> bool:
        return (self.size, self.mtime_ns, self.dev, self.ino) == (
            st.st_size,
            st.st_mtime_ns,
            st.st_dev,
            st.st_ino,
        )


@dataclass
class Watch:
    """One enabled source as the agent serves it: its files settling, kept or
    refused, its retries, its schedule and what keeps it from working."""

    cfg: SourceConfig
    folder: Path
    observer: BaseObserver | None = None
    folder_id: tuple[int, int] | None = None
    pending: dict[Path, Seen] = field(default_factory=dict)
    # Files handled but not movable (read-only share): left alone while unchanged.
    kept: dict[Path, tuple[int, int]] = field(default_factory=dict)
    # Names never taken (links, pipes, the mirror's own files): said once in the log
    # per (device, inode) of the name itself.
    refused: dict[Path, tuple[int, int]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    retry_at: float = 0.0
    next_scan: float = 0.0
    # sql/http sources: a run is due (on the interval, or again after a failure).
    due: bool = False
    last_run: float = 0.0
    problem: str | None = None

    @property
    def name(self) -> str:
        return self.cfg.name

    def matches(self, name: str) -> bool:
        return not ignored_name(name) and fnmatch.fnmatchcase(
            name.lower(), self.cfg.pattern.lower()
        )


class _Hints(FileSystemEventHandler):
    """Turns watchdog events into a wake-up; the scan decides what they mean."""

    def __init__(self, hint: Callable[[str], None], source: str) -> None:
        self.hint = hint
        self.source = source

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in HINT_EVENTS:
            self.hint(self.source)


def note_problem(w: Watch, text: str | None) -> None:
    """Records what keeps a source from working (None: nothing), logging changes only."""
    if text == w.problem:
        return
    if text is None:
        log.info("source %s: ok again (was: %s)", w.name, w.problem)
    else:
        log.error("source %s: %s", w.name, text)
    w.problem = text


def refuse_once(w: Watch, path: Path, st: os.stat_result | None, reason: str) -> None:
    """A name the agent never takes: logged the first time it is seen (again only
    if another file takes the name), and left where it is."""
    w.pending.pop(path, None)
    if st is None:
        with contextlib.suppress(OSError):
            st = os.stat(path, follow_symlinks=False)
    key = (st.st_dev, st.st_ino) if st is not None else (-1, -1)
    if w.refused.get(path) == key:
        return
    w.refused[path] = key
    log.warning(
        "source %s: %s %s; not read, left where it is",
        w.name,
        escape_name(path.name),
        reason,
    )


def dest_problem(w: Watch) -> str | None:
    """processed/ or failed/ that is not a real folder (a link could move
    imported files anywhere): the source takes no file until it is fixed."""
    for where in (PROCESSED, FAILED):
        try:
            st = os.stat(w.folder / where, follow_symlinks=False)
        except FileNotFoundError:
            continue
        except OSError as e:
            return f"{DEST_PROBLEM} {where}/ in {w.folder} cannot be read: {e.strerror or e}"
        if stat.S_ISLNK(st.st_mode):
            return (
                f"{DEST_PROBLEM} {where}/ in {w.folder} is a symbolic link; files are never "
                "moved through a link: make it a real folder"
            )
        if not stat.S_ISDIR(st.st_mode):
            return (
                f"{DEST_PROBLEM} {where}/ in {w.folder} is not a folder: "
                "remove it or make it a real folder"
            )
    return None


class Watcher(Part):
    """The watched sources (`watches`, by name) and their observers."""

    def __init__(self, state: AgentState, hint: Callable[[str], None]) -> None:
        super().__init__(state)
        self.watches: dict[str, Watch] = {}
        #: Called from observer threads when something moved in a source's folder.
        self.hint = hint

    def build(self) -> None:
        """Watches the enabled sources of the config (again after a reload: a source
        whose settings changed is watched afresh)."""
        wanted = {n: s for n, s in self.config.sources.items() if s.enabled}
        for name in list(self.watches):
            if name not in wanted or wanted[name] != self.watches[name].cfg:
                self.stop_observer(self.watches.pop(name))
                log.info("source %s: no longer watched in its old form", name)
        for name, scfg in wanted.items():
            if name in self.watches:
                continue
            w = Watch(cfg=scfg, folder=Path(scfg.path or "."))
            self.watches[name] = w
            if scfg.kind in CONNECTOR_KINDS:
                log.info("source %s: %s source, run every %.0fs", name, scfg.kind, scfg.interval)
                continue
            if scfg.kind != "folder":
                w.problem = f"kind {scfg.kind!r} is not supported by this agent"
                log.error("source %s: %s", name, w.problem)
                continue
            self.start_observer(w)
        for name in self.config.sources:
            if name not in wanted:
                log.info(
                    "source %s: disabled (enable with `contactsync source enable %s`)", name, name
                )

    # ------------------------------------------------------------ observers

    def start_observer(self, w: Watch) -> None:
        try:
            st = w.folder.stat()
        except OSError as e:
            note_problem(w, f"watched folder {w.folder} is not reachable: {e.strerror or e}")
            return
        if not w.folder.is_dir():
            note_problem(w, f"watched folder {w.folder} is not a folder")
            return
        obs: BaseObserver
        if w.cfg.polling:
            obs = PollingObserver(timeout=min(max(w.cfg.settle_seconds, 1.0), 10.0))
        else:
            obs = Observer()
        obs.daemon = True
        try:
            obs.schedule(_Hints(self.hint, w.name), str(w.folder), recursive=False)
            obs.start()
        except OSError as e:
            # inotify watch limits and the like: the rescans still find every file.
            log.warning("source %s: file events unavailable (%s); relying on rescans", w.name, e)
            w.observer = None
        else:
            w.observer = obs
        w.folder_id = (st.st_dev, st.st_ino)
        note_problem(w, None)
        w.next_scan = 0.0
        log.info(
            "source %s: watching %s for %s (%s), settle %.1fs",
            w.name,
            w.folder,
            w.cfg.pattern,
            "polling" if w.cfg.polling else "file events",
            w.cfg.settle_seconds,
        )

    def stop_observer(self, w: Watch) -> None:
        if w.observer is not None:
            with contextlib.suppress(Exception):
                w.observer.stop()
                w.observer.join(timeout=2.0)
            w.observer = None

    def check_observer(self, w: Watch) -> None:
        """Restarts a dead observer or one watching a folder that was replaced."""
        if w.cfg.kind != "folder":
            return
        try:
            st = w.folder.stat()
            same = (st.st_dev, st.st_ino) == w.folder_id
        except OSError:
            same = False
        alive = w.observer is not None and w.observer.is_alive()
        if same and (alive or (w.observer is None and w.problem is None)):
            return  # watching, or file events unavailable here and the rescans do it
        if w.observer is not None:
            log.warning(
                "source %s: %s; restarting the watch",
                w.name,
                "observer died" if same else "watched folder changed or vanished",
            )
        self.stop_observer(w)
        self.start_observer(w)

    # ------------------------------------------------------------ scans

    def scan(self, w: Watch, now: float) -> None:
        """Lists the folder: new files start settling, changed ones start again.

        Only regular files are candidates, judged by `lstat`: a symbolic link, a
        pipe or a device is never opened, nor a name for the mirror's own files
        (a hard link to the database); each is said once in the log."""
        if w.cfg.kind in CONNECTOR_KINDS:
            if now >= w.next_scan:
                w.due = True
                w.next_scan = now + w.cfg.interval
            return
        w.next_scan = now + min(w.cfg.interval, self.config.daemon.rescan)
        if w.cfg.kind != "folder":
            return
        try:
            entries = list(os.scandir(w.folder))
        except OSError as e:
            note_problem(w, f"watched folder {w.folder} is not readable: {e.strerror or e}")
            return
        if w.problem and w.problem.startswith("watched folder"):
            note_problem(w, None)
        blocked = dest_problem(w)
        if blocked is not None:
            note_problem(w, blocked)
        elif w.problem and w.problem.startswith(DEST_PROBLEM):
            note_problem(w, None)
        own = self.mirror.own_files.ids() if self.mirror is not None else frozenset()
        present: set[Path] = set()
        for entry in entries:
            if not w.matches(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            p = Path(entry.path)
            if stat.S_ISDIR(st.st_mode):
                continue  # processed/, failed/ and other folders: silently not files
            present.add(p)
            if stat.S_ISLNK(st.st_mode):
                refuse_once(w, p, st, LINK_REASON)
                continue
            if not stat.S_ISREG(st.st_mode):
                refuse_once(w, p, st, "is not a regular file (a pipe, socket or device)")
                continue
            if (st.st_dev, st.st_ino) in own:
                refuse_once(w, p, st, OWN_REASON)
                continue
            w.refused.pop(p, None)
            if w.kept.get(p) == (st.st_size, st.st_mtime_ns):
                continue
            seen = w.pending.get(p)
            if seen is None or not seen.same(st):
                w.pending[p] = Seen.of(st, now)
        for p in set(w.pending) - present:
            del w.pending[p]
        for p in set(w.kept) - present:
            del w.kept[p]
        for p in set(w.refused) - present:
            del w.refused[p]

    def pick(self, now: float) -> tuple[Watch, Path | None] | None:
        """The next settled file (or due sql/http run), the least recently served source
        first."""
        for w in sorted(self.watches.values(), key=lambda w: w.last_run):
            if now < w.retry_at:
                continue
            if w.due and w.problem is None:
                return w, None
            if not w.pending or w.problem is not None:
                continue  # a folder source with a problem (say processed/ is a link) waits
            for p, seen in sorted(w.pending.items(), key=lambda kv: kv[1].mtime_ns):
                if now - seen.since < w.cfg.settle_seconds:
                    continue
                try:
                    st = os.stat(p, follow_symlinks=False)
                except OSError:
                    del w.pending[p]
                    continue
                if not seen.same(st):
                    w.pending[p] = Seen.of(st, now)
                    continue
                return w, p
        return None
