"""Alerts on a source's health changes: to the log always, and to a command or webhook.

Decides nothing about health (that is `health.py`) and never blocks the sync
loop: deliveries run on a worker thread with timeouts.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shlex
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from contactsync_agent.config import AlertsConfig
from contactsync_agent.health import HEALTHY

log = logging.getLogger("contactsync_agent.alerts")

RETRY_DELAYS = (1.0, 5.0)


def should_alert(last_alerted: str | None, state: str) -> bool:
    """True when `state` is a change worth telling a person about.

    `last_alerted` is the state of the last alert (None: never alerted, which
    counts as healthy), so a restart or a repeated evaluation does not alert again.
    """
    return state != (last_alerted or HEALTHY)


#: The `state` of an alert that is a two-way conflict (one per conflict), not
#: a health change.
CONFLICT = "conflict"


@dataclass(frozen=True)
class Alert:
    source: str
    state: str
    previous: str
    reasons: tuple[str, ...]
    at: str
    database: str = ""
    host: str = field(default_factory=socket.gethostname)

    @property
    def recovery(self) -> bool:
        return self.state == HEALTHY

    @property
    def summary(self) -> str:
        if self.state == CONFLICT:
            return (f"contactsync source {self.source!r}: two-way conflict: "
                    + "; ".join(self.reasons))
        if self.recovery:
            return f"contactsync source {self.source!r} recovered (was {self.previous})"
        why = "; ".join(self.reasons) or "no reason recorded"
        return f"contactsync source {self.source!r} is {self.state} (was {self.previous}): {why}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": "recovered" if self.recovery else self.state,
            "source": self.source,
            "state": self.state,
            "previous": self.previous,
            "reasons": list(self.reasons),
            "summary": self.summary,
            "at": self.at,
            "host": self.host,
            "database": self.database,
        }


def post_webhook(url: str, payload: dict[str, Any], timeout: float) -> None:
    body = json.dumps(payload).encode()
    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "contactsync-agent"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        resp.read(1024)


#: What an alert command inherits from the agent's environment; nothing else
#: (database passwords, API tokens) reaches it. Windows needs a few more to
#: start a program at all.
COMMAND_ENV = ("PATH", "HOME", "LANG", "TZ")
COMMAND_ENV_WINDOWS = ("SYSTEMROOT", "SYSTEMDRIVE", "WINDIR", "COMSPEC", "PATHEXT", "TEMP",
                       "TMP", "USERPROFILE")


def command_env(payload: dict[str, Any], environ: Mapping[str, str] | None = None
                ) -> dict[str, str]:
    """The minimal environment of an alert command: PATH, HOME, LANG and TZ
    (those set), and the CONTACTSYNC_ALERT_* variables of this alert."""
    environ = os.environ if environ is None else environ
    keep = COMMAND_ENV + (COMMAND_ENV_WINDOWS if sys.platform == "win32" else ())
    env = {k: environ[k] for k in keep if k in environ}
    env.update({
        "CONTACTSYNC_ALERT_SOURCE": payload["source"],
        "CONTACTSYNC_ALERT_STATE": payload["state"],
        "CONTACTSYNC_ALERT_PREVIOUS": payload["previous"],
        "CONTACTSYNC_ALERT_SUMMARY": payload["summary"],
    })
    return env


def run_command(command: str, payload: dict[str, Any], timeout: float) -> None:
    """Runs the configured command (no shell) with the alert as JSON on stdin and
    in a minimal environment (`command_env`)."""
    env = command_env(payload)
    # POSIX: split like a shell would (but run without one). Windows: the command
    # line goes to CreateProcess unchanged, since each program parses its own and
    # shlex's non-POSIX mode would keep the quotes of "C:\Program Files\...".
    args: str | list[str] = command if sys.platform == "win32" else shlex.split(command)
    done = subprocess.run(
        args,
        input=json.dumps(payload).encode(),
        env=env,
        timeout=timeout,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"exit status {done.returncode}" + (f": {err[-1][:200]}" if err else ""))


class Alerter:
    """Logs each alert at once and delivers it to the configured targets in the background."""

    def __init__(self, config: AlertsConfig) -> None:
        self.config = config
        self._queue: queue.Queue[Alert | None] = queue.Queue()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._work, name="alerts", daemon=True)
        self._thread.start()

    def send(self, alert: Alert) -> None:
        level = logging.INFO if alert.recovery else logging.WARNING
        log.log(level, "ALERT %s", alert.summary)
        if self.config.webhook or self.config.command:
            self._queue.put(alert)

    def close(self, timeout: float = 3.0) -> None:
        """Delivers what is queued within `timeout`, then gives up (we are stopping)."""
        self._queue.put(None)
        self._thread.join(timeout)
        self._closing.set()

    def _work(self) -> None:
        while True:
            alert = self._queue.get()
            if alert is None:
                return
            payload = alert.to_dict()
            cfg = self.config
            if cfg.webhook:
                self._try(f"webhook {cfg.webhook}", post_webhook, cfg.webhook, payload)
            if cfg.command:
                self._try("alert command", run_command, cfg.command, payload)

    def _try(
        self,
        target: str,
        fn: Callable[[str, dict[str, Any], float], None],
        arg: str,
        payload: dict[str, Any],
    ) -> None:
        for attempt, delay in enumerate((*RETRY_DELAYS, None), start=1):
            try:
                fn(arg, payload, self.config.timeout)
                log.debug("alert delivered to %s", target)
                return
            except (
                OSError,
                urllib.error.URLError,
                subprocess.SubprocessError,
                RuntimeError,
                ValueError,
            ) as e:
                if delay is None:
                    log.error("alert not delivered to %s after %d attempts: %s", target, attempt, e)
                    return
                log.warning("alert delivery to %s failed (%s); retrying in %.0fs", target, e, delay)
                if self._closing.wait(delay):
                    log.error("alert not delivered to %s: the agent is stopping", target)
                    return
