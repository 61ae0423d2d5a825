"""What every connector shares: the `Connector` shape, option checking, the
fingerprint its high-water mark is stored with, and keeping secrets out of text.

A connector reads its source and yields plain mappings; nothing here decides a
sync, writes contacts or knows the mirror (the mark is stored by `source_runs`).

Every run of a connector has an end: `max_duration` (the source's setting, one
hour by default for sql and http sources) is checked between records and bounds
every wait, and `abort(reason)` (the agent's SIGTERM handler calls it) ends the
run at the next record or unblocks what it waits on (`_interrupt`).
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import logging
import os
import re
import stat
import threading
import time
import uuid
from collections.abc import Generator, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from contactsync_agent.config import SourceConfig
from contactsync_agent.errors import ConfigError, ContactSyncError, RunAborted

log = logging.getLogger("contactsync_agent.sources")

#: Query parameters whose values are never shown (an API key in a URL).
SECRET_PARAMS = re.compile(r"(token|key|secret|password|passwd|pwd|auth|sig|signature)", re.I)

#: How long one run of a sql or http source may take when `max_duration` is not set.
DEFAULT_MAX_DURATION = 3600.0


class Connector:
    """One configured source. `read(mode, mark)` yields records; `next_mark` is the
    high-water mark the run reached (None: the source has none)."""

    kind: ClassVar[str] = ""
    #: Option keys this connector accepts under [sources.NAME] (besides the loader's own).
    OPTIONS: ClassVar[dict[str, type | tuple[type, ...]]] = {}

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        check_options(cfg, self.OPTIONS)
        #: Rows (or items, or cards) read from the source by the last `read`: the
        #: number an incremental run is judged by.
        self.fetched = 0
        self.next_mark: str | None = None
        self._secrets: list[str] = []
        #: The most one run may take (seconds): the source's `max_duration`.
        self.max_duration = cfg.max_duration or DEFAULT_MAX_DURATION
        self._run_ends = float("inf")
        self._aborted: str | None = None
        self._woken = threading.Event()

    # -------------------------------------------------------------- overridable

    def default_mapping(self) -> dict[str, str]:
        """The connector's own field -> target entries, under the config's mapping."""
        return {}

    def read(self, mode: str, mark: str | None) -> Generator[dict[str, Any], None, None]:
        raise NotImplementedError

    @property
    def origin(self) -> str:
        """What the run records as its origin: safe to store (no credentials)."""
        return f"{self.kind}:{self.name}"

    def fingerprint(self) -> str:
        """Identifies what a stored mark belongs to; a changed query starts afresh."""
        return ""

    def check_columns(self, columns: Iterable[str]) -> None:
        """Raises ConfigError when the mapping names a field the source does not have."""
        have = {c.strip().lower() for c in columns}
        for field in self.cfg.mapping:
            if field.strip().lower() not in have:
                raise ConfigError(
                    f"the source has no field {field!r} (it has: {', '.join(sorted(have))})",
                    path=None,
                    key=f"sources.{self.name}.mapping.{field}",
                )

    # -------------------------------------------------------------- shared

    def mapping(self) -> dict[str, str]:
        """Connector defaults with the config's `[sources.NAME.mapping]` on top."""
        return {**self.default_mapping(), **self.cfg.mapping}

    def option(self, key: str, default: Any = None) -> Any:
        return self.cfg.options.get(key, default)

    def key(self, option: str) -> str:
        return f"sources.{self.name}.{option}"

    def scrub(self, text: str) -> str:
        """`text` with every known secret of this source replaced by ***."""
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def fail(self, message: str) -> ContactSyncError:
        return ContactSyncError(self.scrub(f"source {self.name!r}: {message}"))

    def close(self) -> None:
        """Releases connections; a connector may be read again after."""

    # -------------------------------------------------------------- time and stopping

    def start_clock(self) -> None:
        """Starts the run's `max_duration` (each `read` calls it first)."""
        self._run_ends = time.monotonic() + self.max_duration

    def remaining(self) -> float:
        """Seconds the run has left (inf before `start_clock`)."""
        return self._run_ends - time.monotonic()

    def abort(self, reason: str) -> None:
        """Ends the run in progress: the next `check` raises RunAborted(reason), and
        whatever the run waits on (a socket, a query, a retry pause) is woken now.

        Safe to call from a signal handler or another thread: it sets flags and asks
        the connector to interrupt its wait; it takes no lock and does no I/O of its own.
        """
        if self._aborted is None:
            self._aborted = reason
        self._woken.set()
        self._interrupt()

    def _interrupt(self) -> None:
        """Unblocks a wait of this connector (a socket read, a query); see `abort`."""

    def over_time(self) -> ContactSyncError:
        return self.fail(
            f"the run took longer than max_duration = {self.max_duration:g}s "
            f"(sources.{self.name}.max_duration); stopped"
        )

    def check(self) -> None:
        """Raises when the run must end: RunAborted once aborted, an error past
        `max_duration` (the run fails and is retried later)."""
        if self._aborted is not None:
            raise RunAborted(self._aborted)
        if time.monotonic() > self._run_ends:
            raise self.over_time()

    def pause(self, seconds: float) -> None:
        """Waits `seconds` (a retry's backoff), ended early by `abort`."""
        self._woken.wait(max(0.0, min(seconds, self.remaining())))


# ------------------------------------------------------------------ options


def check_options(cfg: SourceConfig, allowed: Mapping[str, type | tuple[type, ...]]) -> None:
    """Unknown or mistyped connector options are ConfigErrors naming the key."""
    for key, value in cfg.options.items():
        full = f"sources.{cfg.name}.{key}"
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ConfigError(f"unknown setting for a {cfg.kind} source (known: {known})", key=full)
        kind = allowed[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"expected {names}, got {type(value).__name__} {value!r}", key=full)


def positive(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"must be a number above zero, got {value!r}", key=key)
    return float(value)


def read_secret(
    cfg: SourceConfig, *, direct: str | None, env: str | None, file: str | None, what: str
) -> str | None:
    """A credential from the config value, an environment variable or a file (first line)."""
    given = [k for k in (direct, env, file) if k and k in cfg.options]
    if len(given) > 1:
        raise ConfigError(
            f"give the {what} one way only (not {' and '.join(given)})",
            key=f"sources.{cfg.name}.{given[1]}",
        )
    if direct and direct in cfg.options:
        return str(cfg.options[direct])
    if env and env in cfg.options:
        name = cfg.options[env]
        value = os.environ.get(name)
        if not value:
            raise ConfigError(
                f"environment variable {name} is not set", key=f"sources.{cfg.name}.{env}"
            )
        return value.strip()
    if file and file in cfg.options:
        p = Path(cfg.options[file]).expanduser()
        try:
            mode = p.stat().st_mode
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(
                f"cannot read {p}: {e.strerror}", key=f"sources.{cfg.name}.{file}"
            ) from None
        if os.name == "posix" and mode & (stat.S_IRGRP | stat.S_IROTH):
            log.warning("source %s: %s is readable by other users; chmod 600 it", cfg.name, p)
        lines = text.strip().splitlines()
        if not lines:
            raise ConfigError(f"{p} is empty", key=f"sources.{cfg.name}.{file}")
        return lines[0].strip()
    return None


def redact_url(url: str) -> str:
    """A URL fit for a log line: no password, no secret-looking query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if SECRET_PARAMS.search(k) else v) for k, v in pairs], safe="*:"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


# ------------------------------------------------------------------ values


def text_value(value: Any) -> Any:
    """A source value as the text the core stores (None and str pass through)."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | int | float | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return str(value)


def digest(text: str) -> str:
    """A short digest of a connector's `fingerprint()`, stored with its mark."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
