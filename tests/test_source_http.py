"""HTTP source against a local JSON API (http.server in a thread) that pages,
filters by modified_since, fails sometimes and rate-limits."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from contactsync_agent import rules
from contactsync_agent.config import SourceConfig
from contactsync_agent.errors import ConfigError, ContactSyncError
from contactsync_agent.mirror import Mirror
from contactsync_agent.source_runs import stored_mark, sync_source
from contactsync_agent.sources import HttpSource
from contactsync_agent.sources.base import redact_url
from contactsync_agent.sources.http import parse_retry_after

TOKEN = "tok-" + "5f1c9a7e3b2d4c6a8e0f"


@dataclass
class Api:
    """What the fake API serves and how it misbehaves; shared with the handler threads."""

    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    token: str | None = None
    # Scripted failures, one per request, before serving normally: (status, headers).
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    always_fail: int | None = None
    delay_once: float = 0.0
    next_base: str = ""  # where `next` links point (another server, to test the token)
    requests: list[dict[str, Any]] = field(default_factory=list)
    clock: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, ext: str, **values: Any) -> None:
        with self.lock:
            self.clock += 1
            stamp = f"2024-05-01T10:{self.clock // 60:02d}:{self.clock % 60:02d}Z"
            base = self.items.get(ext, {"id": ext})
            self.items[ext] = {**base, **values, "updated_at": stamp}

    def seed(self, n: int) -> None:
        for i in range(n):
            self.put(
                f"P{i:03d}",
                first_name=f"Given{i}",
                last_name=f"Family{i}",
                email=f"p{i}@example.com",
                address={"city": "Newcastle", "postcode": "2300"},
            )


class Handler(BaseHTTPRequestHandler):
    api: Api

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        api = self.api
        parts = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with api.lock:
            api.requests.append(
                {"path": parts.path, "query": q, "auth": self.headers.get("Authorization")}
            )
            failure = api.failures.pop(0) if api.failures else None
            delay, api.delay_once = api.delay_once, 0.0
        if delay:
            time.sleep(delay)
        if api.always_fail:
            return self.send_json(api.always_fail, {"error": "down"})
        if failure:
            return self.send_json(failure[0], {"error": "try later"}, failure[1])
        if api.token and self.headers.get("Authorization") != f"Bearer {api.token}":
            return self.send_json(401, {"error": "unauthorised"})
        with api.lock:
            rows = sorted(api.items.values(), key=lambda r: (r["updated_at"], r["id"]))
        since = q.get("modified_since")
        if since:
            rows = [r for r in rows if r["updated_at"] > since]
        size = int(q.get("page_size", "10"))
        page = int(q.get("page", "1"))
        chunk = rows[(page - 1) * size : page * size]
        nxt = None
        if page * size < len(rows):
            rest = "&".join(f"{k}={v}" for k, v in q.items() if k != "page")
            nxt = f"{api.next_base}{parts.path}?{rest}&page={page + 1}"
        self.send_json(200, {"data": chunk, "links": {"next": nxt}, "total": len(rows)})


@dataclass
class Server:
    api: Api
    url: str
    httpd: ThreadingHTTPServer


def start(api: Api) -> Server:
    handler = type("BoundHandler", (Handler,), {"api": api})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return Server(api, f"http://127.0.0.1:{httpd.server_address[1]}", httpd)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    s = start(Api())
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    m = Mirror.open(tmp_path / "mirror.db")
    yield m
    m.close()


def config(server: Server, mode: str = "incremental", **options: Any) -> SourceConfig:
    opts: dict[str, Any] = {
        "url": f"{server.url}/contacts",
        "items_field": "data",
        "next_field": "links.next",
        "cursor_field": "updated_at",
        "page_size": 10,
        "id_field": "id",
        "backoff": 0.01,
        "max_retries": 3,
        "timeout": 5,
        **options,
    }
    return SourceConfig(
        name="api",
        kind="http",
        mode=mode,
        mapping={
            "first_name": "given_name",
            "last_name": "family_name",
            "address.city": "city",
            "address.postcode": "postcode",
        },
        options={k: v for k, v in opts.items() if v is not None},
    )


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def run(mirror: Mirror, cfg: SourceConfig, sleep: Sleeps | None = None) -> tuple[Any, HttpSource]:
    conn = HttpSource(cfg, sleep=sleep or Sleeps())
    return sync_source(mirror, cfg, connector=conn), conn


def test_incremental_pulls_only_changed_items(server: Server, mirror: Mirror) -> None:
    api = server.api
    api.seed(25)
    cfg = config(server)
    first, conn = run(mirror, cfg)
    assert conn.fetched == 25 and conn.pages == 3 and first.counts["created"] == 25
    assert "modified_since" not in api.requests[0]["query"]
    c = {x.external_id: x for x in mirror.contacts()}["P007"]
    assert (c.given_name, c.family_name, c.city, c.postcode) == (
        "Given7",
        "Family7",
        "Newcastle",
        "2300",
    )
    mark = json.loads(stored_mark(mirror.store, "api") or "{}")["value"]
    assert mark == max(r["updated_at"] for r in api.items.values())

    api.requests.clear()
    second, conn = run(mirror, cfg)
    assert conn.fetched == 0 and second.counts["records"] == 0
    assert api.requests[0]["query"]["modified_since"] == mark

    api.put("P003", email="new3@example.com")
    api.put("P010", address={"city": "Maitland", "postcode": "2320"})
    api.put("P099", first_name="Newbie", last_name="Person", email="newbie@example.com")
    api.put("P011", deleted=True)
    third, conn = run(mirror, cfg)
    assert conn.fetched == 4
    assert third.counts["updated"] == 2 and third.counts["created"] == 1
    assert third.counts["deleted"] == 1
    now = {x.external_id: x for x in mirror.contacts()}
    assert now["P003"].email == "new3@example.com" and now["P010"].city == "Maitland"
    assert "P011" not in now


def test_page_param_pagination(server: Server, mirror: Mirror) -> None:
    server.api.seed(23)
    cfg = config(server, next_field=None, page_param="page", page_size=10)
    report, conn = run(mirror, cfg)
    assert conn.pages == 3 and conn.fetched == 23 and report.counts["created"] == 23
    assert [r["query"]["page"] for r in server.api.requests] == ["1", "2", "3"]


def test_retries_500_and_429_honouring_retry_after(
    server: Server, mirror: Mirror, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    api = server.api
    api.seed(12)
    when = email.utils.format_datetime(
        dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30), usegmt=True
    )
    api.failures = [(500, {}), (429, {"Retry-After": "1"}), (503, {}), (429, {"Retry-After": when})]
    sleeps = Sleeps()
    report, conn = run(mirror, config(server, max_retries=4), sleeps)
    assert report.counts["created"] == 12
    assert conn.retries == 4 and conn.requests == 2 + 4  # two pages, four retries
    assert len(sleeps.calls) == 4
    assert 0.008 <= sleeps.calls[0] <= 0.01  # backoff * 2**0, with jitter
    assert sleeps.calls[1] == 1.0  # Retry-After in seconds
    assert 0.032 <= sleeps.calls[2] <= 0.04  # backoff * 2**2
    assert 25 <= sleeps.calls[3] <= 30  # Retry-After as an HTTP date
    assert "HTTP 429" in caplog.text and "retry 2 of 4" in caplog.text


def test_real_sleeps_with_retry_after_zero(server: Server, mirror: Mirror) -> None:
    server.api.seed(3)
    server.api.failures = [(429, {"Retry-After": "0"}), (502, {})]
    cfg = config(server)
    conn = HttpSource(cfg)  # time.sleep
    started = time.monotonic()
    report = sync_source(mirror, cfg, connector=conn)
    assert report.counts["created"] == 3 and conn.retries == 2
    # With real sleeps the retries complete; how long they took is printed, not
    # asserted (a loaded 2-core machine is no stopwatch: the test's timeout bounds it).
    print(f"two retries with Retry-After: 0 took {time.monotonic() - started:.2f}s")


def test_retries_are_bounded_and_the_mark_stays(server: Server, mirror: Mirror) -> None:
    api = server.api
    api.seed(5)
    cfg = config(server)
    run(mirror, cfg)
    mark = stored_mark(mirror.store, "api")
    api.put("P001", email="x@example.com")
    api.always_fail = 503
    api.requests.clear()
    sleeps = Sleeps()
    with pytest.raises(ContactSyncError, match=r"HTTP 503.*gave up after 3 retries"):
        run(mirror, cfg, sleeps)
    assert len(api.requests) == 4 and len(sleeps.calls) == 3
    assert sleeps.calls == sorted(sleeps.calls)  # growing backoff
    assert stored_mark(mirror.store, "api") == mark
    assert mirror.runs()[0]["status"] == "failed"
    api.always_fail = None
    report, conn = run(mirror, cfg)
    assert conn.fetched == 1 and report.counts["updated"] == 1


def test_client_errors_are_not_retried(server: Server, mirror: Mirror) -> None:
    server.api.seed(2)
    server.api.token = TOKEN  # we send none: 401
    sleeps = Sleeps()
    with pytest.raises(ContactSyncError, match="HTTP 401"):
        run(mirror, config(server), sleeps)
    assert len(server.api.requests) == 1 and sleeps.calls == []


def test_timeout_is_retried(server: Server, mirror: Mirror) -> None:
    server.api.seed(2)
    server.api.delay_once = 1.0
    report, conn = run(mirror, config(server, timeout=0.2))
    assert report.counts["created"] == 2 and conn.retries == 1


def test_mark_does_not_advance_when_the_run_fails(
    server: Server, mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = server.api
    api.seed(8)
    cfg = config(server)
    run(mirror, cfg)
    mark = stored_mark(mirror.store, "api")
    api.put("P002", email="changed@example.com")

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("injected failure after every item was read")

    monkeypatch.setattr(rules, "explain_untouched", boom)
    with pytest.raises(RuntimeError):
        run(mirror, cfg)
    assert stored_mark(mirror.store, "api") == mark
    monkeypatch.undo()
    report, conn = run(mirror, cfg)
    assert conn.fetched == 1 and report.counts["updated"] == 1
    assert stored_mark(mirror.store, "api") != mark


def test_full_mode_detects_deletions(server: Server, mirror: Mirror) -> None:
    api = server.api
    api.seed(12)
    cfg = config(server, mode="full")
    run(mirror, cfg)
    del api.items["P004"]
    report, conn = run(mirror, cfg)
    assert conn.fetched == 11 and report.counts["deleted"] == 1
    assert all("modified_since" not in r["query"] for r in api.requests)
    assert len(mirror.contacts()) == 11


def test_token_is_sent_but_never_logged_or_stored(
    server: Server,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    api = server.api
    api.seed(15)
    api.token = TOKEN
    api.failures = [(500, {}), (429, {"Retry-After": "0"})]
    other = start(Api())  # `next` links point here: it must not receive the token
    other.api.items = api.items
    api.next_base = other.url
    monkeypatch.setenv("API_TOKEN", TOKEN)
    path = tmp_path / "mirror.db"
    try:
        with Mirror.open(path) as m:
            cfg = config(server, token_env="API_TOKEN", page_size=100)
            report, _ = run(m, cfg)
            assert report.counts["created"] == 15
            # From a file this time, across two pages of which the second is elsewhere.
            token_file = tmp_path / "token"
            token_file.write_text(TOKEN + "\n", encoding="utf-8")
            token_file.chmod(0o600)
            cfg = config(server, mode="full", token_file=str(token_file), page_size=10)
            report, _ = run(m, cfg)
            assert report.counts["unchanged"] == 15
            runs = m.runs()
    finally:
        other.httpd.shutdown()
        other.httpd.server_close()
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in api.requests)
    assert other.api.requests and all(r["auth"] is None for r in other.api.requests)
    assert TOKEN not in caplog.text
    assert all(TOKEN not in f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert all(TOKEN not in str(r) for r in runs)
    data = b"".join(p.read_bytes() for p in tmp_path.glob("mirror.db*"))
    assert TOKEN.encode() not in data


def test_config_checks(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as e:
        HttpSource(config(server, page_sise=10))
    assert e.value.key == "sources.api.page_sise"
    with pytest.raises(ConfigError) as e:
        HttpSource(config(server, headers={"Authorization": "Bearer x"}))
    assert e.value.key == "sources.api.headers.Authorization"
    with pytest.raises(ConfigError) as e:
        HttpSource(config(server, token_env="NO_SUCH_TOKEN_VAR"))
    assert e.value.key == "sources.api.token_env"
    with pytest.raises(ConfigError) as e:
        HttpSource(config(server, page_param="page"))  # and next_field
    assert e.value.key == "sources.api.page_param"
    with pytest.raises(ConfigError) as e:
        HttpSource(config(server, max_retries="3"))
    assert e.value.key == "sources.api.max_retries"


def test_helpers() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("") is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert redact_url("https://u:secret@h.example/x?api_key=abc&page=2") == (
        "https://u:***@h.example/x?api_key=***&page=2"
    )
