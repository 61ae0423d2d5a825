"""Serving the console with uvicorn: in the foreground (`contactsync web`) or
on a thread of the agent (`[web] enabled = true`), stopped with it.

The socket is bound here, before uvicorn starts, so a busy port or a refused
address is an error in the caller's thread and port 0 (tests) tells its port.
It checks the address against the token first (`security.check_bind`); it
never writes the token to a log.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from contactsync_agent.config import AgentConfig
from contactsync_agent.web.app import ConsoleState, create_app
from contactsync_agent.web.security import Gate, WebError, check_bind

#: How long `WebServer.start` waits for uvicorn to take requests.
START_WAIT = 10.0


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise WebError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


@dataclass
class WebServer:
    """One console server: `start()` on a thread, or `run()` in this one."""

    db_path: Path
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    config: AgentConfig = field(default_factory=AgentConfig)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    _sock: socket.socket | None = None

    def _prepare(self) -> uvicorn.Server:
        check_bind(self.host, self.token)
        self._sock = bind(self.host, self.port)
        self.port = int(self._sock.getsockname()[1])
        app = create_app(ConsoleState(Path(self.db_path), self.config), Gate(token=self.token))
        cfg = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                             server_header=False)
        self._server = uvicorn.Server(cfg)
        return self._server

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def reachable_url(self) -> str:
        """`url`, with a wildcard address (0.0.0.0, ::) named by this machine's
        host name: the address another machine opens (no DNS look-up)."""
        try:
            wildcard = ipaddress.ip_address(self.host.strip("[]")).is_unspecified
        except ValueError:
            wildcard = False
        if not wildcard:
            return self.url
        return f"http://{socket.gethostname() or 'localhost'}:{self.port}/"

    def url_with_token(self) -> str:
        return self.reachable_url + (f"?token={self.token}" if self.token else "")

    def run(self, ready: Callable[[WebServer], None] | None = None) -> None:
        """Serves until SIGINT/SIGTERM (uvicorn's own handlers, in the main thread);
        `ready(self)` is called once the socket listens."""
        server = self._prepare()
        assert self._sock is not None
        if ready is not None:
            ready(self)
        # uvicorn shuts down on SIGTERM, then raises the signal again under the
        # handler found before it: ours ends the process as a finished run (0).
        previous = signal.signal(signal.SIGTERM, _exit_quietly)
        try:
            server.run(sockets=[self._sock])
        finally:
            signal.signal(signal.SIGTERM, previous)
            self._sock.close()

    def start(self) -> None:
        """Serves on a daemon thread; returns once it takes requests."""
        server = self._prepare()
        sock = self._sock
        assert sock is not None
        self._thread = threading.Thread(target=lambda: server.run(sockets=[sock]),
                                        name="contactsync-web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_WAIT
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise WebError(f"the web console did not start on {self.url}")
            time.sleep(0.02)

    def stop(self, wait: float = 5.0) -> None:
        """Asks the server to finish its requests and closes the mirror."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(wait)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(wait)
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> WebServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
