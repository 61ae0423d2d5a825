"""vCard source: 3.0 and 4.0 cards into the mirror, quarantine of bad cards,
deletions in full mode, and `contactsync source test` on a vCard folder."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from contactsync_agent import _core
from contactsync_agent import cli as cli_mod
from contactsync_agent.config import SourceConfig
from contactsync_agent.errors import SafetyLimitError, SourceFormatError
from contactsync_agent.mirror import Mirror
from contactsync_agent.source_runs import sync_source, sync_vcard_file
from contactsync_agent.sources import VCardSource
from contactsync_agent.sources.vcard import read_cards

DATA = Path(__file__).parent / "data" / "vcard"


@pytest.fixture
def mirror(tmp_path: Path):
    m = Mirror.open(tmp_path / "mirror.db")
    yield m
    m.close()


def by_ext(m: Mirror) -> dict[str, object]:
    return {c.external_id: c for c in m.contacts()}


def card(uid: str, given: str, family: str, email: str) -> str:
    return (
        f"BEGIN:VCARD\r\nVERSION:4.0\r\nUID:{uid}\r\nFN:{given} {family}\r\n"
        f"N:{family};{given};;;\r\nEMAIL:{email}\r\nEND:VCARD\r\n"
    )


def test_vcard_3_fields_map_to_the_mirror(mirror: Mirror) -> None:
    report = sync_vcard_file(mirror, "cards", DATA / "contacts-v3.vcf")
    assert report.counts["created"] == 3
    assert report.counts["rejected"] == 0
    c = by_ext(mirror)
    mai = c["c-1001"]
    assert (mai.given_name, mai.family_name) == ("Thi Mai", "Nguyen")
    assert mai.display_name == "Ms Thi Mai Nguyen"
    assert mai.organisation == "Nguyen & Partners"
    assert mai.email == "mai@nguyen-partners.example"
    assert mai.phone == "(02) 9876 5432"
    assert mai.mobile == "0412 345 678"
    assert mai.mobile_e164 == "+61412345678"
    assert (mai.street, mai.city, mai.region, mai.postcode, mai.country) == (
        "12 George Street",
        "Sydney",
        "NSW",
        "2000",
        "Australia",
    )
    assert mai.date_of_birth == "1975-03-14"
    assert mai.notes == "Prefers e-mail, never calls before 10am.\nSee file 2019/44."
    # Unknown properties and the second e-mail are kept; export stamps are not.
    assert mai.extra["X-ABN"] == "51 824 753 556"
    assert mai.extra["TITLE"] == "Director"
    assert mai.extra["EMAIL.2"] == "mai.nguyen@home.example"
    assert mai.extra["TEL.fax"] == "(02) 9876 5400"
    assert mai.extra["ORG.unit"] == "Accounts"
    assert "REV" not in mai.extra and "PRODID" not in mai.extra and "VERSION" not in mai.extra
    pat = c["c-1002"]
    assert pat.email == "pat.obrien@mail.example"  # grouped item1.EMAIL (Apple style)
    assert pat.extra["ITEM1.X-ABLABEL"] == "Private"
    assert pat.notes.endswith("second physical line as RFC 6350 allows.")  # unfolded
    acme = c["c-1003"]
    assert acme.email == "office@acme.example"  # TYPE=PREF wins over file order
    assert acme.organisation == "Acme Holdings Pty Ltd"


def test_vcard_4_fields_map_to_the_mirror(mirror: Mirror) -> None:
    report = sync_vcard_file(mirror, "cards", DATA / "contacts-v4.vcf")
    assert report.counts["created"] == 2
    c = by_ext(mirror)
    zoe = c["urn:uuid:7f3a0c52-5e0e-4a43-9c1a-2f6e0f2a9b01"]
    assert (zoe.given_name, zoe.family_name) == ("Zoë", "Müller-Lüdenscheidt")
    assert zoe.email == "zoe@home.example"  # PREF=1 first
    assert zoe.extra["EMAIL.2"] == "zoe@work.example"
    assert zoe.mobile_e164 == "+61400111222"  # TYPE="voice,cell", tel: URI
    assert zoe.phone_e164 == "+61280001234"
    assert zoe.date_of_birth == "1990-02-20"  # basic format normalised
    assert zoe.city == "Bondi"
    assert zoe.extra["GENDER"] == "F"
    sam = c["urn:uuid:7f3a0c52-5e0e-4a43-9c1a-2f6e0f2a9b02"]
    assert sam.date_of_birth == "--0704"  # a birthday without a year stays as given


def test_unchanged_file_costs_no_write(mirror: Mirror) -> None:
    sync_vcard_file(mirror, "cards", DATA / "contacts-v3.vcf")
    seq = mirror.changes()[-1].seq
    again = sync_vcard_file(mirror, "cards", DATA / "contacts-v3.vcf")
    assert again.counts["unchanged"] == 3
    assert mirror.changes(since=seq) == []


def test_bad_cards_are_quarantined_with_file_and_card(
    mirror: Mirror, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    report = sync_vcard_file(mirror, "cards", DATA / "problems.vcf")
    assert report.counts["created"] == 2
    assert report.counts["rejected"] == 2
    assert sorted(by_ext(mirror)) == ["q-1", "q-4"]
    rows = mirror.quarantine(report.run_id)
    assert [r["file"] for r in rows] == [str(DATA / "problems.vcf")] * 2
    assert {r["reason"] for r in rows} == {"empty external id"}
    assert "No Uid Person" in rows[0]["raw"] and "vcard_line=9" in rows[0]["raw"]
    assert "Failed to parse line" in rows[1]["raw"] and "vcard_line=15" in rows[1]["raw"]
    text = caplog.text
    assert "problems.vcf, card 2 (line 9): has no UID" in text
    assert "problems.vcf, card 3 (line 15): cannot be parsed" in text


def test_full_mode_detects_deleted_cards(tmp_path: Path, mirror: Mirror) -> None:
    f = tmp_path / "export.vcf"
    people = [(f"u{i}", f"Given{i}", f"Family{i}", f"p{i}@example.com") for i in range(5)]
    f.write_text("".join(card(*p) for p in people), encoding="utf-8")
    sync_vcard_file(mirror, "cards", f)
    f.write_text("".join(card(*p) for p in people[:4]), encoding="utf-8")
    report = sync_vcard_file(mirror, "cards", f)
    assert report.counts["deleted"] == 1
    assert sorted(by_ext(mirror)) == ["u0", "u1", "u2", "u3"]
    # An almost empty export is refused, not applied.
    f.write_text(card(*people[0]), encoding="utf-8")
    with pytest.raises(SafetyLimitError):
        sync_vcard_file(mirror, "cards", f)
    assert len(mirror.contacts()) == 4


def test_not_a_vcard_file_is_refused(tmp_path: Path, mirror: Mirror) -> None:
    f = tmp_path / "x.vcf"
    f.write_text("name,email\nJane,jane@example.com\n", encoding="utf-8")
    with pytest.raises(SourceFormatError, match="no BEGIN:VCARD"):
        list(read_cards(f))
    with pytest.raises(SourceFormatError):
        sync_vcard_file(mirror, "cards", f)
    assert mirror.runs()[0]["status"] == "refused"


def test_mapping_override_from_config(mirror: Mirror) -> None:
    report = sync_vcard_file(
        mirror, "cards", DATA / "contacts-v3.vcf", mapping={"X-ABN": "notes", "NOTE": "extra"}
    )
    assert report.counts["created"] == 3
    mai = by_ext(mirror)["c-1001"]
    assert mai.notes == "51 824 753 556"
    assert mai.extra["NOTE"].startswith("Prefers e-mail")


def test_folder_source_takes_its_newest_vcard(tmp_path: Path, mirror: Mirror) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    shutil.copy(DATA / "contacts-v4.vcf", folder / "a.vcf")
    cfg = SourceConfig(name="cards", kind="folder", format="vcard", path=str(folder))
    connector = VCardSource(cfg)
    report = sync_source(mirror, cfg, connector=connector)
    assert report.counts["created"] == 2
    assert connector.fetched == 2
    assert mirror.runs()[0]["origin"] == str(folder / "a.vcf")


def test_source_test_command_shows_the_mapping(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    shutil.copy(DATA / "problems.vcf", folder / "cards.vcf")
    config = tmp_path / "config.toml"
    config.write_text(
        f'[sources.cards]\nkind = "folder"\nformat = "vcard"\npath = "{folder}"\n'
        '[sources.cards.mapping]\n"X-NOPE" = "notes"\n',
        encoding="utf-8",
    )
    cli_mod._load_extensions()
    db = tmp_path / "never.db"
    runner = CliRunner()
    result = runner.invoke(
        cli_mod.cli, ["--config", str(config), "--db", str(db), "source", "test", "cards",
                      "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    first = data["records"][0]
    assert first["external_id"] == "q-1"
    assert {
        "source_field": "EMAIL",
        "target": "email",
        "value": "good@example.com",
        "canonical": "good@example.com",
        "note": "",
    } in first["fields"]
    assert data["records"][1]["problem"].startswith("empty external id")
    assert any("X-NOPE" in w for w in data["warnings"])
    assert not db.exists()  # nothing written
    text = runner.invoke(cli_mod.cli, ["--config", str(config), "source", "test", "cards"])
    assert text.exit_code == 0, text.output
    assert "N.family" in text.output and "family_name" in text.output


@pytest.mark.parametrize("source_group_first", [True, False])
def test_source_test_joins_the_source_group_in_either_order(source_group_first: bool) -> None:
    import click
    from contactsync_agent import cli_sources

    root = click.Group("root")

    def add_source_group() -> None:
        @root.group("source")
        def source() -> None:
            """The daemon engineer's group."""

    if source_group_first:
        add_source_group()
        cli_sources.register(root)
    else:
        cli_sources.register(root)
        add_source_group()
    group = root.commands["source"]
    assert isinstance(group, click.Group)
    assert group.commands["test"] is cli_sources.source_test
    assert "source-test" not in root.commands  # removed: `source test` is the one spelling


def test_quarantine_and_cli_name_the_cards_first_line(tmp_path: Path) -> None:
    """A card without UID is quarantined at its BEGIN:VCARD line in the file (9 in
    problems.vcf), not at its position among the cards (2): through `Mirror.sync_file`
    and in the CLI's rejected-rows lines."""
    f = tmp_path / "v.vcf"
    shutil.copy(DATA / "problems.vcf", f)
    with Mirror.open(tmp_path / "api.db") as m:
        report = m.sync_file("cards", f)
        assert sorted(report.rejected) == [
            (9, "empty external id"), (15, "empty external id")
        ]
        rows = m.quarantine(report.run_id)
        assert sorted(r["line"] for r in rows) == [9, 15]
        # The reserved key is no field: not in the raw text, not kept anywhere.
        assert all("\0" not in r["raw"] for r in rows)
        assert all(_core.LINE_KEY not in c.extra for c in m.contacts())
    db = tmp_path / "cli.db"
    result = CliRunner().invoke(cli_mod.cli, ["--db", str(db), "sync", "-s", "cards", str(f)])
    assert result.exit_code == 0, result.output
    assert "v.vcf, line 9: empty external id" in result.stderr
    assert "v.vcf, line 15: empty external id" in result.stderr
    assert "line 2:" not in result.stderr and "line 3:" not in result.stderr
    out = CliRunner().invoke(cli_mod.cli, ["--db", str(db), "quarantine"])
    assert ", line 9: empty external id" in out.output
    assert ", line 2:" not in out.output


def test_a_vcard_folder_source_runs_through_the_one_file_path(tmp_path: Path) -> None:
    """The agent's vCard files go where `sync_file` sends a .vcf (one vCard dispatch):
    cards synced, and an empty card file refused as every empty export is, by
    `pull_source` (the agent's own file handling, once)."""
    from agent_helpers import config_text
    from contactsync_agent.config import load_config
    from contactsync_agent.runner import pull_source

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={"cards": {
        "path": str(inbox), "pattern": "*.vcf", "format": "vcard", "settle_seconds": 30}}))
    (inbox / "a.vcf").write_text(card("u1", "Ann", "Lee", "ann@example.com")
                                 + card("u2", "Bo", "Ng", "bo@example.com"))
    os.utime(inbox / "a.vcf", (1_000_000, 1_000_000))  # the older file goes first
    (inbox / "empty.vcf").write_text("\r\n")
    with Mirror.open(tmp_path / "mirror.db") as m:
        report = pull_source(m, load_config(cfg), "cards")
        got = {f.file: (f.status, f.moved_to) for f in report.files}
        assert got == {"a.vcf": ("ok", "processed"), "empty.vcf": ("refused", "failed")}
        first, empty = report.files
        assert first.report is not None and first.report.counts["created"] == 2
        assert empty.report is not None and "the file is empty" in (empty.report.error or "")
        assert sorted(by_ext(m)) == ["u1", "u2"]  # the empty file deleted nothing
