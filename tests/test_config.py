"""The config file: clear errors naming the key, `init`, and `source enable|disable`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_helpers import cli
from contactsync_agent.config import (
    example_config,
    load_config,
    parse_config,
    set_source_enabled,
)
from contactsync_agent.errors import ConfigError


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"agent": {"rescan": "5m"}}, "agent.rescan"),
        ({"agent": {"heartbeat": "soon"}}, "agent.heartbeat"),
        ({"agent": {"log_level": "LOUD"}}, "agent.log_level"),
        ({"agent": {"max_attempts": 0}}, "agent.max_attempts"),
        ({"agent": {"nice": 40}}, "agent.nice"),
        ({"agent": {"bogus": 1}}, "agent.bogus"),
        ({"alerts": {"webhook": "mailto:x"}}, "alerts.webhook"),
        ({"alerts": {"timeout": 0}}, "alerts.timeout"),
        ({"sources": {"x": {"interval": "-1m"}}}, "sources.x.interval"),
        ({"sources": {"x": {"settle_seconds": "a while"}}}, "sources.x.settle_seconds"),
        ({"sources": {"x": {"polling": "yes"}}}, "sources.x.polling"),
        ({"sources": {"x": {"pattern": "sub/*.csv"}}}, "sources.x.pattern"),
        ({"sources": {"x": {"mode": "sometimes"}}}, "sources.x.mode"),
        ({"sources": {"x": {"chunk_size": -5}}}, "sources.x.chunk_size"),
        ({"sources": {"x": {"enabled": True}}}, "sources.x.path"),
        ({"sources": {"x": {"mapping": {"Col": "shoe_size"}}}}, "sources.x.mapping.Col"),
    ],
)
def test_bad_settings_name_the_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(data, "agent.toml")
    assert e.value.key == key
    assert str(e.value).startswith(f"agent.toml: {key}: ")


def test_relative_paths_are_from_the_config_file(tmp_path: Path) -> None:
    cfg = parse_config(
        {"agent": {"database": "db/m.db", "log_file": "a.log"}, "sources": {"x": {"path": "in"}}},
        str(tmp_path / "c.toml"),
    )
    assert cfg.database == tmp_path / "db" / "m.db"
    assert cfg.log_file == tmp_path / "a.log"
    assert cfg.sources["x"].path == str(tmp_path / "in")


def test_example_config_loads_with_every_source_disabled() -> None:
    cfg = parse_config(__import__("tomllib").loads(example_config("/var/lib/cs/m.db")))
    assert cfg.sources and not any(s.enabled for s in cfg.sources.values())
    assert cfg.database == Path("/var/lib/cs/m.db")


def test_init_writes_the_example_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "config.toml"
    r = cli("--config", str(path), "init", "--database", str(tmp_path / "m.db"))
    assert r.returncode == 0, r.stderr
    assert path.stat().st_mode & 0o777 == 0o600
    assert "# One table per source" in path.read_text()
    r = cli("--config", str(path), "init")
    assert r.returncode != 0 and "already exists" in r.stderr
    r = cli("--config", str(path), "source", "list", "--json")
    assert [(s["name"], s["enabled"]) for s in json.loads(r.stdout)] == [("xpm", False)]


def test_enable_and_disable_keep_comments_and_layout(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    text = (
        '# top comment\n[agent]\ndefault_region = "AU"\n\n'
        '[sources.a]  # the first\nenabled = false   # off for now\npath = "in"\n\n'
        '[sources."b c"]\npath = "in2"\n# trailing comment\n\n'
        '[sources.a.mapping]\n"Client ID" = "external_id"\n'
    )
    path.write_text(text)
    (tmp_path / "in").mkdir()  # enabling checks the folders (issue 12)
    (tmp_path / "in2").mkdir()
    r = cli("--config", str(path), "source", "enable", "a")
    assert r.returncode == 0, r.stderr
    assert path.read_text() == text.replace("enabled = false   # off", "enabled = true   # off")
    r = cli("--config", str(path), "source", "enable", "b c")
    assert r.returncode == 0, r.stderr
    assert '[sources."b c"]\nenabled = true\npath = "in2"\n# trailing comment\n' in (
        path.read_text()
    )
    assert load_config(path).sources["b c"].enabled
    r = cli("--config", str(path), "source", "disable", "a")
    assert r.returncode == 0
    assert "enabled = false   # off for now" in path.read_text()
    assert not load_config(path).sources["a"].enabled


def test_enable_refuses_an_incomplete_source_and_leaves_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    text = '[sources.nopath]\nkind = "folder"\n'
    path.write_text(text)
    r = cli("--config", str(path), "source", "enable", "nopath")
    assert r.returncode == 2
    assert "sources.nopath.path" in r.stderr and "needs a path" in r.stderr
    assert path.read_text() == text
    r = cli("--config", str(path), "source", "enable", "ghost")
    assert r.returncode == 2 and "sources.ghost" in r.stderr


def test_set_source_enabled_adds_the_line_when_missing() -> None:
    out = set_source_enabled("[sources.x]\r\npath = 'p'\r\n", "x", True)
    assert out == "[sources.x]\r\nenabled = true\r\npath = 'p'\r\n"
