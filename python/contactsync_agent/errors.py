"""Exceptions of contactsync-agent, each carrying the details a person needs.

The CLI turns any of them into one clear line and a non-zero exit; none of them
is raised for a single bad row (rows go to quarantine instead). The table of
every exit code (`EXIT_CODES`, and `status`'s own) is written here once.
"""

from __future__ import annotations

#: Every exit code of `contactsync`, said once: the README's table and the
#: epilog of `contactsync --help` are made from this (tests/test_monitoring.py
#: checks the README against it).
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "done (also when the reader of a pipe stopped reading: `... | head`)"),
    (1, "an error (the database, the disk, a source that failed): the one line on stderr "
        "says which"),
    (2, "a bad setting or usage (names the file and key, or the option)"),
    (3, "a file that cannot be read as a whole (empty, truncated JSON, no external-id "
        "column): nothing applied"),
    (4, "refused by a safety guard (mass deletion, empty export, column drop, file size); "
        "`--dry-run` exits 4 when the real run would be"),
    (5, "the mirror is locked: a second agent, or a write that waited `--wait` seconds for "
        "another"),
    (6, "not found (a contact, a review item, a reference)"),
    (7, "an edit the source owns the field of"),
    (8, "`purge`: erased, but the erasure is not complete yet (a reader holds the WAL)"),
    (130, "interrupted (Ctrl-C): the run in progress was rolled back"),
)
#: `contactsync status`'s own codes, a monitoring plugin's (Nagios, Icinga, Zabbix).
STATUS_EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "healthy (OK)"),
    (1, "degraded (WARNING): a source late or rejecting rows, the agent stopped while "
        "sources are enabled, ..."),
    (2, "failing (CRITICAL): a source refused or failing, the agent died or hung, no mirror"),
    (3, "unknown (UNKNOWN): could not determine: the mirror unreadable, a config or usage "
        "error, a failure inside status"),
)


class ContactSyncError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 1


class SourceFormatError(ContactSyncError):
    """A file that cannot be read as a whole: the run is refused."""

    exit_code = 3

    def __init__(self, path: str, line: int, column: int, message: str) -> None:
        self.path = path
        self.line = line
        self.column = column
        self.message = message
        where = path
        if line:
            where += f", line {line}"
            if column:
                where += f", column {column}"
        super().__init__(f"{where}: {message}")


class ConfigError(ContactSyncError):
    """A bad setting; names the file and the key."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None,
                 line: int | None = None) -> None:
        self.path = path
        self.key = key
        self.line = line
        self.message = message
        place = f"{path}:{line}" if path and line else path
        where = ": ".join(x for x in (place, key) if x)
        super().__init__(f"{where}: {message}" if where else message)


class SafetyLimitError(ContactSyncError):
    """A run refused by a safety limit (mass deletion, empty export, file size)."""

    exit_code = 4

    def __init__(self, message: str, *, would_delete: int = 0, total: int = 0,
                 limit: float = 0.0) -> None:
        self.would_delete = would_delete
        self.total = total
        self.limit = limit
        super().__init__(message)


class RunAborted(ContactSyncError):
    """A run stopped on purpose before it committed (the agent was asked to
    stop): rolled back whole and recorded with status 'aborted', not 'failed'."""


def seconds(s: float) -> str:
    """A wait as people read it: one decimal under 10 s (0.5s, not 0s), whole seconds above."""
    return f"{s:.1f}s" if s < 10 else f"{s:.0f}s"


class LockedError(ContactSyncError):
    """Another process holds the database's agent lock (a second agent), or held
    its writer lock for longer than this process would wait."""

    exit_code = 5

    def __init__(self, path: str, pid: int | None, *, purpose: str = "one agent per database",
                 waited: float | None = None) -> None:
        self.path = path
        self.pid = pid
        self.waited = waited
        who = f"process {pid}" if pid else "another process"
        if waited is None:
            super().__init__(f"{path} is locked by {who} ({purpose})")
        else:
            super().__init__(
                f"{path} is still locked by {who} after waiting {seconds(waited)} ({purpose}: "
                "the agent's run or another write is still going on); try again later, "
                "or wait longer with --wait SECONDS")


class NotFoundError(ContactSyncError):
    """A contact, review item or other object that does not exist."""

    exit_code = 6


class OwnershipError(ContactSyncError):
    """A local edit refused because the source owns the field (or it is locked).

    `fields` maps each refused field to its owner (`source` or `locked`)."""

    exit_code = 7

    def __init__(self, message: str, *, contact_id: int | None = None,
                 source: str | None = None, fields: dict[str, str] | None = None) -> None:
        self.contact_id = contact_id
        self.source = source
        self.fields = dict(fields or {})
        super().__init__(message)
