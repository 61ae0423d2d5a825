"""Issue 12, defects 4 to 9, through the real `contactsync` command: a mistyped
source, the truncated contact list, `dedupe`/`match` on real-world headings,
hostile bytes, `backup bk/`, and the smaller ones (source enable, slow-run
text, "" for empty text fields, a broken pipe, UTF-16 exports)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import config_text, env
from contactsync_agent import health
from contactsync_agent.mirror import Mirror

EXE = Path(sys.executable).with_name("contactsync")
CMD = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "contactsync_agent.cli"]
HEADER = "Client ID,First Name,Surname,Email Address,Mobile\n"


def run(*args: str, stdin: str | None = None, timeout: float = 60,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, env=env(),
                          input=stdin, timeout=timeout, check=False)


def export(path: Path, n: int, start: int = 0) -> Path:
    path.write_text(HEADER + "".join(
        f"X{i},Given{i},Family{i},person{i}@example.com,0412{i:06d}\n"
        for i in range(start, start + n)), encoding="utf-8")
    return path


def write_config(tmp: Path, **sources: dict[str, Any]) -> Path:
    cfg = tmp / "config.toml"
    cfg.write_text(config_text(tmp, sources=sources), encoding="utf-8")
    return cfg


# ---------------------------------------------------------------- defect 4


def test_sync_into_a_source_the_config_does_not_list_is_refused(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    cfg = write_config(tmp_path, xpm={"path": str(tmp_path / "in")})
    f = export(tmp_path / "export.csv", 5)
    r = run("--config", str(cfg), "sync", "-s", "xmp", str(f))
    assert r.returncode == 2, r.stderr
    assert "no source 'xmp' (sources: xpm); did you mean xpm?" in r.stderr
    assert "--force" in r.stderr and "Traceback" not in r.stderr
    # Nothing was written: no contact, no run.
    db = tmp_path / "mirror.db"
    if db.exists():
        with Mirror.open(db, readonly=True) as m:
            assert m.count_contacts() == 0 and m.runs() == []
    ok = run("--config", str(cfg), "sync", "-s", "xpm", str(f), "--json")
    assert ok.returncode == 0, ok.stderr
    forced = run("--config", str(cfg), "sync", "-s", "xmp", str(f), "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    with Mirror.open(db, readonly=True) as m:
        assert [(r["source"], r["forced"]) for r in m.runs()] == [("xmp", 1), ("xpm", 0)]


def test_sync_into_a_disabled_source_says_how_to_enable_it(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    cfg = write_config(tmp_path, xpm={"path": str(tmp_path / "in"), "enabled": False})
    f = export(tmp_path / "export.csv", 3)
    r = run("--config", str(cfg), "sync", "-s", "xpm", str(f))
    assert r.returncode == 2
    assert "disabled" in r.stderr and "contactsync source enable xpm" in r.stderr
    forced = run("--config", str(cfg), "sync", "-s", "xpm", str(f), "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["counts"]["created"] == 3


def test_without_a_config_file_any_source_name_is_taken(tmp_path: Path) -> None:
    f = export(tmp_path / "export.csv", 2)
    r = run("--db", str(tmp_path / "m.db"), "sync", "-s", "oneoff", str(f), "--json")
    assert r.returncode == 0, r.stderr
    with Mirror.open(tmp_path / "m.db", readonly=True) as m:
        assert m.runs()[0]["forced"] == 0 and m.count_contacts(source="oneoff") == 2


def test_the_check_is_an_api_too(tmp_path: Path) -> None:
    from contactsync_agent.config import load_config
    from contactsync_agent.errors import ConfigError

    (tmp_path / "in").mkdir()
    cfg = load_config(write_config(tmp_path, xpm={"path": str(tmp_path / "in")}))
    assert cfg.check_sync_target("xpm") is False
    assert cfg.check_sync_target("other", force=True) is True
    with pytest.raises(ConfigError, match="did you mean xpm"):
        cfg.check_sync_target("xpn")


# ---------------------------------------------------------------- defect 5


def _mirror_with(db: Path, n: int) -> None:
    with Mirror.open(db) as m:
        m.sync("xpm", ({"external_id": f"X{i}", "given_name": f"G{i}", "family_name": "F",
                        "email": f"p{i}@example.com"} for i in range(n)))


def test_contacts_list_json_is_the_whole_result_set(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    _mirror_with(db, 440)
    r = run("--db", str(db), "contacts", "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 440 and [c["id"] for c in rows] == sorted(c["id"] for c in rows)
    nd = run("--db", str(db), "contacts", "list", "--ndjson")
    lines = nd.stdout.splitlines()
    assert len(lines) == 440 and json.loads(lines[-1])["external_id"] == "X439"
    limited = run("--db", str(db), "contacts", "list", "--json", "--limit", "7", "--offset", "2")
    assert [c["external_id"] for c in json.loads(limited.stdout)] == [f"X{i}" for i in range(2, 9)]
    empty = run("--db", str(db), "contacts", "list", "--json", "--type", "manual")
    assert json.loads(empty.stdout) == []
    # In a pipe it is TSV, and like --json the whole result set (a stranger's
    # `contacts list | wc -l` gave 51 of 200,000 lines, the note on stderr).
    tsv = run("--db", str(db), "contacts", "list")
    lines = tsv.stdout.splitlines()
    assert len(lines) == 441 and lines[-1].split("\t")[-1] == "X439", lines[-1]
    assert tsv.stderr == ""
    csv_out = run("--db", str(db), "contacts", "list", "--format", "csv", "--limit", "3")
    assert len(csv_out.stdout.splitlines()) == 4
    # The table (a terminal's) shows a page and says so.
    table = run("--db", str(db), "contacts", "list", "--format", "table")
    assert "50 of 440 shown, --limit to see more" in table.stdout


def test_contacts_list_json_streams_in_bounded_memory(tmp_path: Path) -> None:
    # The child reports its own peak RSS (VmHWM): wait4's would include this
    # process's memory, inherited at fork.
    from test_hostile import run_cli

    small, big = tmp_path / "small.db", tmp_path / "big.db"
    _mirror_with(small, 1_000)
    _mirror_with(big, 60_000)
    for flag in ("--json", "--ndjson", "--format=tsv"):
        a = run_cli("--db", str(small), "contacts", "list", flag)
        b = run_cli("--db", str(big), "contacts", "list", flag)
        assert a.code == 0 and b.code == 0, b.stderr
        assert b.stdout.count("@example.com") == 60_000
        # Holding 60,000 contacts as objects costs about 100 MB more; streaming
        # costs SQLite's page cache and one batch.
        assert b.maxrss - a.maxrss < 20 << 20, (flag, a.maxrss, b.maxrss)


# ---------------------------------------------------------------- defect 6

PEOPLE = [("Jonathan", "Smith", "jon.smith@example.com", "0400 000 001"),
          ("Jonathon", "Smith", "jon.smith@example.com", "+61 400 000 001"),
          ("Mary", "Jones", "mary@example.org", "0400 222 333"),
          ("Peter", "Brown", "pb@example.net", "0400 444 555"),
          *((f"Given{k}", f"Family{k}", f"g{k}@example.com", f"0411 {k:03d} {k * 7:03d}")
            for k in range(40))]


def _people_csv(path: Path, header: list[str], with_id: bool = False) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow((["Code"] if with_id else []) + header)
        for k, p in enumerate(PEOPLE):
            w.writerow(([f"C{k}"] if with_id else []) + list(p))
    return path


@pytest.mark.parametrize("header", [["First Name", "Surname", "Email", "Mobile"],
                                    ["first_name", "last_name", "E-mail Address", "Mobile"]])
def test_dedupe_without_an_id_column_reads_the_sync_headings(tmp_path: Path,
                                                             header: list[str]) -> None:
    f = _people_csv(tmp_path / "people.csv", header)
    r = run("dedupe", str(f), "--json")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    out = json.loads(r.stdout)
    [info] = out["inputs"]
    assert info["id_column"] is None and info["ids"] == "line numbers"
    assert info["columns"] == {header[0]: "given_name", header[1]: "family_name",
                               header[2]: "email", header[3]: "mobile"}
    assert out["pairs"] == 1
    pairs = tmp_path / "pairs.csv"
    r = run("dedupe", str(f), "--out", str(pairs))
    assert r.returncode == 0, r.stderr
    assert "no id column: line numbers are the ids" in r.stderr
    assert f"{header[1]} → family_name" in r.stderr
    with open(pairs, encoding="utf-8") as fh:
        [row] = list(csv.DictReader(fh))
    assert {row["left_id"], row["right_id"]} == {"2", "3"}  # the two Smiths' lines


def test_dedupe_and_match_take_id_threshold_and_the_source_mapping(tmp_path: Path) -> None:
    f = _people_csv(tmp_path / "people.csv", ["Vorname", "Nachname", "Mail", "Handy"],
                    with_id=True)
    cfg = tmp_path / "config.toml"
    (tmp_path / "in").mkdir()
    cfg.write_text(config_text(tmp_path, sources={"crm": {
        "path": str(tmp_path / "in"),
        "mapping": {"Vorname": "given_name", "Nachname": "family_name", "Mail": "email",
                    "Handy": "mobile"}}}), encoding="utf-8")
    # Without the mapping the German headings mean nothing but "Mail" (a
    # built-in heading); a shared e-mail alone is an obvious duplicate in a
    # 44-row file since issue 16 (the reference population's m and prior).
    plain = json.loads(run("dedupe", str(f), "--id", "Code", "--json").stdout)
    assert plain["inputs"][0]["id_column"] == "Code"
    assert plain["inputs"][0]["columns"] == {"Mail": "email"}
    mapped = run("--config", str(cfg), "dedupe", str(f), "--source", "crm", "--id", "Code",
                 "--json")
    assert mapped.returncode == 0, mapped.stderr
    out = json.loads(mapped.stdout)
    assert out["pairs"] == 1
    assert out["inputs"][0]["columns"] == {"Vorname": "given_name", "Nachname": "family_name",
                                           "Mail": "email", "Handy": "mobile"}
    # (issue 16: on 44 rows a pair sharing name, e-mail and mobile now scores
    # above 0.999999, so the strictest threshold shows --threshold applies)
    strict = json.loads(run("--config", str(cfg), "dedupe", str(f), "-s", "crm", "--id",
                            "Code", "--threshold", "1", "--json").stdout)
    assert strict["pairs"] == 0
    missing = run("dedupe", str(f), "--id", "Nope")
    assert missing.returncode == 1 and "no column 'Nope'" in missing.stderr
    assert "Traceback" not in missing.stderr
    right = _people_csv(tmp_path / "right.csv", ["Given Name", "Family Name", "Email", "Cell"])
    linked = run("--config", str(cfg), "match", str(f), str(right), "-s", "crm", "--json")
    assert linked.returncode == 0, linked.stderr
    out = json.loads(linked.stdout)
    assert [i["columns"]["Cell"] for i in out["inputs"][1:]] == ["mobile"]
    assert out["pairs"] >= 4


# ---------------------------------------------------------------- defect 7


def test_control_characters_in_a_header_are_escaped_in_the_message(tmp_path: Path) -> None:
    # The header's cells are never quoted (they may be a person's data: issue 13,
    # defect 9); the file's name is, and an escape sequence in it is escaped.
    f = tmp_path / "evil\x1b[2J\x07.csv"
    f.write_bytes(b"Name\x1b[2J\x1b]0;owned\x07,Nul\x00Col\nx,y\n")
    r = run("--db", str(tmp_path / "m.db"), "sync", "-s", "xpm", str(f))
    assert r.returncode == 3
    assert "\x1b" not in r.stderr and "\x00" not in r.stderr and "\x07" not in r.stderr
    assert "evil\\x1b[2J\\x07.csv" in r.stderr
    assert "owned" not in r.stderr and "Nul" not in r.stderr
    assert "Traceback" not in r.stderr


def test_table_cells_and_log_lines_are_escaped(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        m.add_contact(name="Evil\x1b[31m [bold]Name", email="e@x.com")
    r = run("--db", str(db), "contacts", "list")
    assert "\x1b" not in r.stdout and "\\x1b[31m" in r.stdout
    assert "[bold]Name" in r.stdout  # shown literally, not read as markup
    shown = run("--db", str(db), "contacts", "show", "1")
    assert "\x1b" not in shown.stdout and "\\x1b" in shown.stdout
    import logging

    from contactsync_agent.safetext import EscapingFormatter, escape

    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "file %s\nFAKE LINE", ("a\x1bb",),
                            None)
    line = EscapingFormatter("%(levelname)s %(message)s").format(rec)
    assert line == "INFO file a\\x1bb\\nFAKE LINE"
    assert escape("Zoë 😀 — ok") == "Zoë 😀 — ok"
    assert escape("a\u202eb\x00") == "a\\u202eb\\x00"


# ---------------------------------------------------------------- defect 8


def test_backup_into_a_folder_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "m.db"
    _mirror_with(db, 3)
    monkeypatch.chdir(tmp_path)
    r = run("--db", str(db), "backup", "bk/")
    assert r.returncode == 1
    assert "bk/: no such folder" in r.stderr and not (tmp_path / "bk").exists()
    (tmp_path / "bk").mkdir()
    r = run("--db", str(db), "backup", "bk/", "--json")
    assert r.returncode == 0, r.stderr
    out = Path(json.loads(r.stdout)["path"])
    assert out.parent == tmp_path / "bk" and out.name.startswith("m-") and out.suffix == ".db"
    r = run("--db", str(db), "backup", "bk", "--json")  # an existing folder, no slash
    assert Path(json.loads(r.stdout)["path"]).parent == tmp_path / "bk"
    r = run("--db", str(db), "backup", "copy.db", "--json")  # a file name still works
    assert Path(json.loads(r.stdout)["path"]) == tmp_path / "copy.db"


# ---------------------------------------------------------------- defect 9


def test_source_enable_checks_the_folder(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, xpm={"path": str(tmp_path / "missing"), "enabled": False})
    before = cfg.read_text()
    r = run("--config", str(cfg), "source", "enable", "xpm")
    assert r.returncode == 2
    assert "missing does not exist" in r.stderr and "sources.xpm.path" in r.stderr
    assert cfg.read_text() == before
    (tmp_path / "missing").mkdir()
    assert run("--config", str(cfg), "source", "enable", "xpm").returncode == 0


def test_slow_run_text_shows_sub_second_durations() -> None:
    from datetime import UTC, datetime

    runs = [{"status": "ok", "error": None, "rejected": 0, "duration_ms": 850,
             "finished_at": None, "started_at": None}]
    h = health.evaluate(runs, now=datetime.now(UTC), max_duration=0.2)
    assert h.reasons == ("last run took 850 ms (over 200 ms)",)
    assert health.duration_text(2.345) == "2.3s"


def test_empty_text_fields_are_empty_strings_in_show_and_export(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        cid = m.add_contact(name="No Org", email="n@o.com")
    shown = json.loads(run("--db", str(db), "contacts", "show", str(cid), "--json").stdout)
    exported = json.loads(run("--db", str(db), "export", "--full", "--format",
                              "json").stdout)
    [row] = exported["contacts"]
    from contactsync_agent.mapping import FIELDS

    for f in FIELDS:
        assert shown[f] == row[f] and isinstance(shown[f], str), f
    assert shown["organisation"] == "" and shown["organisation_link"] is None
    assert (row["position"], row["organisation_ref"], row["location_ref"]) == ("", "", "")
    listed = json.loads(run("--db", str(db), "contacts", "list", "--json").stdout)
    assert listed[0]["organisation"] == ""


@pytest.mark.parametrize("args", [["contacts", "list", "--json"],
                                  ["contacts", "list", "--limit", "3000"],
                                  ["changes"], ["export", "--full"],
                                  ["contacts", "list", "--ndjson"]])
def test_a_closed_pipe_ends_quietly(tmp_path: Path, args: list[str]) -> None:
    db = tmp_path / "m.db"
    _mirror_with(db, 5_000)
    producer = subprocess.Popen([*CMD, "--db", str(db), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env())
    head = subprocess.run(["head", "-1"], stdin=producer.stdout, capture_output=True,
                          timeout=60, check=False)
    assert producer.stdout is not None and producer.stderr is not None
    producer.stdout.close()
    err = producer.stderr.read().decode()
    producer.stderr.close()
    assert producer.wait(timeout=60) == 0, err
    assert err == "" and head.stdout


def _utf16(text: str, byteorder: str) -> bytes:
    """As Excel's "Unicode Text" writes it: a BOM, then UTF-16 code units."""
    bom = b"\xff\xfe" if byteorder == "le" else b"\xfe\xff"
    return bom + text.encode(f"utf-16-{byteorder}")


@pytest.mark.parametrize("byteorder", ["le", "be"])
def test_utf16_exports_are_decoded(tmp_path: Path, byteorder: str) -> None:
    text = ("Client ID\tFirst Name\tSurname\tEmail Address\r\n"
            "K1\tZoë\tMüller-Łukasz\tzoe@example.com\r\n"
            "K2\t李\t王\tli@example.com\r\n")
    f = tmp_path / "unicode.txt"
    f.write_bytes(_utf16(text, byteorder))
    r = run("--db", str(tmp_path / "m.db"), "sync", "-s", "xpm", str(f), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["counts"]["created"] == 2
    with Mirror.open(tmp_path / "m.db", readonly=True) as m:
        got = {c.external_id: (c.given_name, c.family_name, c.extra) for c in m.contacts()}
    assert got == {"K1": ("Zoë", "Müller-Łukasz", {}), "K2": ("李", "王", {})}
    # dedupe reads it the same way (one reader)
    d = run("dedupe", str(f), "--json")
    assert d.returncode == 0, d.stderr
    assert json.loads(d.stdout)["inputs"][0]["encoding"] == f"utf-16{byteorder}"


def test_utf16_file_larger_than_a_chunk(tmp_path: Path) -> None:
    rows = "".join(f"K{i}\tJosé{i}\tÆbelø\tp{i}@example.com\r\n" for i in range(20_000))
    f = tmp_path / "big.txt"
    f.write_bytes(_utf16("Client ID\tFirst Name\tSurname\tEmail\r\n" + rows, "le"))
    with Mirror.open(tmp_path / "m.db") as m:
        report = m.sync_file("xpm", f, format="csv")
        assert report.counts["created"] == 20_000 and report.counts["rejected"] == 0
        last = m.store.conn.execute(
            "SELECT given_name, family_name FROM contacts WHERE external_id = 'K19999'").fetchone()
        assert last == ("José19999", "Æbelø")


def test_utf16_without_a_bom_says_so(tmp_path: Path) -> None:
    """Without a byte-order mark UTF-16 is bytes with a NUL between ASCII
    characters: the error says what the file looks like (a stranger got only
    "none with a heading known as the external id")."""
    f = tmp_path / "nobom.csv"
    f.write_bytes("Client ID,First Name\r\nK1,Ann\r\n".encode("utf-16-le"))
    db = tmp_path / "m.db"
    r = run("--db", str(db), "sync", "-s", "xpm", str(f))
    assert r.returncode == 3, r.stderr
    assert "looks like UTF-16 without a byte-order mark" in r.stderr, r.stderr
    assert str(f) in r.stderr and "line 1" in r.stderr


# ---------------------------------------------------------------- contacts ref


def test_contacts_ref_add_list_remove(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    _mirror_with(db, 2)
    assert json.loads(run("--db", str(db), "contacts", "ref", "list", "1", "--json").stdout) == []
    added = run("--db", str(db), "contacts", "ref", "add", "1", "case:42", "--json")
    assert added.returncode == 0, added.stderr
    assert [r["ref"] for r in json.loads(added.stdout)["references"]] == ["case:42"]
    run("--db", str(db), "contacts", "ref", "add", "1", "doc:7")
    listed = json.loads(run("--db", str(db), "contacts", "ref", "list", "1", "--json").stdout)
    assert sorted(r["ref"] for r in listed) == ["case:42", "doc:7"]
    # In use: a full snapshot without the contact unlinks it instead of deleting it.
    with Mirror.open(db) as m:
        report = m.sync("xpm", [{"external_id": "X1", "given_name": "G1", "family_name": "F",
                                 "email": "p1@example.com"}], allow_mass_delete=True)
        assert report.counts["unlinked"] == 1 and m.get(1).deleted_at is None
    gone = run("--db", str(db), "contacts", "ref", "remove", "1", "case:42", "--json")
    assert gone.returncode == 0
    assert [r["ref"] for r in json.loads(gone.stdout)["references"]] == ["doc:7"]
    again = run("--db", str(db), "contacts", "ref", "remove", "1", "case:42")
    assert again.returncode == 6 and "no reference 'case:42'" in again.stderr
    nobody = run("--db", str(db), "contacts", "ref", "list", "999")
    assert nobody.returncode == 6 and "no contact with id 999" in nobody.stderr
    with Mirror.open(db, readonly=True) as m:
        assert [r["ref"] for r in m.references(1)] == ["doc:7"]


@pytest.mark.parametrize("args", [["status"], ["contacts", "list"], ["status", "--json"]])
def test_a_pipe_closed_before_any_output_ends_quietly_with_exit_0(
        tmp_path: Path, args: list[str]) -> None:
    """`status | true`: the reader is gone before the first write. rich's own
    answer is exit 1, which a monitoring wrapper would read as "degraded"."""
    db = tmp_path / "m.db"
    _mirror_with(db, 10)
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([*CMD, "--db", str(db), *args], stdout=w, stderr=subprocess.PIPE,
                           env=env(), timeout=60, check=False)
    finally:
        os.close(w)
    assert p.returncode == 0, p.stderr
    assert p.stderr == b""


def test_changes_text_lists_fields_only_when_an_entry_has_some(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        m.sync("xpm", [{"external_id": "K1", "given_name": "Ann"},
                       {"external_id": "K2", "given_name": "Bob"}])
        m.sync("xpm", [{"external_id": "K1", "given_name": "Ann"}], allow_mass_delete=True)
    r = run("--db", str(db), "changes", "--since", "0")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].endswith("[external_id, given_name, record_type, source]"), lines
    assert lines[-1] == "#3 contact 2 delete: deleted: removed from the source", lines
