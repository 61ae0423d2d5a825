"""The folder writer: local changes of a folder source as outbound CSV files,
for systems that import files.

One file per outbox entry, `<source>-<entry id>-<key>.csv` (name order is the
order to apply them in), in the source's configured
`outbox` folder: a header in the source's own headings (its `mapping` read
backwards, else the headings its last CSV export carried; a field with
neither keeps its canonical name) and one row, the
contact's external id and its changed fields. Written to a temporary name,
flushed and renamed, owner-only (0600 file in a 0700 folder). The file name
carries the idempotency key, so a retry after a crash finds the file already
there and writes nothing twice. `confirmed` means delivered, not applied
(`PushResult.applied` is False): the bases move when a pull brings the value
back. A folder target gives no id back: a create is
confirmed without one (the contact stays local until an export links it).

It writes only into that folder: it never opens the mirror and never logs a
value.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from contactsync_agent.config import SourceConfig
from contactsync_agent.errors import ConfigError
from contactsync_agent.sources.writer import OutboundChange, PushResult

ID_HEADING = "id"


class FolderWriter:
    """`Writer` of a folder source (`[sources.NAME] outbox = "/path"`)."""

    OPTIONS: ClassVar[dict[str, type | tuple[type, ...]]] = {"outbox": str}

    def __init__(self, cfg: SourceConfig, headings: Mapping[str, str] | None = None) -> None:
        """`headings`: {field: heading} the source's files carried (the mirror
        keeps them from its last full CSV snapshot); the `mapping` config wins."""
        folder = cfg.options.get("outbox")
        if not isinstance(folder, str) or not folder.strip():
            raise ConfigError("a folder source pushes into an outbox folder: set "
                              f"[sources.{cfg.name}] outbox = \"/path\"",
                              key=f"sources.{cfg.name}.outbox")
        self.folder = Path(folder).expanduser()
        self.source = cfg.name
        self.headings = {**(headings or {}),
                         **{target: col for col, target in cfg.mapping.items()}}

    def _heading(self, fld: str) -> str:
        if fld.startswith("extra:"):
            return fld[6:]
        return self.headings.get(fld, fld)

    def push(self, changes: Sequence[OutboundChange]) -> list[PushResult]:
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise ConnectionError(f"outbox folder {self.folder}: {e.strerror}") from None
        out = []
        for ch in changes:
            # The entry id orders the files (an importer applies them in name
            # order); the key makes a retry find the file already written.
            target = self.folder / f"{self.source}-{ch.entry_id:012d}-{ch.key}.csv"
            if not target.exists():
                try:
                    self._write(target, ch)
                except OSError as e:
                    out.append(PushResult(ch.entry_id, "retry", reason=str(e.strerror)))
                    continue
            out.append(PushResult(ch.entry_id, "confirmed", applied=False))
        return out

    def _write(self, target: Path, ch: OutboundChange) -> None:
        fields = sorted(ch.fields)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n")
        w.writerow([self.headings.get("external_id", ID_HEADING),
                    *(self._heading(f) for f in fields)])
        w.writerow([ch.external_id or "", *(ch.fields[f][1] for f in fields)])
        tmp = target.with_name(f".{target.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                f.write(buf.getvalue())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def close(self) -> None:
        return None
