"""Two-way sync in the real agent: after each pull of a two-way folder source
the agent pushes its outbox (an outbound CSV appears), and each conflict the
pull decided raises one alert event through the configured command."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
from agent_helpers import HEADER, agent, cli, config_text, poll

pytestmark = pytest.mark.timeout(120)


def test_agent_pushes_after_a_pull_and_alerts_once_per_conflict(tmp_path: Path) -> None:
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    alerts = tmp_path / "alerts.jsonl"
    hook = tmp_path / "hook.py"
    hook.write_text("import sys\n"
                    f"with open({str(alerts)!r}, 'a') as f:\n"
                    "    f.write(sys.stdin.read().strip() + '\\n')\n")
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        config_text(tmp_path, sources={"xpm": {"path": str(inbox), "settle_seconds": 0.2,
                                               "outbox": str(outbox),
                                               "mapping": {"Client ID": "external_id"}}},
                    alerts={"command": f"{shlex.quote(sys.executable)} {shlex.quote(str(hook))}"})
        + '\n[sources.xpm.directions]\n"Email Address" = "in"\nemail = "both"\nmobile = "out"\n'
        '[sources.xpm.conflicts]\ndefault = "review"\n')
    # (The outbound file's id column is the mapped one; the other headings are
    # those the source's last export carried.)
    # `"Email Address" = "in"` is not a field: the config refuses it, naming the line.
    r = cli("--config", str(cfg), "source", "list")
    assert r.returncode == 2 and "directions.Email Address" in r.stderr
    assert f"{cfg}:" in r.stderr
    cfg.write_text(cfg.read_text().replace('"Email Address" = "in"\n', ""))

    first = HEADER + "X1,Ann,Lee,ann@x.example,0412000001\n"
    with agent(tmp_path, cfg) as a:
        (inbox / "1.csv").write_text(first, encoding="utf-8")
        poll(lambda: a.contacts("xpm") == 1, what="the first pull")
        cid = str(a.query("SELECT id FROM contacts")[0][0])
        r = cli("--config", str(cfg), "contacts", "edit", cid, "--email", "ann@local.example",
                "--mobile", "0412000002")
        assert r.returncode == 0, r.stderr
        # The source changes the e-mail too: a conflict (review); the mobile goes out.
        (inbox / "2.csv").write_text(HEADER + "X1,Ann,Lee,ann@remote.example,0412000001\n",
                                     encoding="utf-8")
        poll(lambda: list(outbox.glob("*.csv")), what="the pushed change")
        poll(alerts.exists, what="the conflict alert")
        assert a.stop() == 0
    [pushed] = list(outbox.glob("*.csv"))
    assert pushed.read_text(encoding="utf-8").splitlines() == ["Client ID,Mobile",
                                                               "X1,0412000002"]
    [alert] = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert alert["event"] == "conflict" and "conflict on email" in alert["summary"]
    assert "ann@" not in alert["summary"]
    r = cli("--config", str(cfg), "outbox", "list", "--json")
    assert json.loads(r.stdout) == []
    r = cli("--config", str(cfg), "status", "--json")
    assert json.loads(r.stdout)["outbox"]["conflicts_open"] == 1
