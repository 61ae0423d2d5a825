"""The agent's loop and signals: `Daemon` runs until SIGTERM/SIGINT (SIGBREAK on
Windows), re-reads its config on SIGHUP or when the file changes, and between
wake-ups scans, picks the next job, runs it under the writer lock, and keeps
house while idle.

A composition of the parts, each given the shared `AgentState`: `Signals`
(stop and reload requests, the wake-up socket), `watch.Watcher` (observers,
scans, settle), `jobs.Jobs` (runs, retries, moves) and `heartbeat.Heartbeat`
(heartbeat, health and alerts, idle checkpoint and retention); with `[web]
enabled` it starts the web console (`web.WebServer`, a thread of its own) and
stops it first at shutdown. It holds the
agent lock for its life (one agent per database) and the writer lock only for
one run at a time, letting waiting CLI writes go first between runs. It tells
systemd when it is ready, alive (the watchdog, pinged from this loop's thread
only: a hung loop stops pinging) and stopping, and starts `/metrics` when
`[agent] metrics_listen` asks for it. It must not handle files, runs or health
itself: it schedules the parts that do.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from contactsync_agent.alerts import Alerter
from contactsync_agent.config import AgentConfig, load_config
from contactsync_agent.daemon.heartbeat import Heartbeat
from contactsync_agent.daemon.jobs import STOP_MESSAGE, Jobs, StopRequested
from contactsync_agent.daemon.logs import setup_logging
from contactsync_agent.daemon.state import AgentState
from contactsync_agent.daemon.watch import Watch, Watcher
from contactsync_agent.errors import ConfigError, ContactSyncError
from contactsync_agent.locking import AgentLock
from contactsync_agent.mirror import Mirror
from contactsync_agent.notify import Notifier
from contactsync_agent.store import now_iso

if TYPE_CHECKING:
    from contactsync_agent.metrics import MetricsServer
    from contactsync_agent.web import WebServer

log = logging.getLogger("contactsync_agent.daemon")

#: After SIGTERM the agent is gone within this many seconds (the docs promise 10):
#: a run that has not ended by then is cut off as by a kill, which SQLite rolls back.
STOP_GRACE = 8.0
#: At a stop, how long each last write (the stop mark, the final checkpoint) waits
#: for another process's write: the stop stays within its 10 s promise.
SHUTDOWN_LOCK_WAIT = 3.0


class Signals:
    """Stop and reload requests from signal handlers, hints from observer threads,
    and the socket that wakes the loop (also the interpreter's signal wake-up fd)."""

    def __init__(self, state: AgentState) -> None:
        self.state = state
        #: SIGHUP: the loop re-reads the config at its next turn.
        self.reload_requested = False
        self._hinted: set[str] = set()
        self._lock = threading.Lock()
        self._rsock, self._wsock = socket.socketpair()
        for s in (self._rsock, self._wsock):
            s.setblocking(False)
        self._old_wakeup_fd: int | None = None
        self._grace: threading.Timer | None = None

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wsock.send(b"\0")

    def hint(self, source: str) -> None:
        """Called from observer threads: something moved in a source's folder."""
        with self._lock:
            self._hinted.add(source)
        self.wake()

    def take_hints(self) -> set[str]:
        """The sources hinted since the last call."""
        with self._lock:
            hinted, self._hinted = self._hinted, set()
        return hinted

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Flags, a byte on a socket, the run's abort (flags and a socket shutdown) and
        # a timer: safe whatever the main thread is doing.
        if signum == getattr(signal, "SIGHUP", None):
            self.reload_requested = True
        elif self.state.stop_signal is None:
            self.state.stop_signal = signal.Signals(signum).name
            conn = self.state.connector
            if conn is not None:
                conn.abort(STOP_MESSAGE)
            self._grace = threading.Timer(STOP_GRACE, self._cut_off)
            self._grace.daemon = True
            self._grace.start()
        self.wake()

    def _cut_off(self) -> None:
        """The last resort of a stop: the run did not end within STOP_GRACE seconds
        (stuck where no abort reaches). Exits as a kill would: the open transaction
        is never committed, and the next start records the run as aborted."""
        with contextlib.suppress(Exception):
            log.error(
                "stop: the run of %s did not end within %.0fs; exiting without it",
                self.state.running_source or "(none)",
                STOP_GRACE,
            )
            logging.shutdown()
        os._exit(1)

    def install(self) -> None:
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

    def restore_wakeup_fd(self) -> None:
        """Gives the wake-up fd back, before our socket closes and its number is reused."""
        if self._old_wakeup_fd is not None:
            with contextlib.suppress(ValueError, OSError):
                signal.set_wakeup_fd(self._old_wakeup_fd)
            self._old_wakeup_fd = None

    def sleep(self, seconds: float) -> None:
        """Waits up to `seconds` for a wake-up (a hint, a signal); not at all when a
        stop or a reload is asked for."""
        if self.state.stopping or self.reload_requested:
            return
        with contextlib.suppress(InterruptedError):
            select.select([self._rsock], [], [], max(seconds, 0.0))
        with contextlib.suppress(BlockingIOError, OSError):
            while self._rsock.recv(4096):
                pass

    def close(self) -> None:
        """After the last wake-up: no cut-off pending, the wake-up fd given back, the
        sockets closed."""
        if self._grace is not None:
            self._grace.cancel()
        self.restore_wakeup_fd()
        self._rsock.close()
        self._wsock.close()


class Daemon:
    """Runs until SIGTERM/SIGINT (or SIGBREAK on Windows); `run()` returns the
    process exit status. SIGHUP, where the platform has it, re-reads the config."""

    #: The log level given on the command line (-q/-v): wins over the config's,
    #: across reloads too.
    log_level_override: str | None = None

    def __init__(self, config: AgentConfig, db_path: Path) -> None:
        self.state = AgentState(config, Path(db_path).absolute())
        self.state.config_mtime = self._config_stamp()
        self.signals = Signals(self.state)
        self.watcher = Watcher(self.state, self.signals.hint)
        self.heartbeat = Heartbeat(self.state, self.watcher)
        self.jobs = Jobs(self.state, self.heartbeat)
        self.state.notifier = Notifier.from_env()
        self.metrics: MetricsServer | None = None
        #: The web console, when `[web] enabled` (on its own thread).
        self.web: WebServer | None = None

    # ------------------------------------------------------------ the shared state

    @property
    def config(self) -> AgentConfig:
        return self.state.config

    @property
    def db_path(self) -> Path:
        return self.state.db_path

    @property
    def mirror(self) -> Mirror | None:
        return self.state.mirror

    @mirror.setter
    def mirror(self, mirror: Mirror | None) -> None:
        self.state.mirror = mirror

    @property
    def alerter(self) -> Alerter | None:
        return self.state.alerter

    @alerter.setter
    def alerter(self, alerter: Alerter | None) -> None:
        self.state.alerter = alerter

    @property
    def watches(self) -> dict[str, Watch]:
        return self.watcher.watches

    @property
    def stopping(self) -> bool:
        return self.state.stopping

    # ------------------------------------------------------------ life

    def run(self) -> int:
        self.signals.install()
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
            self.signals.restore_wakeup_fd()
            return 0
        except BaseException:
            self.signals.restore_wakeup_fd()
            raise
        try:
            self.alerter = Alerter(self.config.alerts)
            self._serve_metrics()
            self.heartbeat.write_start()
            log.info(
                "started: pid %d, database %s, config %s, log level %s",
                os.getpid(),
                self.db_path,
                self.config.path or "(none)",
                self.config.daemon.log_level,
            )
            self.watcher.build()
            self._start_web()
            notifier = self.state.notifier
            notifier.ready(self._status_text())
            if notifier.ping_every:
                log.info("systemd watchdog: a ping every %.1fs", notifier.ping_every)
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
        """Called while waiting for the writer lock: a stop request ends the wait
        (and the wait, the loop's own, keeps the watchdog fed)."""
        self.state.notifier.watchdog()
        if self.stopping:
            raise StopRequested(STOP_MESSAGE)

    def _waiting(self, pid: int | None) -> None:
        log.info("waiting for process %s to finish its write to the mirror", pid or "?")

    def _loop(self) -> None:
        assert self.mirror is not None
        store = self.mirror.store
        notifier = self.state.notifier
        while not self.stopping:
            notifier.watchdog()
            if self.signals.reload_requested:
                self.signals.reload_requested = False
                self.reload("SIGHUP")
                continue
            now = time.monotonic()
            hinted = self.signals.take_hints()
            for w in self.watches.values():
                if w.name in hinted or now >= w.next_scan:
                    self.jobs.guarded(w, None, self.watcher.scan, w, now)
            picked = self.watcher.pick(now)
            if picked is not None:
                notifier.status(f"syncing source {picked[0].name}")
                # The writer lock for the run, its file move, checkpoint and
                # health: CLI writes wait for this much, and go first when waiting.
                with store.writing(polite=True):
                    self.jobs.job(*picked)
                self.heartbeat.beat()
                continue
            notifier.status(self._status_text())
            if now >= self.heartbeat.next_beat:
                self._housekeeping()
            self.signals.sleep(self._next_deadline() - time.monotonic())

    def _status_text(self) -> str:
        """systemd's STATUS= while idle."""
        return f"idle; {len(self.watches)} source(s) watched" + (
            f", /metrics on {self.state.metrics_address}" if self.state.metrics_address else "")

    def _serve_metrics(self) -> None:
        """Serves `/metrics` on `[agent] metrics_listen` (again after a change of it);
        an address that cannot be bound is logged and the agent goes on without it."""
        want = self.config.daemon.metrics_listen
        if self.metrics is not None:
            if want == (self.metrics.host, self.metrics.want_port):
                return
            self.metrics.stop()
            self.metrics = None
            self.state.metrics_address = None
        if want is None:
            return
        # Only when asked for: prometheus_client (and the ssl module it loads) is
        # not part of every agent's start.
        from contactsync_agent.metrics import MetricsServer

        host, port = want
        try:
            self.metrics = MetricsServer.start(host, port, self.db_path, lambda: self.config)
        except OSError as e:
            log.error("metrics_listen %s:%d: cannot listen (%s); /metrics is not served",
                      host, port, e.strerror or e)
            return
        self.state.metrics_address = self.metrics.address
        log.info("serving Prometheus metrics on http://%s/metrics", self.metrics.address)

    def _next_deadline(self) -> float:
        deadlines = [self.heartbeat.next_beat]
        ping = self.state.notifier.next_ping()
        if ping is not None:
            deadlines.append(ping)
        for w in self.watches.values():
            deadlines.append(w.next_scan)
            if w.due:
                deadlines.append(w.retry_at)
            if w.pending:
                soonest = min(s.since for s in w.pending.values()) + w.cfg.settle_seconds
                deadlines.append(max(soonest, w.retry_at))
        return min(deadlines)

    def _start_web(self) -> None:
        """`[web] enabled`: the console on a thread of ours, stopped at shutdown. One
        that cannot start (no token for a non-loopback host, a busy port) is
        logged; the agent goes on syncing without it."""
        web = self.config.web
        if not web.enabled:
            return
        from contactsync_agent.web import WebServer, read_token

        try:
            server = WebServer(self.db_path, host=web.host, port=web.port,
                               token=read_token(web.token_file), config=self.config)
            server.start()
        except ContactSyncError as e:
            log.error("web console not started: %s", e)
            return
        self.web = server
        log.info("web console on %s", server.url)

    def _shutdown(self) -> None:
        self.state.notifier.stopping(
            f"stopping ({self.state.stop_signal})" if self.state.stop_signal else "stopping")
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
        if self.web is not None:
            self.web.stop()
            self.web = None
        for w in self.watches.values():
            self.watcher.stop_observer(w)
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
                    self.mirror.store.set_meta("daemon.metrics_listen", "")
            except Exception as e:  # a broken database must not keep us from exiting
                log.error("could not record the stop in the database: %s", e)
            self.mirror.close()
        log.info("stopped%s", f" ({self.state.stop_signal})" if self.state.stop_signal else "")
        self.signals.close()
        self.state.notifier.close()

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
        self.state.config_mtime = self._config_stamp()
        try:
            new = load_config(self.config.path, required=True)
        except ConfigError as e:
            log.error("reload (%s) refused, keeping the running config: %s", why, e)
            return
        if new.database and new.database.absolute() != self.db_path:
            log.warning(
                "reload: [agent] database changed to %s; restart the agent to use it", new.database
            )
        if self.log_level_override:
            new.daemon.log_level = self.log_level_override
        old = self.config
        self.state.config = new
        logging.getLogger("contactsync_agent").setLevel(new.daemon.log_level)
        if new.alerts != old.alerts:
            if self.alerter is not None:
                self.alerter.close(timeout=1.0)
            self.alerter = Alerter(new.alerts)
        self.watcher.build()
        self._serve_metrics()
        log.info(
            "config reloaded (%s): %d source(s) enabled",
            why,
            sum(1 for s in new.sources.values() if s.enabled),
        )

    def _housekeeping(self) -> None:
        stamp = self._config_stamp()
        if stamp != self.state.config_mtime and self.config.path is not None:
            self.reload("config file changed")
        for w in self.watches.values():
            self.watcher.check_observer(w)
            self.heartbeat.judge(w)
        self.heartbeat.idle_upkeep()
        self.heartbeat.beat()


def _lower_priority(nice: int) -> None:
    """Raises the process's niceness to at least `nice` (never lowers it; POSIX only:
    Windows has no os.nice, and the agent there runs at the service's priority)."""
    if sys.platform == "win32" or nice <= 0:
        return
    with contextlib.suppress(OSError):
        current = os.nice(0)
        if nice > current:
            os.nice(nice - current)


def run_daemon(config_path: str | os.PathLike[str] | None, db: Path | None,
               log_level: str | None = None) -> int:
    """`contactsync daemon`: loads the config, sets up the log and runs until stopped.
    `log_level` (DEBUG, INFO, WARNING, ERROR) overrides `[agent] log_level`."""
    cfg = load_config(Path(config_path).absolute() if config_path else None, required=True)
    if log_level:
        cfg.daemon.log_level = log_level
    db_path = Path(db or cfg.database or _default_db()).absolute()
    log_path = setup_logging(cfg, db_path)
    log.debug("logging to %s", log_path)
    daemon = Daemon(cfg, db_path)
    daemon.log_level_override = log_level
    return daemon.run()


def _default_db() -> Path:
    from contactsync_agent.mirror import default_db_path

    return default_db_path()
