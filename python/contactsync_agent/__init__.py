"""contactsync-agent: mirror a practice-management system's contacts into SQLite.

Users import from here; `contactsync_agent._core` is the private Rust extension.
"""

from contactsync_agent.errors import (
    ConfigError,
    ContactSyncError,
    LockedError,
    NotFoundError,
    SafetyLimitError,
    SourceFormatError,
)

__all__ = [
    "ConfigError",
    "ContactSyncError",
    "LockedError",
    "NotFoundError",
    "SafetyLimitError",
    "SourceFormatError",
]
