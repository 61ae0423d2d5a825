"""The HTTP writer: two-way sync's changes applied to an HTTP JSON API.

`HttpWriter.push(changes)` sends each `OutboundChange` (the contract is
`sources/writer.py`) as one request: `PATCH <url>/<id>` with only the changed
fields, in the source's own field names (its `mapping`, dotted names as nested
objects), or `POST <url>` for a create (the new id read from the response).
Every request carries `Idempotency-Key: <change.key>`, so a retry after a lost
answer is recognised by the target and applied once, and `If-Match: <version>`
when the change knows the contact's ETag (412 or 409: a conflict). An API that
takes batches (`batch_path`, Microsoft Graph's JSON batching shape) gets the
same requests, `batch_size` at a time, each judged by its own response.

It reuses the HTTP connector (`sources/http.py`) of the same source: its token
(sent only to the source's own origin), extra headers, timeouts, watch, and
retry/backoff settings. Writes never follow a redirect (a 3xx is reported, the
token goes nowhere else). 5xx, 408, 429, a dropped connection or a timeout are
retried with the connector's backoff, at most `max_retries` times; after that
the change's result is `retry` (sent again later, same key).

It writes only to its own system: it never opens the mirror, decides no
conflict, and never logs or returns a value: the target's message (a 4xx
reason) is returned with every value that was sent replaced by ***.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import http.client
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from contactsync_agent.config import SourceConfig
from contactsync_agent.errors import ConfigError, ContactSyncError
from contactsync_agent.sources.base import redact_url
from contactsync_agent.sources.http import (
    RETRY_STATUS,
    TRANSPORT_ERRORS,
    HttpSource,
    _same_origin,
    _WatchedHandler,
    dig,
)
from contactsync_agent.sources.writer import OutboundChange, PushResult

log = logging.getLogger("contactsync_agent.sources.http_writer")

#: Statuses after which the same request may succeed later (with the same key):
#: every 5xx but the two that say the request itself will never work.
WRITE_RETRY_STATUS = (
    RETRY_STATUS | frozenset({408, 425}) | (frozenset(range(500, 600)) - {501, 505})
)
#: Statuses that say the contact changed at the target since its ETag.
CONFLICT_STATUS = frozenset({409, 412})
#: Statuses about the credentials: no change can go through until an admin acts.
AUTH_STATUS = frozenset({401, 403, 407})
WRITE_METHODS = ("PATCH", "PUT", "POST")
ETAG_MODES = ("if-match", "none")
#: Where a 4xx body's message is looked for when `error_field` is not set.
ERROR_FIELDS = ("message", "error.message", "error", "detail", "title", "errors")
#: Targets of a mapping that are not fields a writer sends.
NOT_SENT = frozenset({"external_id", "name", "deleted", "extra", "ignore"})
MAX_REASON = 300
_EMAIL = re.compile(r"[^\s'\"<>(),;:]+@[^\s'\"<>(),;:]+")
_DIGITS = re.compile(r"\+?\d[\d\s().-]{5,}\d")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A write is never re-sent elsewhere (urllib would turn a POST into a GET, or
    carry the body to another host): the 3xx comes back as an HTTPError."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class _Answer:
    status: int  # 0: no answer (connection dropped, timed out)
    problem: str
    #: By lower-cased name.
    headers: Mapping[str, str]
    body: Any = None


@dataclass
class _Request:
    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    #: Every value of the change (base and new): redacted from what comes back.
    sent: list[str]


class _Stop(Exception):
    """No further change can go through in this push (the reason says why)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HttpWriter:
    """The writer of a [sources.NAME] kind = "http" source. Options (besides the
    connector's url, token, headers, timeout, page_timeout, max_retries, backoff,
    max_backoff, max_retry_after, max_duration):

    write_path     where an update goes, relative to url; `{id}` is the source's id
                   (default "{id}": url/ID; "/v2/people/{id}" is from the host's root).
                   Must stay on url's scheme, host and port
    create_path    where a create is POSTed, relative to url (default: url itself)
    write_method   PATCH (default), PUT or POST for an update; the body always holds
                   only the changed fields
    etag           "if-match" (default: send If-Match when the contact's ETag is
                   known; 412/409 is a conflict) or "none"
    create_id_field  dotted path of the new id in a create's response (default:
                   id_field, else "id"; a Location header's last segment otherwise)
    modified_field dotted path of the contact's modification time in a write's
                   response (default: cursor_field; else the Last-Modified header)
    error_field    dotted path of the message in a refusal's body (default: message,
                   error.message, error, detail, title, errors)
    batch_path     where a batch of writes is POSTed (relative to url, e.g. "/$batch"),
                   when the API takes Microsoft Graph's JSON batching shape: {"requests":
                   [{id, method, url, headers, body}]} answered by {"responses": [{id,
                   status, headers, body}]}. Unset (the default): one request per change
    batch_size     changes per batch (default 100, at most 1000)
    """

    def __init__(
        self, cfg: SourceConfig, *, sleep: Callable[[float], None] | None = None
    ) -> None:
        self.conn = HttpSource(cfg, sleep=sleep)
        conn = self.conn
        self.name = cfg.name
        parts = urlsplit(conn.url)
        # The collection: the pull's url without its query (filters, page size).
        self.base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self.write_path: str = conn.option("write_path", "{id}")
        if "{id}" not in self.write_path:
            raise ConfigError(
                "must contain {id} (where the contact's id goes)", key=conn.key("write_path")
            )
        self.create_path: str = conn.option("create_path", "")
        for opt, path in (("write_path", self.write_path), ("create_path", self.create_path)):
            if not _same_origin(self.resolve(path, "x"), conn.url):
                raise ConfigError(
                    "must stay on the url's scheme, host and port (the token goes nowhere else)",
                    key=conn.key(opt),
                )
        self.write_method = str(conn.option("write_method", "PATCH")).upper()
        if self.write_method not in WRITE_METHODS:
            raise ConfigError(
                f"must be one of {', '.join(WRITE_METHODS)}, got {self.write_method!r}",
                key=conn.key("write_method"),
            )
        self.etag: str = conn.option("etag", "if-match")
        if self.etag not in ETAG_MODES:
            raise ConfigError(
                f"must be one of {', '.join(ETAG_MODES)}, got {self.etag!r}",
                key=conn.key("etag"),
            )
        self.create_id_field: str = conn.option(
            "create_id_field", conn.option("id_field") or "id"
        )
        self.modified_field: str | None = conn.option("modified_field", conn.cursor_field)
        self.error_field: str | None = conn.option("error_field")
        batch_path: str | None = conn.option("batch_path")
        self.batch_url = self.resolve(batch_path, None) if batch_path else None
        if self.batch_url is not None and not _same_origin(self.batch_url, conn.url):
            raise ConfigError(
                "must stay on the url's scheme, host and port (the token goes nowhere else)",
                key=conn.key("batch_path"),
            )
        self.batch_size: int = conn.option("batch_size", 100)
        if not 1 <= self.batch_size <= 1000:
            raise ConfigError("must be between 1 and 1000", key=conn.key("batch_size"))
        self.names = outbound_names(conn.mapping())
        self._opener = urllib.request.build_opener(
            _WatchedHandler(conn._watch, conn.remaining), _NoRedirect()
        )
        #: Requests sent (retries included) and retries: for tests and reports.
        self.requests = 0
        self.retries = 0

    # -------------------------------------------------------------- the contract

    def push(self, changes: Sequence[OutboundChange]) -> list[PushResult]:
        """One result per change, in order. A transient failure is retried here with
        the connector's backoff; a change still failing is `retry`. When no further
        change can go through (credentials refused, a redirect, the target
        unreachable, max_duration over, the run aborted) the rest are `retry`
        without being sent."""
        self.conn.start_clock()
        results: list[PushResult] = []
        stopped: str | None = None
        if self.batch_url is not None:
            for at in range(0, len(changes), self.batch_size):
                chunk = changes[at : at + self.batch_size]
                stopped = self._stopped(stopped)
                if stopped is not None:
                    results += [_retry(c, stopped) for c in chunk]
                    continue
                try:
                    results += self.push_batch(chunk)
                except _Stop as e:
                    stopped = f"not sent: {e.reason}"
                    results += [_retry(c, e.reason) for c in chunk]
            return results
        for change in changes:
            stopped = self._stopped(stopped)
            if stopped is not None:
                results.append(_retry(change, stopped))
                continue
            try:
                results.append(self.push_one(change))
            except _Stop as e:
                stopped = f"not sent: {e.reason}"
                results.append(_retry(change, e.reason))
        return results

    def _stopped(self, stopped: str | None) -> str | None:
        if stopped is None and self.conn._aborted is not None:
            return "not sent: the push was aborted"
        if stopped is None and self.conn.remaining() <= 0:
            return (
                f"not sent: the push took longer than max_duration = "
                f"{self.conn.max_duration:g}s (sources.{self.name}.max_duration)"
            )
        return stopped

    def close(self) -> None:
        self.conn.close()

    def abort(self, reason: str) -> None:
        """Ends the push in progress (from a signal handler or another thread): the
        request in flight is cut off, the rest come back `retry`, not sent."""
        self.conn.abort(reason)

    # -------------------------------------------------------------- one change

    def prepare(self, change: OutboundChange) -> _Request | PushResult:
        """The request a change stands for (or its result when it cannot be sent)."""
        sent = [v for base, new in change.fields.values() for v in (base, new)]  # to redact
        if change.kind == "create":
            method, url = "POST", self.resolve(self.create_path, None)
        elif change.external_id:
            method, url = self.write_method, self.resolve(self.write_path, change.external_id)
        else:
            return PushResult(
                change.entry_id, "rejected", reason="an update without the source's id",
                fields=tuple(change.fields),
            )
        headers = {"Idempotency-Key": change.key}
        if change.kind == "update" and self.etag == "if-match" and change.version:
            headers["If-Match"] = change.version
        return _Request(method, url, headers, self.body(change), sent)

    def push_one(self, change: OutboundChange) -> PushResult:
        req = self.prepare(change)
        if isinstance(req, PushResult):
            return req
        answer = self.send(req.method, req.url, req.headers, req.body, req.sent)
        return self.judge(change, answer, req.sent)

    def push_batch(self, changes: Sequence[OutboundChange]) -> list[PushResult]:
        """The changes as one POST to batch_path (Microsoft Graph's JSON batching
        shape), each request with its own Idempotency-Key and If-Match; the batch
        as a whole is retried like one write, each response judged as if alone."""
        results: dict[int, PushResult] = {}
        requests: list[dict[str, Any]] = []
        prepared: dict[int, _Request] = {}
        for i, change in enumerate(changes):
            req = self.prepare(change)
            if isinstance(req, PushResult):
                results[i] = req
                continue
            prepared[i] = req
            parts = urlsplit(req.url)
            path = urlunsplit(("", "", parts.path, parts.query, ""))
            requests.append(
                {"id": str(i), "method": req.method, "url": path, "headers": req.headers,
                 "body": req.body}
            )
        if requests:
            sent = [v for req in prepared.values() for v in req.sent]
            assert self.batch_url is not None
            answer = self.send("POST", self.batch_url, {}, {"requests": requests}, sent)
            listed = dig(answer.body, "responses") if 200 <= answer.status < 300 else None
            by_id = {
                str(r.get("id")): r for r in listed or [] if isinstance(r, dict)
            }
            for i, req in prepared.items():
                change = changes[i]
                if not isinstance(listed, list):
                    results[i] = _retry(
                        change,
                        f"the batch was not answered: {answer.problem} "
                        f"(sources.{self.name}.batch_path)",
                    )
                    continue
                r = by_id.get(str(i))
                status = r.get("status") if r is not None else None
                if r is None or not isinstance(status, int):
                    results[i] = _retry(change, "the batch's answer has no response for it")
                    continue
                hdrs = r.get("headers")
                sub = _Answer(
                    status,
                    f"HTTP {status}",
                    _lower(hdrs.items()) if isinstance(hdrs, dict) else {},
                    r.get("body"),
                )
                results[i] = self.judge(change, sub, req.sent)
        return [results[i] for i in range(len(changes))]

    def judge(self, change: OutboundChange, answer: _Answer, sent: Iterable[str]) -> PushResult:
        """The outcome of one change from the target's answer to it."""
        fields = tuple(change.fields)
        status = answer.status
        if 200 <= status < 300:
            ext = change.external_id
            reason = ""
            if change.kind == "create":
                ext = self.new_id(answer)
                if ext is None:
                    reason = (
                        f"created, but the response named no id ({self.create_id_field}, "
                        "Location); set create_id_field"
                    )
            return PushResult(
                change.entry_id,
                "confirmed",
                external_id=ext,
                reason=reason,
                version=answer.headers.get("etag") or None,
                modified_at=self.modified_at(answer),
            )
        message = self.message(answer, sent) if status else ""
        shown = f"{answer.problem}: {message}" if message else answer.problem
        if status in CONFLICT_STATUS:
            return PushResult(change.entry_id, "conflict", reason=shown, fields=fields)
        if (
            status == 0
            or status in WRITE_RETRY_STATUS
            or status in AUTH_STATUS
            or 300 <= status < 400
        ):
            return _retry(change, shown)
        return PushResult(change.entry_id, "rejected", reason=shown, fields=fields)

    def send(
        self, method: str, url: str, headers: dict[str, str], body: dict[str, Any],
        sent: Iterable[str],
    ) -> _Answer:
        """One write, retried on 5xx/408/429, a dropped connection and a timeout (with
        the same Idempotency-Key) at most max_retries times. Raises _Stop when no
        change can go through now."""
        conn = self.conn
        safe = redact_url(url)
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        req = urllib.request.Request(
            url,
            data=data,
            method=method,
            headers={
                "Accept": "application/json",
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "contactsync-agent",
                **conn.headers,
                **headers,
            },
        )
        conn.authorize(req, url)
        attempt = 0
        while True:
            answer = self._once(req, method, safe, sent)
            status = answer.status
            if status in AUTH_STATUS:
                raise _Stop(
                    f"{answer.problem}: the target refused the credentials "
                    f"(sources.{self.name}.token_env or token_file)"
                )
            if 300 <= status < 400:
                where = redact_url(urljoin(url, answer.headers.get("location", "")))
                raise _Stop(
                    f"{answer.problem}: the target redirects writes to {where}; writes do "
                    f"not follow redirects (set sources.{self.name}.url or write_path)"
                )
            if status and status not in WRITE_RETRY_STATUS:
                return answer
            if attempt >= conn.max_retries:
                if status == 0:
                    raise _Stop(f"{answer.problem} (gave up after {attempt} retries)")
                answer.problem += f" (gave up after {attempt} retries)"
                return answer
            delay = conn.delay(attempt, answer.headers.get("retry-after"))
            if delay >= conn.remaining():
                raise _Stop(
                    f"{answer.problem}; the next retry would come after max_duration = "
                    f"{conn.max_duration:g}s (sources.{self.name}.max_duration)"
                )
            attempt += 1
            self.retries += 1
            log.warning(
                "source %s: %s %s: %s; retry %d of %d in %.1fs",
                self.name, method, safe, conn.scrub(answer.problem), attempt,
                conn.max_retries, delay,
            )
            conn.sleep(delay)
            if conn._aborted is not None:
                raise _Stop("the push was aborted")

    def _once(
        self, req: urllib.request.Request, method: str, safe: str, sent: Iterable[str]
    ) -> _Answer:
        """One request: its status (0: no answer), a problem text and the body."""
        conn = self.conn
        if conn._aborted is not None:
            raise _Stop("the push was aborted")
        self.requests += 1
        limit = min(conn.page_timeout, conn.remaining())
        conn._watch.start(limit, f"page_timeout = {conn.page_timeout:g}s")
        started = time.monotonic()
        try:
            with self._opener.open(req, timeout=min(conn.timeout, limit)) as resp:
                status, headers = resp.status, _lower(resp.headers.items())
                try:
                    raw = conn._body(resp, safe)
                except ContactSyncError:
                    raw = b""  # applied; only the answer is too big to read
            return _Answer(status, f"HTTP {status}", headers, _json(raw, headers))
        except urllib.error.HTTPError as e:
            try:
                raw = e.read(conn.max_response_bytes)
            except (OSError, http.client.HTTPException):
                raw = b""
            hdrs = _lower(e.headers.items()) if e.headers else {}
            e.close()
            # The reason phrase is the server's text too: it may quote a value.
            phrase = redact(str(e.reason), sent)
            return _Answer(e.code, f"HTTP {e.code} {phrase}", hdrs, _json(raw, hdrs))
        except TRANSPORT_ERRORS as e:
            if conn._aborted is not None:
                raise _Stop("the push was aborted") from None
            took = time.monotonic() - started
            if conn._watch.fired or took >= limit - 0.01:
                problem = f"no complete answer within {limit:g}s (cut off after {took:.1f}s)"
            else:
                problem = str(getattr(e, "reason", None) or e) or type(e).__name__
            return _Answer(0, f"{method} {safe}: {conn.scrub(problem)}", {})
        finally:
            conn._watch.stop()

    # -------------------------------------------------------------- shapes

    def resolve(self, path: str, ext: str | None) -> str:
        """The URL of a write: `path` relative to the collection, `{id}` filled in."""
        if ext is not None:
            path = path.replace("{id}", quote(ext, safe=""))
        return urljoin(self.base + "/", path) if path else self.base

    def body(self, change: OutboundChange) -> dict[str, Any]:
        """The changed fields in the source's own names (dotted: nested); a field
        emptied locally is sent as null."""
        out: dict[str, Any] = {}
        for canonical, (_base, new) in change.fields.items():
            name = self.names.get(canonical) or canonical.removeprefix("extra:")
            value: Any = new if new != "" else None
            if change.kind == "create" and value is None:
                continue
            nest(out, name, value)
        return out

    def new_id(self, answer: _Answer) -> str | None:
        found = dig(answer.body, self.create_id_field)
        if found not in (None, "") and not isinstance(found, dict | list):
            return str(found)
        location = answer.headers.get("location")
        if location:
            last = urlsplit(location).path.rstrip("/").rsplit("/", 1)[-1]
            return last or None
        return None

    def modified_at(self, answer: _Answer) -> str | None:
        if self.modified_field:
            found = dig(answer.body, self.modified_field)
            if found not in (None, "") and not isinstance(found, dict | list):
                return str(found)
        stamp = answer.headers.get("last-modified")
        if stamp:
            try:
                when = email.utils.parsedate_to_datetime(stamp)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
            return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return None

    def message(self, answer: _Answer, sent: Iterable[str]) -> str:
        """The target's reason from a refusal's body, redacted of sent values."""
        body = answer.body
        found: Any = None
        for path in (self.error_field,) if self.error_field else ERROR_FIELDS:
            found = dig(body, path)
            if found not in (None, "", [], {}):
                break
        if isinstance(found, list):
            found = "; ".join(
                str(dig(x, "message") or x) if isinstance(x, dict) else str(x) for x in found
            )
        elif isinstance(found, dict):
            found = None
        if not found:
            return ""
        return self.conn.scrub(redact(str(found), sent))


# ------------------------------------------------------------------ helpers


def outbound_names(mapping: Mapping[str, str]) -> dict[str, str]:
    """canonical field (or `extra:KEY`) -> the source's field name, from the
    source's mapping (source name -> target); the first mapped name wins."""
    names: dict[str, str] = {}
    for source_name, target in mapping.items():
        if target in NOT_SENT:
            continue
        names.setdefault(target, source_name)
    return names


def nest(out: dict[str, Any], dotted: str, value: Any) -> None:
    """out[a][b] = value for "a.b" (the inverse of the connector's `flatten`)."""
    *parents, last = dotted.split(".")
    node = out
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[last] = value


def redact(text: str, values: Iterable[str]) -> str:
    """`text` with every sent value (case-insensitively), anything like an e-mail
    address and any long run of digits replaced by ***; one line, bounded."""
    for value in sorted({v.strip() for v in values if len(v.strip()) >= 2}, key=len, reverse=True):
        text = re.sub(re.escape(value), "***", text, flags=re.I)
        encoded = json.dumps(value)[1:-1]  # as the target may have escaped it
        if encoded != value:
            text = text.replace(encoded, "***")
    text = _EMAIL.sub("***", text)
    text = _DIGITS.sub("***", text)
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def _lower(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Response headers by lower-cased name."""
    return {k.lower(): v for k, v in items}


def _json(raw: bytes, headers: Mapping[str, str]) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return None


def _retry(change: OutboundChange, reason: str) -> PushResult:
    return PushResult(change.entry_id, "retry", reason=reason, fields=tuple(change.fields))
