"""The HTTP writer (two-way sync's way back) against the fake system of record
(tests/fakesor.py: a real HTTP server on 127.0.0.1): each outcome of the
contract in sources/writer.py, idempotent replay after a dropped answer, a
create's id, If-Match conflicts, the token kept to its host, nothing personal
in a reason or a log line; and the fake serving the HTTP connector's pulls."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from contactsync_agent.config import AgentConfig, SourceConfig
from contactsync_agent.errors import ConfigError
from contactsync_agent.mirror import Mirror
from contactsync_agent.source_runs import sync_source
from contactsync_agent.sources import HttpSource, HttpWriter, open_writer, validate_sources
from contactsync_agent.sources.http_writer import redact
from contactsync_agent.sources.writer import OutboundChange
from fakesor import FakeSor, applied_counts, fakesor_fixture  # noqa: F401  (the fixture)

TOKEN = "tok-" + "9c2e7a1f4b6d8e0a3c5f"

MAPPING = {
    "first_name": "given_name",
    "last_name": "family_name",
    "address.city": "city",
    "address.postcode": "postcode",
}


def config(sor: FakeSor, mode: str = "incremental", **options: Any) -> SourceConfig:
    opts: dict[str, Any] = {
        "url": sor.contacts_url,
        "items_field": "data",
        "next_field": "links.next",
        "cursor_field": "updated_at",
        "page_size": 50,
        "id_field": "id",
        "backoff": 0.01,
        "max_retries": 3,
        "timeout": 5,
        **options,
    }
    return SourceConfig(
        name="sor",
        kind="http",
        mode=mode,
        mapping=dict(MAPPING),
        options={k: v for k, v in opts.items() if v is not None},
    )


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def writer(sor: FakeSor, sleeps: Sleeps | None = None, **options: Any) -> HttpWriter:
    return HttpWriter(config(sor, **options), sleep=sleeps or Sleeps())


def update(
    ext: str, entry: int = 1, version: str | None = None, **fields: tuple[str, str]
) -> OutboundChange:
    return OutboundChange(
        entry_id=entry,
        key=f"cs-{entry}-{ext}",
        kind="update",
        external_id=ext,
        fields=fields,
        version=version,
    )


def create(entry: int, **new: str) -> OutboundChange:
    return OutboundChange(
        entry_id=entry,
        key=f"cs-{entry}-new",
        kind="create",
        external_id=None,
        fields={k: ("", v) for k, v in new.items()},
    )


def sent_body(request: dict[str, Any]) -> Any:
    return json.loads(request["body"])


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    m = Mirror.open(tmp_path / "mirror.db")
    yield m
    m.close()


# ------------------------------------------------------------------ confirmed


def test_update_patches_only_the_changed_fields_in_the_sources_names(fakesor: FakeSor) -> None:
    sor = fakesor
    sor.seed(3)
    etag = sor.etag("P00001")
    w = writer(sor)
    change = update(
        "P00001",
        version=etag,
        given_name=("Given1", "Gina"),
        city=("Newcastle", "Maitland"),
        email=("p1@example.com", ""),
    )
    [result] = w.push([change])
    item = sor.get("P00001")
    assert result.outcome == "confirmed", result
    assert result.entry_id == 1 and result.reason == "" and result.fields == ()
    assert result.external_id == "P00001"
    assert result.version == sor.etag("P00001") != etag
    assert result.modified_at == item["updated_at"]
    [req] = sor.writes()
    assert req["method"] == "PATCH" and req["path"] == "/contacts/P00001"
    # Only what changed, under the source's own names (nested as it reads them);
    # an emptied field is null.
    assert sent_body(req) == {"first_name": "Gina", "address": {"city": "Maitland"}, "email": None}
    assert req["headers"]["idempotency-key"] == change.key
    assert req["headers"]["if-match"] == etag
    assert item["first_name"] == "Gina" and item["address"] == {
        "city": "Maitland",
        "postcode": "2300",
    }
    assert item["last_name"] == "Family1" and item["email"] is None
    # Without a known ETag (or with etag = "none") no If-Match is sent.
    w.push([update("P00002", entry=2, given_name=("Given2", "Gus"))])
    writer(sor, etag="none").push(
        [update("P00002", entry=3, version=sor.etag("P00002"), given_name=("Gus", "Guy"))]
    )
    assert all("if-match" not in r["headers"] for r in sor.writes()[1:])
    assert sor.get("P00002")["first_name"] == "Guy"


def test_a_create_is_posted_and_its_new_id_read_back(fakesor: FakeSor) -> None:
    sor = fakesor
    w = writer(sor)
    [result] = w.push(
        [create(7, given_name="Nadia", family_name="Newcomer", city="Dungog", mobile="")]
    )
    assert result.outcome == "confirmed", result
    assert result.external_id == "N000001"
    assert result.version == sor.etag("N000001")
    [req] = sor.writes()
    assert req["method"] == "POST" and req["path"] == "/contacts"
    assert sent_body(req) == {
        "first_name": "Nadia",
        "last_name": "Newcomer",
        "address": {"city": "Dungog"},
    }
    assert req["headers"]["idempotency-key"] == "cs-7-new"
    assert "if-match" not in req["headers"]
    assert sor.get("N000001")["first_name"] == "Nadia"


# ------------------------------------------------------------------ conflict


def test_a_stale_etag_is_a_conflict_and_nothing_is_applied(fakesor: FakeSor) -> None:
    sor = fakesor
    sor.seed(2)
    etag = sor.etag("P00001")
    sor.put("P00001", last_name="Changed-At-Source")  # someone edits it meanwhile
    [result] = writer(sor).push(
        [update("P00001", version=etag, given_name=("Given1", "Gina"), city=("Newcastle", "X"))]
    )
    assert result.outcome == "conflict", result
    assert result.fields == ("given_name", "city")
    assert "412" in result.reason
    item = sor.get("P00001")
    assert item["first_name"] == "Given1" and item["last_name"] == "Changed-At-Source"
    assert applied_counts(sor)["P00001"] == 0
    assert len(sor.writes()) == 1  # a conflict is not retried


# ------------------------------------------------------------------ rejected


def test_a_refusal_is_rejected_with_the_targets_reason_and_no_value(
    fakesor: FakeSor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sor = fakesor
    sor.seed(2)

    def unique_surname(item: dict[str, Any], written: dict[str, Any]) -> tuple[str, str] | None:
        v = written.get("last_name")
        if v == "Duplicate":
            # A chatty target: the value, someone else's e-mail and phone.
            return (
                f"last_name \"{v}\" is already used by Given0 (p0@example.com, "
                "+61 2 4000 0000)",
                "last_name",
            )
        return None

    sor.rules.append(unique_surname)
    sor.echo_in_reason = True  # in the status line too
    w = writer(sor)
    bad_email = update("P00001", entry=1, email=("p1@example.com", "annabel.at.home"))
    bad_name = update("P00001", entry=2, family_name=("Family1", "Duplicate"))
    results = w.push([bad_email, bad_name])
    assert [r.outcome for r in results] == ["rejected", "rejected"], results
    assert results[0].fields == ("email",) and results[1].fields == ("family_name",)
    assert "is not a valid e-mail address" in results[0].reason
    assert "422" in results[0].reason and "already used by" in results[1].reason
    for value in ("annabel.at.home", "Duplicate", "p0@example.com", "4000 0000", "p1@example"):
        assert value.lower() not in (results[0].reason + results[1].reason).lower()
        assert value.lower() not in caplog.text.lower()
    assert len(sor.writes()) == 2  # a refusal is never retried
    assert sor.get("P00001")["email"] == "p1@example.com"
    # An update of a contact the target does not have: refused too.
    [gone] = w.push([update("NOPE", entry=3, given_name=("a", "b"))])
    assert gone.outcome == "rejected" and "404" in gone.reason


def test_redact() -> None:
    assert redact("email 'Ann@Example.com' bad", ["ann@example.com"]) == "email '***' bad"
    assert redact('name "Zoë" taken', ["Zoë"]) == 'name "***" taken'
    assert redact('name "Zo\\u00eb" taken', ["Zoë"]) == 'name "***" taken'
    assert redact("call 02 4000 1234 now", []) == "call *** now"
    assert redact("x" * 400, []).endswith("…") and len(redact("x" * 400, [])) == 300
    assert redact("two\nlines", []) == "two lines"


# ------------------------------------------------------------------ retry


def test_5xx_is_retried_with_the_same_key_then_confirmed(fakesor: FakeSor) -> None:
    sor = fakesor
    sor.seed(2)
    sor.fail_writes = [503, 500]
    sleeps = Sleeps()
    w = writer(sor, sleeps)
    change = update("P00001", given_name=("Given1", "Gina"))
    [result] = w.push([change])
    assert result.outcome == "confirmed", result
    assert len(sleeps.calls) == 2 and w.retries == 2
    assert [r["headers"]["idempotency-key"] for r in sor.writes()] == [change.key] * 3
    assert sor.applied_with_key(change.key) == 1


def test_retries_are_bounded_then_the_result_is_retry(fakesor: FakeSor) -> None:
    sor = fakesor
    sor.seed(3)
    sor.fail_writes = [503] * 10
    sleeps = Sleeps()
    w = writer(sor, sleeps, max_retries=2)
    [result] = w.push([update("P00001", given_name=("Given1", "Gina"))])
    assert result.outcome == "retry", result
    assert "503" in result.reason and "gave up after 2 retries" in result.reason
    assert result.fields == ("given_name",)
    assert len(sor.writes()) == 3 and len(sleeps.calls) == 2
    assert not sor.applied


def test_a_dropped_answer_is_replayed_and_applied_exactly_once(fakesor: FakeSor) -> None:
    sor = fakesor
    sor.seed(2)
    # Within one push: applied, the answer lost, the retry answered by the replay.
    sor.drop_after_apply = 1
    change = update("P00001", given_name=("Given1", "Gina"))
    [result] = writer(sor).push([change])
    assert result.outcome == "confirmed", result
    assert result.version == sor.etag("P00001")
    assert sor.applied_with_key(change.key) == 1 and sor.replays == 1
    assert len(sor.writes()) == 2
    # Across pushes (a crash between sending and confirming): the first push gives
    # up with `retry`; the outbox sends the same entry again, same key, later.
    sor.drop_after_apply = 1
    again = update("P00000", entry=2, given_name=("Given0", "Gail"))
    [first] = writer(sor, max_retries=0).push([again])
    assert first.outcome == "retry", first
    assert sor.get("P00000")["first_name"] == "Gail"  # it did apply
    sor.put("P00000", last_name="Edited-At-Source")  # not undone by the replay
    [second] = writer(sor).push([again])
    assert second.outcome == "confirmed", second
    assert sor.applied_with_key(again.key) == 1
    assert sor.get("P00000")["last_name"] == "Edited-At-Source"


def test_a_create_whose_answer_was_lost_makes_one_contact(fakesor: FakeSor) -> None:
    sor = fakesor
    sor.drop_after_apply = 1
    change = create(9, given_name="Olive", family_name="Once")
    [first] = writer(sor, max_retries=0).push([change])
    assert first.outcome == "retry"
    [second] = writer(sor).push([change])
    assert second.outcome == "confirmed" and second.external_id == "N000001"
    assert list(sor.items) == ["N000001"]
    assert sor.applied_with_key(change.key) == 1


def test_a_timeout_is_retry_and_the_rest_are_not_sent(fakesor: FakeSor) -> None:
    sor = fakesor
    sor.seed(2)
    sor.write_delay = 1.5
    w = writer(sor, max_retries=0, page_timeout=0.3)
    results = w.push(
        [update("P00000", given_name=("Given0", "A")), update("P00001", 2, family_name=("F", "B"))]
    )
    assert [r.outcome for r in results] == ["retry", "retry"], results
    assert "no complete answer within 0.3s" in results[0].reason
    assert results[1].reason.startswith("not sent:")
    assert len(sor.writes()) == 1 and w.requests == 1


def test_an_unreachable_target_is_retry_for_every_change(fakesor: FakeSor) -> None:
    sor = fakesor
    w = writer(sor, max_retries=1)
    sor.stop()  # nothing listens there any more
    sleeps = w.conn.sleep
    results = w.push([update("P1", 1, given_name=("a", "b")), create(2, given_name="c")])
    assert [r.outcome for r in results] == ["retry", "retry"], results
    assert w.requests == 2 and isinstance(sleeps, Sleeps) and len(sleeps.calls) == 1


# ------------------------------------------------------------------ auth


def test_the_token_is_sent_to_its_host_only(
    fakesor: FakeSor,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sor = fakesor
    sor.seed(2)
    sor.token = TOKEN
    monkeypatch.setenv("SOR_TOKEN", TOKEN)
    w = writer(sor, token_env="SOR_TOKEN")
    [ok] = w.push([update("P00001", given_name=("Given1", "Gina"))])
    assert ok.outcome == "confirmed"
    assert sor.writes()[0]["headers"]["authorization"] == f"Bearer {TOKEN}"
    # A write redirected elsewhere is not followed: the other host sees nothing.
    with FakeSor.start() as other:
        sor.redirect_writes_to = other.url
        results = w.push(
            [update("P00001", 2, given_name=("Gina", "Gia")), create(3, given_name="N")]
        )
        sor.redirect_status = 302  # urllib would follow this one for a POST, as a GET
        results += w.push([create(3, given_name="N")])
        assert not other.requests
    assert [r.outcome for r in results] == ["retry", "retry", "retry"], results
    assert "redirects writes" in results[0].reason and results[1].reason.startswith("not sent")
    assert "HTTP 302" in results[2].reason
    assert len(sor.writes()) == 3
    # A write_path or create_path on another host is refused before anything is sent.
    for opt, value in (("write_path", "http://elsewhere.invalid/{id}"), ("create_path", "//x/")):
        with pytest.raises(ConfigError) as e:
            writer(sor, token_env="SOR_TOKEN", **{opt: value})
        assert e.value.key == f"sources.sor.{opt}"
    # Refused credentials stop the push: every change is retry, one request sent.
    sor.redirect_writes_to = None
    sor.token = "another"
    before = len(sor.writes())
    results = w.push([update("P00001", 4, given_name=("a", "b")), create(5, given_name="c")])
    assert [r.outcome for r in results] == ["retry", "retry"]
    assert "refused the credentials" in results[0].reason
    assert len(sor.writes()) == before + 1
    assert TOKEN not in caplog.text
    assert all(TOKEN not in str(r) for r in results)


def test_write_options_are_checked(fakesor: FakeSor) -> None:
    for opt, value in (
        ("write_method", "DELETE"),
        ("etag", "sometimes"),
        ("write_path", "contacts"),
        ("write_pth", "{id}"),
        ("create_id_field", 3),
    ):
        with pytest.raises(ConfigError) as e:
            writer(fakesor, **{opt: value})
        assert e.value.key == f"sources.sor.{opt}", (opt, e.value)
    # At start-up too: an enabled http source's write options are checked.
    bad = config(fakesor, write_method="DELETE")
    bad.enabled = True
    with pytest.raises(ConfigError) as e:
        validate_sources(AgentConfig(sources={"sor": bad}))
    assert e.value.key == "sources.sor.write_method"
    cfg = config(fakesor, write_path="/people/{id}/edit", create_path="new")
    w = open_writer(cfg)
    assert isinstance(w, HttpWriter)
    assert w.resolve(w.write_path, "A/1") == f"{fakesor.url}/people/A%2F1/edit"
    assert w.resolve(w.create_path, None) == f"{fakesor.url}/contacts/new"
    w.close()


def test_put_and_custom_paths_reach_the_target(fakesor: FakeSor) -> None:
    sor = fakesor
    sor.seed(1)
    # The fake only takes PATCH for an update: a PUT is refused (405), not retried.
    [r] = writer(sor, write_method="PUT").push([update("P00000", given_name=("Given0", "X"))])
    assert r.outcome == "rejected" and "405" in r.reason
    assert sor.writes()[0]["method"] == "PUT"
    [r] = writer(sor, write_path="/contacts/{id}").push(
        [update("P00000", 2, given_name=("Given0", "Y"))]
    )
    assert r.outcome == "confirmed" and sor.get("P00000")["first_name"] == "Y"


# ------------------------------------------------------------------ the fake as a source


def test_the_fake_is_a_source_for_the_http_connector(fakesor: FakeSor, mirror: Mirror) -> None:
    sor = fakesor
    sor.seed(120)
    cfg = config(sor)
    report = sync_source(mirror, cfg, connector=HttpSource(cfg, sleep=Sleeps()))
    assert report.counts["created"] == 120
    # A write through the writer comes back in the next incremental pull, and only it.
    [r] = writer(sor).push([update("P00007", given_name=("Given7", "Gwen"))])
    assert r.outcome == "confirmed"
    conn = HttpSource(cfg, sleep=Sleeps())
    report = sync_source(mirror, cfg, connector=conn)
    assert conn.fetched == 1 and report.counts["updated"] == 1, report.counts
    now = {x.external_id: x for x in mirror.contacts()}
    assert now["P00007"].given_name == "Gwen" and now["P00008"].given_name == "Given8"
    assert (now["P00007"].city, now["P00007"].postcode) == ("Newcastle", "2300")
    # Pages can carry each item's ETag as a version field, for If-Match.
    sor.etag_in_items = True
    page = HttpSource(cfg, sleep=Sleeps())
    items = {r["id"]: r for r in page.read("full", None)}
    assert items["P00007"]["etag"] == sor.etag("P00007") == r.version


def test_a_key_reused_for_another_change_is_refused(fakesor: FakeSor) -> None:
    """The fake's replay is keyed on the request too: a key is one change only."""
    sor = fakesor
    sor.seed(1)
    w = writer(sor)
    first = update("P00000", given_name=("Given0", "Ada"))
    other = OutboundChange(
        entry_id=2, key=first.key, kind="update", external_id="P00000",
        fields={"given_name": ("Given0", "Bea")},
    )
    assert [r.outcome for r in w.push([first, first])] == ["confirmed", "confirmed"]
    [r] = w.push([other])
    assert r.outcome == "rejected" and "reused" in r.reason
    assert sor.get("P00000")["first_name"] == "Ada" and sor.replays == 1


def test_an_aborted_push_returns_the_rest_as_retry(fakesor: FakeSor) -> None:
    """abort() (the agent's SIGTERM handler) cuts the request in flight off at once."""
    sor = fakesor
    sor.seed(3)
    sor.write_delay = 30.0
    w = writer(sor, max_retries=3)
    threading.Timer(0.3, w.abort, ("stopping",)).start()
    started = time.monotonic()
    results = w.push([update(f"P0000{i}", i, given_name=("a", "b")) for i in range(3)])
    assert time.monotonic() - started < 10
    assert [r.outcome for r in results] == ["retry"] * 3, results
    assert all("aborted" in r.reason for r in results)
    assert w.requests == 1


# ------------------------------------------------------------------ batches


def test_a_batch_endpoint_carries_many_changes_each_judged_alone(fakesor: FakeSor) -> None:
    sor = fakesor
    sor.seed(4)
    stale = sor.etag("P00002")
    sor.put("P00002", last_name="Changed-At-Source")
    sor.fail_writes = [503]  # the first batch once: retried whole
    sleeps = Sleeps()
    w = writer(sor, sleeps, batch_path="/$batch", batch_size=3)
    changes = [
        update("P00000", 1, version=sor.etag("P00000"), given_name=("Given0", "Ada")),
        update("P00001", 2, email=("p1@example.com", "not-an-address")),
        update("P00002", 3, version=stale, city=("Newcastle", "Cessnock")),
        create(4, given_name="Nia", family_name="New"),
        update("P00003", 5, family_name=("Family3", "Fay")),
        update("", 6, given_name=("x", "y")),
    ]
    results = w.push(changes)
    assert [r.entry_id for r in results] == [1, 2, 3, 4, 5, 6]
    assert [r.outcome for r in results] == [
        "confirmed", "rejected", "conflict", "confirmed", "confirmed", "rejected",
    ], results
    assert results[0].version == sor.etag("P00000") and results[0].modified_at
    assert results[3].external_id == "N000001"
    assert sor.get("N000001")["first_name"] == "Nia"
    assert "not a valid e-mail" in results[1].reason
    assert "not-an-address" not in results[1].reason
    assert sor.get("P00002")["address"]["city"] == "Newcastle"
    assert sor.get("P00003")["last_name"] == "Fay"
    # Two batches (3 + 2 changes; the update without an id is never sent), the
    # first one sent twice; nothing but batches.
    assert [(r["method"], r["path"]) for r in sor.writes()] == [("POST", "/$batch")] * 3
    assert sor.batches == 2 and len(sleeps.calls) == 1
    first = sent_body(sor.writes()[1])["requests"]
    assert [r["method"] for r in first] == ["PATCH", "PATCH", "PATCH"]
    assert first[0]["url"] == "/contacts/P00000"
    assert first[0]["headers"] == {"Idempotency-Key": "cs-1-P00000", "If-Match": changes[0].version}
    assert first[0]["body"] == {"first_name": "Ada"}


def test_a_dropped_batch_is_replayed_and_each_change_applied_once(fakesor: FakeSor) -> None:
    sor = fakesor
    ids = sor.seed(5)
    sor.drop_after_apply = 1
    changes = [update(ext, i, given_name=(f"Given{i}", f"New{i}")) for i, ext in enumerate(ids)]
    changes.append(create(9, given_name="Once"))
    results = writer(sor, batch_path="/$batch").push(changes)
    assert [r.outcome for r in results] == ["confirmed"] * 6, results
    assert results[-1].external_id == "N000001" and list(sor.items)[-1] == "N000001"
    assert all(sor.applied_with_key(c.key) == 1 for c in changes)
    assert sor.replays == 6 and len(sor.writes()) == 2


def test_batch_options_are_checked(fakesor: FakeSor) -> None:
    for opt, value in (("batch_path", "http://elsewhere.invalid/$batch"), ("batch_size", 0)):
        with pytest.raises(ConfigError) as e:
            writer(fakesor, **{opt: value})
        assert e.value.key == f"sources.sor.{opt}"
    assert writer(fakesor, batch_path="/$batch").batch_url == f"{fakesor.url}/$batch"
