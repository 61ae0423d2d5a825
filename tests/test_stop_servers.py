"""A stopped agent takes its servers with it: the web console (`[web]
enabled`) and `/metrics` (`[agent] metrics_listen`) stop listening when
`run_daemon` returns after SIGTERM, also in a program that ran the agent
in-process and lives on (their threads are daemon threads: only a process exit
would otherwise end them).

Found by the mutation check (RELIABILITY.md, "The guarantees' own tests,
mutated"): the agent's shutdown could skip stopping either server and no test
noticed, since every agent test ends the process. A real agent in a real child
process, real sockets on 127.0.0.1.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from agent_helpers import config_text, env, poll

EMBEDDED = """\
import socket, sys
from contactsync_agent.daemon import run_daemon
code = run_daemon(sys.argv[1], None)
print("returned", code, flush=True)
for name, port in (("web", int(sys.argv[2])), ("metrics", int(sys.argv[3]))):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        print(name, "still listening", flush=True)
    except OSError:
        print(name, "closed", flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return bytes(r.read())
    except OSError:
        return None


def test_run_daemon_returns_with_its_web_console_and_metrics_stopped(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    web, metrics = free_port(), free_port()
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={"xpm": {"path": str(inbox)}},
                               agent={"metrics_listen": f"127.0.0.1:{metrics}"})
                   + f'\n[web]\nenabled = true\nhost = "127.0.0.1"\nport = {web}\n')
    proc = subprocess.Popen([sys.executable, "-c", EMBEDDED, str(cfg), str(web), str(metrics)],
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Both serve while the agent runs (so "closed" below is the stop's doing).
        page = poll(lambda: answers(f"http://127.0.0.1:{web}/"), what="the agent's console")
        assert page is not None and b"Dashboard" in page
        page = poll(lambda: answers(f"http://127.0.0.1:{metrics}/metrics"),
                    what="the agent's /metrics")
        assert page is not None and b"contactsync" in page
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert out.split("\n")[:3] == ["returned 0", "web closed", "metrics closed"], (out, err)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
