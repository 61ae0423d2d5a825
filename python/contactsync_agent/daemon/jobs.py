"""Jobs: one run of a settled file or of a sql/http source at a time, retried
with one backoff after a failure that may pass, the file then moved to
processed/ or failed/ (with an error note), and a refused content remembered
until the config changes.

Runs files through `Mirror.sync_file` (vCard files included) and sql/http
sources through `source_runs.sync_source`, and reads the runs table for its
refusal memory; it must not decide anything about contacts, nor
watch folders or schedule (that is `watch` and the loop). Nothing a job raises
ends the agent (`guarded`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from contactsync_agent import health, rules
from contactsync_agent.alerts import CONFLICT, Alert
from contactsync_agent.config import DaemonConfig
from contactsync_agent.daemon.heartbeat import Heartbeat
from contactsync_agent.daemon.moves import move
from contactsync_agent.daemon.state import AgentState, Part
from contactsync_agent.daemon.watch import FAILED, PROCESSED, Seen, Watch, refuse_once
from contactsync_agent.errors import (
    ConfigError,
    ContactSyncError,
    RunAborted,
    SafetyLimitError,
    SourceFormatError,
)
from contactsync_agent.infile import InputFile, InputRefused, open_input
from contactsync_agent.safetext import escape_name
from contactsync_agent.store import now_iso

if TYPE_CHECKING:
    from contactsync_agent.sources.base import Connector

log = logging.getLogger("contactsync_agent.daemon")
T = TypeVar("T")

STOP_MESSAGE = f"{health.STOPPED_PREFIX} the agent was asked to stop; the run was rolled back"


class StopRequested(RunAborted):
    """Raised between batches when the agent must stop: the run's transaction rolls back."""



@dataclass(frozen=True)
class Backoff:
    """Retries after a failure that may pass (a locked file, the network): the
    delay doubles from `base` up to `cap` seconds, and the `max_attempts`-th
    failure in a row ends the retries. No jitter: one agent, one run at a time,
    no crowd of clients to spread out."""

    base: float
    cap: float
    max_attempts: int

    @classmethod
    def of(cls, d: DaemonConfig) -> Backoff:
        return cls(d.retry_base, d.retry_max, d.max_attempts)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1, 2, ...)."""
        return min(self.base * 2.0 ** (attempt - 1), self.cap)

    def failed(self, attempts: dict[str, int], key: str) -> tuple[int, float | None]:
        """Counts a failure of `key` in `attempts`: (its number, the delay before the
        next attempt), or (its number, None) when it was the last one allowed (the
        count is then cleared)."""
        n = attempts.get(key, 0) + 1
        if n >= self.max_attempts:
            attempts.pop(key, None)
            return n, None
        attempts[key] = n
        return n, self.delay(n)


class Jobs(Part):
    """Runs the jobs the loop picks; after each run the `heartbeat` checkpoints and
    judges the source's health."""

    def __init__(self, state: AgentState, heartbeat: Heartbeat) -> None:
        super().__init__(state)
        self.heartbeat = heartbeat
        self.running_file: str | None = None

    def job(self, w: Watch, path: Path | None) -> None:
        """One file or connector run; nothing it raises ends the agent."""
        self.guarded(w, path, self.process, w, path)

    def guarded(self, w: Watch, path: Path | None, fn: Callable[..., None], *args: Any) -> None:
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

    def process(self, w: Watch, path: Path | None) -> None:
        if path is None:
            self.run_connector(w)
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
            refuse_once(w, path, None, e.reason)
            return
        except FileNotFoundError:
            log.info("source %s: %s vanished before its run", w.name, shown)
            return
        except OSError as e:
            self.retry(w, path, seen, f"cannot open the file: {e.strerror or e}", None, None)
            return
        except ContactSyncError:  # no such file
            log.info("source %s: %s vanished before its run", w.name, shown)
            return
        with f:
            if not seen.same(f.st):  # changed between the last look and the open
                w.pending[path] = Seen.of(f.st, time.monotonic())
                return
            self.process_file(w, f, seen)

    def process_file(self, w: Watch, f: InputFile, seen: Seen) -> None:
        assert self.mirror is not None
        m = self.mirror
        path, shown = f.path, escape_name(f.path.name)
        try:
            digest = f.digest()
        except OSError as e:
            self.retry(w, path, seen, f"cannot read the file: {e.strerror or e}", None, f)
            return
        earlier = self.refused_before(w.name, digest)
        if earlier is not None:
            run_id, error = earlier
            log.warning(
                "source %s: %s has the same content as the file refused in run %d; not run again",
                w.name,
                shown,
                run_id,
            )
            move(
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
        m.ownership.set_sync_policy(w.name, sc.sync_policy())
        last_id = self.last_run_id()
        self.running_file = shown
        self.state.running_source = w.name
        try:
            # Every file through `Mirror.sync_file`: it alone tells a vCard from an
            # export file (by the source's format) and hands it to the connector.
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
                progress=self.progress,
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
            run_id = self.ensure_refused_run(w, f.shown, digest, last_id, str(e))
            log.warning("source %s: %s refused (run %s): %s", w.name, shown, run_id, e)
            move(w, f, FAILED, _refusal_help(w.name, f.shown, e), run_id)
        except ContactSyncError as e:
            run_id = self.ensure_refused_run(w, f.shown, digest, last_id, str(e))
            log.warning("source %s: %s refused (run %s): %s", w.name, shown, run_id, e)
            move(w, f, FAILED, str(e), run_id)
        except Exception as e:  # the database or the disk: worth another try later
            log.error("source %s: run of %s failed: %s: %s", w.name, shown, type(e).__name__, e)
            log.debug("the failed run", exc_info=True)
            self.retry(w, path, seen, f"{type(e).__name__}: {e}", digest, f)
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
            move(w, f, PROCESSED, None, report.run_id)
            self.two_way(w, report.run_id)
        finally:
            self.running_file = self.state.running_source = None
        self.heartbeat.checkpoint()
        self.heartbeat.judge(w)

    def run_connector(self, w: Watch) -> None:
        """One run of a sql or http source (`source_runs`; the connector does the reading)."""
        assert self.mirror is not None
        # Heavy (database drivers): only when needed.
        from contactsync_agent import source_runs, sources

        w.last_run = time.monotonic()
        w.due = False
        last_id = self.last_run_id()
        log.info("source %s: %s run starting", w.name, w.cfg.kind)
        mirror = self.mirror
        try:
            mirror.ownership.set_sync_policy(w.name, w.cfg.sync_policy())
            conn = sources.open_connector(w.cfg)
            report = self.with_connector(
                w,
                conn,
                lambda: source_runs.sync_source(
                    mirror, w.cfg, progress=self.progress, connector=conn,
                    ownership=w.cfg.ownership, unique=w.cfg.unique,
                ),
            )
        except RunAborted:
            log.info("source %s: run rolled back (stopping)", w.name)
            return
        except ConfigError as e:
            w.problem = str(e)
            log.error("source %s: %s (fix the config; it is re-read on change)", w.name, e)
        except (SourceFormatError, SafetyLimitError) as e:
            run_id = self.ensure_refused_run(w, f"{w.cfg.kind}:{w.name}", None, last_id, str(e))
            log.warning("source %s: run %s refused: %s", w.name, run_id, e)
        except Exception as e:  # the network, the server, the disk: try again later
            error = f"{type(e).__name__}: {e}"
            self.ensure_refused_run(
                w, f"{w.cfg.kind}:{w.name}", None, last_id, error, status="failed"
            )
            d = self.config.daemon
            n, delay = Backoff.of(d).failed(w.attempts, "run")
            if delay is not None:
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
            self.two_way(w, report.run_id)
        self.heartbeat.checkpoint()
        self.heartbeat.judge(w)

    def two_way(self, w: Watch, run_id: int | None) -> None:
        """After a pull of a two-way source: one alert per conflict the pull
        decided, then a push of the source's outbox (its failure is logged and
        the entries wait for the next pull; it never fails the pull)."""
        if not rules.two_way(w.cfg.sync_policy()):
            return
        assert self.mirror is not None
        m = self.mirror
        if run_id is not None and self.state.alerter is not None:
            for cid, reason in m.store.outbox.conflicts_of_run(run_id):
                self.state.alerter.send(Alert(w.name, CONFLICT, "", (f"contact {cid}: {reason}",),
                                              now_iso(), str(self.state.db_path)))
        try:
            report = m.push(w.cfg)
        except Exception as e:  # the target, the network, the config: next time
            log.warning("source %s: push failed: %s: %s", w.name, type(e).__name__, e)
            return
        counts = ", ".join(f"{k} {v}" for k, v in report.counts.items() if v) or "nothing"
        log.info("source %s: push: %s", w.name, counts)

    def with_connector(self, w: Watch, conn: Connector, run: Callable[[], T]) -> T:
        """Runs `run` with `conn` as the run a stop request aborts."""
        self.state.connector, self.state.running_source = conn, w.name
        try:
            if self.state.stopping:  # the signal came before the connector was known
                conn.abort(STOP_MESSAGE)
            return run()
        finally:
            self.state.connector = self.state.running_source = None

    def progress(self, records: int) -> None:
        # Called between batches inside the run's transaction: raising rolls it all back.
        if self.state.stopping:
            raise StopRequested(STOP_MESSAGE)
        self.state.notifier.watchdog()  # a run that moves on is a loop that is alive
        log.debug(
            "source %s: run in progress, %d records so far", self.state.running_source, records
        )

    def retry(
        self,
        w: Watch,
        path: Path,
        seen: Seen,
        error: str,
        digest: str | None,
        f: InputFile | None,
    ) -> None:
        key = digest or f"{escape_name(path)}:{seen.size}:{seen.mtime_ns}"
        d = self.config.daemon
        n, delay = Backoff.of(d).failed(w.attempts, key)
        shown = escape_name(path.name)
        if delay is None:
            log.error("source %s: %s failed %d times; giving up on it", w.name, shown, n)
            if f is not None:
                move(w, f, FAILED, f"Failed {n} times; the last error:\n{error}", None)
            else:
                w.kept[path] = (seen.size, seen.mtime_ns)  # not opened: left alone
            return
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

    # ------------------------------------------------------------ runs (read) and refusals

    def last_run_id(self) -> int:
        assert self.mirror is not None
        return self.mirror.store.runs.last_id()

    def refused_before(self, source: str, digest: str) -> tuple[int, str] | None:
        """A refused run of this very content since the config last changed."""
        assert self.mirror is not None
        row = self.mirror.store.runs.last_done_with(source, digest)
        if row is None or row[1] != "refused":
            return None
        started = health.parse_time(row[3])
        if self.state.config_mtime is not None and started is not None:
            changed = datetime.fromtimestamp(self.state.config_mtime / 1e9, UTC)
            if changed > started:
                return None
        return int(row[0]), str(row[2] or "")

    def ensure_refused_run(
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


def _refusal_help(source: str, shown: str, e: Exception) -> str:
    if isinstance(e, SafetyLimitError) and e.would_delete:
        return (
            f"{e}\n\nIf these deletions are real, run (the agent may keep running)\n"
            f'  contactsync sync --source {source} --allow-mass-delete "<this file>"\n'
        )
    return str(e)
