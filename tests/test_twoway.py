"""Two-way sync (issue 15), the local side: the config of directions, conflict
strategies and push policy (errors naming file, line and key), and a local
edit of an out/both field on a synced contact: allowed whatever the field's
ownership, never forcing the contact manual, recorded in the outbox with its
base in the edit's own transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner
from contactsync_agent.cli import _load_extensions, cli
from contactsync_agent.config import SourceConfig, load_config, parse_config
from contactsync_agent.errors import ConfigError, OwnershipError
from contactsync_agent.mirror import Mirror
from contactsync_agent.sources.writer import OutboundChange, PushResult
from contactsync_agent.store import SCHEMA_VERSION

POLICY = {"directions": {"default": "in", "email": "both", "phone": "out"},
          "conflicts": {"default": "source_wins"}, "priority": {}, "push_new": "referenced"}


def rec(ext: str, name: str, **kw: str) -> dict[str, str]:
    return {"id": ext, "name": name, **kw}


@pytest.fixture
def synced(mirror: Mirror) -> tuple[Mirror, int]:
    mirror.sync("xpm", [rec("A", "John Smith", email="john@x.example", phone="0400 000 001",
                            notes="n")], ownership={"notes": "locked"})
    mirror.ownership.set_sync_policy("xpm", POLICY)
    return mirror, mirror.contacts()[0].id


# ---------------------------------------------------------------- config


def write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text("[sources.xpm]\nkind = \"folder\"\n" + body, encoding="utf-8")
    return p


def test_config_reads_directions_conflicts_and_push_new(tmp_path: Path) -> None:
    p = write(tmp_path, '''push_new = "all"
[sources.xpm.directions]
default = "in"
email = "both"
"extra:Tags" = "out"
[sources.xpm.conflicts]
default = "last_write_wins"
email = "priority"
[sources.xpm.priority]
email = "local"
''')
    src = load_config(p).sources["xpm"]
    assert src.directions == {"default": "in", "email": "both", "extra:Tags": "out"}
    assert src.conflicts == {"default": "last_write_wins", "email": "priority"}
    assert src.priority == {"email": "local"}
    assert src.push_new == "all"
    assert src.sync_policy()["push_new"] == "all"
    # Defaults: everything in, source wins, referenced contacts pushed.
    plain = parse_config({"sources": {"s": {"kind": "folder"}}}).sources["s"]
    assert (plain.directions, plain.conflicts, plain.push_new) == ({}, {}, "referenced")


@pytest.mark.parametrize(("body", "key", "line", "words"), [
    ('[sources.xpm.directions]\ndefault = "in"\nemail = "sideways"\n',
     "sources.xpm.directions.email", 5, "unknown direction 'sideways'"),
    ('[sources.xpm.directions]\nshoe_size = "both"\n',
     "sources.xpm.directions.shoe_size", 4, "unknown field 'shoe_size'"),
    ('[sources.xpm.conflicts]\n\nphone = "coin_toss"\n',
     "sources.xpm.conflicts.phone", 5, "unknown strategy 'coin_toss'"),
    ('push_new = "some"\n', "sources.xpm.push_new", 3, "unknown push policy 'some'"),
    ('[sources.xpm.conflicts]\nemail = "priority"\n',
     "sources.xpm.conflicts", 3, "needs a [sources.xpm.priority] table"),
])
def test_config_errors_name_file_line_and_key(tmp_path: Path, body: str, key: str, line: int,
                                              words: str) -> None:
    p = write(tmp_path, body)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.key == key and e.value.line == line
    assert words in str(e.value)
    assert f"{p}:{line}: {key}" in str(e.value)


# ---------------------------------------------------------------- schema


def test_schema_5_has_the_outbox_and_bases(mirror: Mirror) -> None:
    assert SCHEMA_VERSION >= 5
    tables = {r[0] for r in mirror.store.conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"outbox", "field_bases"} <= tables


# ---------------------------------------------------------------- local edits


def outbox(m: Mirror) -> list[dict[str, object]]:
    return [e.__dict__ for e in m.store.outbox.entries()]


def test_edit_of_a_both_field_is_recorded_with_its_base_and_not_forced_manual(
        synced: tuple[Mirror, int]) -> None:
    m, cid = synced
    m.ownership.edit_contact(cid, email="john@new.example")
    row = m.store.contacts.row(cid)
    assert row is not None
    assert row["email"] == "john@new.example" and row["forced_manual"] == 0
    assert row["record_type"] == "sync"
    [e] = outbox(m)
    assert e["status"] == "pending" and e["kind"] == "update" and e["external_id"] == "A"
    assert e["source"] == "xpm" and e["contact_id"] == cid
    assert e["fields"] == {"email": ("john@x.example", "john@new.example")}
    assert m.store.outbox.bases([cid]) == {cid: {"email": "john@x.example"}}
    # A second edit before a push joins the entry: the base stays what the source sent.
    m.ownership.edit_contact(cid, email="john@third.example", phone="0400 000 002")
    [e] = outbox(m)
    assert e["fields"] == {"email": ("john@x.example", "john@third.example"),
                           "phone": ("0400 000 001", "0400 000 002")}
    # Edited back to what the source holds: nothing left to push.
    m.ownership.edit_contact(cid, email="john@x.example", phone="0400 000 001")
    [e] = outbox(m)
    assert e["status"] == "superseded"
    m.ownership.edit_contact(cid, email="again@x.example")
    assert [x["status"] for x in outbox(m)] == ["superseded", "pending"]
    assert outbox(m)[1]["fields"] == {"email": ("john@x.example", "again@x.example")}
    assert len({x["key"] for x in outbox(m)}) == 2


def test_in_fields_keep_their_ownership(synced: tuple[Mirror, int]) -> None:
    m, cid = synced
    with pytest.raises(OwnershipError):
        m.ownership.edit_contact(cid, given_name="Jack")  # in, source-owned
    with pytest.raises(OwnershipError):
        m.ownership.edit_contact(cid, notes="x")  # locked
    assert outbox(m) == []


def test_an_in_only_source_records_nothing(mirror: Mirror) -> None:
    mirror.sync("xpm", [rec("A", "John Smith", notes="n")], ownership={"notes": "local"})
    cid = mirror.contacts()[0].id
    mirror.ownership.edit_contact(cid, notes="mine")
    assert outbox(mirror) == [] and mirror.store.outbox.bases([cid]) == {}


def test_the_entry_is_in_the_edits_transaction(synced: tuple[Mirror, int],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    m, cid = synced

    def boom(*a: object, **k: object) -> int:
        raise RuntimeError("disk full")

    monkeypatch.setattr(m.store.outbox, "add", boom)
    with pytest.raises(RuntimeError):
        m.ownership.edit_contact(cid, email="john@new.example")
    row = m.store.contacts.row(cid)
    assert row is not None and row["email"] == "john@x.example"
    assert m.store.outbox.bases([cid]) == {}
    assert [c.reason_code for c in m.changes() if c.reason_code == "edited_locally"] == []


def test_cli_edit_follows_the_configs_directions(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[agent]\ndatabase = "{db}"\n[sources.xpm]\nkind = "folder"\n'
                   '[sources.xpm.directions]\nemail = "both"\n', encoding="utf-8")
    with Mirror.open(db) as m:
        m.sync("xpm", [rec("A", "John Smith", email="john@x.example")])
        cid = m.contacts()[0].id
    _load_extensions()
    r = CliRunner().invoke(cli, ["--config", str(cfg), "contacts", "edit", str(cid),
                                 "--email", "j@new.example", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["changed"] == {"email": ["john@x.example", "j@new.example"]}
    with Mirror.open(db) as m:
        [e] = m.store.outbox.entries()
        assert e.fields == {"email": ("john@x.example", "j@new.example")}


# ---------------------------------------------------------------- pulls


def pull(m: Mirror, email: str, phone: str = "0400 000 001") -> None:
    m.sync("xpm", [rec("A", "John Smith", email=email, phone=phone, notes="n")])


def policy(strategy: str, **more: object) -> dict[str, object]:
    return {**POLICY, "conflicts": {"default": strategy}, **more}


def two_way_feed(m: Mirror) -> list[str]:
    return [c.reason for c in m.changes()
            if c.reason_code in ("two_way_resolved", "two_way_conflict")]


def test_pull_keeps_a_pending_local_edit_when_the_source_did_not_change(
        synced: tuple[Mirror, int]) -> None:
    m, cid = synced
    m.ownership.edit_contact(cid, email="l@x.example")
    pull(m, "john@x.example")
    assert m.store.contacts.row(cid)["email"] == "l@x.example"  # type: ignore[index]
    assert [e.status for e in m.store.outbox.entries()] == ["pending"]


def test_pull_takes_a_remote_change_of_an_unedited_both_field(
        synced: tuple[Mirror, int]) -> None:
    m, cid = synced
    pull(m, "r@x.example")
    assert m.store.contacts.row(cid)["email"] == "r@x.example"  # type: ignore[index]
    assert outbox(m) == [] and two_way_feed(m) == []


def test_conflict_source_wins(synced: tuple[Mirror, int]) -> None:
    m, cid = synced
    m.ownership.edit_contact(cid, email="l@x.example")
    pull(m, "r@x.example")
    row = m.store.contacts.row(cid)
    assert row is not None and row["email"] == "r@x.example" and row["forced_manual"] == 0
    assert [e.status for e in m.store.outbox.entries()] == ["superseded"]
    assert m.store.outbox.bases([cid]) == {}
    [reason] = two_way_feed(m)
    assert "conflict on email: source_wins" in reason
    assert [c.reason_code for c in m.changes() if c.reason_code.startswith("two_way")] == [
        "two_way_conflict"]
    # The same record again is unchanged: decided once.
    pull(m, "r@x.example")
    assert len(two_way_feed(m)) == 1


def test_conflict_local_wins_pushes_over_the_remote_value(synced: tuple[Mirror, int]) -> None:
    m, cid = synced
    m.ownership.set_sync_policy("xpm", policy("local_wins"))
    m.ownership.edit_contact(cid, email="l@x.example")
    pull(m, "r@x.example")
    row = m.store.contacts.row(cid)
    assert row is not None and row["email"] == "l@x.example"
    [e] = m.store.outbox.entries()
    assert e.status == "pending" and e.fields == {"email": ("r@x.example", "l@x.example")}
    assert m.store.outbox.bases([cid]) == {cid: {"email": "r@x.example"}}
    assert "local_wins keeps the local value" in two_way_feed(m)[0]
    pull(m, "r@x.example")  # nothing new from the source: nothing decided again
    assert len(two_way_feed(m)) == 1 and m.store.contacts.row(cid)["email"] == "l@x.example"  # type: ignore[index]


def test_conflict_priority_table(synced: tuple[Mirror, int]) -> None:
    m, cid = synced
    m.ownership.set_sync_policy("xpm", policy("priority", priority={"phone": "local"}))
    m.ownership.edit_contact(cid, email="l@x.example", phone="0400 000 777")
    pull(m, "r@x.example", phone="0400 000 999")
    row = m.store.contacts.row(cid)
    assert row is not None
    assert row["email"] == "r@x.example"  # unlisted: the source
    assert row["phone"] == "0400 000 777"  # ... phone goes out only: local wins anyway
    assert row["phone_e164"] == "+61400000777"


def test_conflict_review_becomes_a_review_item_with_three_values(
        synced: tuple[Mirror, int]) -> None:
    m, cid = synced
    m.ownership.set_sync_policy("xpm", policy("review"))
    m.ownership.edit_contact(cid, email="l@x.example")
    pull(m, "r@x.example")
    row = m.store.contacts.row(cid)
    assert row is not None and row["email"] == "l@x.example"
    items = [i for i in m.review.items() if i.kind == "conflict"]
    assert len(items) == 1
    assert items[0].explanation == {"field": "email", "base": "john@x.example",
                                       "local": "l@x.example", "remote": "r@x.example"}
    assert [e.status for e in m.store.outbox.entries()] == ["superseded"]  # held for review


# ---------------------------------------------------------------- push (folder writer)


def folder_cfg(tmp_path: Path, push_new: str = "referenced", **conflicts: str) -> SourceConfig:
    cfg = parse_config({"sources": {"xpm": {
        "kind": "folder", "outbox": str(tmp_path / "out"), "push_new": push_new,
        "mapping": {"Client ID": "external_id", "Email Address": "email"},
        "directions": {"email": "both", "phone": "out"},
        "conflicts": {"default": "source_wins", **conflicts}}}}).sources["xpm"]
    return cfg


def read_outbox(tmp_path: Path) -> list[list[str]]:
    rows = []
    for p in sorted((tmp_path / "out").glob("*.csv")):
        assert p.stat().st_mode & 0o777 == 0o600
        rows.append(p.read_text(encoding="utf-8").splitlines())
    return rows


def test_push_writes_the_change_in_the_sources_headings_and_confirms(
        synced: tuple[Mirror, int], tmp_path: Path) -> None:
    m, cid = synced
    cfg = folder_cfg(tmp_path)
    m.ownership.edit_contact(cid, email="l@x.example")
    dry = m.push(cfg, dry_run=True)
    assert dry.counts == {"would_push": 1} and not (tmp_path / "out").exists()
    report = m.push(cfg)
    assert report.counts["confirmed"] == 1
    assert read_outbox(tmp_path) == [["Client ID,Email Address", "A,l@x.example"]]
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o700
    [e] = m.store.outbox.entries()
    assert e.status == "confirmed" and e.attempts == 1
    # Delivered, not applied: the base stays until the source sends the value back.
    assert m.store.outbox.bases([cid]) == {cid: {"email": "john@x.example"}}
    pull(m, "john@x.example", phone="0400 000 009")  # a pull before the import ...
    row = m.store.contacts.row(cid)
    assert row is not None and row["email"] == "l@x.example"  # ... is no remote change
    # (phone goes out only: the source's change is put back)
    assert row["phone"] == "0400 000 001"
    # Delivered but not at the source yet: delivered again (the target applies
    # its files in order, so a second copy changes nothing).
    assert m.store.outbox.entries()[1].fields == {"phone": ("0400 000 009", "0400 000 001"),
                                                  "email": ("john@x.example", "l@x.example")}
    assert two_way_feed(m) == ["phone goes out only: the source's change is overwritten with "
                               "the local value"]
    assert m.push(cfg).counts["confirmed"] == 1
    seq = m.changes()[-1].seq
    # The echo: the source sends the pushed value back. Nothing to take, nothing to push.
    pull(m, "l@x.example", phone="0400 000 001")
    assert m.store.outbox.bases([cid]) == {}
    assert [c for c in m.changes(since=seq) if c.op == "update"] == []
    assert m.push(cfg).counts["confirmed"] == 0
    assert len(read_outbox(tmp_path)) == 2 and len(m.store.outbox.entries()) == 2


def test_a_resent_entry_is_not_written_twice(synced: tuple[Mirror, int], tmp_path: Path) -> None:
    """A crash after the file was written and before the confirmation: the entry
    is still `sent`; the next push sends it again under the same key and the
    writer finds its file: applied once."""
    m, cid = synced
    cfg = folder_cfg(tmp_path)
    m.ownership.edit_contact(cid, email="l@x.example")
    from contactsync_agent.sources.outfile import FolderWriter

    class CrashAfterWrite(FolderWriter):
        def push(self, changes: Sequence[OutboundChange]) -> list[PushResult]:
            super().push(changes)
            raise SystemExit("killed")

    with pytest.raises(SystemExit):
        m.push(cfg, writer=CrashAfterWrite(cfg))
    assert [e.status for e in m.store.outbox.entries()] == ["sent"]
    assert m.push(cfg).counts["confirmed"] == 1
    assert len(read_outbox(tmp_path)) == 1
    assert [e.attempts for e in m.store.outbox.entries()] == [2]


def test_a_refusal_becomes_a_reconciliation_activity(synced: tuple[Mirror, int],
                                                     tmp_path: Path) -> None:
    m, cid = synced
    m.ownership.edit_contact(cid, email="l@x.example", phone="0400 000 002")

    class Refuses:
        def push(self, changes: Sequence[OutboundChange]) -> list[PushResult]:
            return [PushResult(c.entry_id, "rejected", reason="email domain not allowed",
                               fields=("email",)) for c in changes]

        def close(self) -> None:
            pass

    report = m.push(folder_cfg(tmp_path), writer=Refuses())
    assert report.counts["rejected"] == 1
    [a] = [a for a in m.activities() if a.kind == "push_rejected"]
    assert "email not applied" in a.reason and "email domain not allowed" in a.reason
    assert "l@x.example" not in a.reason
    assert m.store.contacts.row(cid)["email"] == "l@x.example"  # type: ignore[index]
    assert [e.status for e in m.store.outbox.entries()] == ["rejected"]
    assert m.push(folder_cfg(tmp_path), writer=Refuses()).counts["rejected"] == 0  # not retried


class Creates:
    """A target that gives each new contact an id."""

    def __init__(self) -> None:
        self.seen: list[OutboundChange] = []

    def push(self, changes: Sequence[OutboundChange]) -> list[PushResult]:
        self.seen.extend(changes)
        return [PushResult(c.entry_id, "confirmed", external_id=f"NEW-{c.entry_id}")
                for c in changes]

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("push_new", "pushed"), [("referenced", {"Used"}),
                                                   ("all", {"Used", "Idle"}),
                                                   ("none", set())])
def test_new_local_contacts_go_out_under_the_policy_and_are_linked(
        mirror: Mirror, tmp_path: Path, push_new: str, pushed: set[str]) -> None:
    used = mirror.add_contact(given_name="Used", email="u@x.example")
    idle = mirror.add_contact(given_name="Idle")
    mirror.add_reference(used, "case:1")
    target = Creates()
    mirror.push(folder_cfg(tmp_path, push_new=push_new), writer=target)
    assert {c.fields["given_name"][1] for c in target.seen} == pushed
    assert all(c.kind == "create" and c.external_id is None for c in target.seen)
    for cid, name in ((used, "Used"), (idle, "Idle")):
        row = mirror.store.contacts.row(cid)
        assert row is not None
        if name in pushed:
            assert row["record_type"] == "sync" and row["source"] == "xpm"
            assert str(row["external_id"]).startswith("NEW-")
            [c] = [c for c in mirror.changes() if c.reason_code == "linked_by_push"
                   and c.contact_id == cid]
            assert "returned" in c.reason
        else:
            assert row["record_type"] == "manual" and row["external_id"] is None
    # Pushed once only.
    again = Creates()
    mirror.push(folder_cfg(tmp_path, push_new=push_new), writer=again)
    assert again.seen == []


def test_cli_push_and_outbox_list(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[agent]\ndatabase = "{db}"\n[sources.xpm]\nkind = "folder"\n'
                   f'outbox = "{tmp_path / "out"}"\n'
                   '[sources.xpm.directions]\nemail = "both"\n', encoding="utf-8")
    with Mirror.open(db) as m:
        m.sync("xpm", [rec("A", "John Smith", email="john@x.example")])
        m.ownership.set_sync_policy("xpm", load_config(cfg).sources["xpm"].sync_policy())
        m.ownership.edit_contact(m.contacts()[0].id, email="j@new.example")
    _load_extensions()
    run = CliRunner()
    r = run.invoke(cli, ["--config", str(cfg), "outbox", "list", "--json"])
    assert r.exit_code == 0, r.output
    [row] = json.loads(r.output)
    assert row["status"] == "pending" and row["fields"] == ["email"] and row["age_seconds"] >= 0
    r = run.invoke(cli, ["--config", str(cfg), "push", "--source", "xpm", "--dry-run", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["counts"] == {"would_push": 1}
    # The text form lists what would go: the entry, its contact, its fields.
    r = run.invoke(cli, ["--config", str(cfg), "push", "--source", "xpm", "--dry-run"])
    assert r.exit_code == 0 and "would push 1" in r.output, r.output
    assert f"entry {row['id']} (contact {row['contact_id']}, pending): email" in r.output
    r = run.invoke(cli, ["--config", str(cfg), "push", "--source", "xpm", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["counts"]["confirmed"] == 1
    assert json.loads(run.invoke(cli, ["--config", str(cfg), "outbox", "list",
                                       "--json"]).output) == []
    r = run.invoke(cli, ["--config", str(cfg), "push", "--source", "nope"])
    assert r.exit_code == 2 and "no source 'nope'" in r.output


# ---------------------------------------------------------------- status


def test_status_shows_the_outbox_and_degrades_past_its_age(synced: tuple[Mirror, int]) -> None:
    from datetime import UTC, datetime, timedelta

    from contactsync_agent import status
    from contactsync_agent.config import AgentConfig

    m, cid = synced
    data = status.collect(m.store)
    assert data["outbox"] == {"depth": 0, "pending": 0, "sent": 0, "oldest_pending_age": None,
                              "conflicts_open": 0, "health": "healthy", "why": ""}
    m.ownership.set_sync_policy("xpm", policy("review"))
    m.ownership.edit_contact(cid, email="l@x.example", phone="0400 000 002")
    pull(m, "r@x.example")  # email: a conflict for review; phone still pending
    cfg = AgentConfig()
    later = datetime.now(UTC) + timedelta(seconds=cfg.daemon.outbox_max_age + 60)
    data = status.collect(m.store, cfg, now=later)
    o = data["outbox"]
    assert (o["depth"], o["pending"], o["conflicts_open"]) == (1, 1, 1)
    assert o["oldest_pending_age"] > cfg.daemon.outbox_max_age
    assert o["health"] == "degraded" and "outbox list" in o["why"]
    assert status.collect(m.store, cfg)["outbox"]["health"] == "healthy"


def test_own_write_coming_back_after_a_crash_is_an_echo_not_a_conflict(
        synced: tuple[Mirror, int], tmp_path: Path) -> None:
    """Sent (the target applied it) but never confirmed, then edited again
    locally: the pull bringing the sent value back must not count it as a
    remote change, or source_wins would throw the newer local edit away."""
    m, cid = synced
    cfg = folder_cfg(tmp_path)
    from contactsync_agent.sources.outfile import FolderWriter

    class CrashAfterWrite(FolderWriter):
        def push(self, changes: Sequence[OutboundChange]) -> list[PushResult]:
            super().push(changes)
            raise SystemExit("killed")

    m.ownership.edit_contact(cid, email="v1@x.example")
    with pytest.raises(SystemExit):
        m.push(cfg, writer=CrashAfterWrite(cfg))
    m.ownership.edit_contact(cid, email="v2@x.example")
    pull(m, "v1@x.example")  # the target imported v1
    assert m.store.contacts.row(cid)["email"] == "v2@x.example"  # type: ignore[index]
    assert two_way_feed(m) == []
    pending = [e for e in m.store.outbox.entries() if e.status == "pending"]
    assert [e.fields for e in pending] == [{"email": ("v1@x.example", "v2@x.example")}]
    m.push(cfg)
    names = sorted(p.name for p in (tmp_path / "out").glob("*.csv"))
    assert [(tmp_path / "out" / n).read_text().splitlines()[1] for n in names] == [
        "A,v1@x.example", "A,v2@x.example"]  # in the order to apply them


def test_a_delivered_value_imported_then_edited_again_is_no_conflict(
        synced: tuple[Mirror, int], tmp_path: Path) -> None:
    """Delivered (the folder writer's confirmation), imported by the target,
    then edited again locally: the pull bringing the delivered value back is
    the agent's own write, so the newer local edit is not a conflict (under
    source_wins it would be lost)."""
    m, cid = synced
    cfg = folder_cfg(tmp_path)
    m.ownership.edit_contact(cid, email="v1@x.example")
    assert m.push(cfg).counts["confirmed"] == 1
    m.ownership.edit_contact(cid, email="v2@x.example")
    pull(m, "v1@x.example")  # the target imported v1
    assert m.store.contacts.row(cid)["email"] == "v2@x.example"  # type: ignore[index]
    assert two_way_feed(m) == []
    [e] = [e for e in m.store.outbox.entries() if e.status == "pending"]
    assert e.fields == {"email": ("v1@x.example", "v2@x.example")}
    assert m.store.outbox.bases([cid]) == {cid: {"email": "v1@x.example"}}
