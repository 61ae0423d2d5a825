"""The local web console (`contactsync web`, `[web] enabled` in the agent):
dashboard, review queue, activities, contacts with their history, quarantine.

A thin layer over the Python API (Mirror and its parts): it never touches the
store or runs SQL, and makes no decision of its own (review decisions are
`Mirror.review`'s, as for `contactsync review`). Starlette routes, Jinja2
templates (autoescaped) and a small script shipped in the package, served by
uvicorn; nothing is loaded from the internet. Loopback by default; any other
address needs a token (`security`).
"""

from contactsync_agent.web.app import ConsoleState, create_app
from contactsync_agent.web.security import TOKEN_ENV, Gate, WebError, check_bind, read_token
from contactsync_agent.web.server import WebServer

__all__ = ["TOKEN_ENV", "ConsoleState", "Gate", "WebError", "WebServer", "check_bind",
           "create_app", "read_token"]
