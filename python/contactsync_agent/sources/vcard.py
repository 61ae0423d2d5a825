"""vCard 3.0 / 4.0 files (one or many cards) as records, parsed with `vobject`.

Each card becomes one mapping of vCard field -> text; it must not decide what a
field means beyond the connector's default mapping (the config can override it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import vobject  # type: ignore[import-untyped]

from contactsync_agent.config import SourceConfig
from contactsync_agent.errors import SourceFormatError
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
    "REV": "ignore",
    # Binary blobs (base64 pictures, keys, sounds) do not belong in a contact mirror.
    "PHOTO": "ignore",
    "LOGO": "ignore",
    "SOUND": "ignore",
    "KEY": "ignore",
}

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


def split_cards(text: str) -> Iterator[Card | tuple[int, str]]:
    """The cards of a file, with their line numbers. Stray non-blank text outside a
    card is yielded as (line, text) so the caller can report it."""
    start: int | None = None
    buf: list[str] = []
    number = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if start is None:
            if _BEGIN.match(line):
                start, buf = lineno, [line]
                number += 1
            elif line.strip():
                yield (lineno, line)
            continue
        buf.append(line)
        if _END.match(line):
            yield Card(number, start, "\r\n".join(buf) + "\r\n")
            start, buf = None, []
    if start is not None:
        # No END:VCARD: hand it on as is; the parser's complaint names the card.
        yield Card(number, start, "\r\n".join(buf) + "\r\n")


def decode(data: bytes, path: str) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        log.warning("%s: not UTF-8; reading it as windows-1252", path)
        return data.decode("cp1252", errors="replace")


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


def card_error(e: Exception) -> str:
    """Why a card could not be parsed, as structure only: vobject quotes the
    offending line ("Failed to parse line: FN:Jane Doe"), and a date error
    quotes the date; those go, so no value reaches the log or the quarantine
    reason. vobject counts lines within the card (and oddly): its "At line N:"
    goes too (the card's line in the file is given by the caller)."""
    text = re.sub(r"^At line \d+:\s*", "", str(e))
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "…", text.split(":", 1)[0]).strip()
    return f"{text[:120] or 'unreadable'} ({type(e).__name__})"


def read_cards(path: str | Path) -> Iterator[dict[str, Any]]:
    """The cards of one file as records. A card that cannot be parsed, or has no UID,
    is yielded with an empty UID (so the core quarantines it) and logged with file,
    card number and line; a file with no card at all is a SourceFormatError."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise SourceFormatError(str(p), 0, 0, f"cannot read: {e.strerror}") from None
    text = decode(data, str(p))
    seen = 0
    for item in split_cards(text):
        if isinstance(item, tuple):
            lineno, stray = item
            log.warning("%s, line %d: text outside any card ignored (%d characters)", p, lineno,
                        len(stray))
            continue
        seen += 1
        where = f"{p}, card {item.number} (line {item.line})"
        try:
            component = vobject.readOne(item.text, ignoreUnreadable=False)
            if component.name.upper() != "VCARD":
                raise ValueError(f"a {component.name} is not a vCard")
            record = card_record(component)
        except Exception as e:  # vobject raises ParseError, ValueError, AttributeError, ...
            reason = card_error(e)
            log.warning("%s: cannot be parsed (%s); quarantined", where, reason)
            yield {
                "UID": "",
                "vcard_card": item.number,
                "vcard_line": item.line,
                "vcard_error": reason,
            }
            continue
        if not record["UID"]:
            log.warning("%s: has no UID (the external id); quarantined", where)
            record["vcard_card"] = item.number
            record["vcard_line"] = item.line
        yield record
    if seen == 0 and text.strip():
        raise SourceFormatError(str(p), 1, 0, "no BEGIN:VCARD found: not a vCard file")


class VCardSource(Connector):
    """A vCard file, or the newest matching file of a folder source with format = "vcard"."""

    kind = "vcard"
    OPTIONS: ClassVar[dict[str, type | tuple[type, ...]]] = {}

    def __init__(self, cfg: SourceConfig, path: str | Path | None = None) -> None:
        super().__init__(cfg)
        self.path = Path(path) if path is not None else None

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
        files = sorted(base.glob(pattern), key=lambda f: f.stat().st_mtime)
        if not files:
            raise self.fail(f"no file matching {pattern} in {base}")
        return files[-1]

    @property
    def origin(self) -> str:
        return str(self.resolve())

    def read(self, mode: str, mark: str | None) -> Generator[dict[str, Any], None, None]:
        self.fetched = 0
        for record in read_cards(self.resolve()):
            self.fetched += 1
            yield record
