"""The SQLite mirror: schema, migrations, every read and write, under the writer lock.

Only this package runs SQL on the mirror (tests/test_architecture.py checks it).
A `Store` is one connection; each concept's statements are a part of it:
`store.contacts`, `store.feed`, `store.review`, `store.runs`,
`store.entities`, `store.maintenance`. It applies a run's plan inside one
transaction and makes no decisions: the rules (`rules.py`) do.
"""

from __future__ import annotations

from contactsync_agent.store.core import (
    BUSY_TIMEOUT_MS,
    CLOSE_CHECKPOINT_WAIT,
    DEFAULT_WRITE_WAIT,
    ERASURE_PENDING_KEY,
    HWM_KEYS,
    IDLE_CHECKPOINT_MIN_BYTES,
    IDLE_CHECKPOINT_WAIT,
    PAGE_SIZE,
    CheckpointResult,
    Store,
)
from contactsync_agent.store.part import now_iso, readonly_uri, sql_quote
from contactsync_agent.store.runs import RUN_COUNTS
from contactsync_agent.store.schema import (
    CONTACT_COLUMNS,
    MIGRATION_2,
    MIGRATIONS,
    SCHEMA_VERSION,
    _split_sql,
)

__all__ = [
    "BUSY_TIMEOUT_MS",
    "CLOSE_CHECKPOINT_WAIT",
    "CONTACT_COLUMNS",
    "DEFAULT_WRITE_WAIT",
    "ERASURE_PENDING_KEY",
    "HWM_KEYS",
    "IDLE_CHECKPOINT_MIN_BYTES",
    "IDLE_CHECKPOINT_WAIT",
    "MIGRATIONS",
    "MIGRATION_2",
    "PAGE_SIZE",
    "RUN_COUNTS",
    "SCHEMA_VERSION",
    "CheckpointResult",
    "Store",
    "_split_sql",
    "now_iso",
    "readonly_uri",
    "sql_quote",
]
