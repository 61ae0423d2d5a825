"""Issue 18, output at 80 columns and in pipes: `status`, `contacts list` and
`runs` rendered by a fixed-width console (no line over 80 columns, no value
cut, titles whole) and through a real pipe (plain tab-separated text, no box
drawing), `--format table|tsv|csv|json`, and summaries wrapped on word
boundaries."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import config_text, env
from contactsync_agent import cli_output as out
from contactsync_agent import status as status_mod
from contactsync_agent.config import load_config
from contactsync_agent.mirror import Mirror
from rich.cells import cell_len
from rich.console import Console

EXE = Path(sys.executable).with_name("contactsync")
CMD = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "contactsync_agent.cli"]
BOX = re.compile("[\u2500-\u257f]")  # rich's box-drawing characters

LONG_EMAILS = [
    "olivia.stephenson-hargreaves@accountingpractice.example.com.au",
    "bartholomew.q.featherstonehaugh@lawfirm-partners.example.org",
    "x@y.example",
]


def run(*args: str, extra_env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    """The real command, stdout and stderr through pipes (not a terminal)."""
    return subprocess.run([*CMD, *args], capture_output=True, text=True,
                          env={**env(), **(extra_env or {})}, timeout=120, check=False)


def width_80() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=80, color_system=None, legacy_windows=False), buf


def lines_of(text: str) -> list[str]:
    return text.rstrip("\n").split("\n")


def assert_fits(text: str, width: int = 80) -> None:
    too_long = [ln for ln in lines_of(text) if cell_len(ln) > width]
    assert not too_long, f"{len(too_long)} line(s) over {width} columns:\n" + "\n".join(too_long)


@pytest.fixture
def populated(tmp_path: Path) -> tuple[Path, Path]:
    """A config with three sources and a mirror with contacts and runs in them."""
    folders = {}
    for name in ("xpm", "practice_manager_legacy", "crm"):
        folders[name] = tmp_path / name
        folders[name].mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={
        "xpm": {"path": str(folders["xpm"])},
        "practice_manager_legacy": {"path": str(folders["practice_manager_legacy"])},
        "crm": {"path": str(folders["crm"]), "enabled": False},
    }), encoding="utf-8")
    db = tmp_path / "mirror.db"
    with Mirror.open(db) as m:
        m.sync("xpm", [{"id": f"A{i}", "name": f"Olivia Stephenson {i}",
                        "email": LONG_EMAILS[i % 3], "phone": "+61 412 345 678"}
                       for i in range(3)])
        m.sync("practice_manager_legacy", [{"id": "B1", "name": "Bart Featherstonehaugh",
                                            "email": LONG_EMAILS[1]}])
        m.add_contact(name="Manual Person", email="manual.person@example.com")
    return cfg, db


# ---------------------------------------------------------------- 80 columns


def test_status_fits_80_columns_with_every_title_whole(populated: tuple[Path, Path]) -> None:
    cfg, db = populated
    data = status_mod.report(db, load_config(cfg))
    con, buf = width_80()
    out.render_status(data, con)
    text = buf.getvalue()
    assert_fits(text)
    assert "…" not in text  # nothing cut: no title, no value
    # At 80 columns the eight columns do not fit: one block per source, with
    # each value whole and labelled.
    for name in ("xpm", "practice_manager_legacy", "crm"):
        assert f"source {name}" in text
    assert "records (+new ~upd -del !rej): 3 (+3 ~0 -0 !0)" in text
    assert "disabled: not judged" in text
    # The same through the real command on an 80-column terminal's layout.
    r = run("--config", str(cfg), "status", "--format", "table", extra_env={"COLUMNS": "80"})
    assert r.returncode == 1, r.stderr  # degraded: sources enabled, the agent never started
    assert_fits(r.stdout)
    assert "…" not in r.stdout and "source practice_manager_legacy" in r.stdout
    # Wide enough, the same data is one table with all its titles.
    wide_buf = io.StringIO()
    out.render_status(data, Console(file=wide_buf, width=160, color_system=None))
    wide = wide_buf.getvalue()
    assert BOX.search(wide) and "next check" in wide and "source xpm" not in wide
    assert_fits(wide, 160)


def test_contacts_list_at_80_columns_never_cuts_an_email(populated: tuple[Path, Path]) -> None:
    _, db = populated
    r = run("--db", str(db), "contacts", "list", "--format", "table",
            extra_env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    assert_fits(r.stdout)
    assert "…" not in r.stdout
    for email in LONG_EMAILS:
        assert email in r.stdout, f"{email} cut or missing:\n{r.stdout}"
    # A 62-character e-mail leaves no room for a table: one block per contact.
    assert not BOX.search(r.stdout) and "  email:" in r.stdout
    # Wide, every column is there in one table.
    wide = run("--db", str(db), "contacts", "list", "--format", "table",
               extra_env={"COLUMNS": "200"})
    assert BOX.search(wide.stdout)
    assert "external id" in wide.stdout and "not shown" not in wide.stdout


def test_contacts_list_at_80_columns_leaves_out_columns_rather_than_cut(
        tmp_path: Path) -> None:
    db = tmp_path / "mirror.db"
    emails = [f"olivia.stephenson{i}@example.com.au" for i in range(3)]
    with Mirror.open(db) as m:
        m.sync("practice_manager", [{"id": f"CLIENT-{i:08d}", "name": f"Olivia Stephenson {i}",
                                     "email": e, "phone": "+61 412 345 678"}
                                    for i, e in enumerate(emails)])
    r = run("--db", str(db), "contacts", "list", "--format", "table",
            extra_env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    assert_fits(r.stdout)
    assert BOX.search(r.stdout) and "…" not in r.stdout
    for e in emails:
        assert e in r.stdout
    # The columns that did not fit are named, not silently lost.
    assert re.search(r"not shown at 80 columns: .*external id", r.stdout), r.stdout


def test_a_listing_too_wide_even_without_its_droppable_columns_becomes_blocks() -> None:
    listing = out.Listing([out.Column("id", "id"), out.Column("email", "email"),
                           out.Column("name", "name")])
    listing.add(id=1, email="a" * 50 + "@example.com", name="N" * 40)
    con, buf = width_80()
    out.print_table(listing, con)
    text = buf.getvalue()
    assert_fits(text)
    assert not BOX.search(text)
    assert "id 1" in lines_of(text)[0]
    # A value longer than the line is folded, never cut: it is all there.
    assert "a" * 50 + "@example.com" in text.replace("\n", "")


def test_summaries_wrap_on_word_boundaries() -> None:
    summary = ("run 12 (full) of xpm: 20,000 records in 1.42s: 19,000 created, 0 converted, "
               "900 updated, 100 unchanged, 0 deleted, 0 unlinked, 0 forced manual, "
               "0 external ignored, 3 to review, 0 activities, 0 rejected rows")
    assert len(summary) > 200
    wrapped = out.wrap(summary, 80)
    assert_fits(wrapped)
    assert len(lines_of(wrapped)) >= 3
    words = summary.split()
    assert wrapped.split() == words  # no word split or lost
    # In a pipe (no width asked for, stdout not a terminal) it stays one line.
    assert out.wrap(summary) == summary


# ---------------------------------------------------------------- pipes


def test_contacts_list_in_a_pipe_is_tsv_with_every_column(populated: tuple[Path, Path]) -> None:
    _, db = populated
    r = run("--db", str(db), "contacts", "list")
    assert r.returncode == 0, r.stderr
    assert not BOX.search(r.stdout)
    rows = list(csv.reader(io.StringIO(r.stdout), delimiter="\t"))
    assert rows[0] == ["id", "name", "email", "phone", "type", "forced", "source",
                       "external_id"]
    body = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert len(body) == 5
    assert {b["email"] for b in body} >= set(LONG_EMAILS)
    assert {b["external_id"] for b in body} == {"A0", "A1", "A2", "B1", ""}


def test_tsv_escapes_tabs_and_newlines_so_each_row_stays_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    listing = out.Listing([out.Column("id", "id"), out.Column("reason", "reason")])
    listing.add(id=1, reason="bad\tcell\nsecond line\x1b[2J")
    listing.add(id=2, reason="fine")
    out.print_listing(listing, "tsv")
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out), delimiter="\t"))
    assert rows == [["id", "reason"], ["1", "bad\\tcell\\nsecond line\\x1b[2J"],
                    ["2", "fine"]]


def test_status_and_runs_in_a_pipe_are_tsv(populated: tuple[Path, Path]) -> None:
    cfg, db = populated
    r = run("--config", str(cfg), "status")
    assert not BOX.search(r.stdout), r.stdout
    rows = list(csv.DictReader(io.StringIO(r.stdout), delimiter="\t"))
    by_name = {x["source"]: x for x in rows}
    assert set(by_name) == {"xpm", "practice_manager_legacy", "crm"}
    assert by_name["xpm"]["records"] == "3" and by_name["xpm"]["created"] == "3"
    assert by_name["crm"]["judged"] == "false" and by_name["xpm"]["judged"] == "true"
    runs = run("--db", str(db), "runs")
    assert runs.returncode == 0, runs.stderr
    assert not BOX.search(runs.stdout)
    table = list(csv.DictReader(io.StringIO(runs.stdout), delimiter="\t"))
    assert len(table) == 2
    for row in table:
        assert float(row["duration_s"]) >= 0  # runs show their duration


def test_format_csv_and_json_everywhere_a_table_is_printed(
        populated: tuple[Path, Path]) -> None:
    cfg, db = populated
    for args in (("contacts", "list"), ("runs",), ("outbox", "list")):
        c = run("--db", str(db), *args, "--format", "csv")
        assert c.returncode == 0, c.stderr
        header = next(csv.reader(io.StringIO(c.stdout)))
        assert len(header) >= 4, (args, c.stdout)
        j = run("--db", str(db), *args, "--format", "json")
        assert json.loads(j.stdout) == json.loads(run("--db", str(db), *args,
                                                      "--json").stdout)
    s = run("--config", str(cfg), "status", "--format", "json")
    assert json.loads(s.stdout)["contacts"]["total"] == 5
    listed = run("--config", str(cfg), "source", "list", "--format", "tsv")
    assert listed.returncode == 0, listed.stderr
    assert {r["source"] for r in csv.DictReader(io.StringIO(listed.stdout),
                                                delimiter="\t")} == {
        "xpm", "practice_manager_legacy", "crm"}


def test_runs_json_and_table_show_durations(populated: tuple[Path, Path]) -> None:
    _, db = populated
    data: list[dict[str, Any]] = json.loads(run("--db", str(db), "runs", "--json").stdout)
    assert all(isinstance(r["duration_s"], float) and r["duration_s"] >= 0 for r in data)
    t = run("--db", str(db), "runs", "--format", "table", extra_env={"COLUMNS": "80"})
    assert_fits(t.stdout)
    assert "took" in t.stdout and re.search(r"\d\.\d\ds", t.stdout)
    assert all(r["error"] is None for r in data)
    assert "error" not in t.stdout.splitlines()[0]  # a column no run fills is left out


def test_a_droppable_column_stays_when_one_row_fills_it() -> None:
    listing = out.Listing([out.Column("a", "a"), out.Column("e", "error", drop=1)])
    listing.add(a="1", e="")
    assert [c.title for c in out.fitting_columns(listing, 80) or []] == ["a"]
    listing.add(a="2", e="disk full")
    assert [c.title for c in out.fitting_columns(listing, 80) or []] == ["a", "error"]


# ---------------------------------------------------------------- conventions


def test_dash_capital_v_prints_the_version() -> None:
    r = run("-V")
    assert r.returncode == 0 and re.search(r"\d+\.\d+", r.stdout), r
    assert r.stdout == run("--version").stdout


def test_unknown_commands_get_a_did_you_mean(tmp_path: Path) -> None:
    r = run("contcts", "list")
    assert r.returncode == 2
    assert "did you mean 'contacts'?" in r.stderr
    sub = run("contacts", "lst")
    assert sub.returncode == 2 and "did you mean 'list'?" in sub.stderr
    gone = run("source-test", "xpm")
    assert gone.returncode == 2
    assert "`source-test` was removed: use `contactsync source test`" in gone.stderr


def test_unknown_config_keys_get_a_did_you_mean(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[agent]\nlog_levl = "DEBUG"\n', encoding="utf-8")
    r = run("--config", str(cfg), "source", "list")
    assert r.returncode != 0
    assert "agent.log_levl" in r.stderr and "did you mean 'log_level'?" in r.stderr
    cfg.write_text('[alerts]\nwebhok = "http://127.0.0.1:9/"\n', encoding="utf-8")
    r = run("--config", str(cfg), "source", "list")
    assert "did you mean 'webhook'?" in r.stderr, r.stderr


def test_match_config_is_named_apart_from_the_agent_config(tmp_path: Path) -> None:
    f = tmp_path / "people.csv"
    f.write_text("id,First Name,Surname,Email Address\n1,Ann,Lee,ann@x.example\n"
                 "2,Ann,Lee,ann@x.example\n3,Bob,Ng,bob@y.example\n", encoding="utf-8")
    from contactsync_agent.matching import MatchConfig

    mc = tmp_path / "match.json"
    mc.write_text(MatchConfig.contacts().to_json(), encoding="utf-8")
    new = run("dedupe", str(f), "--match-config", str(mc), "--json")
    assert new.returncode == 0, new.stderr
    assert "note:" not in new.stderr
    old = run("dedupe", str(f), "--config", str(mc), "--json")
    assert old.returncode == 0, old.stderr
    assert "`--config` after match/dedupe is now `--match-config`" in old.stderr
    assert json.loads(old.stdout)["pairs"] == json.loads(new.stdout)["pairs"]
    helptext = run("dedupe", "--help").stdout
    assert "--match-config" in helptext
    assert not re.search(r"^\s+--config\b", helptext, re.M)  # the old spelling is hidden


def test_permission_errors_name_the_directory_and_the_fix(tmp_path: Path) -> None:
    from contactsync_agent.cli import permission_hint

    e = PermissionError(13, "Permission denied", str(tmp_path / "data" / "mirror.db"))
    hint = permission_hint(e)
    assert str(tmp_path / "data" / "mirror.db") in hint
    assert f"directory {tmp_path / 'data'};" in hint
    assert f"chown {os.environ.get('USER') or ''}".strip() in hint and "--db" in hint
    existing = tmp_path / "export.csv"
    existing.write_text("x", encoding="utf-8")
    hint = permission_hint(PermissionError(13, "Permission denied", str(existing)))
    assert f"may not open {existing}" in hint and "chown" in hint


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write any directory")
def test_a_read_only_database_directory_is_named_with_the_fix(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    r = run("--db", str(locked / "mirror.db"), "contacts", "add", "--name", "X")
    assert r.returncode == 1
    assert f"directory {locked}" in r.stderr and "chown" in r.stderr


def test_quiet_and_verbose_are_accepted_on_every_command(tmp_path: Path) -> None:
    from contactsync_agent.cli import _load_extensions, cli

    _load_extensions()
    missing = []

    def walk(cmd: Any, path: str) -> None:
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        if not {"-q", "-v"} <= opts:
            missing.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(cli, "contactsync")
    assert missing == []
    db = tmp_path / "m.db"
    quiet = run("--db", str(db), "contacts", "add", "--name", "Q", "-q")
    assert quiet.returncode == 0, quiet.stderr
    r = run("-q", "--db", str(db), "contacts", "list", "-v", "--format", "tsv")
    assert r.returncode == 0, r.stderr


def test_the_commented_match_config_example_is_taken_by_dedupe(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "examples" / "match-config.toml"
    f = tmp_path / "people.csv"
    f.write_text("Client ID,First Name,Surname,Email Address,Mobile\n"
                 "1,Ann,Lee,ann@x.example,0412000001\n2,Anne,Lee,ann@x.example,0412000001\n"
                 "3,Bob,Ng,bob@y.example,0412000003\n", encoding="utf-8")
    r = run("dedupe", str(f), "--match-config", str(example), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["pairs"] == 1


@pytest.mark.parametrize(("flag", "config_level", "shown", "hidden"), [
    ("-vv", "WARNING", " DEBUG ", None),
    ("-q", "INFO", None, " INFO "),
])
def test_the_daemons_log_level_follows_quiet_and_verbose(
        tmp_path: Path, flag: str, config_level: str, shown: str | None,
        hidden: str | None) -> None:
    import signal

    from agent_helpers import CLI, Agent, poll

    (tmp_path / "in").mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sources={"xpm": {"path": str(tmp_path / "in")}},
                               agent={"log_level": config_level}), encoding="utf-8")
    a = Agent(tmp_path, cfg)
    err = (tmp_path / "err").open("wb")
    a.proc = subprocess.Popen([*CLI, "--config", str(cfg), "daemon", flag],
                              stdout=subprocess.DEVNULL, stderr=err, env=env())
    try:
        poll(lambda: a.meta("daemon.state") == "running", what="the agent to start")
        a.proc.send_signal(signal.SIGTERM)
        assert a.proc.wait(15) == 0
    finally:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait(10)
        err.close()
    log = a.log.read_text(encoding="utf-8")
    if shown:
        assert shown in log, log
    if hidden:
        assert hidden not in log, log


def test_help_lists_the_exit_codes_of_the_readme_table() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("**Exit codes**"):]
    codes = re.findall(r"^\| (\d+) \|", table, re.M)
    assert len(codes) >= 9
    helptext = run("--help", extra_env={"COLUMNS": "80"}).stdout
    assert "Exit codes" in helptext
    for code in codes:
        assert re.search(rf"^\s+{code} +\S", helptext, re.M), f"exit {code} not in --help"
    assert_fits(helptext)


def test_status_header_breaks_between_labelled_values_never_inside(tmp_path: Path) -> None:
    """A stranger saw `— health: ` at the end of one line and `healthy` on the next
    (and `outbox: 0, ` / `conflicts: 0`): a line breaks only between whole items."""
    # A path that fits a line but pushes what follows it past 80 columns.
    deep = tmp_path / ("d" * max(1, 70 - len(str(tmp_path))))
    deep.mkdir()
    db = deep / "m.db"
    with Mirror.open(db) as m:
        m.sync("s", [{"external_id": "1", "given_name": "Ann", "family_name": "Lee"}])
    data = status_mod.report(db)
    con, buf = width_80()
    out.render_status(data, con)
    text = buf.getvalue()
    assert_fits(text)
    lines = lines_of(text.split("\n\n")[0])  # the header, before the sources
    assert any("health: healthy" in ln for ln in lines), text
    assert any("outbox: 0, conflicts: 0" in ln for ln in lines), text
    assert not any(ln.rstrip().endswith(("health:", "—", "outbox: 0,")) for ln in lines), text


def test_contacts_show_lists_extra_columns_one_per_line(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        m.sync("s", [{"external_id": "1", "given_name": "Ann", "family_name": "Lee",
                      "Client Code": "C1", "Partner": "AB"}])
        cid = m.contacts()[0].id
    r = run("--db", str(db), "contacts", "show", str(cid))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(ln.strip() == "extra: Client Code: C1" for ln in lines), r.stdout
    assert any(ln.strip() == "Partner: AB" for ln in lines), r.stdout
    assert "{" not in r.stdout and "False" not in r.stdout, r.stdout
