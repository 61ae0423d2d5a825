"""The web console's gate: where it may listen, the access token, the session
cookie with its CSRF token, and the headers every response carries.

- Loopback (127.0.0.0/8, ::1, localhost) is served without a token unless one
  is set; any other address only with a token, read from `token_file` or the
  `CONTACTSYNC_WEB_TOKEN` environment variable (never from the config file).
- With a token, a request carries it as `Authorization: Bearer T`, as the
  `X-Contactsync-Token` header, or as the `cs_token` cookie set by a first
  visit to `?token=T` (which redirects to the same page without it). A token
  has at least 16 characters, from the file or the environment alike.
- Without a token, a request must name a loopback host (`Host:` 127.0.0.1,
  ::1 or localhost): another name resolving to 127.0.0.1 is refused (DNS
  rebinding).
- Each browser has a random session cookie; every POST must carry the CSRF
  token derived from it (HMAC with the server's secret) as the `csrf_token`
  form field or the `X-CSRF-Token` header, else 403.

Every response also says the server's time for it (`Server-Timing: app;dur=MS`).
Pure helpers and one ASGI middleware; it reads no mirror and logs no token.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import URL
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from contactsync_agent.errors import ConfigError

TOKEN_ENV = "CONTACTSYNC_WEB_TOKEN"
SESSION_COOKIE = "cs_session"
TOKEN_COOKIE = "cs_token"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
TOKEN_HEADER = "x-contactsync-token"
#: The shortest token served, from the environment or the file alike.
MIN_TOKEN = 16
SHORT_TOKEN = f"holds no token of at least {MIN_TOKEN} characters"
#: No inline script or style, nothing from elsewhere: everything is served by us.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class WebError(ConfigError):
    """The console cannot be served as asked (an address without a token, a bad token file)."""


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(token_file: str | os.PathLike[str] | None,
               environ: dict[str, str] | None = None) -> str | None:
    """The access token: `CONTACTSYNC_WEB_TOKEN`, else the first line of
    `token_file` (which must not be readable by others); None when neither."""
    env = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    if env:
        if len(env) < MIN_TOKEN:
            raise WebError(f"{TOKEN_ENV} {SHORT_TOKEN}")
        return env
    if not token_file:
        return None
    path = Path(token_file).expanduser()
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise WebError(f"cannot read the web token file: {e.strerror}",
                       path=str(path)) from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise WebError("the web token file is readable by others; chmod 600 it",
                       path=str(path))
    lines = text.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if len(token) < MIN_TOKEN:
        raise WebError(f"the web token file {SHORT_TOKEN}", path=str(path))
    return token


def check_bind(host: str, token: str | None) -> None:
    """Refuses a non-loopback address without a token."""
    if not is_loopback(host) and not token:
        raise WebError(
            f"refusing to serve the web console on {host}, which is not a loopback "
            f"address, without a token: set {TOKEN_ENV} or [web] token_file "
            "(the token is never read from the config file itself)")


@dataclass
class Gate:
    """The token (None: none needed) and the secret the CSRF tokens derive from."""

    token: str | None = None
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def csrf_for(self, session: str) -> str:
        return hmac.new(self.secret, session.encode(), hashlib.sha256).hexdigest()

    def token_ok(self, given: str | None) -> bool:
        return self.token is None or (
            given is not None and hmac.compare_digest(given.encode(), self.token.encode()))


def _loopback_host(host_header: str) -> bool:
    host = host_header.strip()
    if host.startswith("["):  # [::1]:8765
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":")[0]
    return bool(host) and is_loopback(host)


def _without_token(url: URL) -> str:
    query = [(k, v) for k, v in parse_qsl(url.query, keep_blank_values=True) if k != "token"]
    return url.path + ("?" + urlencode(query) if query else "")


class GateMiddleware(BaseHTTPMiddleware):
    """Token, session cookie, CSRF on POST, and the security headers."""

    def __init__(self, app: object, gate: Gate) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self.gate = gate

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        start = time.perf_counter()
        response = await self._dispatch(request, call_next)
        for k, v in HEADERS.items():
            response.headers.setdefault(k, v)
        # The server's own time for the page (benches/web_timings.py reads it).
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - start) * 1000:.1f}"
        return response

    async def _dispatch(self, request: Request, call_next: RequestResponseEndpoint
                        ) -> Response:
        gate = self.gate
        set_token = False
        if gate.token is None and not _loopback_host(request.headers.get("host", "")):
            # Without a token only loopback names are served: a web page whose
            # name resolves to 127.0.0.1 (DNS rebinding) gets nothing.
            return PlainTextResponse("refused: without a token the console answers only "
                                     "to 127.0.0.1, ::1 or localhost", status_code=403)
        if gate.token is not None:
            auth = request.headers.get("authorization", "")
            given = (auth[7:].strip() if auth.lower().startswith("bearer ") else None) \
                or request.headers.get(TOKEN_HEADER) or request.cookies.get(TOKEN_COOKIE)
            query_token = request.query_params.get("token")
            if query_token is not None and request.method == "GET":
                if not gate.token_ok(query_token):
                    return PlainTextResponse("wrong token", status_code=401)
                set_token = True
            elif not gate.token_ok(given):
                return PlainTextResponse(
                    "a token is needed: open the URL `contactsync web --print-url` shows",
                    status_code=401)
        session = request.cookies.get(SESSION_COOKIE) or ""
        new_session = len(session) < 32
        if new_session:
            session = secrets.token_urlsafe(32)
        request.state.session = session
        request.state.csrf = gate.csrf_for(session)
        if request.method not in ("GET", "HEAD"):
            given_csrf = request.headers.get(CSRF_HEADER)
            if given_csrf is None and request.headers.get("content-type", "").startswith(
                    "application/x-www-form-urlencoded"):
                # The body is cached and handed on to the endpoint (a form read
                # here would consume it); our forms are all urlencoded.
                body = (await request.body()).decode("utf-8", "replace")
                values = [v for k, v in parse_qsl(body, keep_blank_values=True)
                          if k == CSRF_FIELD]
                given_csrf = values[0] if values else None
            if new_session or not given_csrf or not hmac.compare_digest(
                    given_csrf.encode(), request.state.csrf.encode()):
                return PlainTextResponse("refused: the form's CSRF token is missing or wrong; "
                                         "reload the page and try again", status_code=403)
        if set_token:
            response: Response = RedirectResponse(_without_token(request.url), status_code=303)
        else:
            response = await call_next(request)
        secure = request.url.scheme == "https"
        if set_token and gate.token is not None:
            response.set_cookie(TOKEN_COOKIE, gate.token, httponly=True, samesite="strict",
                                secure=secure)
        if new_session:
            response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict",
                                secure=secure)
        return response
