"""The agent's TOML configuration: where the database is, and each source.

Loads and validates only; every bad setting is a ConfigError naming the file
and the key. It must not open the database or touch sources.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from contactsync_agent.defaults import MASS_DELETE_LIMIT, REVIEW_THRESHOLD
from contactsync_agent.errors import ConfigError
from contactsync_agent.infile import open_private_text
from contactsync_agent.mapping import TARGETS

APP = "contactsync-agent"
SOURCE_KINDS = ("folder", "sql", "http")
FORMATS = ("csv", "json", "ndjson", "vcard")
MODES = ("full", "incremental")
OWNERSHIP = ("source", "local", "locked")
#: Two-way sync (issue 15): which way a field goes, how a conflict on it is
#: decided, and which new local contacts are pushed.
DIRECTIONS = ("in", "out", "both")
STRATEGIES = ("source_wins", "local_wins", "last_write_wins", "priority", "review")
PUSH_NEW = ("referenced", "all", "none")


def default_config_path() -> Path:
    env = os.environ.get("CONTACTSYNC_CONFIG")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_config_dir(APP, appauthor=False)) / "config.toml"


def parse_duration(value: Any, key: str, path: str | None) -> float:
    """'30m', '2h', '45s', '1d' or a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().lower()
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        try:
            seconds = float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
        except ValueError:
            raise ConfigError(f"not a duration: {value!r} (use e.g. 45s, 30m, 2h)",
                              path=path, key=key) from None
    else:
        raise ConfigError(f"not a duration: {value!r} (use e.g. 45s, 30m, 2h)",
                          path=path, key=key)
    if seconds <= 0:
        raise ConfigError("must be more than zero", path=path, key=key)
    return seconds


@dataclass
class SourceConfig:
    name: str
    enabled: bool = False
    kind: str = "folder"
    path: str | None = None
    pattern: str = "*.csv"
    format: str = "csv"
    mode: str = "full"
    interval: float = 1800.0
    settle_seconds: float = 5.0
    polling: bool = False
    encoding: str | None = None
    delimiter: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)
    mass_delete_limit: float = MASS_DELETE_LIMIT
    max_file_bytes: int = 2 << 30
    chunk_size: int | None = None
    # A run slower than this makes the source degraded (default: half the interval);
    # a sql or http run is also stopped at it (default there: 1 h, see sources.base).
    max_duration: float | None = None
    ownership: dict[str, str] = field(default_factory=dict)
    unique: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    #: Two-way sync: {field: in|out|both}, "default" for every other field.
    directions: dict[str, str] = field(default_factory=dict)
    #: {field: strategy}, "default" for every other field (source_wins).
    conflicts: dict[str, str] = field(default_factory=dict)
    #: Strategy `priority`: {field: "source"|"local"} (who wins that field).
    priority: dict[str, str] = field(default_factory=dict)
    #: Which new local contacts a push creates at the source.
    push_new: str = "referenced"

    def sync_policy(self) -> dict[str, Any]:
        """The two-way policy as the mirror records it (`Ownership.set_sync_policy`)."""
        return {"directions": dict(self.directions), "conflicts": dict(self.conflicts),
                "priority": dict(self.priority), "push_new": self.push_new}


@dataclass
class AlertsConfig:
    webhook: str = ""
    command: str = ""
    timeout: float = 10.0


@dataclass
class DaemonConfig:
    """How the background agent paces itself; every value has a safe default."""

    heartbeat: float = 15.0
    # File events are hints: each watched folder is listed again at least this often.
    rescan: float = 60.0
    retry_base: float = 30.0
    retry_max: float = 900.0
    max_attempts: int = 5
    log_level: str = "INFO"
    log_max_bytes: int = 10 << 20
    log_backups: int = 5
    # CPU priority of the agent (POSIX nice, 0-19): imports yield to interactive work
    # such as `status`, which must answer fast even while a big file is synced.
    nice: int = 10
    # `status` is degraded while the WAL file is bigger than this: a reader holding
    # its transaction for a long time keeps the agent's checkpoints from resetting it.
    wal_warn_bytes: int = 1 << 30
    # How long personal data of deleted contacts may stay: `purge` without
    # --older-than erases contacts deleted longer ago, and files in processed/
    # and failed/ (and leftovers of killed backup/restore runs) older than
    # this are removed by the agent and by `purge`.
    retention: float = 90 * 86400.0
    # Two-way sync: `status` is degraded while an outbox entry waits longer.
    outbox_max_age: float = 3600.0
    # Serve Prometheus's /metrics on this loopback (host, port); None: not served.
    metrics_listen: tuple[str, int] | None = None


@dataclass
class WebConfig:
    """`[web]`: the local web console the agent serves when enabled. The token
    for a non-loopback host is read from `token_file` or CONTACTSYNC_WEB_TOKEN,
    never from this file."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8765
    token_file: Path | None = None


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MAX_RESCAN = 60.0


@dataclass
class AgentConfig:
    path: Path | None = None
    database: Path | None = None
    default_region: str = "AU"
    log_file: Path | None = None
    auto_link_threshold: float | None = None
    review_threshold: float = REVIEW_THRESHOLD
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    web: WebConfig = field(default_factory=WebConfig)
    raw: dict[str, Any] = field(default_factory=dict)

    def source(self, name: str) -> SourceConfig:
        if name in self.sources:
            return self.sources[name]
        return SourceConfig(name=name)

    def check_sync_target(self, name: str, *, force: bool = False) -> bool:
        """May a manual sync go into source `name`? With a config file, the
        source must be listed there and enabled, or a mistyped name would build
        a second copy of the mirror under it; `force` overrides (and the run
        records it). Without a config file any name is taken (a quick one-off
        import). Returns True when `force` was needed."""
        if self.path is None:
            return False
        if name not in self.sources:
            if force:
                return True
            known = ", ".join(sorted(self.sources)) or "none"
            close = difflib.get_close_matches(name, list(self.sources), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"no source {name!r} (sources: {known}){hint} "
                              "(--force syncs into it anyway)", path=str(self.path))
        if not self.sources[name].enabled:
            if force:
                return True
            raise ConfigError(f"source {name!r} is disabled; enable it with `contactsync source "
                              f"enable {name}` (or --force for this one run)",
                              path=str(self.path), key=f"sources.{name}.enabled")
        return False


def _expect(value: Any, kind: type | tuple[type, ...], key: str, path: str | None) -> Any:
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)
                                       and bool not in (kind if isinstance(kind, tuple)
                                                        else (kind,))):
        names = (kind.__name__ if isinstance(kind, type)
                 else " or ".join(k.__name__ for k in kind))
        raise ConfigError(f"expected {names}, got {type(value).__name__} {value!r}",
                          path=path, key=key)
    return value


def _line_of(text: str | None, table: str, key: str | None) -> int | None:
    """The line (1-based) of `key` in `[table]` (or of the table's header when
    `key` is None) of the config text; None when not found (a dotted or inline
    table): the error then names the file and the key only."""
    if not text:
        return None
    want = _table_name(table)
    inside = False
    for n, line in enumerate(text.splitlines(), 1):
        m = _HEADER.match(line)
        if m and not line.lstrip().startswith("[["):
            inside = _table_name(m.group(1)) == want
            if inside and key is None:
                return n
            continue
        if inside and key is not None:
            head = line.split("=", 1)[0].strip().strip("\"'")
            if "=" in line and head == key:
                return n
    return None


def _choice_table(value: Any, full: str, allowed: tuple[str, ...], what: str,
                  path: str | None, text: str | None, fields: bool = True) -> dict[str, str]:
    """A `{field: choice}` table (`default` for every other field) checked key by key."""
    if not isinstance(value, dict):
        raise ConfigError(f"expected a table, got {type(value).__name__}", path=path, key=full,
                          line=_line_of(text, full.rsplit(".", 1)[0], full.rsplit(".", 1)[1]))
    out: dict[str, str] = {}
    for fld, choice in value.items():
        line = _line_of(text, full, fld)
        if fields and fld != "default" and fld not in TARGETS and not fld.startswith("extra:"):
            raise ConfigError(f"unknown field {fld!r} (a contact field, extra:COLUMN or default)",
                              path=path, key=f"{full}.{fld}", line=line)
        if not isinstance(choice, str) or choice not in allowed:
            raise ConfigError(f"unknown {what} {choice!r} (one of {', '.join(allowed)})",
                              path=path, key=f"{full}.{fld}", line=line)
        out[str(fld)] = choice
    return out


def _source(name: str, data: dict[str, Any], path: str | None,
            text: str | None = None) -> SourceConfig:
    k = f"sources.{name}"
    known = set(SourceConfig.__dataclass_fields__) - {"name", "options"}
    src = SourceConfig(name=name)
    for key, value in data.items():
        full = f"{k}.{key}"
        if key == "enabled":
            src.enabled = _expect(value, bool, full, path)
        elif key == "kind":
            if value not in SOURCE_KINDS:
                raise ConfigError(f"unknown kind {value!r} (one of {', '.join(SOURCE_KINDS)})",
                                  path=path, key=full)
            src.kind = value
        elif key == "format":
            if value not in FORMATS:
                raise ConfigError(f"unknown format {value!r} (one of {', '.join(FORMATS)})",
                                  path=path, key=full)
            src.format = value
        elif key == "mode":
            if value not in MODES:
                raise ConfigError(f"unknown mode {value!r} (full or incremental)",
                                  path=path, key=full)
            src.mode = value
        elif key in ("interval", "settle_seconds"):
            setattr(src, key, parse_duration(value, full, path))
        elif key == "polling":
            src.polling = _expect(value, bool, full, path)
        elif key == "path":
            src.path = str(_relative_to(_expect(value, str, full, path), path))
        elif key == "pattern":
            if not _expect(value, str, full, path).strip() or "/" in value or "\\" in value:
                raise ConfigError(f"expected a file name pattern such as *.csv, got {value!r}",
                                  path=path, key=full)
            src.pattern = value
        elif key in ("encoding", "delimiter"):
            setattr(src, key, _expect(value, str, full, path))
        elif key == "chunk_size":
            src.chunk_size = _positive_int(value, full, path)
        elif key == "max_duration":
            src.max_duration = parse_duration(value, full, path)
        elif key == "mapping":
            _expect(value, dict, full, path)
            for col, target in value.items():
                if not isinstance(target, str) or target not in TARGETS:
                    raise ConfigError(
                        f"unknown target field {target!r} (one of: {', '.join(sorted(TARGETS))})",
                        path=path, key=f"{full}.{col}")
            src.mapping = dict(value)
        elif key == "mass_delete_limit":
            v = _expect(value, (int, float), full, path)
            if not 0 <= v <= 1:
                raise ConfigError("must be a share between 0 and 1 (0.2 = 20 %)",
                                  path=path, key=full)
            src.mass_delete_limit = float(v)
        elif key == "max_file_bytes":
            src.max_file_bytes = _positive_int(value, full, path)
        elif key == "ownership":
            _expect(value, dict, full, path)
            for fld, owner in value.items():
                if owner not in OWNERSHIP:
                    raise ConfigError(f"unknown owner {owner!r} (one of {', '.join(OWNERSHIP)})",
                                      path=path, key=f"{full}.{fld}")
            src.ownership = dict(value)
        elif key == "unique":
            src.unique = list(_expect(value, list, full, path))
        elif key == "directions":
            src.directions = _choice_table(value, full, DIRECTIONS, "direction", path, text)
        elif key == "conflicts":
            src.conflicts = _choice_table(value, full, STRATEGIES, "strategy", path, text)
        elif key == "priority":
            src.priority = _choice_table(value, full, ("source", "local"), "side", path, text)
        elif key == "push_new":
            if value not in PUSH_NEW:
                raise ConfigError(f"unknown push policy {value!r} (one of {', '.join(PUSH_NEW)})",
                                  path=path, key=full, line=_line_of(text, k, key))
            src.push_new = value
        elif key in known:
            setattr(src, key, value)
        else:
            # Connector-specific settings (sql, http) are validated by their connector.
            src.options[key] = value
    if "priority" in src.conflicts.values() and not src.priority:
        raise ConfigError("strategy priority needs a [" + k + ".priority] table "
                          "(field = \"source\" or \"local\")", path=path, key=f"{k}.conflicts",
                          line=_line_of(text, f"{k}.conflicts", None))
    if src.kind == "folder" and src.enabled and not src.path:
        raise ConfigError("an enabled folder source needs a path", path=path, key=f"{k}.path")
    return src


def _positive_int(value: Any, key: str, path: str | None) -> int:
    v = int(_expect(value, int, key, path))
    if v <= 0:
        raise ConfigError(f"must be a whole number above zero, got {v}", path=path, key=key)
    return v


def _relative_to(value: str, config_path: str | None) -> Path:
    """A path from the config file: `~` expanded, relative ones from the file's folder."""
    p = Path(value).expanduser()
    if not p.is_absolute() and config_path:
        p = Path(config_path).absolute().parent / p
    return p


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def parse_listen(value: Any, key: str, path: str | None) -> tuple[str, int]:
    """`"127.0.0.1:9464"` (or `"[::1]:9464"`, `"localhost:9464"`; port 0 picks a
    free one) as (host, port). Loopback only: the agent opens no port to the
    network (a remote Prometheus scrapes node_exporter's textfile collector,
    fed by `status --prometheus --output`, or a proxy on this machine)."""
    text = _expect(value, str, key, path).strip()
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"expected HOST:PORT such as \"127.0.0.1:9464\", got {value!r}",
                          path=path, key=key)
    if host not in LOOPBACK_HOSTS:
        raise ConfigError(
            f"{host or '(no host)'} is not a loopback address: the agent serves /metrics on "
            "127.0.0.1, ::1 or localhost only (scrape it from this machine, or let "
            "node_exporter's textfile collector carry `contactsync status --prometheus`)",
            path=path, key=key)
    return host, int(port)


def _daemon_setting(cfg: AgentConfig, key: str, value: Any, path: str | None) -> bool:
    """Applies one `[agent]` setting of the daemon; False when `key` is not one."""
    full = f"agent.{key}"
    d = cfg.daemon
    if key in ("heartbeat", "retry_base", "retry_max"):
        setattr(d, key, parse_duration(value, full, path))
    elif key == "rescan":
        d.rescan = parse_duration(value, full, path)
        if d.rescan > MAX_RESCAN:
            raise ConfigError(f"at most {MAX_RESCAN:.0f}s: file events can be lost, so each "
                              "folder is listed again at least once a minute",
                              path=path, key=full)
    elif key == "max_attempts":
        d.max_attempts = _positive_int(value, full, path)
    elif key == "log_level":
        level = _expect(value, str, full, path).upper()
        if level not in LOG_LEVELS:
            raise ConfigError(f"unknown level {value!r} (one of {', '.join(LOG_LEVELS)})",
                              path=path, key=full)
        d.log_level = level
    elif key == "nice":
        d.nice = int(_expect(value, int, full, path))
        if not 0 <= d.nice <= 19:
            raise ConfigError(f"expected 0 (normal) to 19 (lowest), got {d.nice}",
                              path=path, key=full)
    elif key in ("log_max_bytes", "wal_warn_bytes"):
        setattr(d, key, _positive_int(value, full, path))
    elif key == "retention":
        d.retention = parse_duration(value, full, path)
    elif key == "outbox_max_age":
        d.outbox_max_age = parse_duration(value, full, path)
    elif key == "metrics_listen":
        d.metrics_listen = parse_listen(value, full, path)
    elif key == "log_backups":
        d.log_backups = int(_expect(value, int, full, path))
        if d.log_backups < 0:
            raise ConfigError("must be zero or more", path=path, key=full)
    else:
        return False
    return True


#: The `[agent]` settings, for "did you mean" (a new one is added here too).
AGENT_KEYS = ("database", "default_region", "log_file", "heartbeat", "retry_base", "retry_max",
              "rescan", "max_attempts", "log_level", "nice", "log_max_bytes",
              "wal_warn_bytes", "retention", "outbox_max_age", "log_backups",
              "metrics_listen")


def _unknown_setting(key: str, known: tuple[str, ...], path: str | None,
                     full: str) -> ConfigError:
    """"unknown setting", with the closest known one when there is one (difflib)."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown setting{hint}", path=path, key=full)


def load_config(path: str | os.PathLike[str] | None = None, *, required: bool = False
                ) -> AgentConfig:
    """Loads the config file; a missing default file gives the built-in defaults."""
    p = Path(path).expanduser() if path else default_config_path()
    if not p.exists():
        if required or path is not None:
            raise ConfigError("config file not found (write one with `contactsync init`)",
                              path=str(p))
        return AgentConfig()
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", path=str(p)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {e}", path=str(p)) from None
    return parse_config(data, str(p), text=p.read_text(encoding="utf-8"))


def parse_config(data: dict[str, Any], path: str | None = None, *,
                 text: str | None = None) -> AgentConfig:
    """`text` (the file's TOML) lets an error name the line of a two-way setting."""
    cfg = AgentConfig(path=Path(path) if path else None, raw=data)
    for section in data:
        if section not in ("agent", "sources", "alerts", "matching", "web"):
            raise ConfigError(f"unknown section [{section}] (agent, sources, alerts, matching, "
                              "web)",
                              path=path, key=section)
    agent = _expect(data.get("agent", {}), dict, "agent", path)
    for key, value in agent.items():
        full = f"agent.{key}"
        if key == "database":
            cfg.database = _relative_to(_expect(value, str, full, path), path)
        elif key == "default_region":
            region = _expect(value, str, full, path).strip().upper()
            if len(region) != 2 or not region.isalpha():
                raise ConfigError(f"expected a two-letter region code such as AU, got {value!r}",
                                  path=path, key=full)
            cfg.default_region = region
        elif key == "log_file":
            cfg.log_file = _relative_to(_expect(value, str, full, path), path)
        elif not _daemon_setting(cfg, key, value, path):
            raise _unknown_setting(key, AGENT_KEYS, path, full)
    matching = _expect(data.get("matching", {}), dict, "matching", path)
    for key, value in matching.items():
        full = f"matching.{key}"
        if key == "review_threshold":
            cfg.review_threshold = float(_expect(value, (int, float), full, path))
        elif key == "auto_link_threshold":
            cfg.auto_link_threshold = float(_expect(value, (int, float), full, path))
        else:
            raise _unknown_setting(key, ("review_threshold", "auto_link_threshold"), path, full)
    sources = _expect(data.get("sources", {}), dict, "sources", path)
    for name, sdata in sources.items():
        cfg.sources[name] = _source(name, _expect(sdata, dict, f"sources.{name}", path), path,
                                    text)
    alerts = _expect(data.get("alerts", {}), dict, "alerts", path)
    for key, value in alerts.items():
        full = f"alerts.{key}"
        if key == "timeout":
            cfg.alerts.timeout = parse_duration(value, full, path)
        elif key == "webhook":
            url = _expect(value, str, full, path).strip()
            if url and not url.startswith(("http://", "https://")):
                raise ConfigError(f"expected an http:// or https:// URL, got {value!r}",
                                  path=path, key=full)
            cfg.alerts.webhook = url
        elif key == "command":
            cfg.alerts.command = _expect(value, str, full, path)
        else:
            raise _unknown_setting(key, ("timeout", "webhook", "command"), path, full)
    _web(cfg, _expect(data.get("web", {}), dict, "web", path), path)
    return cfg


def _web(cfg: AgentConfig, web: dict[str, Any], path: str | None) -> None:
    for key, value in web.items():
        full = f"web.{key}"
        if key == "enabled":
            cfg.web.enabled = bool(_expect(value, bool, full, path))
        elif key == "host":
            cfg.web.host = _expect(value, str, full, path).strip() or "127.0.0.1"
        elif key == "port":
            port = _expect(value, int, full, path)
            if not 0 < port < 65536:
                raise ConfigError(f"expected a port number (1-65535), got {port}",
                                  path=path, key=full)
            cfg.web.port = port
        elif key == "token_file":
            cfg.web.token_file = _relative_to(_expect(value, str, full, path), path)
        elif key == "token":
            raise ConfigError("a token is never read from the config file: put it in a file "
                              "named by token_file (chmod 600) or in CONTACTSYNC_WEB_TOKEN",
                              path=path, key=full)
        else:
            raise ConfigError("unknown setting (enabled, host, port, token_file)",
                              path=path, key=full)


# ---------------------------------------------------------------- writing the file

EXAMPLE_CONFIG = '''\
# contactsync-agent configuration (TOML).
# Check it with `contactsync source list`; the running agent re-reads it when the
# file changes (within a minute) or on SIGHUP.

[agent]
# The mirror database. Default: mirror.db in the platform's user data directory.
# Relative paths are relative to this file's folder.
database = "{database}"
# Region for phone numbers written without a country code.
default_region = "AU"
# The rotating log file (default: contactsync-agent.log beside the database).
# log_file = "/var/log/contactsync/agent.log"
# log_level = "INFO"          # DEBUG | INFO | WARNING | ERROR
# log_max_bytes = 10485760    # rotate at 10 MB ...
# log_backups = 5             # ... keeping 5 old files
# heartbeat = "15s"           # how often the agent records that it is alive
# rescan = "60s"              # list each watched folder at least this often (at most 60s)
# retry_base = "30s"          # a run that failed is retried after 30s, 60s, 120s, ...
# retry_max = "15m"           # ... at most this far apart,
# max_attempts = 5            # ... and then the file goes to failed/.
# nice = 10                   # CPU priority (0 normal .. 19 lowest): syncs yield to others
# wal_warn_bytes = 1073741824 # `status` is degraded while the WAL is bigger (a reader
                              # holding a transaction open keeps it from being reset)
# retention = "90d"           # `purge` default; processed/ and failed/ files older than
                              # this are removed
# metrics_listen = "127.0.0.1:9464"  # serve Prometheus /metrics (loopback only)

# One table per source. Every source is disabled until enabled with
#   contactsync source enable NAME
[sources.xpm]
enabled = false
kind = "folder"               # a folder export files are dropped into
path = "/srv/exports/xpm"     # processed files move to path/processed, refused ones
                              # to path/failed with a .error.txt that says why
pattern = "*.csv"             # which files; ~$*, *.tmp, *.part and dot files are ignored
format = "csv"                # csv | json | ndjson
mode = "full"                 # full: absent contacts are deleted | incremental
interval = "30m"              # exports expected this often: none for twice as long is
                              # reported (health "degraded")
settle_seconds = 5            # a file is taken once unchanged (size, mtime) this long
polling = false               # true for network shares (SMB/NFS), where file events fail
# mass_delete_limit = 0.2     # refuse a run deleting more than 20 % of the contacts
# max_file_bytes = 2147483648
# encoding = "windows-1252"   # default: detected (utf-8, else windows-1252)
# max_duration = "15m"        # a slower run is reported (default: half the interval);
                              # sql/http sources: also stopped at it (default 1h)

# Two-way sync (off unless a field goes out; see README "Two-way sync"):
# outbox = "/srv/exports/xpm-outbox"  # where outbound change files are written
# push_new = "referenced"             # new local contacts: referenced | all | none
# [sources.xpm.directions]            # in | out | both, per field
# default = "in"
# email = "both"
# [sources.xpm.conflicts]             # source_wins | local_wins | last_write_wins
# default = "source_wins"             #   | priority | review

# Source column -> contact field. Common headings are recognised without this.
[sources.xpm.mapping]
"Client ID" = "external_id"
"First Name" = "given_name"
"Surname" = "family_name"
"Email Address" = "email"

[alerts]
# A health change of a source (degraded, failing, recovered) is always logged, and
# also POSTed as JSON to this URL ...
webhook = ""                  # e.g. "http://127.0.0.1:9000/contactsync"
# ... and/or given as JSON on stdin to this command (run without a shell).
command = ""                  # e.g. "/usr/local/bin/notify-admin"
# timeout = "10s"

[web]
# The local web console (also `contactsync web`), served by the agent when enabled.
enabled = false
host = "127.0.0.1"            # any other address needs a token: in token_file or in
port = 8765                   # the CONTACTSYNC_WEB_TOKEN environment variable
# token_file = "/etc/contactsync/web-token"   # chmod 600; never the token itself here
'''


def example_config(database: str | os.PathLike[str]) -> str:
    """The commented config `contactsync init` writes; every source disabled."""
    return EXAMPLE_CONFIG.format(database=str(database).replace("\\", "\\\\"))


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_ENABLED = re.compile(r"^(\s*enabled\s*=\s*)(true|false)(\s*(#.*)?)$")


def _table_name(header: str) -> list[str]:
    """`sources."my src"` -> ["sources", "my src"] (enough TOML for table headers)."""
    parts: list[str] = []
    for m in re.finditer(r'\s*("((?:[^"\\]|\\.)*)"|\'([^\']*)\'|[A-Za-z0-9_-]+)\s*(\.|$)',
                         header):
        parts.append(m.group(2) if m.group(2) is not None else
                     m.group(3) if m.group(3) is not None else m.group(1))
    return parts


def set_source_enabled(text: str, name: str, enabled: bool, path: str | None = None) -> str:
    """`text` with `enabled` of `[sources.NAME]` set; comments and layout kept.

    A line-based edit: the `enabled = ...` line of that table is changed, or one
    is added under its header.
    """
    lines = text.splitlines(keepends=True)
    start = None
    for i, line in enumerate(lines):
        m = _HEADER.match(line)
        if m and not line.lstrip().startswith("[["):
            if start is not None:
                end = i
                break
            if _table_name(m.group(1)) == ["sources", name]:
                start = i
    else:
        end = len(lines)
    if start is None:
        raise ConfigError(f"no [sources.{name}] table (sources: see `contactsync source list`)",
                          path=path, key=f"sources.{name}")
    value = "true" if enabled else "false"
    for i in range(start + 1, end):
        m = _ENABLED.match(lines[i].rstrip("\r\n"))
        if m:
            eol = lines[i][len(lines[i].rstrip("\r\n")):]
            lines[i] = f"{m.group(1)}{value}{m.group(3)}{eol}"
            return "".join(lines)
    eol = "\r\n" if lines[start].endswith("\r\n") else "\n"
    if not lines[start].endswith(("\n", "\r")):
        lines[start] += eol
    lines.insert(start + 1, f"enabled = {value}{eol}")
    return "".join(lines)


def write_source_enabled(path: str | os.PathLike[str], name: str, enabled: bool) -> AgentConfig:
    """Edits the config file in place (atomically) and returns the config it now holds.

    The edited text is validated first: enabling a source with a bad or missing
    setting fails with the key named and leaves the file untouched.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError("config file not found (write one with `contactsync init`)",
                          path=str(p))
    text = p.read_text(encoding="utf-8")
    current = load_config(p, required=True)
    if name not in current.sources:
        raise ConfigError(f"no source {name!r} (sources: {', '.join(current.sources) or 'none'})",
                          path=str(p), key=f"sources.{name}")
    new_text = set_source_enabled(text, name, enabled, str(p))
    try:
        cfg = parse_config(tomllib.loads(new_text), str(p), text=new_text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"the edit would not be valid TOML ({e}); edit the file by hand",
                          path=str(p), key=f"sources.{name}.enabled") from None
    if cfg.sources[name].enabled != enabled:
        raise ConfigError("could not set it with a line edit; edit the file by hand",
                          path=str(p), key=f"sources.{name}.enabled")
    src = cfg.sources[name]
    if enabled and src.kind == "folder" and src.path and not Path(src.path).is_dir():
        what = "is not a folder" if Path(src.path).exists() else "does not exist"
        raise ConfigError(f"the folder {src.path} {what}; create it or fix the path, then "
                          "enable the source", path=str(p), key=f"sources.{name}.path")
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        # Owner-only from the start (it is the whole config); the file's own mode
        # is put back on it just before the rename.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # left by a killed earlier edit of the same pid
        with open_private_text(tmp) as f:
            f.write(new_text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, p.stat().st_mode & 0o7777)
        os.replace(tmp, p)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return cfg


def write_example_config(path: str | os.PathLike[str], database: str | os.PathLike[str], *,
                         force: bool = False) -> Path:
    p = Path(path).expanduser()
    if p.exists() and not force:
        raise ConfigError("already exists; not overwritten (use --force)", path=str(p))
    p.parent.mkdir(parents=True, exist_ok=True)
    text = example_config(database)
    parse_config(tomllib.loads(text), str(p))  # the example must always load
    # O_BINARY (Windows): the C runtime must not add a second CR to each CRLF line end.
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return p
