"""The agent's TOML configuration: where the database is, and each source.

Loads and validates only; every bad setting is a ConfigError naming the file
and the key. It must not open the database or touch sources.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from contactsync_agent.errors import ConfigError
from contactsync_agent.mapping import TARGETS

APP = "contactsync-agent"
SOURCE_KINDS = ("folder", "sql", "http")
FORMATS = ("csv", "json", "ndjson", "vcard")
MODES = ("full", "incremental")
OWNERSHIP = ("source", "local", "locked")


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
    mass_delete_limit: float = 0.20
    max_file_bytes: int = 2 << 30
    ownership: dict[str, str] = field(default_factory=dict)
    unique: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class AlertsConfig:
    webhook: str = ""
    command: str = ""


@dataclass
class AgentConfig:
    path: Path | None = None
    database: Path | None = None
    default_region: str = "AU"
    log_file: Path | None = None
    auto_link_threshold: float | None = None
    review_threshold: float = 0.5
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    raw: dict[str, Any] = field(default_factory=dict)

    def source(self, name: str) -> SourceConfig:
        if name in self.sources:
            return self.sources[name]
        return SourceConfig(name=name)


def _expect(value: Any, kind: type | tuple[type, ...], key: str, path: str | None) -> Any:
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)
                                       and bool not in (kind if isinstance(kind, tuple)
                                                        else (kind,))):
        names = (kind.__name__ if isinstance(kind, type)
                 else " or ".join(k.__name__ for k in kind))
        raise ConfigError(f"expected {names}, got {type(value).__name__} {value!r}",
                          path=path, key=key)
    return value


def _source(name: str, data: dict[str, Any], path: str | None) -> SourceConfig:
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
        elif key in ("path", "pattern", "encoding", "delimiter"):
            setattr(src, key, _expect(value, str, full, path))
        elif key == "mapping":
            _expect(value, dict, full, path)
            for col, target in value.items():
                if not isinstance(target, str) or target not in TARGETS:
                    raise ConfigError(
                        f"unknown target field {target!r} (one of: {', '.join(sorted(TARGETS))})",
                        path=path, key=f"{full}.{col}")
            src.mapping = dict(value)
        elif key == "mass_delete_limit":
            v = _expect(value, int | float, full, path)
            if not 0 <= v <= 1:
                raise ConfigError("must be a share between 0 and 1 (0.2 = 20 %)",
                                  path=path, key=full)
            src.mass_delete_limit = float(v)
        elif key == "max_file_bytes":
            src.max_file_bytes = int(_expect(value, int, full, path))
        elif key == "ownership":
            _expect(value, dict, full, path)
            for fld, owner in value.items():
                if owner not in OWNERSHIP:
                    raise ConfigError(f"unknown owner {owner!r} (one of {', '.join(OWNERSHIP)})",
                                      path=path, key=f"{full}.{fld}")
            src.ownership = dict(value)
        elif key == "unique":
            src.unique = list(_expect(value, list, full, path))
        elif key in known:
            setattr(src, key, value)
        else:
            # Connector-specific settings (sql, http) are validated by their connector.
            src.options[key] = value
    if src.kind == "folder" and src.enabled and not src.path:
        raise ConfigError("an enabled folder source needs a path", path=path, key=f"{k}.path")
    return src


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
    return parse_config(data, str(p))


def parse_config(data: dict[str, Any], path: str | None = None) -> AgentConfig:
    cfg = AgentConfig(path=Path(path) if path else None, raw=data)
    for section in data:
        if section not in ("agent", "sources", "alerts", "matching"):
            raise ConfigError(f"unknown section [{section}] (agent, sources, alerts, matching)",
                              path=path, key=section)
    agent = _expect(data.get("agent", {}), dict, "agent", path)
    for key, value in agent.items():
        full = f"agent.{key}"
        if key == "database":
            cfg.database = Path(_expect(value, str, full, path)).expanduser()
        elif key == "default_region":
            region = _expect(value, str, full, path).strip().upper()
            if len(region) != 2 or not region.isalpha():
                raise ConfigError(f"expected a two-letter region code such as AU, got {value!r}",
                                  path=path, key=full)
            cfg.default_region = region
        elif key == "log_file":
            cfg.log_file = Path(_expect(value, str, full, path)).expanduser()
        else:
            raise ConfigError("unknown setting", path=path, key=full)
    matching = _expect(data.get("matching", {}), dict, "matching", path)
    for key, value in matching.items():
        full = f"matching.{key}"
        if key == "review_threshold":
            cfg.review_threshold = float(_expect(value, int | float, full, path))
        elif key == "auto_link_threshold":
            cfg.auto_link_threshold = float(_expect(value, int | float, full, path))
        else:
            raise ConfigError("unknown setting", path=path, key=full)
    sources = _expect(data.get("sources", {}), dict, "sources", path)
    for name, sdata in sources.items():
        cfg.sources[name] = _source(name, _expect(sdata, dict, f"sources.{name}", path), path)
    alerts = _expect(data.get("alerts", {}), dict, "alerts", path)
    for key, value in alerts.items():
        if key not in ("webhook", "command"):
            raise ConfigError("unknown setting", path=path, key=f"alerts.{key}")
        setattr(cfg.alerts, key, _expect(value, str, f"alerts.{key}", path))
    return cfg
