"""What the parts of one agent share: its config, database path, mirror, alerter,
stop request and run in progress, held in one `AgentState` each part is given.

Holds state, nothing else: it must not read files, open the database, log, or
decide anything. The loop replaces `config` on a reload and sets `mirror` once
the database is open; the parts read them through `Part` at each use, so none
keeps a stale copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from contactsync_agent.alerts import Alerter
from contactsync_agent.config import AgentConfig
from contactsync_agent.mirror import Mirror
from contactsync_agent.notify import Notifier
from contactsync_agent.store import now_iso

if TYPE_CHECKING:
    from contactsync_agent.sources.base import Connector


@dataclass
class AgentState:
    config: AgentConfig
    db_path: Path
    mirror: Mirror | None = None
    alerter: Alerter | None = None
    #: The config file's mtime when it was last read: a refused file runs again
    #: after the config changed.
    config_mtime: int | None = None
    started_at: str = field(default_factory=now_iso)
    started_dt: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: The name of the signal that asked the agent to stop (set from a signal handler).
    stop_signal: str | None = None
    #: The run in progress: its source, and its connector, which a stop request aborts at once.
    running_source: str | None = None
    connector: Connector | None = None
    #: systemd's notifications (a no-op outside a Type=notify service); the loop
    #: and the run's progress ping its watchdog from the main thread.
    notifier: Notifier = field(default_factory=Notifier)
    #: Where `/metrics` is served (`host:port`), None when it is not.
    metrics_address: str | None = None

    @property
    def stopping(self) -> bool:
        return self.stop_signal is not None


class Part:
    """A part of the agent (watching, jobs, heartbeat): reads the shared state
    through `config` and `mirror`, current at each use."""

    def __init__(self, state: AgentState) -> None:
        self.state = state

    @property
    def config(self) -> AgentConfig:
        return self.state.config

    @property
    def mirror(self) -> Mirror | None:
        return self.state.mirror
