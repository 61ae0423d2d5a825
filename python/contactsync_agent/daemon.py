"""The background agent: watches source folders, runs one sync at a time, heartbeats.

Owns scheduling, file handling (settle, move, error notes), signals, health
alerts and its log; while idle it asks the store for a checkpoint and
`maintenance.prune_files` to apply the retention period. It decides nothing
about contacts: every run goes through `Mirror.sync_file`, and every database
write through the store. It holds the agent lock for its life (one agent per
database) and the writer lock only for one run at a time, letting waiting CLI
writes go first between runs.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import io
import json
import logging
import logging.handlers
import math
import os
import re
import select
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from contactsync_agent import health, maintenance
from contactsync_agent.alerts import Alert, Alerter, should_alert
from contactsync_agent.config import AgentConfig, ConfigError, SourceConfig, load_config
from contactsync_agent.errors import (
    ContactSyncError,
    RunAborted,
    SafetyLimitError,
    SourceFormatError,
)
from contactsync_agent.infile import (
    LINK_REASON,
    OWN_REASON,
    InputFile,
    InputRefused,
    identity,
    open_input,
    private_dir,
    private_file,
)
from contactsync_agent.locking import AgentLock
from contactsync_agent.mirror import Mirror
from contactsync_agent.safetext import EscapingFormatter, escape_name
from contactsync_agent.store import now_iso

if TYPE_CHECKING:
    from contactsync_agent.sources.base import Connector

log = logging.getLogger("contactsync_agent.daemon")
T = TypeVar("T")

PROCESSED, FAILED = "processed", "failed"
#: How a problem with processed/ or failed/ begins (it clears when they are fixed).
DEST_PROBLEM = "cannot move files:"
IGNORED_PREFIXES = ("~$", ".")
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~")
HINT_EVENTS = frozenset({"created", "modified", "moved", "closed", "deleted"})
CONNECTOR_KINDS = ("sql", "http")
STOP_MESSAGE = f"{health.STOPPED_PREFIX} the agent was asked to stop; the run was rolled back"
RUN_HISTORY = 20
#: After SIGTERM the agent is gone within this many seconds (the docs promise 10):
#: a run that has not ended by then is cut off as by a kill, which SQLite rolls back.
STOP_GRACE = 8.0
#: At a stop, how long each last write (the stop mark, the final checkpoint) waits
#: for another process's write: the stop stays within its 10 s promise.
SHUTDOWN_LOCK_WAIT = 3.0
#: How often (seconds) old files of processed/ and failed/ are looked for.
PRUNE_EVERY = 3600.0


class StopRequested(RunAborted):
    """Raised between batches when the agent must stop: the run's transaction rolls back."""


def ignored_name(name: str) -> bool:
    """Temp and editor files that are never an export (`~$x.csv`, `x.tmp`, `.x`, ...)."""
    low = name.lower()
    return low.startswith(IGNORED_PREFIXES) or low.endswith(IGNORED_SUFFIXES)


def wall(mono: float | None) -> str | None:
    """A monotonic deadline as a UTC time for `status`."""
    if mono is None:
        return None
    t = time.time() + (mono - time.monotonic())
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- logging

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_PHONE = re.compile(r"(?<![\w.:-])(\+|\(?0)\d[\d ()-]{6,}\d")


class RedactFilter(logging.Filter):
    """A last guard: masks e-mail addresses and phone numbers in any log line.

    The daemon never logs record contents on purpose; this catches what an
    error message from a reader might echo.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = _PHONE.sub("<phone>", _EMAIL.sub("<email>", msg))
        if clean != msg:
            record.msg, record.args = clean, None
        return True


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose every file (the first, and each new one after a
    rotation) is created owner-only, whatever the umask.

    On Windows the mode bits mean nothing (os.fchmod is missing before Python
    3.13): the folder's ACL keeps the log private, and the file is opened in
    binary mode so the C runtime does not turn each line end into CR CR LF.
    """

    def _open(self) -> io.TextIOWrapper:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0)
        fd = os.open(self.baseFilename, flags, 0o600)
        if sys.platform != "win32":
            os.fchmod(fd, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def default_log_file(db_path: Path) -> Path:
    return db_path.with_name("contactsync-agent.log")


def setup_logging(cfg: AgentConfig, db_path: Path) -> Path:
    """A rotating log file (owner-only) plus stderr, which systemd's journal collects."""
    path = cfg.log_file or default_log_file(db_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    # Messages are escaped (safetext): a control character from input never reaches the log raw.
    fmt = EscapingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    fmt.converter = time.gmtime
    fmt.default_msec_format = "%s.%03dZ"
    root = logging.getLogger("contactsync_agent")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    file_handler = PrivateRotatingFileHandler(
        path,
        maxBytes=cfg.daemon.log_max_bytes,
        backupCount=cfg.daemon.log_backups,
        encoding="utf-8",
    )
    err_handler = logging.StreamHandler(sys.stderr)
    for h in (file_handler, err_handler):
        h.setFormatter(fmt)
        h.addFilter(RedactFilter())
        root.addHandler(h)
    root.setLevel(cfg.daemon.log_level)
    root.propagate = False
    return path


# ---------------------------------------------------------------- one watched source


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

    def __init__(self, daemon: Daemon, source: str) -> None:
        self.daemon = daemon
        self.source = source

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in HINT_EVENTS:
            self.daemon.hint(self.source)


# ---------------------------------------------------------------- the daemon


class Daemon:
    """Runs until SIGTERM/SIGINT (or SIGBREAK on Windows); `run()` returns the
    process exit status. SIGHUP, where the platform has it, re-reads the config."""

    def __init__(self, config: AgentConfig, db_path: Path) -> None:
        self.config = config
        self.db_path = Path(db_path).absolute()
        self.mirror: Mirror | None = None
        self.watches: dict[str, Watch] = {}
        self.alerter: Alerter | None = None
        self.started_at = now_iso()
        self.started_dt = datetime.now(UTC)
        self._stop_signal: str | None = None
        self._reload = False
        self._hinted: set[str] = set()
        self._lock = threading.Lock()
        self._rsock, self._wsock = socket.socketpair()
        for s in (self._rsock, self._wsock):
            s.setblocking(False)
        self._old_wakeup_fd: int | None = None
        self._config_mtime = self._config_stamp()
        self._next_heartbeat = 0.0
        self._running_file: str | None = None
        # The connector of the run in progress: a stop request aborts it at once.
        self._connector: Connector | None = None
        self._running_source: str | None = None
        self._grace: threading.Timer | None = None
        self._checkpoint_busy = False
        self._next_prune = 0.0

    # ------------------------------------------------------------ wake-ups

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wsock.send(b"\0")

    def hint(self, source: str) -> None:
        """Called from observer threads: something moved in a source's folder."""
        with self._lock:
            self._hinted.add(source)
        self._wake()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Flags, a byte on a socket, the run's abort (flags and a socket shutdown) and
        # a timer: safe whatever the main thread is doing.
        if signum == getattr(signal, "SIGHUP", None):
            self._reload = True
        elif self._stop_signal is None:
            self._stop_signal = signal.Signals(signum).name
            conn = self._connector
            if conn is not None:
                conn.abort(STOP_MESSAGE)
            self._grace = threading.Timer(STOP_GRACE, self._cut_off)
            self._grace.daemon = True
            self._grace.start()
        self._wake()

    def _cut_off(self) -> None:
        """The last resort of a stop: the run did not end within STOP_GRACE seconds
        (stuck where no abort reaches). Exits as a kill would: the open transaction
        is never committed, and the next start records the run as aborted."""
        with contextlib.suppress(Exception):
            log.error(
                "stop: the run of %s did not end within %.0fs; exiting without it",
                self._running_source or "(none)",
                STOP_GRACE,
            )
            logging.shutdown()
        os._exit(1)

    def _install_signals(self) -> None:
        """Stop on SIGTERM and SIGINT everywhere, on SIGBREAK (Ctrl-Break) where it
        exists (Windows), reload on SIGHUP where it exists (not on Windows).

        The wake-up socket is also the interpreter's signal wake-up fd. On
        Windows a console event does not interrupt `select()` (there is no
        EINTR) and the Python handler only runs once the main thread wakes, so
        without it a Ctrl-C from a service wrapper would wait out the sleep.
        """
        for name in ("SIGTERM", "SIGINT", "SIGBREAK", "SIGHUP"):
            sig = getattr(signal, name, None)
            if sig is not None:
                signal.signal(sig, self._on_signal)
        try:
            self._old_wakeup_fd = signal.set_wakeup_fd(
                self._wsock.fileno(), warn_on_full_buffer=False
            )
        except (ValueError, OSError) as e:
            log.warning("no signal wake-up fd (%s); a stop may wait for the next wake-up", e)

    def _restore_wakeup_fd(self) -> None:
        """Gives the wake-up fd back, before our socket closes and its number is reused."""
        if self._old_wakeup_fd is not None:
            with contextlib.suppress(ValueError, OSError):
                signal.set_wakeup_fd(self._old_wakeup_fd)
            self._old_wakeup_fd = None

    def _sleep(self, seconds: float) -> None:
        if self._stop_signal or self._reload:
            return
        with contextlib.suppress(InterruptedError):
            select.select([self._rsock], [], [], max(seconds, 0.0))
        with contextlib.suppress(BlockingIOError, OSError):
            while self._rsock.recv(4096):
                pass

    @property
    def stopping(self) -> bool:
        return self._stop_signal is not None

    # ------------------------------------------------------------ life

    def run(self) -> int:
        self._install_signals()
        _lower_priority(self.config.daemon.nice)
        # One agent per database; the writer lock is taken per run and per write.
        agent = AgentLock(self.db_path)
        try:
            agent.acquire()
            try:
                self.mirror = Mirror.open(
                    self.db_path,
                    region=self.config.default_region,
                    wait=math.inf,
                    on_wait=self._waiting,
                    interrupt=self._check_stop,
                )
            except BaseException:
                agent.release()
                raise
        except StopRequested:
            self._restore_wakeup_fd()
            return 0
        except BaseException:
            self._restore_wakeup_fd()
            raise
        try:
            self.alerter = Alerter(self.config.alerts)
            self._write_start()
            log.info(
                "started: pid %d, database %s, config %s, log level %s",
                os.getpid(),
                self.db_path,
                self.config.path or "(none)",
                self.config.daemon.log_level,
            )
            self._build_watches()
            self._loop()
        except StopRequested:
            pass  # asked to stop while waiting for a write of another process
        finally:
            try:
                self._shutdown()
            finally:
                agent.release()
        return 0

    def _check_stop(self) -> None:
        """Called while waiting for the writer lock: a stop request ends the wait."""
        if self.stopping:
            raise StopRequested(STOP_MESSAGE)

    def _waiting(self, pid: int | None) -> None:
        log.info("waiting for process %s to finish its write to the mirror", pid or "?")

    def _loop(self) -> None:
        assert self.mirror is not None
        store = self.mirror.store
        while not self.stopping:
            if self._reload:
                self._reload = False
                self.reload("SIGHUP")
                continue
            now = time.monotonic()
            with self._lock:
                hinted, self._hinted = self._hinted, set()
            for w in self.watches.values():
                if w.name in hinted or now >= w.next_scan:
                    self._guarded(w, None, self._scan, w, now)
            picked = self._pick(now)
            if picked is not None:
                # The writer lock for the run, its file move, checkpoint and
                # health: CLI writes wait for this much, and go first when waiting.
                with store.writing(polite=True):
                    self._job(*picked)
                self._heartbeat()
                continue
            if now >= self._next_heartbeat:
                self._housekeeping()
            self._sleep(self._next_deadline() - time.monotonic())

    def _next_deadline(self) -> float:
        deadlines = [self._next_heartbeat]
        for w in self.watches.values():
            deadlines.append(w.next_scan)
            if w.due:
                deadlines.append(w.retry_at)
            if w.pending:
                soonest = min(s.since for s in w.pending.values()) + w.cfg.settle_seconds
                deadlines.append(max(soonest, w.retry_at))
        return min(deadlines)

    def _shutdown(self) -> None:
        for w in self.watches.values():
            self._stop_observer(w)
        if self.alerter is not None:
            self.alerter.close()
        if self.mirror is not None:
            # Waits a little for another process's write, then gives up on it.
            self.mirror.store.interrupt = None
            self.mirror.store.lock_wait = SHUTDOWN_LOCK_WAIT
            try:
                with self.mirror.store.transaction():
                    self.mirror.store.set_meta("daemon.state", "stopped")
                    self.mirror.store.set_meta("daemon.stopped_at", now_iso())
            except Exception as e:  # a broken database must not keep us from exiting
                log.error("could not record the stop in the database: %s", e)
            self.mirror.close()
        log.info("stopped%s", f" ({self._stop_signal})" if self._stop_signal else "")
        if self._grace is not None:
            self._grace.cancel()
        self._restore_wakeup_fd()
        self._rsock.close()
        self._wsock.close()

    # ------------------------------------------------------------ config

    def _config_stamp(self) -> int | None:
        p = self.config.path
        try:
            return p.stat().st_mtime_ns if p else None
        except OSError:
            return None

    def reload(self, why: str) -> None:
        """Re-reads the config; a bad file is logged and the old config kept."""
        if self.config.path is None:
            log.info("reload (%s): no config file; nothing to reload", why)
            return
        self._config_mtime = self._config_stamp()
        try:
            new = load_config(self.config.path, required=True)
        except ConfigError as e:
            log.error("reload (%s) refused, keeping the running config: %s", why, e)
            return
        if new.database and new.database.absolute() != self.db_path:
            log.warning(
                "reload: [agent] database changed to %s; restart the agent to use it", new.database
            )
        old = self.config
        self.config = new
        logging.getLogger("contactsync_agent").setLevel(new.daemon.log_level)
        if new.alerts != old.alerts:
            if self.alerter is not None:
                self.alerter.close(timeout=1.0)
            self.alerter = Alerter(new.alerts)
        self._build_watches()
        log.info(
            "config reloaded (%s): %d source(s) enabled",
            why,
            sum(1 for s in new.sources.values() if s.enabled),
        )

    def _build_watches(self) -> None:
        wanted = {n: s for n, s in self.config.sources.items() if s.enabled}
        for name in list(self.watches):
            if name not in wanted or wanted[name] != self.watches[name].cfg:
                self._stop_observer(self.watches.pop(name))
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
            self._start_observer(w)
        for name in self.config.sources:
            if name not in wanted:
                log.info(
                    "source %s: disabled (enable with `contactsync source enable %s`)", name, name
                )

    # ------------------------------------------------------------ observers

    def _start_observer(self, w: Watch) -> None:
        try:
            st = w.folder.stat()
        except OSError as e:
            self._problem(w, f"watched folder {w.folder} is not reachable: {e.strerror or e}")
            return
        if not w.folder.is_dir():
            self._problem(w, f"watched folder {w.folder} is not a folder")
            return
        obs: BaseObserver
        if w.cfg.polling:
            obs = PollingObserver(timeout=min(max(w.cfg.settle_seconds, 1.0), 10.0))
        else:
            obs = Observer()
        obs.daemon = True
        try:
            obs.schedule(_Hints(self, w.name), str(w.folder), recursive=False)
            obs.start()
        except OSError as e:
            # inotify watch limits and the like: the rescans still find every file.
            log.warning("source %s: file events unavailable (%s); relying on rescans", w.name, e)
            w.observer = None
        else:
            w.observer = obs
        w.folder_id = (st.st_dev, st.st_ino)
        self._problem(w, None)
        w.next_scan = 0.0
        log.info(
            "source %s: watching %s for %s (%s), settle %.1fs",
            w.name,
            w.folder,
            w.cfg.pattern,
            "polling" if w.cfg.polling else "file events",
            w.cfg.settle_seconds,
        )

    def _stop_observer(self, w: Watch) -> None:
        if w.observer is not None:
            with contextlib.suppress(Exception):
                w.observer.stop()
                w.observer.join(timeout=2.0)
            w.observer = None

    def _check_observer(self, w: Watch) -> None:
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
        self._stop_observer(w)
        self._start_observer(w)

    def _problem(self, w: Watch, text: str | None) -> None:
        """Records what keeps a source from working (None: nothing), logging changes only."""
        if text == w.problem:
            return
        if text is None:
            log.info("source %s: ok again (was: %s)", w.name, w.problem)
        else:
            log.error("source %s: %s", w.name, text)
        w.problem = text

    # ------------------------------------------------------------ files

    def _scan(self, w: Watch, now: float) -> None:
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
            self._problem(w, f"watched folder {w.folder} is not readable: {e.strerror or e}")
            return
        if w.problem and w.problem.startswith("watched folder"):
            self._problem(w, None)
        blocked = self._dest_problem(w)
        if blocked is not None:
            self._problem(w, blocked)
        elif w.problem and w.problem.startswith(DEST_PROBLEM):
            self._problem(w, None)
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
                self._refuse_once(w, p, st, LINK_REASON)
                continue
            if not stat.S_ISREG(st.st_mode):
                self._refuse_once(w, p, st, "is not a regular file (a pipe, socket or device)")
                continue
            if (st.st_dev, st.st_ino) in own:
                self._refuse_once(w, p, st, OWN_REASON)
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

    def _refuse_once(self, w: Watch, path: Path, st: os.stat_result | None, reason: str) -> None:
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

    def _dest_problem(self, w: Watch) -> str | None:
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

    def _pick(self, now: float) -> tuple[Watch, Path | None] | None:
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

    def _job(self, w: Watch, path: Path | None) -> None:
        """One file or connector run; nothing it raises ends the agent."""
        self._guarded(w, path, self._process, w, path)

    def _guarded(self, w: Watch, path: Path | None, fn: Callable[..., None], *args: Any) -> None:
        """Runs `fn(*args)`; an error nobody foresaw is logged (the traceback at debug
        level), the file is set aside while it stays unchanged, and the agent goes on."""
        try:
            fn(*args)
        except Exception as e:
            what = escape_name(path.name) if path is not None else "its turn"
            log.error(
                "source %s: unexpected error while handling %s (%s: %s); set aside, "
                "the agent goes on",
                w.name,
                what,
                type(e).__name__,
                escape_name(str(e)),
            )
            log.debug("the unexpected error", exc_info=True)
            if path is None:
                w.due = False  # a connector: again at its next interval
                return
            w.pending.pop(path, None)
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError:
                return
            w.kept[path] = (st.st_size, st.st_mtime_ns)

    def _process(self, w: Watch, path: Path | None) -> None:
        if path is None:
            self._run_connector(w)
            return
        assert self.mirror is not None
        w.last_run = time.monotonic()
        seen = w.pending.pop(path)
        shown = escape_name(path.name)
        # Opened once, never through a link nor onto the mirror's files: the digest,
        # the reader and the move below all concern this one file.
        try:
            f = open_input(path, follow_links=False, own=self.mirror.own_files)
        except InputRefused as e:
            self._refuse_once(w, path, None, e.reason)
            return
        except FileNotFoundError:
            log.info("source %s: %s vanished before its run", w.name, shown)
            return
        except OSError as e:
            self._retry(w, path, seen, f"cannot open the file: {e.strerror or e}", None, None)
            return
        except ContactSyncError:  # no such file
            log.info("source %s: %s vanished before its run", w.name, shown)
            return
        with f:
            if not seen.same(f.st):  # changed between the last look and the open
                w.pending[path] = Seen.of(f.st, time.monotonic())
                return
            self._process_file(w, f, seen)

    def _process_file(self, w: Watch, f: InputFile, seen: Seen) -> None:
        assert self.mirror is not None
        m = self.mirror
        path, shown = f.path, escape_name(f.path.name)
        try:
            digest = f.digest()
        except OSError as e:
            self._retry(w, path, seen, f"cannot read the file: {e.strerror or e}", None, f)
            return
        earlier = self._refused_before(w.name, digest)
        if earlier is not None:
            run_id, error = earlier
            log.warning(
                "source %s: %s has the same content as the file refused in run %d; not run again",
                w.name,
                shown,
                run_id,
            )
            self._move(
                w,
                f,
                FAILED,
                f"The same content was refused in run {run_id} "
                f"and the configuration has not changed since.\n\n{error}",
                run_id,
            )
            return
        sc = w.cfg
        log.info("source %s: %s settled (%d bytes); run starting", w.name, shown, seen.size)
        last_id = self._last_run_id()
        self._running_file = shown
        self._running_source = w.name
        try:
            if sc.format == "vcard":
                from contactsync_agent import sources  # heavy: only when needed

                conn = sources.open_connector(sc, path=f)
                report = self._with_connector(
                    w,
                    conn,
                    lambda: sources.sync_source(
                        m, sc, path=f, progress=self._progress, connector=conn
                    ),
                )
            else:
                report = m.sync_file(
                    w.name,
                    f,
                    mode=sc.mode,
                    format=sc.format,
                    mapping=sc.mapping,
                    mass_delete_limit=sc.mass_delete_limit,
                    encoding=sc.encoding,
                    delimiter=sc.delimiter,
                    max_file_bytes=sc.max_file_bytes,
                    chunk_size=sc.chunk_size,
                    progress=self._progress,
                    ownership=sc.ownership,
                    unique=sc.unique,
                )
        except RunAborted:
            log.info(
                "source %s: run of %s rolled back (stopping); the file stays for the next start",
                w.name,
                shown,
            )
            return
        except (SourceFormatError, SafetyLimitError) as e:
            run_id = self._ensure_refused_run(w, f.shown, digest, last_id, str(e))
            log.warning("source %s: %s refused (run %s): %s", w.name, shown, run_id, e)
            self._move(w, f, FAILED, _refusal_help(w.name, f.shown, e), run_id)
        except ContactSyncError as e:
            run_id = self._ensure_refused_run(w, f.shown, digest, last_id, str(e))
            log.warning("source %s: %s refused (run %s): %s", w.name, shown, run_id, e)
            self._move(w, f, FAILED, str(e), run_id)
        except Exception as e:  # the database or the disk: worth another try later
            log.error("source %s: run of %s failed: %s: %s", w.name, shown, type(e).__name__, e)
            log.debug("the failed run", exc_info=True)
            self._retry(w, path, seen, f"{type(e).__name__}: {e}", digest, f)
        else:
            w.attempts.pop(digest, None)
            w.retry_at = 0.0
            c = report.counts
            log.info(
                "source %s: run %d ok in %.2fs: %d records, %d created, %d converted, "
                "%d updated, %d unchanged, %d deleted, %d unlinked, %d to review, "
                "%d activities, %d rejected",
                w.name,
                report.run_id,
                report.duration_s,
                c["records"],
                c["created"],
                c["converted"],
                c["updated"],
                c["unchanged"],
                c["deleted"],
                c["unlinked"],
                c["review_items"],
                c["activities"],
                c["rejected"],
            )
            for warning in report.warnings:  # e.g. deletions skipped (counts only, no data)
                log.warning("source %s: run %d: %s", w.name, report.run_id, warning)
            self._move(w, f, PROCESSED, None, report.run_id)
        finally:
            self._running_file = self._running_source = None
        self._checkpoint()
        self._judge(w)

    def _run_connector(self, w: Watch) -> None:
        """One run of a sql or http source (the `sources` package does the reading)."""
        assert self.mirror is not None
        from contactsync_agent import sources  # heavy (database drivers): only when needed

        w.last_run = time.monotonic()
        w.due = False
        last_id = self._last_run_id()
        log.info("source %s: %s run starting", w.name, w.cfg.kind)
        mirror = self.mirror
        try:
            conn = sources.open_connector(w.cfg)
            report = self._with_connector(
                w,
                conn,
                lambda: sources.sync_source(
                    mirror, w.cfg, progress=self._progress, connector=conn
                ),
            )
        except RunAborted:
            log.info("source %s: run rolled back (stopping)", w.name)
            return
        except ConfigError as e:
            w.problem = str(e)
            log.error("source %s: %s (fix the config; it is re-read on change)", w.name, e)
        except (SourceFormatError, SafetyLimitError) as e:
            run_id = self._ensure_refused_run(w, f"{w.cfg.kind}:{w.name}", None, last_id, str(e))
            log.warning("source %s: run %s refused: %s", w.name, run_id, e)
        except Exception as e:  # the network, the server, the disk: try again later
            error = f"{type(e).__name__}: {e}"
            self._ensure_refused_run(
                w, f"{w.cfg.kind}:{w.name}", None, last_id, error, status="failed"
            )
            n = w.attempts.get("run", 0) + 1
            d = self.config.daemon
            if n < d.max_attempts:
                w.attempts["run"] = n
                delay = min(d.retry_base * 2 ** (n - 1), d.retry_max)
                w.retry_at = time.monotonic() + delay
                w.due = True
                log.warning(
                    "source %s: attempt %d of %d failed (%s); retrying in %.0fs",
                    w.name,
                    n,
                    d.max_attempts,
                    error,
                    delay,
                )
            else:
                w.attempts.pop("run", None)
                log.error(
                    "source %s: %d attempts failed (%s); next try at the next interval",
                    w.name,
                    n,
                    error,
                )
        else:
            w.attempts.pop("run", None)
            w.retry_at = 0.0
            c = report.counts
            log.info(
                "source %s: run %d ok in %.2fs: %d records, %d created, %d updated, "
                "%d unchanged, %d deleted, %d rejected",
                w.name,
                report.run_id,
                report.duration_s,
                c["records"],
                c["created"],
                c["updated"],
                c["unchanged"],
                c["deleted"],
                c["rejected"],
            )
        self._checkpoint()
        self._judge(w)

    def _with_connector(self, w: Watch, conn: Connector, run: Callable[[], T]) -> T:
        """Runs `run` with `conn` as the run a stop request aborts."""
        self._connector, self._running_source = conn, w.name
        try:
            if self.stopping:  # the signal came before the connector was known
                conn.abort(STOP_MESSAGE)
            return run()
        finally:
            self._connector = self._running_source = None

    def _progress(self, records: int) -> None:
        # Called between batches inside the run's transaction: raising rolls it all back.
        if self.stopping:
            raise StopRequested(STOP_MESSAGE)
        log.debug("source %s: run in progress, %d records so far", self._running_source, records)

    def _retry(
        self,
        w: Watch,
        path: Path,
        seen: Seen,
        error: str,
        digest: str | None,
        f: InputFile | None,
    ) -> None:
        key = digest or f"{escape_name(path)}:{seen.size}:{seen.mtime_ns}"
        n = w.attempts.get(key, 0) + 1
        w.attempts[key] = n
        d = self.config.daemon
        shown = escape_name(path.name)
        if n >= d.max_attempts:
            w.attempts.pop(key, None)
            log.error("source %s: %s failed %d times; giving up on it", w.name, shown, n)
            if f is not None:
                self._move(w, f, FAILED, f"Failed {n} times; the last error:\n{error}", None)
            else:
                w.kept[path] = (seen.size, seen.mtime_ns)  # not opened: left alone
            return
        delay = min(d.retry_base * 2 ** (n - 1), d.retry_max)
        w.retry_at = time.monotonic() + delay
        w.pending[path] = seen
        log.warning(
            "source %s: attempt %d of %d for %s failed (%s); retrying in %.0fs",
            w.name,
            n,
            d.max_attempts,
            shown,
            escape_name(error),
            delay,
        )

    def _move(
        self, w: Watch, f: InputFile, where: str, error: str | None, run_id: int | None
    ) -> None:
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
                self._problem(w, self._dest_problem(w) or f"{DEST_PROBLEM} {where}/: {e}")
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

    # ------------------------------------------------------------ runs (read) and refusals

    def _last_run_id(self) -> int:
        assert self.mirror is not None
        return self.mirror.store.runs.last_id()

    def _refused_before(self, source: str, digest: str) -> tuple[int, str] | None:
        """A refused run of this very content since the config last changed."""
        assert self.mirror is not None
        row = self.mirror.store.runs.last_done_with(source, digest)
        if row is None or row[1] != "refused":
            return None
        started = health.parse_time(row[3])
        if self._config_mtime is not None and started is not None:
            changed = datetime.fromtimestamp(self._config_mtime / 1e9, UTC)
            if changed > started:
                return None
        return int(row[0]), str(row[2] or "")

    def _ensure_refused_run(
        self,
        w: Watch,
        path: Path | str,
        digest: str | None,
        last_id: int,
        error: str,
        status: str = "refused",
    ) -> int:
        """A refusal before the run began (file too big) still gets a run row, so it
        shows in `status` and health, and the same file is recognised next time."""
        assert self.mirror is not None
        store = self.mirror.store
        latest = store.runs.latest_since(w.name, last_id)
        if latest is not None:
            return latest
        run_id = store.runs.begin(w.name, w.cfg.mode, str(path), digest, False)
        with store.transaction():
            store.runs.finish(run_id, status, {}, error=error, duration_ms=0)
        return run_id

    # ------------------------------------------------------------ health, heartbeat

    def _checkpoint(self) -> None:
        """Copies the run just committed from the WAL into the database, and resets
        the WAL when no reader uses it (bounded wait): files queued back to back
        leave no idle time, and readers overlapping them would otherwise keep the
        WAL from ever starting over."""
        assert self.mirror is not None
        try:
            self.mirror.checkpoint()
            self.mirror.store.idle_checkpoint()
        except Exception:  # a busy or full disk: the next run's start tries again
            log.warning("checkpoint after the run failed; it is retried before the next run")

    def _judge(self, w: Watch) -> health.Health:
        """Evaluates a source's health and alerts once per change of state."""
        assert self.mirror is not None
        store = self.mirror.store
        verdict = health.evaluate(
            self.mirror.runs(w.name, RUN_HISTORY),
            now=datetime.now(UTC),
            interval=w.cfg.interval,
            expected_since=self.started_dt,
            max_duration=w.cfg.max_duration,
            problem=w.problem,
        )
        key = f"alert.{w.name}.state"
        last = store.get_meta(key)
        if should_alert(last, verdict.state):
            with store.transaction():
                store.set_meta(key, verdict.state)
                store.set_meta(f"alert.{w.name}.at", now_iso())
            if self.alerter is not None:
                self.alerter.send(
                    Alert(
                        w.name,
                        verdict.state,
                        last or health.HEALTHY,
                        verdict.reasons,
                        now_iso(),
                        str(self.db_path),
                    )
                )
        elif last is None:
            with store.transaction():
                store.set_meta(key, verdict.state)
        return verdict

    def _housekeeping(self) -> None:
        stamp = self._config_stamp()
        if stamp != self._config_mtime and self.config.path is not None:
            self.reload("config file changed")
        for w in self.watches.values():
            self._check_observer(w)
            self._judge(w)
        self._idle_upkeep()
        self._heartbeat()

    def _idle_upkeep(self) -> None:
        """While idle: the checkpoint that resets the WAL (completing a pending
        erasure), and now and then the retention of processed/ and failed/."""
        assert self.mirror is not None
        store = self.mirror.store
        try:
            pending = store.erasure_pending() is not None
            result = store.idle_checkpoint()
        except Exception as e:  # a full disk or a damaged file: try again next time
            log.warning("idle checkpoint failed: %s", e)
        else:
            busy = result is not None and not result.complete
            if busy and not self._checkpoint_busy:
                log.info("idle checkpoint: readers still use the WAL (%.1f MB); retrying",
                         result.wal_bytes / 1e6 if result else 0.0)
            elif pending and result is not None and result.complete:
                log.info("idle checkpoint: the pending erasure is complete")
            self._checkpoint_busy = busy
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + min(PRUNE_EVERY,
                                                      self.config.daemon.retention / 2)
            folders = [w.folder / sub for w in self.watches.values() if w.cfg.kind == "folder"
                       for sub in (PROCESSED, FAILED)]
            pruned = maintenance.prune_files(folders, [self.db_path.parent],
                                             self.config.daemon.retention)
            if pruned.removed or pruned.failed:
                log.info("retention: removed %d file(s) older than %.0f days%s",
                         len(pruned.removed), self.config.daemon.retention / 86400,
                         f"; {len(pruned.failed)} could not be removed" if pruned.failed else "")

    def _write_start(self) -> None:
        assert self.mirror is not None
        store = self.mirror.store
        from importlib.metadata import PackageNotFoundError, version

        try:
            ver = version("contactsync-agent")
        except PackageNotFoundError:
            ver = "unknown"
        with store.transaction():
            for k, v in {
                "daemon.pid": str(os.getpid()),
                "daemon.host": socket.gethostname(),
                "daemon.started_at": self.started_at,
                "daemon.state": "running",
                "daemon.version": ver,
                "daemon.config": str(self.config.path or ""),
                "daemon.heartbeat_interval": str(self.config.daemon.heartbeat),
            }.items():
                store.set_meta(k, v)
        self._heartbeat()

    def _heartbeat(self) -> None:
        assert self.mirror is not None
        store = self.mirror.store
        sources = {
            w.name: {
                "watch": None
                if w.cfg.kind != "folder"
                else ("polling" if w.cfg.polling else "events"),
                "observer_alive": bool(w.observer and w.observer.is_alive()),
                "pending_files": len(w.pending),
                "next_check_at": wall(w.next_scan),
                "retry_at": wall(w.retry_at) if w.retry_at > time.monotonic() else None,
                "problem": w.problem,
            }
            for w in self.watches.values()
        }
        with store.transaction():
            store.set_meta("daemon.heartbeat_at", now_iso())
            store.set_meta("daemon.heartbeat_interval", str(self.config.daemon.heartbeat))
            store.set_meta("daemon.sources", json.dumps(sources, sort_keys=True))
        self._next_heartbeat = time.monotonic() + self.config.daemon.heartbeat


def _lower_priority(nice: int) -> None:
    """Raises the process's niceness to at least `nice` (never lowers it; POSIX only:
    Windows has no os.nice, and the agent there runs at the service's priority)."""
    if sys.platform == "win32" or nice <= 0:
        return
    with contextlib.suppress(OSError):
        current = os.nice(0)
        if nice > current:
            os.nice(nice - current)


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
        fd = private_file(self._at(name), exclusive=False, dir_fd=self.fd)
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(text)


def escape_name_lines(text: str) -> str:
    """Multi-line text (an error and its help) with each line escaped, line breaks kept."""
    return "\n".join(escape_name(line) for line in text.split("\n"))


def _refusal_help(source: str, shown: str, e: Exception) -> str:
    if isinstance(e, SafetyLimitError) and e.would_delete:
        return (
            f"{e}\n\nIf these deletions are real, run (the agent may keep running)\n"
            f'  contactsync sync --source {source} --allow-mass-delete "<this file>"\n'
        )
    return str(e)


def run_daemon(config_path: str | os.PathLike[str] | None, db: Path | None) -> int:
    """`contactsync daemon`: loads the config, sets up the log and runs until stopped."""
    cfg = load_config(Path(config_path).absolute() if config_path else None, required=True)
    db_path = Path(db or cfg.database or _default_db()).absolute()
    log_path = setup_logging(cfg, db_path)
    log.debug("logging to %s", log_path)
    return Daemon(cfg, db_path).run()


def _default_db() -> Path:
    from contactsync_agent.mirror import default_db_path

    return default_db_path()


__all__ = ["Daemon", "RedactFilter", "StopRequested", "ignored_name", "run_daemon", "setup_logging"]
