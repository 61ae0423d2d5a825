"""The way back: what a connector's writer is handed and what it answers.

Two-way sync pushes local changes to the system of record. The mirror keeps
them in an outbox (see `push.py`); a writer — one per connector kind, each in
its connector's own module — applies a batch of them to ITS OWN system and says,
for each, what happened. A writer writes only to its own system: it never opens
the mirror, never decides a conflict strategy (the rules do) and never logs a
value (field names and the target's reason only).

The idempotency contract: `OutboundChange.key` is the same on every attempt of
one outbox entry, so a retry after a crash between sending and confirming is
recognised by the target (an `Idempotency-Key` header, a conditional write that
checks `base`, a file name) and the change is applied at most once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

#: What an outbox entry asks the target to do.
ChangeKind = Literal["update", "create"]

#: What came of one change at the target.
#: - confirmed: applied (or found already applied: an idempotent replay);
#: - conflict: the target's value is no longer the base (a conditional write
#:   matched nothing, HTTP 412): not applied, the next pull brings the remote value;
#: - rejected: the target refused it for a reason of its own (validation,
#:   constraint): not applied, never retried, a reconciliation activity follows;
#: - retry: a transient failure (connection dropped, 5xx, timeout): unknown
#:   whether it applied; the same entry is sent again with the same key.
Outcome = Literal["confirmed", "conflict", "rejected", "retry"]


@dataclass(frozen=True)
class OutboundChange:
    """One outbox entry as a writer sees it, in canonical field names
    (`mapping.FIELDS`; `extra:KEY` for an extra column). The writer maps them to
    the source's own names with the source's `mapping` config."""

    entry_id: int
    #: Stable across retries of this entry (the idempotency key).
    key: str
    kind: ChangeKind
    #: The source's id of the contact (None for a create).
    external_id: str | None
    #: field -> (base, new): `base` is what the source last sent ("" for a create).
    fields: Mapping[str, tuple[str, str]]
    #: The ETag or version the source last gave for this contact, if it gives one.
    version: str | None = None


@dataclass(frozen=True)
class PushResult:
    entry_id: int
    outcome: Outcome
    #: For a confirmed create: the id the source assigned.
    external_id: str | None = None
    #: The target's reason (a validation message, a constraint name), redacted of
    #: values; empty when confirmed.
    reason: str = ""
    #: The fields that were not applied (rejected or conflict).
    fields: tuple[str, ...] = ()
    #: The contact's new ETag or version, when the target gives one.
    version: str | None = None
    #: The target's modification time of the contact after the write (ISO 8601),
    #: when it gives one (last-write-wins compares it).
    modified_at: str | None = None
    #: False when `confirmed` means delivered for a later import, not applied
    #: (the folder writer): the bases then stay until a pull brings the value
    #: back, so a pull before the import does not read the old value as a
    #: remote change. (Added after the first version; defaults keep writers
    #: that do not set it as they were.)
    applied: bool = True


class Writer(Protocol):
    """Applies changes to the connector's own system."""

    def push(self, changes: Sequence[OutboundChange]) -> list[PushResult]:
        """One result per change, in any order, each naming its `entry_id`.
        Never raises for one change's failure (that is its result); raises only
        when the target cannot be reached at all (then every change is `retry`)."""
        ...

    def close(self) -> None: ...


@dataclass
class PushReport:
    """What one push of a source did (the CLI's `push --json`)."""

    source: str
    dry_run: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    entries: list[dict[str, object]] = field(default_factory=list)
