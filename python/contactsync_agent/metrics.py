"""`status` as Prometheus metrics: the text exposition format for node_exporter's
textfile collector (`contactsync status --prometheus [--output FILE]`, written
atomically) and the agent's `/metrics` on `[agent] metrics_listen`.

Turns the data `status.report` / `status.collect` return into gauges with
`prometheus_client` (one registry per use: nothing global); the facts and the
verdicts are `status`'s, never judged again here. It must not open the mirror
for writing nor log personal data: the metrics carry counts, ages, source names
and health codes only.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from contactsync_agent import health, status
from contactsync_agent.config import AgentConfig

PREFIX = "contactsync_"
#: `status`'s numbers for each health: the exit code (3 when it could not be determined).
HEALTH_VALUES = status.HEALTH_CODES
#: The run counts exported per source, as the `kind` label: the runs table's column for each.
RUN_COUNTS = {"read": "records", "created": "created", "updated": "updated",
              "unchanged": "unchanged", "deleted": "deleted", "rejected": "rejected"}
#: Owner-only unless told otherwise (node_exporter may need `--output-mode 0644`).
DEFAULT_FILE_MODE = 0o600


def _g(name: str, doc: str, labels: list[str] | None = None,
       value: float | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value, labels=labels)


def _ts(text: str | None) -> float | None:
    t = health.parse_time(text)
    return None if t is None else t.timestamp()


def families(data: dict[str, Any]) -> Iterator[Metric]:
    """The gauges of one `status` answer (`status.report`'s dict)."""
    checked = _ts(data.get("checked_at")) or datetime.now(UTC).timestamp()
    yield _g("health", "Overall health: 0 healthy, 1 degraded, 2 failing, 3 unknown "
             "(could not be determined); the exit code of `contactsync status`",
             value=HEALTH_VALUES[data["health"]])
    yield _g("status_timestamp_seconds", "When this status was taken (Unix time)",
             value=checked)
    if "daemon" not in data:  # no mirror at all, or unknown: nothing more is known
        return
    now = datetime.fromtimestamp(checked, UTC)
    d = data["daemon"]
    yield _g("agent_running", "1 while the agent runs and beats, else 0",
             value=1 if d["running"] else 0)
    if d["heartbeat_age_s"] is not None:
        yield _g("agent_heartbeat_age_seconds", "Seconds since the agent's last heartbeat",
                 value=max(d["heartbeat_age_s"], 0.0))
    parts = _g("component_health", "Health of the agent, the storage and the outbox: "
               "0 healthy, 1 degraded, 2 failing", ["component"])
    for name, h in (("agent", d["health"]), ("storage", data["storage"]["health"]),
                    ("outbox", data["outbox"]["health"])):
        parts.add_metric([name], health.CODES[h])
    yield parts
    c = data["contacts"]
    contacts = _g("contacts", "Live contacts in the mirror, by record type", ["record_type"])
    for t in ("sync", "manual", "external"):
        contacts.add_metric([t], c[t])
    yield contacts
    yield _g("contacts_deleted", "Contacts marked deleted (kept until purged)",
             value=c["deleted"])
    queues = _g("queue_depth", "Items waiting: outbox entries, open review items, open "
                "activities, quarantined rows, open conflicts", ["queue"])
    for q, n in (("outbox", data["outbox"]["depth"]), ("review", data["open_review_items"]),
                 ("activities", data["open_activities"]),
                 ("quarantine", data["quarantined_rows"]),
                 ("conflicts", data["outbox"]["conflicts_open"])):
        queues.add_metric([q], n)
    yield queues
    if data["outbox"]["oldest_pending_age"] is not None:
        yield _g("outbox_oldest_pending_age_seconds", "Age of the oldest pending outbox entry",
                 value=data["outbox"]["oldest_pending_age"])
    yield _g("database_bytes", "Size of the mirror's files (database, WAL, shared memory)",
             value=data["database_bytes"])
    yield _g("wal_bytes", "Size of the mirror's WAL file", value=data["wal_bytes"])
    yield _g("change_feed_seq", "The change feed's last sequence number",
             value=data["last_change_seq"])
    yield from _source_families(data["sources"], now)


def _source_families(sources: list[dict[str, Any]], now: datetime) -> Iterator[Metric]:
    lab = ["source"]
    fam = {
        "health": _g("source_health", "Health of a source: 0 healthy, 1 degraded, 2 failing "
                     "(judged only when enabled in the config, see source_judged)", lab),
        "judged": _g("source_judged", "1 when the source counts for the overall health", lab),
        "enabled": _g("source_enabled", "1 when the config enables the source", lab),
        "contacts": _g("source_contacts", "Live contacts of the source", lab),
        "age": _g("source_last_run_age_seconds",
                  "Seconds since the source's last run finished (or started, while it runs)",
                  lab),
        "ts": _g("source_last_run_timestamp_seconds",
                 "When the source's last run finished (or started, while it runs)", lab),
        "ok_ts": _g("source_last_success_timestamp_seconds",
                    "When the source's last successful run finished", lab),
        "duration": _g("source_last_run_duration_seconds", "How long the last run took", lab),
        "ok": _g("source_last_run_ok", "1 when the last run succeeded (status ok)", lab),
        "records": _g("source_last_run_records", "Records of the last run: read, and how many "
                      "were created, updated, unchanged, deleted and rejected", ["source", "kind"]),
    }
    for s in sources:
        name = s["name"]
        fam["health"].add_metric([name], health.CODES[s["health"]])
        fam["judged"].add_metric([name], 1 if s["judged"] else 0)
        fam["enabled"].add_metric([name], 1 if s["enabled"] else 0)
        fam["contacts"].add_metric([name], s["contacts"])
        ok_ts = _ts(s["last_success_at"])
        if ok_ts is not None:
            fam["ok_ts"].add_metric([name], ok_ts)
        r = s["last_run"]
        if not r:
            continue
        age = status.run_age(now, r)
        if age is not None:
            fam["age"].add_metric([name], age)
        ts = _ts(r["finished_at"] or r["started_at"])
        if ts is not None:
            fam["ts"].add_metric([name], ts)
        if r["duration_ms"] is not None:
            fam["duration"].add_metric([name], r["duration_ms"] / 1000)
        fam["ok"].add_metric([name], 1 if r["status"] == "ok" else 0)
        for kind, column in RUN_COUNTS.items():
            fam["records"].add_metric([name, kind], r[column] or 0)
    yield from fam.values()


@dataclass(eq=False)  # registered by identity: hashable
class StatusCollector:
    """A `prometheus_client` collector answering each scrape with a fresh status of
    the mirror at `db`, read-only, under the config `config()` returns then."""

    db: Path
    config: Callable[[], AgentConfig | None]

    def collect(self) -> Iterator[Metric]:
        yield from families(status.report(self.db, self.config()))


@dataclass(eq=False)
class _Fixed:
    data: dict[str, Any]

    def collect(self) -> Iterator[Metric]:
        yield from families(self.data)


def exposition(data: dict[str, Any]) -> bytes:
    """`data` in Prometheus's text exposition format (the API twin of
    `contactsync status --prometheus`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(data))
    return generate_latest(registry)


def parse_mode(text: str) -> int:
    """`--output-mode`'s octal permissions: readable by others at most, never writable."""
    try:
        mode = int(text, 8)
    except ValueError:
        raise ValueError(f"expected octal permissions such as 0600 or 0644, got {text!r}") from None
    if mode & ~0o644:
        raise ValueError(f"{text}: at most 0644 (the file is never writable by others, "
                         "nor executable)")
    return mode


def write_textfile(path: str | os.PathLike[str], data: dict[str, Any],
                   mode: int = DEFAULT_FILE_MODE) -> Path:
    """Writes `exposition(data)` to `path` atomically: a temporary file in the same
    folder (not named *.prom, so the textfile collector never reads it half
    written), flushed to disk, given `mode`, then renamed over `path`."""
    target = Path(path)
    body = exposition(data)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                               dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


# ---------------------------------------------------------------- the agent's /metrics


@dataclass
class MetricsServer:
    """`/metrics` served from a thread of the agent: each scrape takes a fresh,
    read-only `status` (the agent's loop is never involved), plus the agent
    process's own CPU, memory and file descriptors."""

    host: str
    #: The port bound, and the one asked for (0: any free one).
    port: int
    want_port: int = 0
    _server: Any = None
    _thread: threading.Thread | None = None

    @classmethod
    def start(cls, host: str, port: int, db: Path,
              config: Callable[[], AgentConfig | None]) -> MetricsServer:
        """Binds `host:port` (port 0: a free one) and serves; raises OSError when
        the address cannot be bound."""
        from prometheus_client import start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(StatusCollector(db, config))
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, ... (Linux)
        server, thread = start_http_server(port, addr=host, registry=registry)
        bound = server.server_address
        return cls(host=host, port=int(bound[1]), want_port=port, _server=server,
                   _thread=thread)

    @property
    def address(self) -> str:
        """`host:port` as bound (`[::1]:port` for IPv6)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def stop(self, timeout: float = 2.0) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
