"""The agent's heartbeat and health: the start record and the heartbeat in the
database (what `status` reads), each source's health judged after its runs and
while idle with an alert once per change of state, the checkpoint after a run,
and the idle upkeep (the WAL-resetting checkpoint, the retention of processed/
and failed/).

Records and judges; it must not run a sync, move a file or decide what a run
does. Its database writes go through the store (meta, checkpoints); the verdict
itself is `contactsync_agent.health`'s, shared with `status`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from datetime import UTC, datetime

from contactsync_agent import health, maintenance
from contactsync_agent.alerts import Alert, should_alert
from contactsync_agent.daemon.state import AgentState, Part
from contactsync_agent.daemon.watch import FAILED, PROCESSED, Watch, Watcher
from contactsync_agent.store import now_iso

log = logging.getLogger("contactsync_agent.daemon")

RUN_HISTORY = 20
#: How often (seconds) old files of processed/ and failed/ are looked for.
PRUNE_EVERY = 3600.0


def wall(mono: float | None) -> str | None:
    """A monotonic deadline as a UTC time for `status`."""
    if mono is None:
        return None
    t = time.time() + (mono - time.monotonic())
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Heartbeat(Part):
    """Heartbeat, health and idle upkeep of the sources `watcher` holds."""

    def __init__(self, state: AgentState, watcher: Watcher) -> None:
        super().__init__(state)
        self.watcher = watcher
        #: When (monotonic) the next heartbeat, and the idle housekeeping, are due.
        self.next_beat = 0.0
        self._checkpoint_busy = False
        self._next_prune = 0.0

    def checkpoint(self) -> None:
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

    def judge(self, w: Watch) -> health.Health:
        """Evaluates a source's health and alerts once per change of state."""
        assert self.mirror is not None
        store = self.mirror.store
        verdict = health.evaluate(
            self.mirror.runs(w.name, RUN_HISTORY),
            now=datetime.now(UTC),
            interval=w.cfg.interval,
            expected_since=self.state.started_dt,
            max_duration=w.cfg.max_duration,
            problem=w.problem,
        )
        key = f"alert.{w.name}.state"
        last = store.get_meta(key)
        if should_alert(last, verdict.state):
            with store.transaction():
                store.set_meta(key, verdict.state)
                store.set_meta(f"alert.{w.name}.at", now_iso())
            if self.state.alerter is not None:
                self.state.alerter.send(
                    Alert(
                        w.name,
                        verdict.state,
                        last or health.HEALTHY,
                        verdict.reasons,
                        now_iso(),
                        str(self.state.db_path),
                    )
                )
        elif last is None:
            with store.transaction():
                store.set_meta(key, verdict.state)
        return verdict

    def idle_upkeep(self) -> None:
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
            folders = [w.folder / sub for w in self.watcher.watches.values()
                       if w.cfg.kind == "folder" for sub in (PROCESSED, FAILED)]
            pruned = maintenance.prune_files(folders, [self.state.db_path.parent],
                                             self.config.daemon.retention)
            if pruned.removed or pruned.failed:
                log.info("retention: removed %d file(s) older than %.0f days%s",
                         len(pruned.removed), self.config.daemon.retention / 86400,
                         f"; {len(pruned.failed)} could not be removed" if pruned.failed else "")

    def write_start(self) -> None:
        """The agent's start in the database (pid, host, version, config), then a beat."""
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
                "daemon.started_at": self.state.started_at,
                "daemon.state": "running",
                "daemon.version": ver,
                "daemon.config": str(self.config.path or ""),
                "daemon.heartbeat_interval": str(self.config.daemon.heartbeat),
            }.items():
                store.set_meta(k, v)
        self.beat()

    def beat(self) -> None:
        """The heartbeat: its time and each source's watch state, for `status`."""
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
            for w in self.watcher.watches.values()
        }
        with store.transaction():
            store.set_meta("daemon.heartbeat_at", now_iso())
            store.set_meta("daemon.heartbeat_interval", str(self.config.daemon.heartbeat))
            store.set_meta("daemon.sources", json.dumps(sources, sort_keys=True))
            store.set_meta("daemon.metrics_listen", self.state.metrics_address or "")
        self.next_beat = time.monotonic() + self.config.daemon.heartbeat
