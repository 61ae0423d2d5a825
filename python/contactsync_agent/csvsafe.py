"""CSV output that a spreadsheet cannot execute.

The mirror stores what the source sent, formula-like text included
(`=HYPERLINK(...)`, `+cmd`, `-1+1`, `@SUM(...)`). Every CSV the agent writes
goes through `writer()` (or `neutralise()` per value) so that a cell a
spreadsheet would evaluate starts with a `'` instead (OWASP "CSV injection").
Numbers the agent itself writes (scores, counts) are left as they are.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, Protocol

# A cell starting with one of these is a formula in Excel, LibreOffice or Sheets.
TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


class _Writable(Protocol):
    def write(self, s: str, /) -> Any: ...


def neutralise(value: Any) -> Any:
    """`value` with a leading `'` when a spreadsheet would read it as a formula.

    Non-strings (ints, floats, None) pass through: the agent's own numbers are
    data, and a negative number the agent computed is not an injection.
    """
    if isinstance(value, str) and value.startswith(TRIGGERS):
        return "'" + value
    return value


class SafeWriter:
    """`csv.writer` whose every cell goes through `neutralise()`."""

    def __init__(self, fh: _Writable, **kwargs: Any) -> None:
        self._w = csv.writer(fh, **kwargs)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._w.writerow([neutralise(v) for v in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(fh: _Writable, **kwargs: Any) -> SafeWriter:
    """A drop-in for `csv.writer(fh, ...)` that neutralises formula-like cells."""
    return SafeWriter(fh, **kwargs)


__all__ = ["TRIGGERS", "SafeWriter", "neutralise", "writer"]
