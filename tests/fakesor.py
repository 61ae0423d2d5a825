"""A fake system of record: a real HTTP JSON API on 127.0.0.1, in a thread
(or its own process: `python tests/fakesor.py`, below).

Two-way sync's HTTP writer (`sources/http_writer.py`) is tested against it, and
it serves pages the way the HTTP connector (`sources/http.py`) reads them, so
end-to-end tests can pull from it and push to it. It keeps its own contact
store in memory (no network beyond 127.0.0.1; a file only when given
`--state`) and must not import the mirror: it stands for the OTHER system.

The API (JSON bodies; an optional bearer token on every request):

    GET   /contacts?modified_since=&page=&page_size=
          {"data": [item, ...], "links": {"next": url | null}}, items ordered by
          (updated_at, id); `modified_since` keeps items with updated_at > it.
    GET   /contacts/ID          the item; ETag and Last-Modified headers
    PATCH /contacts/ID          merges the body into the item (nested objects
                                merged, null clears); 200 + the item
    POST  /contacts             creates an item, assigns its id; 201 + the item
                                and a Location header
    POST  /$batch               many of the writes above in one request, in
                                Microsoft Graph's JSON batching shape: {"requests":
                                [{"id", "method", "url", "headers", "body"}]} ->
                                {"responses": [{"id", "status", "headers", "body"}]}

Writes honour `If-Match` (a stale ETag: 412, not applied) and
`Idempotency-Key` (the same key again gets the first response back, with
`Idempotent-Replayed: true`, and is not applied again; the same key with
another body: 422). A validation rule refuses some writes with 422 and a JSON
`{"message": ..., "field": ...}` whose message ECHOES the refused value on
purpose (the writer must redact it). Every item has `updated_at` (ISO 8601,
strictly increasing on this server) and an ETag that changes on every write.

Misbehaviour, for the writer's failure paths: `drop_after_apply` (the next N
writes are applied and then the connection is closed without an answer),
`fail_writes` (the next writes answer these statuses without applying),
`write_delay` (seconds before a write is handled), `redirect_writes_to` (writes
answer `redirect_status`, 307 by default, to another server).

`hold_after_apply` (the next N writes are applied, then their answer is held
back, the connection open, until `release()`: the client waits on the socket
for as long as its own timeout; a test kills it there, between the target's
apply and its confirmation).

Use: the `fakesor` fixture (`from fakesor import FakeSor, fakesor_fixture`), or
`with FakeSor.start() as sor:` in a bench. As its OWN process (end-to-end
tests, where the agent is a process too): `python tests/fakesor.py --port 0
[--state FILE] [--token T]` prints `port N` once it listens; the test drives it
over HTTP (`SorProcess` below: `POST /_admin/put`, `/_admin/seed`, `/_admin/knobs`,
`/_admin/release`, `GET /_admin/state`, under the same token). With `--state`
the server's contacts, applied writes and idempotency keys are saved to FILE
(owner-only, replaced atomically) after every change and loaded from it at
start, so they outlive the process.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import email.utils
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

#: A validation rule: the item after the write and the fields written -> a refusal
#: (message, field) or None.
Rule = Callable[[dict[str, Any], dict[str, Any]], "tuple[str, str] | None"]

#: What `/_admin/knobs` may set.
KNOBS = ("drop_after_apply", "hold_after_apply", "fail_writes", "write_delay",
         "echo_in_reason", "etag_in_items")

PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def valid_email(item: dict[str, Any], written: dict[str, Any]) -> tuple[str, str] | None:
    """The default rule: an e-mail written must contain an @ (the message echoes it)."""
    value = written.get("email")
    if isinstance(value, str) and value and "@" not in value:
        return f"email {value!r} is not a valid e-mail address", "email"
    return None


def flat_merge(item: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`item` with `patch` merged in (nested objects merged key by key)."""
    out = dict(item)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = flat_merge(out[k], v)
        else:
            out[k] = v
    return out


@dataclass
class Write:
    """One write the server applied (not a replay, not a refusal)."""

    method: str
    id: str
    body: dict[str, Any]
    key: str | None


@dataclass
class FakeSor:
    """The server's state and knobs; every method is safe from any thread."""

    url: str = ""
    token: str | None = None
    rules: list[Rule] = field(default_factory=lambda: [valid_email])
    #: The next N writes are applied, then the connection is dropped unanswered.
    drop_after_apply: int = 0
    #: The next N writes are applied, then their answer is held (the connection
    #: open) until `release()`.
    hold_after_apply: int = 0
    #: Statuses the next writes answer, one each, without applying anything.
    fail_writes: list[int] = field(default_factory=list)
    write_delay: float = 0.0
    redirect_writes_to: str | None = None
    redirect_status: int = 307
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    revs: dict[str, int] = field(default_factory=dict)
    #: Every request: method, path, query, headers (lower-cased names), body.
    requests: list[dict[str, Any]] = field(default_factory=list)
    applied: list[Write] = field(default_factory=list)
    replays: int = 0
    batches: int = 0
    #: A refusal's reason phrase (the status line) repeats its message, value and all.
    echo_in_reason: bool = False
    #: Serve each item's ETag in pulled pages too, as `etag` (a version field).
    etag_in_items: bool = False
    #: Record each request (off in the bench: 10,000 writes).
    record: bool = True
    #: Where the state is saved after every change (process mode, `--state`).
    state_file: Path | None = None
    #: Answers held back now (hold_after_apply), and the event that lets them go.
    held: int = 0
    _release: threading.Event = field(default_factory=threading.Event)
    _keys: dict[str, tuple[str, int, dict[str, str], bytes]] = field(default_factory=dict)
    _rev: int = 0
    _next_id: int = 0
    _last: dt.datetime = field(default_factory=lambda: dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    lock: threading.RLock = field(default_factory=threading.RLock)
    httpd: ThreadingHTTPServer | None = None

    # -------------------------------------------------------------- lifecycle

    @classmethod
    def start(cls, port: int = 0, **knobs: Any) -> FakeSor:
        sor = cls(**knobs)
        handler = type("BoundHandler", (_Handler,), {"sor": sor})
        httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        httpd.daemon_threads = True
        httpd.request_queue_size = 64
        httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        sor.httpd = httpd
        sor.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        return sor

    def stop(self) -> None:
        self._release.set()  # no answer stays held by a stopped server
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def __enter__(self) -> FakeSor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def contacts_url(self) -> str:
        return f"{self.url}/contacts"

    # -------------------------------------------------------------- the test's side

    def stamp(self) -> str:
        """A modification time: now, but always after the previous one."""
        with self.lock:
            now = dt.datetime.now(dt.UTC)
            if now <= self._last:
                now = self._last + dt.timedelta(microseconds=1)
            self._last = now
            return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def put(self, ext: str, **values: Any) -> dict[str, Any]:
        """Creates or modifies a contact as the system's own users would (no rules)."""
        with self.lock:
            item = flat_merge(self.items.get(ext, {"id": ext}), values)
            item["updated_at"] = self.stamp()
            self._rev += 1
            self.items[ext] = item
            self.revs[ext] = self._rev
            self.save()
            return dict(item)

    def seed(self, n: int, prefix: str = "P") -> list[str]:
        ids = [f"{prefix}{i:05d}" for i in range(n)]
        for i, ext in enumerate(ids):
            self.put(
                ext,
                first_name=f"Given{i}",
                last_name=f"Family{i}",
                email=f"p{i}@example.com",
                phone=f"02 4000 {i:04d}",
                address={"city": "Newcastle", "postcode": "2300"},
            )
        return ids

    def get(self, ext: str) -> dict[str, Any]:
        with self.lock:
            return json.loads(json.dumps(self.items[ext]))

    def etag(self, ext: str) -> str:
        with self.lock:
            return f'"{ext}-{self.revs[ext]}"'

    def applied_with_key(self, key: str) -> int:
        with self.lock:
            return sum(1 for w in self.applied if w.key == key)

    def writes(self) -> list[dict[str, Any]]:
        """The recorded write requests (replays and refusals included)."""
        with self.lock:
            return [r for r in self.requests if r["method"] in ("PATCH", "POST", "PUT")]

    def release(self) -> None:
        """Lets every held answer go (and any later write's: hold is over)."""
        with self.lock:
            self.hold_after_apply = 0
        self._release.set()

    # -------------------------------------------------------------- state (process mode)

    def state(self) -> dict[str, Any]:
        """Everything the server knows, as JSON (what `--state` saves)."""
        with self.lock:
            return {
                "items": self.items, "revs": self.revs,
                "applied": [asdict(w) for w in self.applied],
                "keys": {k: [f, c, h, d.decode()] for k, (f, c, h, d) in self._keys.items()},
                "replays": self.replays, "batches": self.batches, "held": self.held,
                "rev": self._rev, "next_id": self._next_id, "last": self._last.isoformat(),
            }

    def save(self) -> None:
        """The state into `state_file` (owner-only, replaced atomically), if set."""
        if self.state_file is None:
            return
        with self.lock:
            data = json.dumps(self.state()).encode()
            fd, tmp = tempfile.mkstemp(dir=self.state_file.parent, prefix=".fakesor-")
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, self.state_file)

    def load(self, path: Path) -> None:
        """The state saved in `path` (a restarted server carries on)."""
        st = json.loads(path.read_text(encoding="utf-8"))
        with self.lock:
            self.items, self.revs = st["items"], {k: int(v) for k, v in st["revs"].items()}
            self.applied = [Write(**w) for w in st["applied"]]
            self._keys = {k: (f, int(c), dict(h), d.encode())
                          for k, (f, c, h, d) in st["keys"].items()}
            self.replays, self.batches = int(st["replays"]), int(st["batches"])
            self._rev, self._next_id = int(st["rev"]), int(st["next_id"])
            self._last = dt.datetime.fromisoformat(st["last"])

    def admin(self, method: str, path: str, raw: bytes) -> tuple[int, Any]:
        """The test's side over HTTP (process mode): put, knobs, release, state."""
        body = json.loads(raw or b"{}")
        if method == "GET" and path == "/_admin/state":
            return 200, self.state()
        if method == "POST" and path == "/_admin/put":
            return 200, self.put(str(body.pop("id")), **body)
        if method == "POST" and path == "/_admin/seed":
            ids = self.seed(int(body["n"]), str(body.get("prefix", "P")))
            return 200, {"ids": len(ids)}
        if method == "POST" and path == "/_admin/knobs":
            with self.lock:
                for k, v in body.items():
                    if k not in KNOBS:
                        return 400, {"message": f"no knob {k!r} (knobs: {', '.join(KNOBS)})"}
                    setattr(self, k, v)
                if body.get("hold_after_apply"):
                    self._release.clear()
            return 200, {"ok": True}
        if method == "POST" and path == "/_admin/release":
            self.release()
            return 200, {"ok": True}
        return 404, {"message": "no such admin resource"}

    # -------------------------------------------------------------- the server's side

    def page(self, query: dict[str, str], path: str) -> dict[str, Any]:
        with self.lock:
            rows = sorted(self.items.values(), key=lambda r: (r["updated_at"], r["id"]))
            rows = json.loads(json.dumps(rows))
        since = query.get("modified_since")
        if since:
            rows = [r for r in rows if r["updated_at"] > since]
        if self.etag_in_items:
            with self.lock:
                for r in rows:
                    r["etag"] = self.etag(r["id"])
        size = int(query.get("page_size", "100"))
        page = int(query.get("page", "1"))
        chunk = rows[(page - 1) * size : page * size]
        nxt = None
        if page * size < len(rows):
            rest = "&".join(f"{k}={quote(v)}" for k, v in query.items() if k != "page")
            nxt = f"{self.url}{path}?{rest}&page={page + 1}"
        return {"data": chunk, "links": {"next": nxt}}

    def write(
        self, method: str, ext: str | None, body: Any, if_match: str | None
    ) -> tuple[int, dict[str, str], Any]:
        """Applies one write (under the lock): (status, headers, body)."""
        if not isinstance(body, dict):
            return 400, {}, {"message": "the body must be a JSON object"}
        with self.lock:
            if method == "PATCH":
                assert ext is not None
                if ext not in self.items:
                    return 404, {}, {"message": f"no contact {ext}"}
                if if_match is not None and if_match != self.etag(ext):
                    return 412, {}, {"message": "the contact was modified since (ETag)"}
                item = flat_merge(self.items[ext], body)
            else:
                self._next_id += 1
                ext = f"N{self._next_id:06d}"
                item = {**body, "id": ext}
            for rule in self.rules:
                refused = rule(item, body)
                if refused is not None:
                    return 422, {}, {"message": refused[0], "field": refused[1]}
            stored = self.put(ext, **{k: v for k, v in item.items() if k != "updated_at"})
            headers = {
                "ETag": self.etag(ext),
                "Last-Modified": _http_date(stored["updated_at"]),
            }
            if method == "POST":
                headers["Location"] = f"/contacts/{quote(ext)}"
            return (200 if method == "PATCH" else 201), headers, stored


    def one_write(
        self, method: str, path: str, raw: bytes, key: str | None, if_match: str | None
    ) -> tuple[int, dict[str, str], bytes, str]:
        """One write request: (status, headers, body, what then: "" answer, "drop"
        the connection unanswered, "hold" the answer until `release()`)."""
        if method == "PATCH" and path.startswith("/contacts/"):
            ext: str | None = unquote(path[len("/contacts/") :])
        elif method == "POST" and path == "/contacts":
            ext = None
        else:
            return 405, {}, json.dumps({"message": "method not allowed here"}).encode(), ""
        fingerprint = f"{method} {path} {raw.decode('utf-8', 'replace')}"
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return 400, {}, json.dumps({"message": "the body is not JSON"}).encode(), ""
        after = ""  # or "drop" / "hold": what happens to the answer
        with self.lock:  # one key at a time: a replay never races its original
            if key is not None and key in self._keys:
                first, code, headers, data = self._keys[key]
                if first != fingerprint:
                    code, headers = 422, {}
                    data = json.dumps({"message": "Idempotency-Key reused with another request"})
                    data = data.encode()
                else:
                    self.replays += 1
                    headers = {**headers, "Idempotent-Replayed": "true"}
            else:
                code, headers, answer = self.write(method, ext, body, if_match)
                data = json.dumps(answer).encode()
                if key is not None and code < 500:
                    self._keys[key] = (fingerprint, code, headers, data)
                if code < 300:
                    self.applied.append(Write(method, str(answer["id"]), body, key))
                    if self.drop_after_apply > 0:
                        self.drop_after_apply -= 1
                        after = "drop"
                    elif self.hold_after_apply > 0:
                        self.hold_after_apply -= 1
                        after = "hold"
                self.save()
        return code, headers, data, after

    def batch(self, raw: bytes) -> tuple[int, dict[str, str], bytes, str]:
        """POST /$batch (Microsoft Graph's JSON batching shape): {"requests": [{"id",
        "method", "url", "headers", "body"}]} -> {"responses": [{"id", "status",
        "headers", "body"}]}, each request handled as if sent alone. With
        drop_after_apply (hold_after_apply) the whole batch is applied, then the
        connection dropped (the answer held)."""
        try:
            requests = json.loads(raw)["requests"]
            assert isinstance(requests, list)
        except (ValueError, KeyError, TypeError, AssertionError):
            refusal = json.dumps({"message": "expected an object with a list of requests"})
            return 400, {}, refusal.encode(), ""
        with self.lock:
            after = ("drop" if self.drop_after_apply > 0
                     else "hold" if self.hold_after_apply > 0 else "")
            self.drop_after_apply = 0
            self.hold_after_apply = 0
            responses = []
            for r in requests:
                hdrs = {k.lower(): v for k, v in (r.get("headers") or {}).items()}
                code, headers, data, _ = self.one_write(
                    str(r.get("method", "")).upper(),
                    str(r.get("url", "")),
                    json.dumps(r.get("body")).encode(),
                    hdrs.get("idempotency-key"),
                    hdrs.get("if-match"),
                )
                responses.append(
                    {"id": r.get("id"), "status": code, "headers": headers,
                     "body": json.loads(data)}
                )
            self.batches += 1
        return 200, {}, json.dumps({"responses": responses}).encode(), after


def _http_date(iso: str) -> str:
    when = dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    return email.utils.format_datetime(when, usegmt=True)


class _Handler(BaseHTTPRequestHandler):
    sor: FakeSor

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

    def _begin(self) -> tuple[str, dict[str, str], bytes] | None:
        """Records the request and checks the token; None when already answered
        (an admin request is answered here, unrecorded)."""
        sor = self.sor
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if parts.path.startswith("/_admin/"):
            if sor.token and self.headers.get("Authorization") != f"Bearer {sor.token}":
                self.send_json(401, {"message": "unauthorised"})
            else:
                self.send_json(*sor.admin(self.command, parts.path, raw))
            return None
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if sor.record:
            with sor.lock:
                sor.requests.append(
                    {
                        "method": self.command,
                        "path": parts.path,
                        "query": query,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": raw,
                    }
                )
        if sor.token and self.headers.get("Authorization") != f"Bearer {sor.token}":
            self.send_json(401, {"message": "unauthorised"})
            return None
        return parts.path, query, raw

    def do_GET(self) -> None:
        begun = self._begin()
        if begun is None:
            return
        path, query, _ = begun
        if path == "/contacts":
            return self.send_json(200, self.sor.page(query, path))
        if path.startswith("/contacts/"):
            ext = unquote(path[len("/contacts/") :])
            with self.sor.lock:
                if ext not in self.sor.items:
                    return self.send_json(404, {"message": "no such contact"})
                item = self.sor.get(ext)
                etag = self.sor.etag(ext)
            return self.send_json(200, item, {"ETag": etag})
        self.send_json(404, {"message": "no such resource"})

    def do_PATCH(self) -> None:
        self._write("PATCH")

    def do_POST(self) -> None:
        self._write("POST")

    def do_PUT(self) -> None:
        self._write("PUT")

    def _write(self, method: str) -> None:
        sor = self.sor
        begun = self._begin()
        if begun is None:
            return
        path, _, raw = begun
        if sor.write_delay:
            time.sleep(sor.write_delay)
        if sor.redirect_writes_to:
            return self.send_json(
                sor.redirect_status,
                {"message": "moved"},
                {"Location": f"{sor.redirect_writes_to}{path}"},
            )
        with sor.lock:
            status = sor.fail_writes.pop(0) if sor.fail_writes else None
        if status is not None:
            return self.send_json(status, {"message": "try again later"})
        if path == "/$batch" and method == "POST":
            code, headers, data, after = sor.batch(raw)
        else:
            code, headers, data, after = sor.one_write(
                method, path, raw, self.headers.get("Idempotency-Key"),
                self.headers.get("If-Match"),
            )
        if after == "hold":  # applied: the answer waits until released
            with sor.lock:
                sor.held += 1
                sor.save()
            sor._release.wait()
            with sor.lock:
                sor.held -= 1
        if after == "drop":  # applied: now vanish without a word
            self.close_connection = True
            return
        phrase = None
        if sor.echo_in_reason and code == 422:
            message = str(json.loads(data).get("message", ""))
            phrase = message.encode("latin-1", "replace").decode("latin-1").replace("\n", " ")
        self._send_raw(code, headers, data, phrase)

    def _send_raw(
        self, status: int, headers: dict[str, str], data: bytes, phrase: str | None = None
    ) -> None:
        self.send_response(status, phrase)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(name="fakesor")
def fakesor_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSor]:
    """A running fake system of record (no proxy between it and the tests)."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    sor = FakeSor.start()
    try:
        yield sor
    finally:
        sor.stop()


def applied_counts(sor: FakeSor) -> Counter[str]:
    """How many times each contact was written (replays not counted)."""
    with sor.lock:
        return Counter(w.id for w in sor.applied)


# ------------------------------------------------------------------ as its own process


class SorProcess:
    """`python tests/fakesor.py` as a child process, driven over HTTP."""

    def __init__(self, state: Path | None = None, token: str | None = None,
                 record: bool = True) -> None:
        self.token = token
        cmd = [sys.executable, str(Path(__file__).resolve()), "--port", "0"]
        if not record:
            cmd.append("--no-record")
        if state is not None:
            cmd += ["--state", str(state)]
        env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
        if token:
            env["FAKESOR_TOKEN"] = token
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until it listens (or dies: "")
        if not line.startswith("port "):
            self.proc.kill()
            raise RuntimeError(f"fakesor did not start: {line!r} {self.proc.stderr.read()!r}"
                               if self.proc.stderr else line)
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.contacts_url = f"{self.url}/contacts"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=30) as resp:
            return json.loads(resp.read())

    def put(self, ext: str, **values: Any) -> dict[str, Any]:
        return dict(self.call("POST", "/_admin/put", {"id": ext, **values}))

    def seed(self, n: int, prefix: str = "P") -> None:
        """`FakeSor.seed` in the server: n contacts P00000, P00001, ..."""
        self.call("POST", "/_admin/seed", {"n": n, "prefix": prefix})

    def knobs(self, **knobs: Any) -> None:
        self.call("POST", "/_admin/knobs", knobs)

    def release(self) -> None:
        self.call("POST", "/_admin/release", {})

    def state(self) -> dict[str, Any]:
        return dict(self.call("GET", "/_admin/state"))

    def applied_with_key(self, key: str) -> int:
        return sum(1 for w in self.state()["applied"] if w["key"] == key)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> SorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="A fake system of record on 127.0.0.1.")
    ap.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    ap.add_argument("--state", type=Path, default=None,
                    help="save the state here after every change; load it at start")
    ap.add_argument("--token", default=os.environ.get("FAKESOR_TOKEN"),
                    help="bearer token every request must carry (default $FAKESOR_TOKEN)")
    ap.add_argument("--no-record", action="store_true", help="keep no request log (benches)")
    args = ap.parse_args(argv)
    sor = FakeSor.start(port=args.port, token=args.token or None, record=not args.no_record)
    if args.state is not None:
        if args.state.exists():
            sor.load(args.state)
        sor.state_file = args.state
        sor.save()
        os.chmod(args.state, 0o600)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    print(f"port {sor.url.rsplit(':', 1)[1]}", flush=True)
    stopped.wait()
    sor.release()
    with contextlib.suppress(Exception):
        sor.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
