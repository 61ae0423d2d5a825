"""One pull of a configured source, outside the agent (`contactsync sync --source NAME`
without a FILE; the API twin is `pull_source`).

- `sql` and `http` sources: one run of `source_runs.sync_source`, incremental by the
  source's cursor when its mode is incremental; the cursor moves only with the
  run's commit.
- `folder` sources: the files waiting in the folder, through the agent's own
  folder code (`daemon.Daemon`: the same scan, stability check, refusal memory,
  run, move to `processed/` or `failed/` with an error note, and health
  alerts), once, without waiting for files to settle.

It sits above the mirror, the connectors and the daemon, and decides nothing:
the runs are the mirror's, the file handling the daemon's. Every run holds the
writer lock from its run row to its commit (and, for a file, its move), so a
pull while the agent runs waits for the agent's run, and the agent waits for it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from contactsync_agent.alerts import Alerter
from contactsync_agent.config import AgentConfig, SourceConfig
from contactsync_agent.daemon import CONNECTOR_KINDS, Daemon, Watch
from contactsync_agent.errors import ConfigError, ContactSyncError
from contactsync_agent.mirror import Mirror, file_digest
from contactsync_agent.models import SyncReport
from contactsync_agent.store import RUN_COUNTS

__all__ = ["FileRun", "PullReport", "pull_source"]


@dataclass
class FileRun:
    """What became of one waiting file: its run (if one was recorded) and where it went."""

    file: str
    status: str  # the run's status (ok, refused, failed, aborted), or "not run"
    moved_to: str | None  # "processed", "failed", or None: still in the folder
    report: SyncReport | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "status": self.status, "moved_to": self.moved_to,
                "run": self.report.to_dict() if self.report else None}


@dataclass
class PullReport:
    """One pull: a connector's run (`report`), or a folder's files (`files`)."""

    source: str
    kind: str
    report: SyncReport | None = None
    files: list[FileRun] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.status == "ok" for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        if self.report is not None:
            return self.report.to_dict()
        return {"source": self.source, "kind": self.kind,
                "files": [f.to_dict() for f in self.files]}


def pull_source(mirror: Mirror, config: AgentConfig, name: str, *, mode: str | None = None,
                allow_mass_delete: bool = False, allow_column_drop: bool = False) -> PullReport:
    """One pull of the configured source `name` (see the module docstring).

    Connector errors (a refusal, an unreachable server) raise as they would in
    a file sync; a folder's files each get their own outcome, as in the agent."""
    cfg = config.sources.get(name)
    if cfg is None:
        have = ", ".join(sorted(config.sources)) or "none"
        raise ConfigError(f"no source {name!r} in the config (sources: {have}); "
                          "give a FILE to sync an export without configuring it",
                          path=str(config.path) if config.path else None)
    if mode is not None:
        cfg = replace(cfg, mode=mode)
    if cfg.kind in CONNECTOR_KINDS:
        # Heavy (database drivers): only when needed.
        from contactsync_agent import source_runs

        report = source_runs.sync_source(mirror, cfg, allow_mass_delete=allow_mass_delete,
                                         ownership=cfg.ownership, unique=cfg.unique,
                                         allow_column_drop=allow_column_drop)
        return PullReport(name, cfg.kind, report=report)
    if cfg.kind != "folder":
        raise ConfigError(f"kind {cfg.kind!r} is not supported by this agent",
                          key=f"sources.{name}.kind")
    for flag, given in (("--allow-mass-delete", allow_mass_delete),
                        ("--allow-column-drop", allow_column_drop)):
        if given:
            raise ContactSyncError(
                f"source {name!r} is a folder: confirm a refused file by naming it "
                f"(contactsync sync --source {name} {flag} FILE)")
    return PullReport(name, cfg.kind, files=_FolderPass(config, mirror, cfg).run())


class _FolderPass(Daemon):
    """The agent's folder handling, run once over one source's folder."""

    def __init__(self, config: AgentConfig, mirror: Mirror, cfg: SourceConfig) -> None:
        super().__init__(config, mirror.path)
        self.mirror = mirror
        self.watch = Watch(cfg=cfg, folder=Path(cfg.path or "."))
        self.watcher.watches = {cfg.name: self.watch}

    def run(self) -> list[FileRun]:  # type: ignore[override]
        assert self.mirror is not None
        w = self.watch
        if not w.folder.is_dir():
            raise ContactSyncError(f"source {w.name}: watched folder {w.folder} is not a "
                                   "folder or not reachable")
        self.alerter = Alerter(self.config.alerts)
        out: list[FileRun] = []
        try:
            self.watcher.scan(w, time.monotonic())
            if w.problem:
                raise ContactSyncError(f"source {w.name}: {w.problem}")
            done: set[Path] = set()
            while True:
                # Files as the scan found them, still unchanged (no settle wait:
                # the admin says they are complete).
                w.retry_at = 0.0
                picked = self.watcher.pick(time.monotonic() + w.cfg.settle_seconds)
                if picked is None:
                    break
                _, path = picked
                assert path is not None
                if path in done:
                    w.pending.pop(path, None)
                    continue
                done.add(path)
                out.append(self._one(w, path))
        finally:
            self.alerter.close()
            self.signals.close()
        return out

    def _one(self, w: Watch, path: Path) -> FileRun:
        assert self.mirror is not None
        store = self.mirror.store
        with store.writing():
            last = self.jobs.last_run_id()
            earlier = None
            with contextlib.suppress(OSError):
                earlier = self.jobs.refused_before(w.name, file_digest(path))
            self.jobs.process(w, path)
            w.pending.pop(path, None)  # once per pass, even if the agent would retry it
            run_id: int | None = store.runs.latest_since(w.name, last)
            if run_id is None and earlier is not None:
                run_id = earlier[0]  # not run again: the same content was refused before
        report = run_report(self.mirror, run_id) if run_id is not None else None
        status = report.status if report else "not run"
        moved = None if path.exists() else ("processed" if status == "ok" else "failed")
        return FileRun(path.name, status, moved, report)


def run_report(mirror: Mirror, run_id: int) -> SyncReport:
    """A recorded run as the report a sync returns (counts, status, error, and the
    first 1000 rejected rows from the quarantine)."""
    run = _run_row(mirror, run_id)
    rejected = [(int(q["line"] or 0), str(q["reason"])) for q in mirror.quarantine(run_id)]
    return SyncReport(
        run_id=run_id, source=run["source"], mode=run["mode"], status=run["status"],
        counts={c: int(run[c]) for c in RUN_COUNTS}, rejected=rejected[:1000],
        duration_s=(run["duration_ms"] or 0) / 1000, error=run["error"])


def _run_row(mirror: Mirror, run_id: int) -> dict[str, Any]:
    return mirror.store.runs.row(run_id)
