"""systemd's service notifications (`sd_notify`): READY=1, WATCHDOG=1, STOPPING=1
and STATUS= lines, sent to `$NOTIFY_SOCKET` as one datagram each.

Reads `NOTIFY_SOCKET` (a path, or an abstract socket written `@name`),
`WATCHDOG_USEC` and `WATCHDOG_PID` from the environment it is given, and paces
the watchdog pings at half of `WATCHDOG_USEC`. It only sends: it must not decide
when the agent is healthy (the daemon's loop calls `watchdog()` from its own
thread, so a hung loop stops pinging and systemd restarts the agent), and it
does nothing when systemd did not ask for notifications. A send that fails is
logged once and never raised: notifications must not stop the agent.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

log = logging.getLogger("contactsync_agent.daemon")

#: The longest STATUS= text sent (systemctl shows one line).
STATUS_MAX = 200


def _address(value: str | None) -> str | bytes | None:
    """`NOTIFY_SOCKET` as a socket address: `@name` is Linux's abstract namespace."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock and other kinds: not supported here


def _watchdog_seconds(env: Mapping[str, str], pid: int) -> float | None:
    """`WATCHDOG_USEC` as seconds, when it is meant for this process."""
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None


@dataclass
class Notifier:
    """One service's notifications; `Notifier.from_env()` outside systemd is a no-op."""

    address: str | bytes | None = None
    #: systemd's watchdog timeout (WatchdogSec=), None when there is none.
    watchdog_s: float | None = None
    _sock: socket.socket | None = field(default=None, repr=False)
    _next_ping: float = 0.0
    _status: str | None = None
    _failed: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        address = _address(env.get("NOTIFY_SOCKET"))
        if address is None or not hasattr(socket, "AF_UNIX"):
            return cls()
        return cls(address=address, watchdog_s=_watchdog_seconds(env, os.getpid()))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def ping_every(self) -> float | None:
        """Seconds between watchdog pings (half the timeout), None without a watchdog."""
        return self.watchdog_s / 2 if self.enabled and self.watchdog_s else None

    def next_ping(self) -> float | None:
        """When (monotonic) the next watchdog ping is due; None without a watchdog."""
        return self._next_ping if self.ping_every else None

    def send(self, *lines: str) -> bool:
        """Sends `lines` (`KEY=value`) as one datagram; False when it could not."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode("utf-8", "replace"), self.address)
        except OSError as e:
            if not self._failed:
                log.warning("systemd notification not sent (%s); the agent goes on", e)
                self._failed = True
            return False
        return True

    def _status_line(self, text: str | None) -> list[str]:
        if text is None or text == self._status:
            return []
        self._status = text
        flat = " ".join(text.split())
        return [f"STATUS={flat[:STATUS_MAX]}"]

    def ready(self, status: str | None = None) -> None:
        """The agent is up: READY=1 (systemd's start job completes), and the first ping."""
        self.send("READY=1", *self._status_line(status))
        self._next_ping = 0.0
        self.watchdog()

    def status(self, text: str) -> None:
        """A STATUS= line for `systemctl status`, sent when it changed."""
        lines = self._status_line(text)
        if lines:
            self.send(*lines)

    def watchdog(self) -> None:
        """WATCHDOG=1 when one is due (every half timeout); cheap when it is not."""
        every = self.ping_every
        if every is None:
            return
        now = time.monotonic()
        if now >= self._next_ping:
            self.send("WATCHDOG=1")
            self._next_ping = now + every

    def stopping(self, status: str | None = None) -> None:
        """STOPPING=1: the agent is shutting down (systemd waits for it to exit)."""
        self.send("STOPPING=1", *self._status_line(status))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
