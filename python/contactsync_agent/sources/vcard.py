"""vCard 3.0 / 4.0 files (one or many cards) as records, parsed with `vobject`.

Each card becomes one mapping of vCard field -> text; it must not decide what a
field means beyond the connector's default mapping (the config can override it).

Memory is bounded before vobject sees a byte: the file is read line by line, a
property (its folded lines together) over the field limit (1 MiB) or a card over
twice that makes the card quarantined with its line and the property's name,
without the property ever being held whole; pictures and keys (PHOTO, LOGO,
SOUND, KEY, unless the mapping keeps them) are dropped while reading.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
import stat
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import vobject  # type: ignore[import-untyped]

from contactsync_agent import _core
from contactsync_agent.config import SourceConfig
from contactsync_agent.defaults import MAX_FIELD_BYTES
from contactsync_agent.errors import SourceFormatError
from contactsync_agent.infile import InputFile, OwnFiles, open_input
from contactsync_agent.safetext import escape_name
from contactsync_agent.sources.base import Connector

log = logging.getLogger("contactsync_agent.sources.vcard")

#: Field names a card yields and the target each maps to unless the config says otherwise.
#: Unknown properties (X-ABN, TITLE, URL, ...) are yielded under their own name and, being
#: unmapped, land in `extra`.
DEFAULT_MAPPING: dict[str, str] = {
    "UID": "external_id",
    "FN": "name",
    "N.family": "family_name",
    "N.given": "given_name",
    "ORG": "organisation",
    "EMAIL": "email",
    "TEL": "phone",
    "TEL.cell": "mobile",
    "ADR.street": "street",
    "ADR.locality": "city",
    "ADR.region": "region",
    "ADR.code": "postcode",
    "ADR.country": "country",
    "BDAY": "date_of_birth",
    "NOTE": "notes",
    # Exporters stamp these on every export: kept, they would make every card look changed.
    "VERSION": "ignore",
    "PRODID": "ignore",
    # The card's revision time: two-way sync's last_write_wins compares it (carried
    # beside the record, never stored or hashed, so it changes no card either).
    "REV": "modified_at",
    # Binary blobs (base64 pictures, keys, sounds) do not belong in a contact mirror.
    "PHOTO": "ignore",
    "LOGO": "ignore",
    "SOUND": "ignore",
    "KEY": "ignore",
}

#: Binary properties dropped while reading when the mapping ignores them.
BINARY = frozenset({"PHOTO", "LOGO", "SOUND", "KEY"})
_PROP_NAME = re.compile(rb"^\s*(?:[A-Za-z0-9-]+\.)?([A-Za-z0-9-]+)")
#: How many problems of one file are logged one by one; the rest are counted.
WARNINGS_SHOWN = 5

_BEGIN = re.compile(r"^\s*BEGIN\s*:\s*VCARD\s*$", re.I)
_END = re.compile(r"^\s*END\s*:\s*VCARD\s*$", re.I)
# (vobject's attribute, our field suffix): the spec's names for the seven ADR parts.
_ADR_PARTS = (
    ("box", "box"),
    ("extended", "extended"),
    ("street", "street"),
    ("city", "locality"),
    ("region", "region"),
    ("code", "code"),
    ("country", "country"),
)
#: Properties read the same whatever their group (Apple writes item1.EMAIL, item1.TEL).
_KNOWN = frozenset({"UID", "N", "ORG", "EMAIL", "TEL", "ADR", "BDAY"})
_N_PARTS = ("family", "given", "additional", "prefix", "suffix")


@dataclass(frozen=True)
class Card:
    number: int  # 1-based position in the file
    line: int  # line of its BEGIN:VCARD
    text: str


@dataclass
class Warnings:
    """The first few problems of a file logged in full, then one line counting the
    rest (a file of 100,000 broken cards must not write 100,000 log lines; every
    card concerned is in the quarantine anyway)."""

    shown: str
    limit: int = WARNINGS_SHOWN
    count: int = 0

    def warn(self, msg: str, *args: object) -> None:
        self.count += 1
        if self.count <= self.limit:
            log.warning(msg, *args)

    def summary(self) -> None:
        if self.count > self.limit:
            log.warning(
                "%s: %d problems in all, %d more than the %d shown (each quarantined card "
                "is in the quarantine with its line)",
                self.shown,
                self.count,
                self.count - self.limit,
                self.limit,
            )


def _types(prop: Any) -> set[str]:
    """TYPE parameters, split on commas (4.0 allows TYPE="voice,cell")."""
    out: set[str] = set()
    for v in prop.params.get("TYPE", []):
        out.update(t.strip().strip('"').lower() for t in str(v).split(","))
    # vCard 2.1 style: TEL;CELL:... (a bare parameter)
    for k in prop.params:
        if k.upper() in ("CELL", "FAX", "PAGER", "HOME", "WORK", "VOICE", "PREF"):
            out.add(k.lower())
    return out


def _pref(prop: Any) -> int:
    """Lower is preferred: PREF=1 (4.0) or TYPE=pref (3.0) first, else file order."""
    p = prop.params.get("PREF")
    if p:
        try:
            return int(str(p[0]))
        except ValueError:
            return 100
    return 1 if "pref" in _types(prop) else 101


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value if _text(v))
    return str(value).strip()


def _tel(value: Any) -> str:
    text = _text(value)
    return text[4:] if text.lower().startswith("tel:") else text


def _mail(value: Any) -> str:
    text = _text(value)
    return text[7:] if text.lower().startswith("mailto:") else text


def _date(value: Any) -> str:
    """BDAY as YYYY-MM-DD where the card gives a full basic or extended date."""
    text = _text(value)
    m = re.fullmatch(r"(\d{4})-?(\d{2})-?(\d{2})(?:T.*)?", text)
    return f"{m.group(1)}-{m.group(2)}-{m.group(3)}" if m else text


def _put(record: dict[str, Any], key: str, value: str) -> None:
    """Sets key, or key.2, key.3, ... when a card repeats a field (nothing is lost)."""
    if not value:
        return
    if key not in record:
        record[key] = value
        return
    n = 2
    while f"{key}.{n}" in record:
        n += 1
    record[f"{key}.{n}"] = value


def card_record(component: Any) -> dict[str, Any]:
    """One parsed card as vCard field -> text (UID first)."""
    record: dict[str, Any] = {"UID": ""}
    tels: list[tuple[int, int, str, Any]] = []
    emails: list[tuple[int, int, Any]] = []
    adrs: list[tuple[int, int, Any]] = []
    for i, prop in enumerate(component.getChildren()):
        name = prop.name.upper()
        if prop.group and name not in _KNOWN:
            # e.g. item1.X-ABLabel stays beside its item1.EMAIL in `extra`.
            name = f"{prop.group.upper()}.{name}"
        if name == "UID":
            record["UID"] = _text(prop.value)
        elif name == "N":
            n = prop.value
            for part in _N_PARTS:
                _put(record, f"N.{part}", _text(getattr(n, part, "")))
        elif name == "ORG":
            parts = [p for p in (prop.value if isinstance(prop.value, list) else [prop.value])]
            _put(record, "ORG", _text(parts[0]) if parts else "")
            if len(parts) > 1:
                _put(record, "ORG.unit", _text(parts[1:]))
        elif name == "EMAIL":
            emails.append((_pref(prop), i, prop))
        elif name == "TEL":
            types = _types(prop)
            kind = next((t for t in ("cell", "fax", "pager") if t in types), "")
            tels.append((_pref(prop), i, kind, prop))
        elif name == "ADR":
            adrs.append((_pref(prop), i, prop))
        elif name == "BDAY":
            _put(record, "BDAY", _date(prop.value))
        else:
            _put(record, name, _text(prop.value))
    for _, _, prop in sorted(emails, key=lambda t: (t[0], t[1])):
        _put(record, "EMAIL", _mail(prop.value))
    for _, _, kind, prop in sorted(tels, key=lambda t: (t[0], t[1])):
        _put(record, f"TEL.{kind}" if kind else "TEL", _tel(prop.value))
    for n, (_, _, prop) in enumerate(sorted(adrs, key=lambda t: (t[0], t[1])), start=1):
        prefix = "ADR" if n == 1 else f"ADR.{n}"
        for attr, part in _ADR_PARTS:
            value = _text(getattr(prop.value, attr, ""))
            if value:
                record[f"{prefix}.{part}"] = value
        types = _types(prop) - {"pref"}
        if types and n == 1:
            record["ADR.type"] = ",".join(sorted(types))
    return record


@dataclass
class Oversized:
    """A card refused while streaming: it is never parsed, only reported."""

    number: int
    line: int
    reason: str
    uid: str


def file_encoding(f: Any, shown: str, warnings: Warnings) -> str:
    """utf-8 (a BOM is skipped) if the whole file decodes, else windows-1252; read in
    chunks from the open binary file `f` (rewound after), so a huge file is never
    held for this."""
    dec = codecs.getincrementaldecoder("utf-8-sig")()
    try:
        while chunk := f.read(1 << 20):
            dec.decode(chunk)
        dec.decode(b"", final=True)
    except UnicodeDecodeError:
        warnings.warn("%s: not UTF-8; reading it as windows-1252", shown)
        return "cp1252"
    finally:
        f.seek(0)
    return "utf-8-sig"


def stream_cards(
    f: Any, encoding: str, *, max_field_bytes: int = MAX_FIELD_BYTES,
    drop: frozenset[str] = BINARY,
) -> Iterator[Card | Oversized | tuple[int, int]]:
    """The cards of an open binary file with their line numbers, read line by line,
    with the size checks of the module docstring. No physical line is read whole
    past the field limit. Text outside a card comes as (line, its size in bytes)."""
    limit = max_field_bytes
    max_card = 2 * limit
    start: int | None = None
    buf: list[str] = []
    held = 0  # bytes of the card held in buf
    number = 0
    lineno = 0
    prop, prop_line, prop_size, dropping = "", 0, 0, False
    refused: str | None = None
    uid = ""
    first = True
    while True:
        raw = f.readline(limit + 2)
        if not raw:
            break
        lineno += 1
        size = len(raw)
        whole = raw.endswith(b"\n")
        while not whole:  # a physical line over the limit: counted, not kept
            more = f.readline(1 << 16)
            if not more:
                break
            size += len(more)
            whole = more.endswith(b"\n")
        if first and raw.startswith(codecs.BOM_UTF8):
            raw, size = raw[3:], size - 3
        first = False
        long_line = size > len(raw)
        folded = raw[:1] in (b" ", b"\t") and start is not None
        line = "" if long_line else raw.decode(encoding, errors="replace").rstrip("\r\n")
        if start is None:
            if not long_line and _BEGIN.match(line):
                start, buf, held, number = lineno, [line], len(raw), number + 1
                prop, prop_size, dropping, refused, uid = "BEGIN", 0, False, None, ""
            elif long_line or line.strip():
                yield (lineno, size)
            continue
        if folded:
            prop_size += size - 1
        else:
            m = _PROP_NAME.match(raw)
            prop = m.group(1).decode("ascii").upper() if m else "?"
            prop_line, prop_size = lineno, size
            dropping = prop in drop
            if prop == "UID" and not long_line:
                uid = line.split(":", 1)[-1].strip()
        if refused is None and not dropping and prop_size > limit + 2:
            refused = (
                f"property {prop} at line {prop_line} holds more than {limit} bytes "
                f"(the field limit); the card was not read"
            )
        if refused is None and not dropping:
            held += size
            if held > max_card:
                refused = (
                    f"the card holds more than {max_card} bytes (twice the field limit) "
                    f"at line {lineno}; it was not read"
                )
        if refused is not None:
            buf = []
        elif not dropping:
            buf.append(line)
        if not folded and not long_line and _END.match(line):
            if refused is not None:
                yield Oversized(number, start, refused, uid)
            else:
                yield Card(number, start, "\r\n".join(buf) + "\r\n")
            start, buf, held = None, [], 0
    if start is not None:
        # No END:VCARD: hand it on as is; the parser's complaint names the card.
        if refused is not None:
            yield Oversized(number, start, refused, uid)
        else:
            yield Card(number, start, "\r\n".join(buf) + "\r\n")


def card_error(e: Exception) -> str:
    """Why a card could not be parsed, as structure only: vobject quotes the
    offending line ("Failed to parse line: FN:Jane Doe"), and a date error
    quotes the date; those go, so no value reaches the log or the quarantine
    reason. vobject counts lines within the card (and oddly): its "At line N:"
    goes too (the card's line in the file is given by the caller)."""
    text = re.sub(r"^At line \d+:\s*", "", str(e))
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "…", text.split(":", 1)[0]).strip()
    return f"{text[:120] or 'unreadable'} ({type(e).__name__})"


def read_cards(
    path: str | Path | InputFile, *, max_field_bytes: int = MAX_FIELD_BYTES,
    drop: frozenset[str] = BINARY,
) -> Iterator[dict[str, Any]]:
    """The cards of one file as records. A card that cannot be parsed, or has no UID,
    is yielded with an empty UID (so the core quarantines it) and logged with file,
    card number and line (the first few; then a count); a card over the size limits
    is yielded as a refusal (`_core.REJECT_KEY`: quarantined with its reason); every
    record carries its card's first line under `_core.LINE_KEY`; a file
    with no card at all is a SourceFormatError. An `InputFile` is read through its
    descriptor (a duplicate of it, rewound)."""
    p = path.shown if isinstance(path, InputFile) else escape_name(path)
    warnings = Warnings(p)
    try:
        if isinstance(path, InputFile):
            f = os.fdopen(os.dup(path.fd), "rb")
            f.seek(0)
        else:
            f = open(path, "rb")  # noqa: SIM115 (closed below, also when the caller stops early)
    except OSError as e:
        raise SourceFormatError(p, 0, 0, f"cannot read: {e.strerror}") from None
    seen = 0
    stray_text = False
    try:
        encoding = file_encoding(f, p, warnings)
        for item in stream_cards(f, encoding, max_field_bytes=max_field_bytes, drop=drop):
            if isinstance(item, tuple):
                lineno, size = item
                stray_text = True
                # Its size only: the text may be personal data.
                warnings.warn(
                    "%s, line %d: text outside any card ignored (%d bytes)", p, lineno, size
                )
                continue
            seen += 1
            where = f"{p}, card {item.number} (line {item.line})"
            if isinstance(item, Oversized):
                warnings.warn("%s: %s; quarantined", where, item.reason)
                yield {
                    "UID": item.uid,
                    _core.REJECT_KEY: f"card {item.number} (line {item.line}): {item.reason}",
                    "vcard_card": item.number,
                    "vcard_line": item.line,
                    _core.LINE_KEY: item.line,
                }
                continue
            try:
                component = vobject.readOne(item.text, ignoreUnreadable=False)
                if component.name.upper() != "VCARD":
                    raise ValueError(f"a {component.name} is not a vCard")
                record = card_record(component)
            except Exception as e:  # vobject raises ParseError, ValueError, AttributeError, ...
                reason = card_error(e)
                warnings.warn("%s: cannot be parsed (%s); quarantined", where, reason)
                yield {
                    "UID": "",
                    "vcard_card": item.number,
                    "vcard_line": item.line,
                    "vcard_error": reason,
                    _core.LINE_KEY: item.line,
                }
                continue
            if not record["UID"]:
                warnings.warn("%s: has no UID (the external id); quarantined", where)
                record["vcard_card"] = item.number
                record["vcard_line"] = item.line
            # The card's first line numbers it in the quarantine (not its position).
            record[_core.LINE_KEY] = item.line
            yield record
    finally:
        f.close()
        warnings.summary()
    if seen == 0 and stray_text:
        raise SourceFormatError(p, 1, 0, "no BEGIN:VCARD found: not a vCard file")


class VCardSource(Connector):
    """A vCard file, or the newest matching file of a folder source with format = "vcard"."""

    kind = "vcard"
    OPTIONS: ClassVar[dict[str, type | tuple[type, ...]]] = {}

    def __init__(self, cfg: SourceConfig, path: str | Path | InputFile | None = None) -> None:
        super().__init__(cfg)
        #: The file as opened once (infile.py): read, hashed and named from it.
        self.opened: InputFile | None = path if isinstance(path, InputFile) else None
        self.path = (
            path.path if isinstance(path, InputFile) else Path(path) if path is not None else None
        )
        #: Whether the path was named (a link there is followed) or found in a folder.
        self.named = True
        self._opened_here = False

    def default_mapping(self) -> dict[str, str]:
        return dict(DEFAULT_MAPPING)

    def resolve(self) -> Path:
        if self.path is not None:
            return self.path
        if not self.cfg.path:
            raise self.fail("no path configured")
        base = Path(self.cfg.path).expanduser()
        if base.is_file():
            return base
        pattern = self.cfg.pattern if self.cfg.pattern != "*.csv" else "*.vcf"
        # Regular files only (lstat): a link in the folder is never followed.
        found = []
        for f in base.glob(pattern):
            try:
                st = f.lstat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.append((st.st_mtime, f))
        if not found:
            raise self.fail(f"no file matching {pattern} in {base}")
        self.named = False
        return max(found)[1]

    def open(self, own: OwnFiles | None = None) -> InputFile:
        """The file, opened once (kept for the run; closed by `close`); never one of
        `own` (the mirror's files), never through a link found in a folder."""
        if self.opened is None:
            target = self.resolve()
            self.opened = open_input(target, follow_links=self.named, own=own)
            self._opened_here = True
        return self.opened

    @property
    def origin(self) -> str:
        return self.opened.shown if self.opened is not None else escape_name(self.resolve())

    def read(self, mode: str, mark: str | None) -> Generator[dict[str, Any], None, None]:
        self.fetched = 0
        mapping = self.mapping()
        drop = frozenset(n for n in BINARY if mapping.get(n) == "ignore")
        for record in read_cards(self.open(), drop=drop):
            self.check()  # the agent asked to stop: the run rolls back
            self.fetched += 1
            yield record

    def close(self) -> None:
        if self._opened_here and self.opened is not None:
            self.opened.close()
            self.opened = None
            self._opened_here = False
        super().close()
