"""Records the library hands out: contacts, feed entries, activities, reports.

Plain dataclasses built from database rows; no I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from contactsync_agent.mapping import FIELDS


@dataclass(frozen=True)
class Contact:
    id: int
    record_type: str
    forced_manual: bool
    source: str | None
    external_id: str | None
    given_name: str = ""
    family_name: str = ""
    display_name: str = ""
    organisation: str = ""
    email: str = ""
    phone: str = ""
    mobile: str = ""
    street: str = ""
    city: str = ""
    region: str = ""
    postcode: str = ""
    country: str = ""
    date_of_birth: str = ""
    notes: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    phone_e164: str = ""
    mobile_e164: str = ""
    hash: int | None = None
    source_hash: int | None = None
    created_at: str = ""
    updated_at: str = ""
    deleted_at: str | None = None

    @property
    def name(self) -> str:
        if self.display_name:
            return self.display_name
        return " ".join(p for p in (self.given_name, self.family_name) if p)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Contact:
        values = dict(row)
        values["forced_manual"] = bool(values["forced_manual"])
        values["extra"] = json.loads(values.get("extra") or "{}")
        return cls(**values)

    def fields(self) -> dict[str, str]:
        return {f: getattr(self, f) for f in FIELDS}

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["name"] = self.name
        return out


@dataclass(frozen=True)
class Change:
    """One feed entry. `entity_type` is contact, organisation, location or
    customer_link; `contact_id` is set on contact entries only, `entity_id` on all."""

    seq: int
    contact_id: int | None
    run_id: int | None
    op: str
    fields: dict[str, list[Any]]
    reason_code: str
    reason: str
    at: str
    entity_type: str = "contact"
    entity_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Activity:
    id: int
    contact_id: int | None
    run_id: int | None
    source: str | None
    external_id: str | None
    kind: str
    fields: dict[str, Any]
    reason: str
    status: str
    created_at: str
    closed_at: str | None = None
    resolution: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class ReviewItem:
    id: int
    run_id: int | None
    source: str
    external_id: str
    contact_id: int | None
    candidate_id: int
    kind: str
    score: float | None
    explanation: dict[str, Any]
    reason: str
    status: str
    created_at: str
    decided_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> ReviewItem:
        """From `SELECT id, run_id, source, external_id, contact_id, candidate_id,
        kind, score, explanation, reason, status, created_at, decided_at`."""
        return cls(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]), r[9],
                   r[10], r[11], r[12])


@dataclass(frozen=True)
class Decision:
    """What a run decided about one contact, with the reason a person reads."""

    contact_id: int | None
    external_id: str | None
    action: str
    reason_code: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class SyncReport:
    run_id: int
    source: str
    mode: str
    status: str = "ok"
    counts: dict[str, int] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    decisions_dropped: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    duration_s: float = 0.0
    error: str | None = None
    # Things the admin must know about a run that went through (e.g. deletions
    # skipped because quarantined rows could not be identified).
    warnings: list[str] = field(default_factory=list)
    # A dry run (`dry_run=True`): nothing was written, `run_id` is 0, `counts`
    # say what the run would do, `preview` lists the first entries of each kind
    # ({"creates"|"converts"|"updates"|"deletes"|"unlinks": [{contact_id,
    # external_id, fields, reason}]}) and `refused` what a guard would refuse.
    dry_run: bool = False
    refused: list[str] = field(default_factory=list)
    preview: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def decision_for(self, contact_id: int) -> Decision | None:
        """The decision about one local contact (the last one, if several)."""
        found = None
        for d in self.decisions:
            if d.contact_id == contact_id:
                found = d
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "source": self.source,
            "mode": self.mode,
            "status": self.status,
            "counts": dict(self.counts),
            "duration_s": round(self.duration_s, 3),
            "decisions": [d.to_dict() for d in self.decisions],
            "decisions_dropped": self.decisions_dropped,
            "rejected": [{"line": ln, "reason": r} for ln, r in self.rejected],
            "error": self.error,
            "warnings": list(self.warnings),
            "dry_run": self.dry_run,
            "refused": list(self.refused),
            "preview": self.preview,
        }
