"""Text safe to store and show: file names and paths escaped into one printable line.

A file name on POSIX is any bytes but `/` and NUL: undecodable bytes (which
Python carries as surrogate escapes, which SQLite and a UTF-8 log refuse), line
breaks that would forge a log line, terminal control characters. `escape_name`
turns such a name into printable, valid UTF-8 text. It only formats: it must
not decide what is shown (masking personal data is the log filter's job) and
the escaped text is never used to open a file again (keep the original for that).
"""

from __future__ import annotations

import os

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_name(name: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    """A file name or path as one printable line of valid UTF-8.

    Undecodable bytes (surrogate escapes) become `\\xNN` with the byte's value,
    line breaks and tabs `\\n`, `\\r`, `\\t`, other non-printable characters
    `\\xNN`, `\\uNNNN` or `\\UNNNNNNNN`; everything else is kept as it is
    (`bad\\xff\\xfename.csv`, `café.csv`)."""
    raw = os.fspath(name)
    text = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
    if text.isprintable():
        return text
    out: list[str] = []
    for ch in text:
        cp = ord(ch)
        if 0xDC80 <= cp <= 0xDCFF:  # an undecodable byte, as os.fsdecode carries it
            out.append(f"\\x{cp - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif ch in _NAMED:
            out.append(_NAMED[ch])
        elif cp < 0x100:
            out.append(f"\\x{cp:02x}")
        elif cp < 0x10000:
            out.append(f"\\u{cp:04x}")
        else:
            out.append(f"\\U{cp:08x}")
    return "".join(out)


__all__ = ["escape_name"]
