"""The background agent: watches source folders, runs one sync at a time, heartbeats.

Owns scheduling, file handling (settle, move, error notes), signals, health
alerts and its log; while idle it asks the store for a checkpoint and
`maintenance.prune_files` to apply the retention period. It decides nothing
about contacts: every file run goes through `Mirror.sync_file` (vCard files
too), every sql/http run through `source_runs`, and every database write
through the store. It holds the agent lock for its life (one agent per database) and the
writer lock only for one run at a time, letting waiting CLI writes go first
between runs.

In parts, each named after its concern and given the shared state explicitly:

- `loop`: `Daemon`, the loop and the signals (stop, reload, wake-ups);
- `watch`: observers, rescans, settle, the checks on links and identities;
- `jobs`: file and connector runs, the one backoff, refusal memory;
- `moves`: the move to processed/ or failed/ and the error note;
- `heartbeat`: heartbeat, health and alerts, idle checkpoint and retention;
- `logs`: the log file and its redaction;
- `state`: what the parts share.

With `[web] enabled`, `loop` also serves the web console (`web.WebServer`) on a
thread of its own for the agent's life, stopped first at shutdown.

This module only re-exports the names other modules and tests import.
"""

from contactsync_agent.daemon.heartbeat import PRUNE_EVERY, RUN_HISTORY, Heartbeat, wall
from contactsync_agent.daemon.jobs import STOP_MESSAGE, Backoff, Jobs, StopRequested
from contactsync_agent.daemon.logs import (
    PrivateRotatingFileHandler,
    RedactFilter,
    default_log_file,
    setup_logging,
)
from contactsync_agent.daemon.loop import (
    SHUTDOWN_LOCK_WAIT,
    STOP_GRACE,
    Daemon,
    Signals,
    run_daemon,
)
from contactsync_agent.daemon.moves import escape_name_lines
from contactsync_agent.daemon.state import AgentState
from contactsync_agent.daemon.watch import (
    CONNECTOR_KINDS,
    DEST_PROBLEM,
    FAILED,
    HINT_EVENTS,
    IGNORED_PREFIXES,
    IGNORED_SUFFIXES,
    PROCESSED,
    Seen,
    Watch,
    Watcher,
    ignored_name,
)

__all__ = [
    "CONNECTOR_KINDS",
    "DEST_PROBLEM",
    "FAILED",
    "HINT_EVENTS",
    "IGNORED_PREFIXES",
    "IGNORED_SUFFIXES",
    "PROCESSED",
    "PRUNE_EVERY",
    "RUN_HISTORY",
    "SHUTDOWN_LOCK_WAIT",
    "STOP_GRACE",
    "STOP_MESSAGE",
    "AgentState",
    "Backoff",
    "Daemon",
    "Heartbeat",
    "Jobs",
    "PrivateRotatingFileHandler",
    "RedactFilter",
    "Seen",
    "Signals",
    "StopRequested",
    "Watch",
    "Watcher",
    "default_log_file",
    "escape_name_lines",
    "ignored_name",
    "run_daemon",
    "setup_logging",
    "wall",
]
