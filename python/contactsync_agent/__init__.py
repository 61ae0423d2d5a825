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
from contactsync_agent.matching import MatchConfig, MatchResult, dedupe, link
from contactsync_agent.mirror import Mirror
from contactsync_agent.models import Contact, SyncReport

__all__ = [
    "ConfigError",
    "Contact",
    "ContactSyncError",
    "LockedError",
    "MatchConfig",
    "MatchResult",
    "Mirror",
    "NotFoundError",
    "SafetyLimitError",
    "SourceFormatError",
    "SyncReport",
    "dedupe",
    "link",
]
