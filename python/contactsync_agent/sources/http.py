"""An HTTP JSON API as records: pages of items, `modified_since`-style incremental
pulls, bearer-token auth, timeouts, and bounded retries with backoff on 429/5xx.

Standard library only (urllib). It only issues GETs (the way back, two-way
sync's PATCH/POST, is `http_writer.py`); the mark is stored by
`source_runs.sync_source`, and the token never leaves the request headers of this
module and of `http_writer.py`.

Every wait has an end, whatever the server does: `timeout` bounds the connect and
each socket read, `page_timeout` one whole request (connect, headers and body: a
server sending a byte a second is cut off), `max_duration` the whole run, and
`max_response_bytes` the size of one body (read in chunks, never past the limit).
A watch thread shuts the request's socket down when its time is up or the run is
aborted (SIGTERM), so no read outlives its deadline.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import http.client
import json
import logging
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Generator
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from contactsync_agent.config import SourceConfig
from contactsync_agent.errors import ConfigError, RunAborted
from contactsync_agent.sources.base import (
    Connector,
    positive,
    read_secret,
    redact_url,
    text_value,
)

log = logging.getLogger("contactsync_agent.sources.http")

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
#: What a request can fail with short of an HTTP answer (no connection, a
#: timeout, a broken or malformed reply), for the pull and the writer alike.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, OSError)
ITEM_KEYS = ("items", "data", "results", "contacts", "records")
_LINK_NEXT = re.compile(r'<([^>]+)>\s*;[^,]*\brel="?next"?', re.I)
DEFAULT_PAGE_TIMEOUT = 120.0
DEFAULT_MAX_RESPONSE_BYTES = 32 << 20
READ_CHUNK = 64 << 10


class _Watch:
    """Shuts down the socket of the request in flight once its time is up (a timer
    thread) or the run is aborted (`fire` from a signal handler).

    Lock-free on purpose: `fire` may run in a signal handler on the main thread
    while that thread is inside `attach`. Each side writes its own field before
    reading the other's, so one of them always sees both and shuts the socket.
    """

    def __init__(self) -> None:
        self.fired: str | None = None
        self._sock: socket.socket | None = None
        self._timer: threading.Timer | None = None

    def start(self, seconds: float, why: str) -> None:
        self.fired = None
        self._sock = None
        self._timer = threading.Timer(max(seconds, 0.0), self.fire, (why,))
        self._timer.daemon = True
        self._timer.start()

    def attach(self, sock: socket.socket) -> None:
        self._sock = sock
        if self.fired is not None:
            _shut(sock)

    def fire(self, why: str) -> None:
        if self.fired is None:
            self.fired = why
        sock = self._sock
        if sock is not None:
            _shut(sock)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._sock = None


def _shut(sock: socket.socket) -> None:
    """Ends every read and write on `sock` now (the plain socket's shutdown, also for
    TLS: the blocked SSL read sees the end of the stream)."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _WatchedHandler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    """urllib's HTTP and HTTPS handlers, with connections that hand their socket to
    the watch and never connect for longer than the time left."""

    def __init__(self, watch: _Watch, time_left: Callable[[], float]) -> None:
        urllib.request.HTTPHandler.__init__(self)
        urllib.request.HTTPSHandler.__init__(self)
        self.watch = watch
        self.time_left = time_left

    def do_open(
        self, http_class: Any, req: urllib.request.Request, **kw: Any
    ) -> http.client.HTTPResponse:
        watch = self.watch
        # The connection's timeout (connect, each read): never past the time left.
        given: float | None = getattr(req, "timeout", None)
        left = self.time_left()
        req.timeout = max(0.001, min(given, left) if given else left)

        class Watched(http_class):  # type: ignore[misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                create: Callable[..., socket.socket] = self.__dict__["_create_connection"]

                def created(*a: Any, **k: Any) -> socket.socket:
                    sock: socket.socket = create(*a, **k)
                    watch.attach(sock)  # from the start: a TLS handshake is watched too
                    return sock

                self._create_connection = created

            def connect(self) -> None:
                super().connect()
                watch.attach(self.sock)  # the TLS socket, once wrapped

        return super().do_open(Watched, req, **kw)


class HttpSource(Connector):
    """[sources.NAME] kind = "http". Options (all but url optional):

    url                       the first page, e.g. https://pms.example/api/contacts
    token_env | token_file    bearer token from an environment variable or a file's first
                              line (never from the config file itself); token_header sends
                              it raw in another header (e.g. X-Api-Key) instead
    since_param               query parameter of an incremental pull (modified_since)
    cursor_field              item field whose largest value is the next `since`; without
                              it, the time the pull began (needs agreeing clocks)
    items_field               dotted path of the item list (default: the body if a list,
                              else items | data | results | contacts | records)
    next_field | page_param   pagination: a dotted path to the next page's URL, or a page
                              number parameter (page_start, page_size, page_size_param);
                              neither: a Link: <...>; rel="next" header, if any. A next
                              link back to a page this pull already fetched is a loop:
                              the run is refused at once
    id_field, delete_field    item fields mapped to external_id and deleted
    modified_field            item field (dotted path) holding the item's modification
                              time, ISO 8601 or epoch seconds/milliseconds: mapped to
                              modified_at, which two-way sync's last_write_wins compares
                              (without it the source wins every such conflict); the
                              writer also reads it from a write's answer
    headers                   extra request headers (no credentials)
    timeout                   seconds to connect, and for each read (default 30)
    page_timeout              seconds one whole request may take: connect, headers
                              and body (default 120; never more than max_duration)
    max_response_bytes        the largest body read (default 32 MiB); a bigger one
                              fails the run, naming the setting
    max_retries, backoff, max_backoff, max_retry_after, max_pages
    write_path, create_path, write_method, etag, create_id_field, modified_field,
    error_field, batch_path, batch_size   the way back: see `http_writer.HttpWriter`
    The run as a whole ends after the source's max_duration (default 1 h).
    """

    kind = "http"
    OPTIONS: ClassVar[dict[str, type | tuple[type, ...]]] = {
        "url": str,
        "token_env": str,
        "token_file": str,
        "token_header": str,
        "since_param": str,
        "cursor_field": str,
        "items_field": str,
        "next_field": str,
        "page_param": str,
        "page_start": int,
        "page_size": int,
        "page_size_param": str,
        "id_field": str,
        "delete_field": str,
        "headers": dict,
        "timeout": (int, float),
        "page_timeout": (int, float),
        "max_response_bytes": int,
        "max_retries": int,
        "backoff": (int, float),
        "max_backoff": (int, float),
        "max_retry_after": (int, float),
        "max_pages": int,
        # The way back (two-way sync), read by `sources/http_writer.HttpWriter`.
        "write_path": str,
        "create_path": str,
        "write_method": str,
        "etag": str,
        "create_id_field": str,
        "modified_field": str,
        "error_field": str,
        "batch_path": str,
        "batch_size": int,
    }

    def __init__(
        self, cfg: SourceConfig, *, sleep: Callable[[float], None] | None = None
    ) -> None:
        super().__init__(cfg)
        url = self.option("url")
        if not url or urlsplit(url).scheme not in ("http", "https"):
            raise ConfigError('an http source needs url = "https://..."', key=self.key("url"))
        self.url: str = url
        self.since_param: str = self.option("since_param", "modified_since")
        self.cursor_field: str | None = self.option("cursor_field")
        self.items_field: str | None = self.option("items_field")
        self.next_field: str | None = self.option("next_field")
        self.page_param: str | None = self.option("page_param")
        if self.next_field and self.page_param:
            raise ConfigError("use next_field or page_param, not both", key=self.key("page_param"))
        self.page_start: int = self.option("page_start", 1)
        self.page_size: int | None = self.option("page_size")
        self.page_size_param: str = self.option("page_size_param", "page_size")
        self.timeout = positive(self.option("timeout", 30), self.key("timeout"))
        self.page_timeout = positive(
            self.option("page_timeout", DEFAULT_PAGE_TIMEOUT), self.key("page_timeout")
        )
        self.max_response_bytes = int(
            positive(
                self.option("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES),
                self.key("max_response_bytes"),
            )
        )
        self.max_retries: int = self.option("max_retries", 5)
        if not 0 <= self.max_retries <= 20:
            raise ConfigError("must be between 0 and 20", key=self.key("max_retries"))
        self.backoff = positive(self.option("backoff", 1.0), self.key("backoff"))
        self.max_backoff = positive(self.option("max_backoff", 60), self.key("max_backoff"))
        self.max_retry_after = positive(
            self.option("max_retry_after", 300), self.key("max_retry_after")
        )
        self.max_pages: int = self.option("max_pages", 100_000)
        self.headers: dict[str, str] = {}
        for k, v in (self.option("headers") or {}).items():
            if not isinstance(v, str):
                raise ConfigError(f"expected a string, got {v!r}", key=self.key(f"headers.{k}"))
            if k.lower() in ("authorization", "cookie", "x-api-key"):
                raise ConfigError(
                    "credentials do not belong in the config file; use token_env or token_file",
                    key=self.key(f"headers.{k}"),
                )
            self.headers[k] = v
        self.token_header: str = self.option("token_header", "Authorization")
        self.token = read_secret(cfg, direct=None, env="token_env", file="token_file", what="token")
        self._secrets = [self.token] if self.token else []
        self.sleep = sleep or self.pause
        self._watch = _Watch()
        self._opener = urllib.request.build_opener(_WatchedHandler(self._watch, self.remaining))
        #: Requests sent (retries included), retries, pages read: for tests and `source test`.
        self.requests = 0
        self.retries = 0
        self.pages = 0

    def default_mapping(self) -> dict[str, str]:
        m: dict[str, str] = {}
        if self.option("id_field"):
            m[self.option("id_field")] = "external_id"
        if self.option("delete_field"):
            m[self.option("delete_field")] = "deleted"
        if self.option("modified_field"):
            m[self.option("modified_field")] = "modified_at"
        return m

    @property
    def origin(self) -> str:
        return f"http:{redact_url(self.url)}"

    def fingerprint(self) -> str:
        return json.dumps([redact_url(self.url), self.since_param, self.cursor_field])

    # -------------------------------------------------------------- reading

    def read(self, mode: str, mark: str | None) -> Generator[dict[str, Any], None, None]:
        """Items of every page as flat field -> value (nested objects as a.b)."""
        self.fetched = self.requests = self.retries = self.pages = 0
        self.next_mark = mark
        self.start_clock()
        # Without a cursor field the next `since` is when this pull began (the server's
        # and our clocks must agree; cursor_field avoids that).
        started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        params: dict[str, str] = {}
        if mode == "incremental" and mark:
            params[self.since_param] = mark
        if self.page_size:
            params[self.page_size_param] = str(self.page_size)
        page = self.page_start
        if self.page_param:
            params[self.page_param] = str(page)
        url = with_params(self.url, params)
        best: Any = None
        id_field = self.option("id_field")
        fetched: set[str] = set()
        while True:
            fetched.add(url)
            body, headers = self.get(url)
            items = self.items(body, url)
            self.pages += 1
            for item in items:
                self.check()
                record = flatten(item) if isinstance(item, dict) else {"value": item}
                if id_field and id_field in record:
                    record = {id_field: record.pop(id_field), **record}
                self.fetched += 1
                if self.cursor_field:
                    v = record.get(self.cursor_field)
                    if v not in (None, "") and (best is None or _order(v) > _order(best)):
                        best = v
                yield {k: text_value(v) for k, v in record.items()}
            if self.next_field:
                nxt = dig(body, self.next_field)
                if not nxt:
                    break
                url = urljoin(url, str(nxt))
            elif self.page_param:
                if not items or (self.page_size and len(items) < self.page_size):
                    break
                page += 1
                url = with_params(self.url, {**params, self.page_param: str(page)})
            else:
                m = _LINK_NEXT.search(headers.get("Link", ""))
                if not m:
                    break
                url = urljoin(url, m.group(1))
            if url in fetched:  # a next link back to a page of this pull: a loop, now
                raise self.fail(
                    f"the next link of page {self.pages} points to a page already fetched "
                    f"({redact_url(url)}); the pagination loops"
                )
            if self.pages >= self.max_pages:
                raise self.fail(
                    f"more than max_pages = {self.max_pages} pages; is the pagination looping?"
                )
        if self.cursor_field:
            if best is not None:
                self.next_mark = str(best)
        else:
            self.next_mark = started

    def items(self, body: Any, url: str) -> list[Any]:
        if self.items_field:
            found = dig(body, self.items_field)
            if found is None and isinstance(body, dict):
                found = []
        elif isinstance(body, list):
            found = body
        elif isinstance(body, dict):
            found = next((body[k] for k in ITEM_KEYS if isinstance(body.get(k), list)), None)
        else:
            found = None
        if not isinstance(found, list):
            keys = ", ".join(body) if isinstance(body, dict) else type(body).__name__
            raise self.fail(
                f"GET {redact_url(url)}: no list of items in the response "
                f"(set items_field; the response has: {keys})"
            )
        return found

    def authorize(self, req: urllib.request.Request, url: str) -> None:
        """Adds the source's token to a request to the source's own origin only
        (unredirected: urllib would otherwise copy it to wherever a redirect points)."""
        if self.token and _same_origin(url, self.url):
            value = (
                f"Bearer {self.token}"
                if self.token_header.lower() == "authorization"
                else self.token
            )
            req.add_unredirected_header(self.token_header, value)

    def get(self, url: str) -> tuple[Any, http.client.HTTPMessage]:
        """GETs one page as JSON, retrying 429/5xx and network errors a bounded number
        of times with exponential backoff (or the server's Retry-After)."""
        safe = redact_url(url)
        req = urllib.request.Request(
            url,
            headers={
                "Accept": "application/json",
                "User-Agent": "contactsync-agent",
                **self.headers,
            },
        )
        self.authorize(req, url)
        attempt = 0
        while True:
            self.check()
            self.requests += 1
            retry_after: str | None = None
            limit = min(self.page_timeout, self.remaining())
            page_why = (
                f"page_timeout = {self.page_timeout:g}s"
                if limit == self.page_timeout
                else f"max_duration = {self.max_duration:g}s"
            )
            started = time.monotonic()
            self._watch.start(limit, page_why)
            if self._aborted is not None:  # aborted since the check above
                self._watch.fire("the run was aborted")
            try:
                with self._opener.open(req, timeout=min(self.timeout, limit)) as resp:
                    data = self._body(resp, safe)
                    headers = resp.headers
                self._after(safe, started, None)
                break
            except urllib.error.HTTPError as e:
                self._after(safe, started, None)
                status, reason = e.code, e.reason
                retry_after = e.headers.get("Retry-After") if e.headers else None
                e.close()
                problem = f"HTTP {status} {reason}"
                if status not in RETRY_STATUS:
                    raise self.fail(f"GET {safe}: {problem}") from None
            except TRANSPORT_ERRORS as e:
                # A socket timeout clipped to the time left is the deadline too.
                self._after(safe, started, (limit, page_why))
                problem = str(getattr(e, "reason", None) or e) or type(e).__name__
            finally:
                self._watch.stop()
            if attempt >= self.max_retries:
                raise self.fail(f"GET {safe}: {problem} (gave up after {attempt} retries)")
            delay = self.delay(attempt, retry_after)
            if delay >= self.remaining():
                raise self.fail(
                    f"GET {safe}: {problem}; the next retry would come after "
                    f"max_duration = {self.max_duration:g}s (sources.{self.name}.max_duration)"
                )
            attempt += 1
            self.retries += 1
            log.warning(
                "source %s: GET %s: %s; retry %d of %d in %.1fs",
                self.name,
                safe,
                self.scrub(problem),
                attempt,
                self.max_retries,
                delay,
            )
            self.sleep(delay)
        try:
            text = data.decode(_charset(headers))
            del data
            return json.loads(text), headers
        except (ValueError, LookupError) as e:
            raise self.fail(f"GET {safe}: not JSON ({e})") from None

    def _after(self, safe: str, started: float, deadline: tuple[float, str] | None) -> None:
        """After a request ended: raises the reason if the watch cut it off, or (for a
        failed request, `deadline` = (seconds, setting)) if its time was up anyway."""
        why = self._watch.fired
        if why is None and deadline is not None:
            limit, setting = deadline
            if time.monotonic() - started >= limit - 0.01:
                why = setting
        if why is None:
            return
        if self._aborted is not None:
            raise RunAborted(self._aborted)
        took = time.monotonic() - started
        raise self.fail(
            f"GET {safe}: no complete response within {why} "
            f"(cut off after {took:.1f}s; sources.{self.name}.{why.split(' ')[0]})"
        )

    def _body(self, resp: http.client.HTTPResponse, safe: str) -> bytes:
        """The body, read in chunks and never past `max_response_bytes`."""
        limit = self.max_response_bytes
        key = f"sources.{self.name}.max_response_bytes"
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise self.fail(
                f"GET {safe}: the response is {int(declared)} bytes, over "
                f"max_response_bytes = {limit} ({key}); not read"
            )
        buf = bytearray()
        while True:
            chunk = resp.read1(READ_CHUNK)
            if not chunk:
                break
            buf += chunk
            if len(buf) > limit:
                raise self.fail(
                    f"GET {safe}: the response is over max_response_bytes = {limit} "
                    f"({key}); stopped reading after {len(buf)} bytes"
                )
        if resp.length:  # the server announced more than it sent
            raise http.client.IncompleteRead(bytes(0), resp.length)
        return bytes(buf)

    def _interrupt(self) -> None:
        self._watch.fire("the run was aborted")

    def delay(self, attempt: int, retry_after: str | None) -> float:
        """The server's Retry-After (capped) if it sent one, else exponential backoff
        with a little jitter so many agents do not retry in step."""
        wait = parse_retry_after(retry_after)
        if wait is not None:
            return min(wait, self.max_retry_after)
        return min(self.backoff * 2.0**attempt, self.max_backoff) * random.uniform(0.8, 1.0)


# ------------------------------------------------------------------ helpers


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def with_params(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def dig(body: Any, path: str) -> Any:
    """body["a"]["b"] for path "a.b"; None when any step is missing."""
    for part in path.split("."):
        if not isinstance(body, dict):
            return None
        body = body.get(part)
    return body


def flatten(item: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects as dotted fields ({"address": {"city": x}} -> address.city)."""
    out: dict[str, Any] = {}
    for k, v in item.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            if v:
                out.update(flatten(v, f"{key}."))
            else:
                out[key] = None
        else:
            out[key] = v
    return out


def _order(v: Any) -> tuple[int, Any]:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return (0, v)
    return (1, str(v))


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


def _charset(headers: http.client.HTTPMessage) -> str:
    return headers.get_content_charset() or "utf-8"
