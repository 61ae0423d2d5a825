"""Escaping of input text before it reaches a terminal or a log.

An export can hold control characters (NUL, an ESC sequence that rewrites the
admin's terminal, a newline that forges a log line, a bidi override). Every
message, log line and table cell that quotes input goes through `escape`
here, at the boundaries: the CLI's error line and printed values, rich table
cells (`cell`) and rich markup (`markup`), and the log formatter
(`EscapingFormatter`); file names and paths (`escape_name`: undecodable
bytes too, so a name can be stored in SQLite and written to a UTF-8 log); and
the rich console those tables print through (`console`). This module only
renders text; it must not decide what to show or redact (the callers and the
log's redaction filter do).
"""

from __future__ import annotations

import logging
import os
from typing import Any

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text: Any) -> str:
    """`text` with every non-printable character written as `\\n`, `\\r`, `\\t`,
    `\\xNN`, `\\uNNNN` or `\\UNNNNNNNN` (newline and tab too: one message stays
    one line); an undecodable byte of a file name (a surrogate escape, as
    `os.fsdecode` carries it) as `\\xNN` with the byte's value. Printable text,
    accents and other scripts included, is returned unchanged."""
    s = text if isinstance(text, str) else str(text)
    if s.isprintable():
        return s
    out: list[str] = []
    for ch in s:
        if ch.isprintable():
            out.append(ch)
            continue
        n = ord(ch)
        if 0xDC80 <= n <= 0xDCFF:
            out.append(f"\\x{n - 0xDC00:02x}")
            continue
        out.append(_SHORT.get(ch) or (f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"
                                      if n < 0x10000 else f"\\U{n:08x}"))
    return "".join(out)


def escape_name(name: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    """A file name or path as one printable line of valid UTF-8 (`escape` of the
    name; bytes are decoded as the file system does): `bad\\xff\\xfename.csv`,
    `café.csv`. Only for showing and storing: never open a file by it again."""
    raw = os.fspath(name)
    return escape(raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw)


def cell(value: Any) -> Any:
    """A rich table cell showing `value` literally: escaped, and as a `Text` so
    that rich reads no markup (`[bold]`) in it."""
    from rich.text import Text

    return Text("" if value is None else escape(value))


def markup(value: Any) -> str:
    """`value` escaped for a rich markup string (`f"[red]{markup(why)}[/]"`)."""
    from rich.markup import escape as markup_escape

    return markup_escape(escape(value))


class EscapingFormatter(logging.Formatter):
    """A log formatter that escapes the message (never the traceback it adds)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        record.message = escape(message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message


__all__ = ["EscapingFormatter", "cell", "escape", "markup"]


def console() -> Any:
    """A rich Console for the CLI's tables. rich's own answer to a closed pipe
    (`... | head`) is exit 1, which monitoring reads as "degraded": this one
    hands the BrokenPipeError to the CLI, which ends quietly with exit 0."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError("stdout closed")

    return _Console()
