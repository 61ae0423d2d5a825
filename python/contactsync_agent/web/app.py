"""The web console's pages and form posts: a thin layer over the Python API.

Every read goes through `Mirror` and its parts (`m.console`, `m.review`,
`m.entities`, `m.access`, `status.report`); every decision through the same
calls as `contactsync review` (`m.review.accept/reject/accept_many`, and
`m.review.resolve_conflict` for a two-way conflict) and
`contactsync activity` (`m.close_activity`). It never touches `Mirror.store`
and runs no SQL. Pages are Jinja2 templates with autoescape on; POSTs answer
with a redirect (303) to the page to show next.

One read-write `Mirror` per app, opened on first use and used under a lock
(Starlette runs these plain functions in its thread pool); a write waits for
the writer lock as a CLI write does, so decisions work while the agent runs.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from contactsync_agent import status
from contactsync_agent.config import AgentConfig
from contactsync_agent.errors import ContactSyncError, NotFoundError
from contactsync_agent.mirror import Mirror
from contactsync_agent.web import charts
from contactsync_agent.web.security import CSRF_FIELD, Gate, GateMiddleware

PAGE = 50
#: How many of a session's decisions `u` can take back, newest first.
UNDO_DEPTH = 50
STATIC = Path(__file__).parent / "static"
#: Colour class of an agreement level (matching's explanation).
LEVEL_CLASS = (("exact", "agree"), ("missing", "missing"), ("different", "differ"))


def level_class(level: str | None) -> str:
    if not level:
        return "none"
    for prefix, cls in LEVEL_CLASS:
        if level.startswith(prefix):
            return cls
    return "close"


@dataclass
class ConsoleState:
    """What the app keeps: how to open the mirror, the config, and per browser
    session the decisions it may undo (newest last) and one message to show."""

    db_path: Path
    config: AgentConfig = field(default_factory=AgentConfig)
    write_wait: float = 10.0
    _mirror: Mirror | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    decisions: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    #: The dashboard's contact counts, counted again only after a change.
    counts: status.CountsCache = field(default_factory=status.CountsCache)
    flashes: dict[str, str] = field(default_factory=dict)

    @contextmanager
    def mirror(self) -> Iterator[Mirror]:
        with self._lock:
            if self._mirror is None:
                self._mirror = Mirror.open(
                    self.db_path, region=self.config.default_region,
                    review_threshold=self.config.review_threshold,
                    auto_link_threshold=self.config.auto_link_threshold,
                    wait=self.write_wait)
                self._mirror.console.ensure_search_index()
            yield self._mirror

    def close(self) -> None:
        with self._lock:
            if self._mirror is not None:
                self._mirror.close()
                self._mirror = None


def _env() -> Environment:
    env = Environment(loader=PackageLoader("contactsync_agent.web", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["pct"] = lambda v: "—" if v is None else f"{float(v):.0%}"
    env.filters["weight"] = lambda v: "" if not isinstance(v, int | float) else f"{v:+.2f}"
    env.filters["level_class"] = level_class
    env.filters["num"] = lambda v: f"{int(v or 0):,}"
    # Sizes as `contactsync status` writes them (MB, one decimal).
    env.filters["mb"] = lambda v: f"{int(v or 0) / 1e6:.1f} MB"
    env.filters["when"] = lambda v: (v or "")[:19].replace("T", " ")
    return env


def _float(value: str | None) -> float | None:
    """A minimum score as the pages give it: a percentage (0-100) -> 0-1."""
    if value is None or not value.strip():
        return None
    try:
        v = float(value)
    except ValueError:
        raise HTTPException(400, "a score is a number (a percentage, 0-100)") from None
    return min(max(v, 0.0), 100.0) / 100


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        raise HTTPException(400, "expected a whole number") from None


def create_app(state: ConsoleState, gate: Gate | None = None) -> Starlette:
    """The console as an ASGI app over the mirror at `state.db_path`."""
    env = _env()
    gate = gate or Gate()

    def render(request: Request, name: str, status_code: int = 200,
               **ctx: Any) -> HTMLResponse:
        session: str = request.state.session
        flash = state.flashes.pop(session, None)
        html = env.get_template(name).render(
            csrf=request.state.csrf, csrf_field=CSRF_FIELD, flash=flash,
            path=request.url.path, **ctx)
        return HTMLResponse(html, status_code=status_code)

    def flash(request: Request, text: str) -> None:
        state.flashes[request.state.session] = text

    async def form_of(request: Request) -> dict[str, str]:
        form = await request.form()
        return {k: v for k, v in form.items() if isinstance(v, str)}

    # ------------------------------------------------------------ dashboard

    def dashboard(request: Request) -> Response:
        with state.mirror() as m:
            data = status.report(m.path, state.config, counts_cache=state.counts)
            runs = m.console.runs_since(30)
        days = charts.daily(runs, 30)
        return render(request, "dashboard.html", data=data,
                      charts=[charts.duration_chart(days), charts.records_chart(days)],
                      runs_30=len(runs))

    # ------------------------------------------------------------ review queue

    def _filters(request: Request) -> dict[str, str]:
        q = request.query_params
        return {k: q[k] for k in ("min_score", "source") if q.get(k)}

    def review(request: Request) -> Response:
        q = request.query_params
        min_score = _float(q.get("min_score"))
        source = q.get("source") or None
        page = max(_int(q.get("page"), 1), 1)
        wanted = _int(q.get("item"), 0) or None
        with state.mirror() as m:
            sources = m.console.review_sources()
            listing = m.console.review_page(min_score=min_score, source=source, limit=PAGE,
                                            offset=(page - 1) * PAGE)
            ids = listing["ids"]
            if wanted is not None and wanted in ids and "page" not in q:
                wanted_page = ids.index(wanted) // PAGE + 1
                if wanted_page != page:
                    page = wanted_page
                    listing = m.console.review_page(min_score=min_score, source=source,
                                                    limit=PAGE, offset=(page - 1) * PAGE)
            current = wanted if wanted is not None else (
                listing["items"][0]["id"] if listing["items"] else None)
            compare = None
            if current is not None:
                try:
                    compare = m.review.compare(current)
                except NotFoundError:
                    compare = None
        filters = _filters(request)
        pos = ids.index(current) if current in ids else -1
        prev_id = ids[pos - 1] if pos > 0 else None
        next_id = ids[pos + 1] if 0 <= pos < len(ids) - 1 else None

        def link(**extra: Any) -> str:
            return "/review?" + urlencode({**filters, **{k: v for k, v in extra.items()
                                                          if v is not None}})

        undo = state.decisions.get(request.state.session) or []
        return render(request, "review.html", listing=listing, compare=compare,
                      current=current, pos=pos, total=len(ids), page=page, pages=max(
                          (len(ids) + PAGE - 1) // PAGE, 1), sources=sources,
                      source=source or "", min_score=q.get("min_score", ""),
                      filters=filters, link=link, prev_id=prev_id, next_id=next_id,
                      undo=undo[-1] if undo else None)

    def _next_after(m: Mirror, item_id: int, filters: dict[str, str]) -> int | None:
        ids = m.console.review_ids(min_score=_float(filters.get("min_score")),
                                   source=filters.get("source") or None)
        later = [i for i in ids if i > item_id]
        return later[0] if later else (ids[-1] if ids else None)

    def _back_to_review(filters: dict[str, str], item: int | None) -> RedirectResponse:
        query = {k: v for k, v in filters.items() if k in ("min_score", "source") and v}
        if item is not None:
            query["item"] = str(item)
        return RedirectResponse("/review" + ("?" + urlencode(query) if query else ""),
                                status_code=303)

    def _decide(action: str) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            item_id = int(request.path_params["item_id"])
            form = await form_of(request)
            decide = accept_one if action == "accept" else reject_one
            return await _in_thread(lambda: decide(request, item_id, form))
        return endpoint

    def accept_one(request: Request, item_id: int, form: dict[str, str]) -> Response:
        return _one(request, item_id, form, "accept")

    def reject_one(request: Request, item_id: int, form: dict[str, str]) -> Response:
        return _one(request, item_id, form, "reject")

    def _one(request: Request, item_id: int, form: dict[str, str], action: str) -> Response:
        with state.mirror() as m:
            try:
                if action == "accept":
                    r = m.review.accept(item_id)
                    flash(request, f"Item {item_id} accepted: contact {r['contact']} is now "
                          f"linked; contact {r['merged']} was merged into it.")
                else:
                    m.review.reject(item_id)
                    flash(request, f"Item {item_id} rejected: the pair will not be suggested "
                          "again.")
                stack = state.decisions.setdefault(request.state.session, [])
                stack.append((item_id, action))
                del stack[:-UNDO_DEPTH]
            except ContactSyncError as e:
                flash(request, f"Not done: {e}")
            nxt = _next_after(m, item_id, form)
        return _back_to_review(form, nxt)

    async def resolve(request: Request) -> Response:
        item_id = int(request.path_params["item_id"])
        form = await form_of(request)
        return await _in_thread(lambda: resolve_one(request, item_id, form))

    def resolve_one(request: Request, item_id: int, form: dict[str, str]) -> Response:
        """A two-way conflict settled as `contactsync review resolve` does:
        `take` = source|local, or a typed `value`. Not undoable (it may push)."""
        take = form.get("take") or None
        value = form.get("value") if take is None else None
        if take not in (None, "source", "local") or (take is None and value is None):
            raise HTTPException(400, "give take=source, take=local or a value")
        with state.mirror() as m:
            try:
                out = m.review.resolve_conflict(
                    item_id, take="source" if take == "source" else "local" if take else None,
                    value=value)
                how = {"source": "the source's value taken", "local": "the local value kept",
                       "value": "the typed value stored"}.get(str(out.get("resolution")),
                                                             "resolved")
                flash(request, f"Item {item_id} resolved: {how}"
                      + ("; it will be pushed to the source." if out.get("pushed") else "."))
            except ContactSyncError as e:
                flash(request, f"Not done: {e}")
            nxt = _next_after(m, item_id, form)
        return _back_to_review(form, nxt)

    async def undo(request: Request) -> Response:
        form = await form_of(request)
        return await _in_thread(lambda: undo_last(request, form))

    def undo_last(request: Request, form: dict[str, str]) -> Response:
        stack = state.decisions.get(request.state.session) or []
        if not stack:
            flash(request, "Nothing to undo in this session.")
            return _back_to_review(form, None)
        item_id, action = stack[-1]
        with state.mirror() as m:
            try:
                m.review.undo(item_id)
                stack.pop()
                flash(request, f"Undone: the {action} of item {item_id}; it is open again.")
            except ContactSyncError as e:
                stack.pop()
                flash(request, f"Cannot undo: {e}")
        return _back_to_review(form, item_id)

    def bulk_confirm(request: Request) -> Response:
        min_score = _float(request.query_params.get("min_score"))
        if min_score is None:
            raise HTTPException(400, "bulk accept needs a minimum score")
        source = request.query_params.get("source") or None
        with state.mirror() as m:
            ids = m.console.review_ids(min_score=min_score, source=source)
        return render(request, "bulk.html", count=len(ids), min_score=min_score,
                      source=source or "", filters=_filters(request))

    async def bulk_accept(request: Request) -> Response:
        form = await form_of(request)
        return await _in_thread(lambda: bulk_accept_sync(request, form))

    def bulk_accept_sync(request: Request, form: dict[str, str]) -> Response:
        min_score = _float(form.get("min_score"))
        if min_score is None:
            raise HTTPException(400, "bulk accept needs a minimum score")
        expected = _int(form.get("count"), -1)
        with state.mirror() as m:
            ids = m.console.review_ids(min_score=min_score, source=form.get("source") or None)
            if len(ids) != expected:
                flash(request, f"Not done: {len(ids)} items now match, not the {expected} "
                      "you confirmed; look again.")
                return RedirectResponse("/review/bulk?" + urlencode(
                    {"min_score": form.get("min_score", ""), "source": form.get("source", "")}),
                    status_code=303)
            out = m.review.accept_many(ids)
        failed = len(out["failed"])
        flash(request, f"Bulk accept: {len(out['done'])} item(s) accepted"
              + (f", {failed} could not be (already decided or changed)" if failed else "")
              + ".")
        return _back_to_review({"source": form.get("source", "")}, None)

    # ------------------------------------------------------------ activities

    def activities(request: Request) -> Response:
        which = request.query_params.get("status", "open")
        if which not in ("open", "resolved", "dismissed", "all"):
            raise HTTPException(400, "status is open, resolved, dismissed or all")
        with state.mirror() as m:
            rows = m.activities(None if which == "all" else which)
        rows = sorted(rows, key=lambda a: a.id, reverse=True)
        return render(request, "activities.html", activities=rows[:500], total=len(rows),
                      which=which)

    async def close_activity(request: Request) -> Response:
        form = await form_of(request)
        activity_id = int(request.path_params["activity_id"])
        how = request.path_params["how"]
        return await _in_thread(lambda: close_activity_sync(request, activity_id, how, form))

    def close_activity_sync(request: Request, activity_id: int, how: str,
                            form: dict[str, str]) -> Response:
        status_ = {"resolve": "resolved", "dismiss": "dismissed"}.get(how)
        if status_ is None:
            raise HTTPException(404)
        with state.mirror() as m:
            try:
                m.close_activity(activity_id, status_, form.get("note") or None)
                flash(request, f"Activity {activity_id} {status_}.")
            except ContactSyncError as e:
                flash(request, f"Not done: {e}")
        return RedirectResponse("/activities", status_code=303)

    # ------------------------------------------------------------ contacts

    def contacts(request: Request) -> Response:
        q = request.query_params.get("q", "")
        with state.mirror() as m:
            hits = m.console.search(q) if q.strip() else []
            total = None if q.strip() else m.count_contacts()
        return render(request, "contacts.html", q=q, hits=hits, total=total)

    def contact(request: Request) -> Response:
        cid = int(request.path_params["contact_id"])
        with state.mirror() as m:
            try:
                c = m.get(cid)
            except NotFoundError:
                raise HTTPException(404, f"no contact with id {cid}") from None
            org = m.entities.organisation_of(cid)
            customers = m.access.customers(cid)
            refs = m.references(cid)
            history = m.console.changes(cid)
        return render(request, "contact.html", c=c, org=org, customers=customers, refs=refs,
                      history=history)

    # ------------------------------------------------------------ quarantine

    def quarantine(request: Request) -> Response:
        with state.mirror() as m:
            total, rows = m.console.quarantine(500)
        return render(request, "quarantine.html", rows=rows, total=total)

    async def not_found(request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "error"
        html = env.get_template("error.html").render(code=code, detail=detail, path="")
        return HTMLResponse(html, status_code=code)

    routes = [
        Route("/", dashboard),
        Route("/review", review),
        Route("/review/bulk", bulk_confirm, methods=["GET"]),
        Route("/review/bulk", bulk_accept, methods=["POST"]),
        Route("/review/undo", undo, methods=["POST"]),
        Route("/review/{item_id:int}/accept", _decide("accept"), methods=["POST"]),
        Route("/review/{item_id:int}/reject", _decide("reject"), methods=["POST"]),
        Route("/review/{item_id:int}/resolve", resolve, methods=["POST"]),
        Route("/activities", activities),
        Route("/activities/{activity_id:int}/{how}", close_activity, methods=["POST"]),
        Route("/contacts", contacts),
        Route("/contacts/{contact_id:int}", contact),
        Route("/quarantine", quarantine),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            state.close()

    app = Starlette(routes=routes, middleware=[Middleware(GateMiddleware, gate=gate)],
                    exception_handlers={HTTPException: not_found}, lifespan=lifespan)
    app.state.console = state
    return app


async def _in_thread(work: Callable[[], Response]) -> Response:
    """Runs blocking mirror work (a write may wait for the writer lock) off the loop."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(work)
