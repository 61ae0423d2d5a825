"""The web console through HTTP (Starlette's TestClient, the real app over a
real SQLite file): every page, every POST with and without its CSRF token, the
decisions changing the mirror as `contactsync review` does, undo, bulk accept,
activities, the contact search on its indexes, escaping, the token gate, the
[web] config table, the server on a real socket and in the real agent."""

from __future__ import annotations

import re
import socket
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from contactsync_agent.config import parse_config
from contactsync_agent.errors import ConfigError
from contactsync_agent.mirror import Mirror
from contactsync_agent.store.console import SEARCH_INDEXES
from contactsync_agent.web import (
    ConsoleState,
    Gate,
    WebError,
    WebServer,
    check_bind,
    create_app,
    read_token,
)
from starlette.testclient import TestClient
from web_fixtures import XSS, Seeded, make_conflict, seed

LOCAL = "http://127.0.0.1:8765"
CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


@pytest.fixture
def seeded(tmp_path: Path) -> Seeded:
    return seed(tmp_path / "m.db", tmp_path)


@pytest.fixture
def client(seeded: Seeded) -> TestClient:
    app = create_app(ConsoleState(seeded.db))
    with TestClient(app, base_url=LOCAL, follow_redirects=True) as c:
        yield c


def csrf_of(client: TestClient, url: str = "/review") -> str:
    r = client.get(url)
    assert r.status_code == 200
    m = CSRF.search(r.text)
    assert m, "the page has a CSRF token"
    return m.group(1)


def item_status(db: Path, item_id: int) -> str:
    with Mirror.open(db, readonly=True) as m:
        return next(i.status for i in m.review.items(None) if i.id == item_id)


# ---------------------------------------------------------------- pages


def test_dashboard_shows_counts_that_link_to_their_lists_and_the_charts(
        client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    html = r.text
    for anchor, n in (("count-review", 2), ("count-activities", 1), ("count-quarantine", 1)):
        assert re.search(rf'id="{anchor}"><b>{n}</b>', html), anchor
    assert 'href="/review" id="count-review"' in html
    assert "<svg" in html and 'class="s-created"' in html  # a run's bar, server-rendered
    assert "xpm" in html and "files" in html  # each source's health row
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in html  # no inline script anywhere
    assert client.get("/static/console.js").status_code == 200


def test_the_dashboard_counts_again_after_a_change(client: TestClient, seeded: Seeded) -> None:
    def total() -> str:
        m = re.search(r'id="count-contacts"><b>([\d,]+)</b>', client.get("/").text)
        assert m
        return m.group(1)

    before = total()
    assert total() == before  # counted once, kept while nothing changed
    with Mirror.open(seeded.db) as m:
        m.add_contact(name="New Person", email="new@example.com")
    assert int(total()) == int(before) + 1
    with Mirror.open(seeded.db) as m:  # a run with no contact change at all
        m.sync("files", [{"external_id": "Z1", "name": "Zed"}], mode="incremental")
    assert int(total()) == int(before) + 2


def test_review_page_shows_both_contacts_with_levels_weights_and_score(
        client: TestClient, seeded: Seeded) -> None:
    html = client.get(f"/review?item={seeded.item_jon}").text
    assert f"Item #{seeded.item_jon}" in html
    row = re.search(r'<tr class="lv-(\w+)">\s*<th>email</th><td>([^<]*)</td><td>([^<]*)</td>'
                    r'\s*<td>([^<]*)</td><td class="n">([^<]*)</td>', html)
    assert row, html
    assert row.groups()[:4] == ("agree", "jon.smith@example.com", "jon.smith@example.com",
                                "exact")
    assert re.fullmatch(r"[+-]\d+\.\d\d", row.group(5))  # its weight from the explanation
    # Values shown as each side has them; the colour follows the level.
    street = re.search(r'<tr class="lv-(\w+)">\s*<th>street</th><td>12 George Street</td>'
                       r'<td>12 George St</td>\s*<td>([^<]*)</td>', html)
    assert street, html
    assert street.group(1) == ("agree" if street.group(2).startswith("exact") else "close")
    assert re.search(r'class="score big">\d+%<', html)


def test_the_dashboard_says_sizes_as_status_does_and_counts_one_run_as_one(
        tmp_path: Path) -> None:
    from contactsync_agent import status
    from contactsync_agent.config import AgentConfig

    db = tmp_path / "one.db"
    with Mirror.open(db) as m:
        m.sync("xpm", [{"external_id": "A1", "name": "Ann Lee"}])
    with TestClient(create_app(ConsoleState(db)), base_url=LOCAL) as c:
        html = c.get("/").text
    assert "(1 run)" in html and "(1 runs)" not in html
    data = status.report(db, AgentConfig())
    size = f"database {data['database_bytes'] / 1e6:.1f} MB"  # as `contactsync status`
    assert size in html, html
    assert "kB" not in html


def test_an_empty_queue_says_so_once(client: TestClient) -> None:
    html = client.get("/review?min_score=100").text
    assert "Nothing to review." in html and "No review item to show." not in html


def test_review_filters_by_score_and_source(client: TestClient, seeded: Seeded) -> None:
    assert "2 open" in client.get("/review").text
    assert "0 open" in client.get("/review?source=nosuch").text
    assert "Nothing to review" in client.get("/review?min_score=100").text
    assert "2 open" in client.get("/review?min_score=1&source=xpm").text


# ---------------------------------------------------------------- decisions


def test_accept_and_reject_change_the_mirror_as_the_cli_does(
        client: TestClient, seeded: Seeded) -> None:
    token = csrf_of(client)
    r = client.post(f"/review/{seeded.item_jon}/accept", data={"csrf_token": token})
    assert r.status_code == 200 and "accepted" in r.text
    with Mirror.open(seeded.db, readonly=True) as m:
        c = m.get(seeded.jon)
        assert (c.record_type, c.source, c.external_id) == ("sync", "xpm", "X1")
    r = client.post(f"/review/{seeded.item_ann}/reject", data={"csrf_token": token})
    assert r.status_code == 200 and "rejected" in r.text
    assert item_status(seeded.db, seeded.item_ann) == "rejected"
    with Mirror.open(seeded.db) as m:  # remembered: never suggested again
        m.sync("xpm", [{"external_id": "X2", "given_name": "Anne", "family_name": "Lee",
                        "email": "ann.lee@example.com", "mobile": "+61400000002"}],
               mode="incremental")
        assert m.review.items() == []
    # A decided item cannot be decided twice; the page says why.
    again = client.post(f"/review/{seeded.item_jon}/accept", data={"csrf_token": token})
    assert "already accepted" in again.text


def test_a_post_without_or_with_a_wrong_csrf_token_is_refused(
        client: TestClient, seeded: Seeded) -> None:
    csrf_of(client)  # the browser has its session cookie
    for data in ({}, {"csrf_token": "0" * 64}):
        r = client.post(f"/review/{seeded.item_jon}/accept", data=data)
        assert r.status_code == 403 and "CSRF" in r.text
    r = client.post(f"/activities/{seeded.activity}/resolve", data={})
    assert r.status_code == 403
    # A token of another session does not do either.
    with TestClient(client.app, base_url=LOCAL) as other:
        foreign = csrf_of(other)
    r = client.post(f"/review/{seeded.item_jon}/accept", data={"csrf_token": foreign})
    assert r.status_code == 403
    assert item_status(seeded.db, seeded.item_jon) == "open"
    with Mirror.open(seeded.db, readonly=True) as m:
        assert len(m.activities()) == 1
    # The header form is accepted (scripts).
    token = csrf_of(client)
    r = client.post(f"/review/{seeded.item_jon}/reject", headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and item_status(seeded.db, seeded.item_jon) == "rejected"


def test_undo_takes_back_a_reject_and_an_accept(client: TestClient, seeded: Seeded) -> None:
    token = csrf_of(client)
    with Mirror.open(seeded.db, readonly=True) as m:
        before = m.get(seeded.jon)
        created = m.review.compare(seeded.item_jon)["incoming"]["contact_id"]
    client.post(f"/review/{seeded.item_ann}/reject", data={"csrf_token": token})
    client.post(f"/review/{seeded.item_jon}/accept", data={"csrf_token": token})
    assert 'id="undo"' in client.get("/review").text
    r = client.post("/review/undo", data={"csrf_token": token})
    assert "Undone: the accept" in r.text
    with Mirror.open(seeded.db, readonly=True) as m:
        after = m.get(seeded.jon)
        assert (after.record_type, after.source, after.external_id) == ("manual", None, None)
        assert after.street == before.street == "12 George St"
        assert (after.phone_e164, after.mobile_e164, after.hash) == (
            before.phone_e164, before.mobile_e164, before.hash)
        assert m.get(created).deleted_at is None and m.get(created).external_id == "X1"
        op, reason = m.history(seeded.jon)[-1][1:3]
        assert op == "update" and "undone" in reason
    assert item_status(seeded.db, seeded.item_jon) == "open"
    r = client.post("/review/undo", data={"csrf_token": token})
    assert "Undone: the reject" in r.text
    assert item_status(seeded.db, seeded.item_ann) == "open"
    assert "Nothing to undo" in client.post("/review/undo", data={"csrf_token": token}).text
    # The item can be decided again after its undo, and the next sync agrees.
    client.post(f"/review/{seeded.item_jon}/accept", data={"csrf_token": token})
    with Mirror.open(seeded.db) as m:
        assert m.get(seeded.jon).external_id == "X1"
        report = m.sync("xpm", [{"external_id": "X1", "given_name": "John",
                                 "family_name": "SMITH", "email": "jon.smith@example.com",
                                 "mobile": "+61400000001", "street": "12 George Street",
                                 "postcode": "2000"}], mode="incremental")
        assert report.counts["created"] == 0


def test_undo_is_refused_once_the_contact_changed(client: TestClient, seeded: Seeded) -> None:
    token = csrf_of(client)
    client.post(f"/review/{seeded.item_jon}/accept", data={"csrf_token": token})
    with Mirror.open(seeded.db) as m:
        m.sync("xpm", [{"external_id": "X1", "given_name": "John", "family_name": "SMITH",
                        "email": "new@example.com"}], mode="incremental")
    r = client.post("/review/undo", data={"csrf_token": token})
    assert "cannot be undone" in r.text
    assert item_status(seeded.db, seeded.item_jon) == "accepted"


def test_bulk_accept_shows_the_count_and_needs_the_confirmed_count(
        client: TestClient, seeded: Seeded) -> None:
    page = client.get("/review/bulk?min_score=50").text
    assert re.search(r'id="bulk-count"><b>2</b>', page)
    token = CSRF.search(page).group(1)  # type: ignore[union-attr]
    r = client.post("/review/bulk", data={"csrf_token": token, "min_score": "50",
                                          "count": "3"})
    assert "not the 3 you confirmed" in r.text
    assert item_status(seeded.db, seeded.item_jon) == "open"
    r = client.post("/review/bulk", data={"csrf_token": token, "min_score": "50",
                                          "count": "2"})
    assert "2 item(s) accepted" in r.text
    with Mirror.open(seeded.db, readonly=True) as m:
        assert m.get(seeded.jon).external_id == "X1" and m.get(seeded.ann).external_id == "X2"


# ---------------------------------------------------------------- two-way conflicts

def conflict_feed(db: Path) -> list[str]:
    with Mirror.open(db, readonly=True) as m:
        return [c.reason for c in m.changes() if c.reason_code == "conflict_resolved"]


def test_a_conflict_shows_base_local_and_source_values_and_no_accept_reject(
        client: TestClient, seeded: Seeded) -> None:
    _, item_id = make_conflict(seeded.db, local="l<i>@x.example")
    html = client.get(f"/review?item={item_id}").text
    assert 'id="conflict"' in html and 'id="compare"' not in html
    row = re.search(r'<th>email</th><td id="cf-base">([^<]*)</td><td id="cf-local">([^<]*)'
                    r'</td><td id="cf-remote">([^<]*)</td>', html)
    assert row, html
    # Each value as its side has it, escaped (the < of a value is no tag).
    assert row.groups() == ("c1@x.example", "l&lt;i&gt;@x.example", "r&lt;b&gt;@x.example")
    assert "<b>@x" not in html and "<i>@x" not in html
    for button in ('id="take-source"', 'id="take-local"', 'id="take-value"'):
        assert button in html
    # No accept/reject forms: the a and r keys have nothing to submit.
    assert 'id="accept-form"' not in html and 'id="reject-form"' not in html
    assert f'/review/{item_id}/accept' not in html
    assert "conflict on email" in html  # its line in the queue


def test_a_conflict_is_resolved_by_taking_the_source(client: TestClient,
                                                      seeded: Seeded) -> None:
    cid, item_id = make_conflict(seeded.db)
    token = csrf_of(client, f"/review?item={item_id}")
    r = client.post(f"/review/{item_id}/resolve", data={"take": "source"})
    assert r.status_code == 403  # no CSRF token, nothing done
    assert item_status(seeded.db, item_id) == "open"
    r = client.post(f"/review/{item_id}/resolve", data={"csrf_token": token, "take": "source"})
    assert r.status_code == 200 and f"Item {item_id} resolved" in r.text
    assert item_status(seeded.db, item_id) == "accepted"
    with Mirror.open(seeded.db, readonly=True) as m:
        assert m.get(cid).email == "r<b>@x.example"
    [reason] = conflict_feed(seeded.db)
    assert f"review item {item_id}" in reason and "the source's value taken" in reason
    # Decided: the page shows no buttons for it, and a second POST says why.
    assert 'id="take-source"' not in client.get(f"/review?item={item_id}").text
    again = client.post(f"/review/{item_id}/resolve", data={"csrf_token": token,
                                                             "take": "local"})
    assert "Not done" in again.text
    with Mirror.open(seeded.db, readonly=True) as m:
        assert m.get(cid).email == "r<b>@x.example"


@pytest.mark.parametrize(("form", "expected"), [
    ({"take": "local"}, "l@x.example"),
    ({"value": "typed@x.example"}, "typed@x.example"),
])
def test_a_conflict_is_resolved_by_keeping_the_local_value_or_a_typed_one(
        client: TestClient, seeded: Seeded, form: dict[str, str], expected: str) -> None:
    cid, item_id = make_conflict(seeded.db)
    token = csrf_of(client, f"/review?item={item_id}")
    r = client.post(f"/review/{item_id}/resolve", data={"csrf_token": token, **form})
    assert r.status_code == 200 and "pushed to the source" in r.text
    assert item_status(seeded.db, item_id) == "accepted"
    with Mirror.open(seeded.db, readonly=True) as m:
        assert m.get(cid).email == expected
        [entry] = [e for e in m.store.outbox.entries() if e.status == "pending"]
        assert entry.fields == {"email": ("r<b>@x.example", expected)}
    [reason] = conflict_feed(seeded.db)
    assert "queued to push to twoway" in reason


def test_a_resolve_without_a_choice_is_refused(client: TestClient, seeded: Seeded) -> None:
    _, item_id = make_conflict(seeded.db)
    token = csrf_of(client, f"/review?item={item_id}")
    for form in ({}, {"take": "both"}):
        r = client.post(f"/review/{item_id}/resolve", data={"csrf_token": token, **form})
        assert r.status_code == 400
    assert item_status(seeded.db, item_id) == "open"


def test_decisions_wait_for_the_writer_and_go_through_while_another_writes(
        client: TestClient, seeded: Seeded) -> None:
    token = csrf_of(client)
    from contactsync_agent.locking import WriterLock

    lock = WriterLock(seeded.db)
    lock.wait(5)
    try:
        import threading

        out: dict[str, int] = {}
        t = threading.Thread(target=lambda: out.setdefault("code", client.post(
            f"/review/{seeded.item_ann}/reject", data={"csrf_token": token}).status_code))
        t.start()
        t.join(0.5)
        assert t.is_alive()  # waiting for the writer lock, as a CLI write does
    finally:
        lock.release()
    t.join(10)
    assert out["code"] == 200 and item_status(seeded.db, seeded.item_ann) == "rejected"


# ---------------------------------------------------------------- activities, contacts


def test_an_activity_is_resolved_and_another_dismissed(client: TestClient,
                                                       seeded: Seeded) -> None:
    html = client.get("/activities").text
    assert "forced" in html.lower() or "not applied" in html
    token = CSRF.search(html).group(1)  # type: ignore[union-attr]
    r = client.post(f"/activities/{seeded.activity}/resolve",
                    data={"csrf_token": token, "note": "called them"})
    assert r.status_code == 200 and "resolved" in r.text
    with Mirror.open(seeded.db, readonly=True) as m:
        assert m.activities() == []
        [a] = m.activities("resolved")
        assert a.resolution == "called them"
    r = client.post(f"/activities/{seeded.activity}/dismiss", data={"csrf_token": token})
    assert "no open activity" in r.text


@pytest.mark.parametrize("query", ["jon", "Smith", "jon smi", "JON.SMITH@EX", "0400 000 001",
                                   "+61400000001", "+61 400 000 001", "0400000001",
                                   "jon.smith", "jon.smi", "Jon.Smith"])
def test_search_by_name_email_or_phone(client: TestClient, seeded: Seeded, query: str) -> None:
    html = client.get("/contacts", params={"q": query}).text
    assert f'href="/contacts/{seeded.jon}"' in html, query
    assert f'href="/contacts/{seeded.ann}"' not in html


def test_the_start_of_an_e_mail_without_its_at_searches_the_email_index(
        seeded: Seeded) -> None:
    """`mia.brown1` finds mia.brown1@…: one word is searched as a name and as
    the start of an e-mail, each an index range (no scan of the contacts)."""
    with Mirror.open(seeded.db) as m:
        m.console.ensure_search_index()
        mia = m.add_contact(name="Mia Brown", email="mia.brown1@example.com")
        seen: list[str] = []
        m.store.conn.set_trace_callback(seen.append)
        try:
            hits = m.console.search("mia.brown1")
        finally:
            m.store.conn.set_trace_callback(None)
        assert [h["id"] for h in hits] == [mia]
        [sql] = [q for q in seen if "FROM contacts" in q]
        plan = [r[3] for r in m.store.conn.execute("EXPLAIN QUERY PLAN " + sql)]
    assert any("USING INDEX contacts_email (" in p for p in plan), plan
    assert not any(p.startswith("SCAN contacts") for p in plan), plan


def test_a_partial_number_finds_every_contact_it_starts(client: TestClient,
                                                        seeded: Seeded) -> None:
    html = client.get("/contacts", params={"q": "0400 000"}).text
    assert f'href="/contacts/{seeded.jon}"' in html and f'href="/contacts/{seeded.ann}"' in html
    assert f'href="/contacts/{seeded.xss}"' not in html  # no phone at all


def test_the_console_makes_the_search_indexes_and_the_search_uses_them(
        seeded: Seeded) -> None:
    def indexes() -> set[str]:
        with sqlite3.connect(seeded.db) as conn:
            return {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'contacts_%'")}

    assert not indexes() & set(SEARCH_INDEXES)  # a mirror never served pays no upkeep
    with TestClient(create_app(ConsoleState(seeded.db)), base_url=LOCAL) as c:
        assert c.get("/contacts?q=jon").status_code == 200
    assert set(SEARCH_INDEXES) <= indexes()
    conn = sqlite3.connect(seeded.db)
    try:
        for col in ("display_name", "family_name", "given_name", "email", "phone_e164",
                    "mobile_e164"):
            plan = conn.execute(
                f"EXPLAIN QUERY PLAN SELECT id FROM contacts WHERE deleted_at IS NULL AND "
                f"{col} LIKE ? ESCAPE '\\' AND {col} != ''", ("smi%",)).fetchall()
            # A range of the index (SEARCH), not a walk through all of it (SCAN).
            assert any(f"SEARCH contacts USING INDEX contacts_{col} (" in r[3]
                       for r in plan), (col, plan)
        conn.execute("INSERT INTO contacts (created_at, updated_at, family_name) "
                     "VALUES ('t', 't', 'Smithers')")  # kept up to date by any write
        [(n,)] = conn.execute("SELECT count(*) FROM contacts INDEXED BY contacts_family_name "
                              "WHERE family_name LIKE 'smithe%' AND deleted_at IS NULL "
                              "AND family_name != ''").fetchall()
        assert n == 1
    finally:
        conn.close()


def test_contact_page_has_fields_uses_and_history_with_reasons(
        client: TestClient, seeded: Seeded) -> None:
    with Mirror.open(seeded.db) as m:
        m.add_reference(seeded.jon, "case:42")
    token = csrf_of(client)
    client.post(f"/review/{seeded.item_jon}/accept", data={"csrf_token": token})
    html = client.get(f"/contacts/{seeded.jon}").text
    assert "jon.smith@example.com" in html and "case:42" in html
    history = html[html.index('id="history"'):]
    assert "converted: review accepted" in history and "created: added locally" in history
    assert "12 George St → 12 George Street" in history
    assert client.get("/contacts/999999").status_code == 404


def test_markup_from_the_mirror_is_shown_as_text(client: TestClient, seeded: Seeded) -> None:
    escaped = "&lt;img src=x onerror=alert(1)&gt;"
    for url in (f"/contacts/{seeded.xss}", "/contacts?q=%3Cimg", "/quarantine"):
        html = client.get(url).text
        assert escaped in html, url
        assert XSS not in html and "<script>alert" not in html, url
    html = client.get("/quarantine").text
    assert "bad.csv" in html and "expected 3 fields" in html


# ---------------------------------------------------------------- the gate


def test_a_token_is_needed_when_set_by_query_cookie_or_header(seeded: Seeded) -> None:
    token = "s3cret-token-0123456789"
    app = create_app(ConsoleState(seeded.db), Gate(token=token))
    with TestClient(app, follow_redirects=False) as c:
        assert c.get("/").status_code == 401
        assert c.get("/?token=wrong").status_code == 401
        r = c.get("/review?token=" + token + "&source=xpm")
        assert r.status_code == 303 and r.headers["location"] == "/review?source=xpm"
        assert "httponly" in r.headers["set-cookie"].lower()
        assert c.get("/").status_code == 200  # by the cookie now
    with TestClient(app) as c:
        assert c.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert c.get("/", headers={"X-Contactsync-Token": token}).status_code == 200
        assert c.get("/", headers={"X-Contactsync-Token": "nope"}).status_code == 401


def test_without_a_token_only_loopback_host_names_are_served(seeded: Seeded) -> None:
    app = create_app(ConsoleState(seeded.db))
    for base in ("http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765"):
        with TestClient(app, base_url=base) as c:
            assert c.get("/").status_code == 200, base
    # DNS rebinding: a page of another site whose name now resolves to 127.0.0.1.
    with TestClient(app, base_url="http://evil.example:8765") as c:
        r = c.get("/")
        assert r.status_code == 403 and "Dashboard" not in r.text
    with TestClient(create_app(ConsoleState(seeded.db), Gate(token="t" * 20)),
                    base_url="http://console.example") as c:  # a token: any name
        assert c.get("/", headers={"X-Contactsync-Token": "t" * 20}).status_code == 200


def test_binding_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_bind(host, None)
    for host in ("0.0.0.0", "192.168.1.10", "::"):
        with pytest.raises(WebError, match="not a loopback address, without a token"):
            check_bind(host, None)
        check_bind(host, "a-token-of-enough-length")
    with pytest.raises(WebError):
        WebServer(tmp_path / "m.db", host="0.0.0.0", port=0).start()


def test_the_token_comes_from_the_environment_or_an_owner_only_file(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("tok-0123456789abcdef\n")
    f.chmod(0o644)
    with pytest.raises(WebError, match="readable by others"):
        read_token(f, environ={})
    f.chmod(0o600)
    assert read_token(f, environ={}) == "tok-0123456789abcdef"
    env_token = "from-env-0123456789"
    assert read_token(f, environ={"CONTACTSYNC_WEB_TOKEN": env_token}) == env_token
    assert read_token(None, environ={}) is None
    short = tmp_path / "short"
    short.write_text("abc")
    short.chmod(0o600)
    with pytest.raises(WebError, match="at least 16") as from_file:
        read_token(short, environ={})
    # The same rule, and the same words, for a token from the environment.
    for weak in ("a", "0123456789abcde"):
        with pytest.raises(WebError, match="at least 16") as from_env:
            read_token(f, environ={"CONTACTSYNC_WEB_TOKEN": weak})
        assert "CONTACTSYNC_WEB_TOKEN holds no token of at least 16 characters" in str(
            from_env.value)
    assert "holds no token of at least 16 characters" in str(from_file.value)


def test_web_config_table(tmp_path: Path) -> None:
    cfg = parse_config({"web": {"enabled": True, "host": "0.0.0.0", "port": 9000,
                                "token_file": "tok"}}, str(tmp_path / "c.toml"))
    assert (cfg.web.enabled, cfg.web.host, cfg.web.port) == (True, "0.0.0.0", 9000)
    assert cfg.web.token_file == tmp_path / "tok"
    with pytest.raises(ConfigError, match="never read from the config file") as e:
        parse_config({"web": {"token": "x"}}, "c.toml")
    assert "web.token" in str(e.value)
    with pytest.raises(ConfigError, match="port"):
        parse_config({"web": {"port": 70000}}, "c.toml")


# ---------------------------------------------------------------- real servers


def test_the_server_on_a_real_socket_starts_and_stops(seeded: Seeded) -> None:
    server = WebServer(seeded.db, host="127.0.0.1", port=0)
    server.start()
    try:
        with urllib.request.urlopen(server.url, timeout=10) as r:
            assert r.status == 200 and b"Dashboard" in r.read()
    finally:
        server.stop()
    assert server._thread is not None and not server._thread.is_alive()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=2)


def test_cli_web_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    from agent_helpers import cli

    r = cli("--db", str(tmp_path / "m.db"), "web", "--host", "0.0.0.0", "--port", "0")
    assert r.returncode == 2, r.stderr
    assert "not a loopback address, without a token" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_agent_serves_the_console_and_stops_it_on_sigterm(tmp_path: Path) -> None:
    import socket

    from agent_helpers import Agent, config_text, poll

    with socket.socket() as s:  # a free port for the agent's console
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "in").mkdir()
    text = config_text(tmp_path, sources={"xpm": {"path": str(tmp_path / "in")}})
    text += f"\n[web]\nenabled = true\nhost = \"127.0.0.1\"\nport = {port}\n"
    cfg = tmp_path / "agent.toml"
    cfg.write_text(text)
    agent = Agent(tmp_path, cfg).start()
    try:
        def page() -> bytes | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    return r.read()
            except OSError:
                return None

        assert b"Dashboard" in poll(page, what="the agent's console")
        assert agent.stop() == 0
        assert agent.proc is not None and agent.proc.returncode == 0
        assert page() is None
    finally:
        agent.kill()
    assert "Traceback" not in agent.stderr


def test_cli_web_serves_in_the_foreground_with_a_token_and_stops_on_sigterm(
        seeded: Seeded) -> None:
    import os
    import signal
    import subprocess

    from agent_helpers import CLI, env

    token = "tok-" + "9" * 20
    e = {**env(), "CONTACTSYNC_WEB_TOKEN": token}
    proc = subprocess.Popen([*CLI, "--db", str(seeded.db), "web", "--host", "0.0.0.0",
                             "--port", "0", "--print-url"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=e)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # printed once the socket listens
        # The machine's name, not the wildcard address no browser can open.
        m = re.fullmatch(rf"http://{re.escape(socket.gethostname())}:(\d+)/\?token=(.+)",
                         line)
        assert m and m.group(2) == token, line
        base = f"http://127.0.0.1:{m.group(1)}/"
        with pytest.raises(urllib.error.HTTPError) as e401:
            urllib.request.urlopen(base, timeout=10)
        assert e401.value.code == 401
        e401.value.close()
        req = urllib.request.Request(base, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200 and b"Dashboard" in r.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert proc.stderr is not None and token not in proc.stderr.read()  # never logged
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_after_an_undone_accept_the_next_sync_finds_the_restored_contact(
        client: TestClient, seeded: Seeded) -> None:
    token = csrf_of(client)
    with Mirror.open(seeded.db, readonly=True) as m:
        created = m.review.compare(seeded.item_jon)["incoming"]["contact_id"]
    client.post(f"/review/{seeded.item_jon}/accept", data={"csrf_token": token})
    client.post("/review/undo", data={"csrf_token": token})
    with Mirror.open(seeded.db) as m:
        report = m.sync("xpm", [{"external_id": "X1", "given_name": "John",
                                 "family_name": "SMITH", "email": "jon.smith@example.com",
                                 "mobile": "+61400000001", "street": "1 New Road",
                                 "postcode": "2000"}], mode="incremental")
        assert report.counts["created"] == 0 and report.counts["updated"] == 1
        assert m.get(created).street == "1 New Road"  # the source's record again
        local = m.get(seeded.jon)
        assert (local.record_type, local.street) == ("manual", "12 George St")
