"""Every table of shared/spec/mirror-rules.md, through the Python API and the CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from contactsync_agent.mirror import Mirror

from tests.spec_tables import (
    EX1_EXISTING,
    EX1_INCOMING,
    EX1_RESULT,
    EX2_INCOMING,
    EX2_RESULT,
)


def seed_example1(m: Mirror) -> None:
    for row in EX1_EXISTING:
        source = "xpm" if row["ext"] else ("bgl" if row["type"] == "external" else None)
        cid = m.add_contact(name=row["name"], email=row["email"], phone=row["phone"],
                            record_type=row["type"], source=source, external_id=row["ext"],
                            forced_manual=row["forced"])
        assert cid == row["id"]


def seed_example2(m: Mirror) -> None:
    """A mirror holding exactly contacts 1, 4 and 5 with Example 1's result values."""
    for cid, name, email, phone, rtype, forced, ext, _ in EX1_RESULT[:5]:
        new = m.add_contact(name=name, email=email, phone=phone, record_type=rtype,
                            source="xpm" if ext else None, external_id=ext,
                            forced_manual=forced)
        assert new == cid
    # It holds exactly 1, 4 and 5: ids 2 and 3 existed once and stay retired.
    m.store.conn.execute("DELETE FROM contacts WHERE id IN (2, 3)")


def check_result(m: Mirror, report_reason: dict[int, str], expected: list[tuple]) -> None:
    for cid, name, email, phone, rtype, forced, ext, reason in expected:
        c = m.get(cid)
        assert (c.name, c.email, c.phone, c.record_type, c.forced_manual, c.external_id) == (
            name, email, phone, rtype, forced, ext), f"contact {cid}"
        assert report_reason.get(cid) == reason, f"reason of contact {cid}"


def test_example1_first_connection(mirror: Mirror) -> None:
    seed_example1(mirror)
    report = mirror.sync("xpm", EX1_INCOMING, mode="full")
    reasons = {d.contact_id: d.reason for d in report.decisions if d.contact_id is not None}
    check_result(mirror, reasons, EX1_RESULT)
    assert len(mirror.contacts()) == 7
    assert report.counts["created"] == 2
    assert report.counts["converted"] == 2  # John (identity) and Leila (external id)
    assert report.counts["skipped_forced_manual"] == 1
    assert report.counts["ignored_external"] == 1
    # Harry's source values could not be applied: a reconciliation activity says which.
    [act] = mirror.activities()
    assert act.contact_id == 5 and act.kind == "forced_manual"
    assert act.fields["email"] == {"current": "harry_manual@smith.com",
                                   "incoming": "harry@smith.com"}
    assert act.fields["phone"] == {"current": "", "incoming": "0400 000 003"}


def test_example2_ongoing_sync(mirror: Mirror) -> None:
    seed_example2(mirror)
    report = mirror.sync("xpm", EX2_INCOMING, mode="full")
    reasons = {d.contact_id: d.reason for d in report.decisions if d.contact_id is not None}
    check_result(mirror, reasons, EX2_RESULT)
    assert [c.id for c in mirror.contacts()] == [1, 4, 5, 6]
    assert report.counts["updated"] == 1 and report.counts["created"] == 1


def test_example1_then_example2_in_sequence(mirror: Mirror) -> None:
    """The same examples as one continuing mirror: ids keep counting, never reused."""
    seed_example1(mirror)
    mirror.sync("xpm", EX1_INCOMING, mode="full")
    report = mirror.sync("xpm", EX2_INCOMING, mode="full", allow_mass_delete=True)
    created = [d for d in report.decisions if d.action == "create"]
    assert [d.contact_id for d in created] == [8]  # Cleo: ids 6 and 7 are taken
    assert mirror.get(4).phone == "0400 000 012"
    # B and C vanished from a full snapshot: soft-deleted, ids retired.
    assert {c.id for c in mirror.contacts(include_deleted=True) if c.deleted_at} == {6, 7}


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["external_id", "name", "email", "phone"])
        w.writeheader()
        w.writerows(rows)


def _cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "contactsync_agent.cli", "--db", str(db), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.mark.parametrize("example", [1, 2])
def test_examples_end_to_end_through_the_cli(tmp_path: Path, example: int) -> None:
    db = tmp_path / "mirror.db"
    with Mirror.open(db) as m:
        (seed_example1 if example == 1 else seed_example2)(m)
    export = tmp_path / "export.csv"
    _write_csv(export, EX1_INCOMING if example == 1 else EX2_INCOMING)
    run = _cli(db, "sync", "--source", "xpm", str(export), "--mode", "full", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    reasons = {d["contact_id"]: d["reason"] for d in report["decisions"] if d["contact_id"]}
    listed = _cli(db, "contacts", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    by_id = {c["id"]: c for c in json.loads(listed.stdout)}
    for cid, name, email, phone, rtype, forced, ext, reason in (
        EX1_RESULT if example == 1 else EX2_RESULT
    ):
        c = by_id[cid]
        assert (c["name"], c["email"], c["phone"], c["record_type"], c["forced_manual"],
                c["external_id"]) == (name, email, phone, rtype, forced, ext)
        assert reasons[cid] == reason


def test_the_repository_copy_of_the_spec_is_the_contract() -> None:
    """README links docs/spec/mirror-rules.md so that a clone has the contract;
    where the product owner's copy sits beside the repository, they are equal."""
    root = Path(__file__).resolve().parent.parent
    ours = root / "docs" / "spec" / "mirror-rules.md"
    assert ours.is_file()
    theirs = root.parent / "shared" / "spec" / "mirror-rules.md"
    if not theirs.is_file():
        pytest.skip("the product owner's spec is not beside this clone")
    assert ours.read_bytes() == theirs.read_bytes(), "docs/spec is stale: copy it again"
