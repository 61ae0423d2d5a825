"""The tables of shared/spec/mirror-rules.md, as data (id column = local id)."""

from __future__ import annotations

from typing import Any

# Example 1 — existing local contacts
EX1_EXISTING: list[dict[str, Any]] = [
    dict(id=1, name="John Smith", email="john@smith.com", phone="", type="manual", forced=False,
         ext=None),
    dict(id=2, name="Mary Smith", email="mary@smith.com", phone="", type="manual", forced=False,
         ext=None),
    dict(id=3, name="Chris Smith", email="chris@smith.com", phone="", type="external",
         forced=False, ext=None),
    dict(id=4, name="Leila Smith", email="leila@smith.com", phone="", type="manual",
         forced=False, ext="D"),
    dict(id=5, name="Harry Smith", email="harry_manual@smith.com", phone="", type="manual",
         forced=True, ext="E"),
]

EX1_INCOMING: list[dict[str, str]] = [
    dict(external_id="A", name="John Smith", email="john@smith.com", phone=""),
    dict(external_id="B", name="Mary Smith", email="mary@smith.com", phone="0400 000 001"),
    dict(external_id="C", name="Chris Smith", email="chris@smith.com", phone=""),
    dict(external_id="D", name="Leila Smith", email="leila.smith@smith.com", phone="0400 000 002"),
    dict(external_id="E", name="Harry Smith", email="harry@smith.com", phone="0400 000 003"),
]

# (id, name, email, phone, type, forced manual, external id, reason)
EX1_RESULT: list[tuple[int, str, str, str, str, bool, str | None, str]] = [
    (1, "John Smith", "john@smith.com", "", "sync", False, "A",
     "converted: name, e-mail and phone matched"),
    (2, "Mary Smith", "mary@smith.com", "", "manual", False, None,
     "untouched: no identity match (phone differs)"),
    (3, "Chris Smith", "chris@smith.com", "", "external", False, None,
     "untouched: belongs to another integration"),
    (4, "Leila Smith", "leila.smith@smith.com", "0400 000 002", "sync", False, "D",
     "converted and updated: external id matched"),
    (5, "Harry Smith", "harry_manual@smith.com", "", "sync", True, "E",
     "converted, not updated: forced manual"),
    (6, "Mary Smith", "mary@smith.com", "0400 000 001", "sync", False, "B",
     "created: no existing match"),
    (7, "Chris Smith", "chris@smith.com", "", "sync", False, "C",
     "created: the only match was an external record"),
]

EX2_INCOMING: list[dict[str, str]] = [
    dict(external_id="A", name="John Smith", email="john@smith.com", phone=""),
    dict(external_id="D", name="Leila Smith", email="leila.smith@smith.com", phone="0400 000 012"),
    dict(external_id="E", name="Harry Smith", email="harry@smith.com", phone="0400 000 003"),
    dict(external_id="F", name="Cleo Smith", email="cleo@smith.com", phone=""),
]

EX2_RESULT: list[tuple[int, str, str, str, str, bool, str | None, str]] = [
    (1, "John Smith", "john@smith.com", "", "sync", False, "A", "unchanged"),
    (4, "Leila Smith", "leila.smith@smith.com", "0400 000 012", "sync", False, "D",
     "updated: external id matched (phone)"),
    (5, "Harry Smith", "harry_manual@smith.com", "", "sync", True, "E",
     "not updated: forced manual"),
    (6, "Cleo Smith", "cleo@smith.com", "", "sync", False, "F", "created: no existing match"),
]
