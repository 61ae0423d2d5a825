"""`export --full` and `changes --since`: a full snapshot plus the increments
after its `last_seq` rebuild the next snapshot (the round trip a downstream
system relies on); CSV exports neutralise formula-like cells."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from contactsync_agent.cli import _load_extensions, cli
from contactsync_agent.mapping import FIELDS
from contactsync_agent.mirror import Mirror

MAP = {"Company ID": "organisation_ref", "Position": "position"}


def snapshot(m: Mirror) -> dict[str, Any]:
    buf = io.StringIO()
    result = m.export(buf, "json")
    data = json.loads(buf.getvalue())
    assert data["last_seq"] == result["last_seq"]
    return data


def replay(base: dict[str, Any], changes: list[Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """Applies feed entries to an export the way a downstream reader would."""
    state: dict[tuple[str, int], dict[str, Any]] = {}
    for c in base["contacts"]:
        state[("contact", c["id"])] = {f: c[f] for f in (*FIELDS, "extra")}
    for o in base["organisations"]:
        state[("organisation", o["id"])] = {"name": o["name"]}
    for ch in changes:
        key = (ch.entity_type, ch.entity_id)
        if ch.op == "delete" or ch.op == "purge":
            state.pop(key, None)
            continue
        row = state.setdefault(key, {})
        for f, (_, after) in ch.fields.items():
            if ch.entity_type == "contact" and f not in (*FIELDS, "extra"):
                continue
            if ch.entity_type == "organisation" and f != "name":
                continue
            row[f] = after
        if ch.entity_type == "contact":
            for f in FIELDS:
                row.setdefault(f, "")
            row.setdefault("extra", {})
    return {k: v for k, v in state.items() if k[0] in ("contact", "organisation")}


def as_state(data: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for c in data["contacts"]:
        out[("contact", c["id"])] = {f: c[f] for f in (*FIELDS, "extra")}
    for o in data["organisations"]:
        out[("organisation", o["id"])] = {"name": o["name"]}
    return out


def test_full_export_plus_changes_equals_next_export(mirror: Mirror) -> None:
    mirror.entities.sync_organisations("xpm", [{"ID": "O1", "Name": "Acme"},
                                               {"ID": "O2", "Name": "Bee"}])
    mirror.sync("xpm", [
        {"id": "A", "name": "Ann Lee", "email": "a@x.example", "Company ID": "O1",
         "Position": "CEO"},
        {"id": "B", "name": "Bob Lee", "email": "b@x.example", "Company ID": "O2"},
        {"id": "C", "name": "Cat Lee"},
    ], mapping=MAP)
    manual = mirror.add_contact(name="Walk In", email="w@x.example")
    first = snapshot(mirror)
    assert [c["position"] for c in first["contacts"]][:1] == ["CEO"]
    assert first["contacts"][0]["organisation_id"] == first["organisations"][0]["id"]

    # Increments: an organisation renamed, a contact changed, one deleted, one new,
    # a local edit.
    mirror.entities.sync_organisations("xpm", [{"ID": "O1", "Name": "Acme Ltd"},
                                               {"ID": "O2", "Name": "Bee"}])
    mirror.sync("xpm", [
        {"id": "A", "name": "Ann Lee", "email": "ann@x.example", "Company ID": "O1",
         "Position": "CEO"},
        {"id": "B", "name": "Bob Lee", "email": "b@x.example", "Company ID": "O2"},
        {"id": "D", "name": "Dee Lee"},
    ], mapping=MAP, allow_mass_delete=True)
    mirror.ownership.edit_contact(manual, phone="0400 555 555")
    second = snapshot(mirror)
    feed = mirror.changes(since=first["last_seq"])
    assert feed and all(c.seq > first["last_seq"] for c in feed)
    assert replay(first, feed) == as_state(second)
    assert second["organisations"][0]["name"] == "Acme Ltd"


def test_export_includes_customer_links_and_locations(mirror: Mirror) -> None:
    mirror.sync("erp", [{"id": "S", "name": "Sally"}])
    mirror.entities.sync_locations("erp", [{"ID": "L1", "Name": "HQ"}])
    mirror.entities.sync_customer_links("erp", [{"Contact ID": "S", "Customer ID": "5001",
                                                 "Bill To": "Y", "Ship To": "NA"}])
    data = snapshot(mirror)
    assert data["locations"][0]["name"] == "HQ"
    assert data["customer_links"] == [{
        "contact_id": data["contacts"][0]["id"], "customer": "5001", "customer_name": "",
        "bill_to": "Y", "sold_to": "N", "ship_to": "NA", "correspondence": "N"}]


def test_csv_export_neutralises_formulas(mirror: Mirror, tmp_path: Path,
                                         db_path: Path) -> None:
    mirror.sync("xpm", [{"id": "A", "name": "=HYPERLINK(\"http://evil\")",
                         "notes": "+cmd|' /C calc'!A0", "email": "a@x.example"}])
    mirror.entities.sync_customer_links("xpm", [{"Contact ID": "A", "Customer ID": "5001",
                                                 "Bill To": "Y"}])
    _load_extensions()
    out = tmp_path / "mirror.csv"
    r = CliRunner().invoke(cli, ["--db", str(db_path), "export", "--full", "--format", "csv",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["display_name"].startswith("'=")
    assert rows[0]["notes"].startswith("'+")
    assert rows[0]["customer_roles"] == "5001:bill_to"
    assert "last_seq" in r.output


def test_cli_json_export_to_stdout_with_or_without_the_old_full(mirror: Mirror,
                                                                 db_path: Path) -> None:
    mirror.sync("xpm", [{"id": "A", "name": "Ann"}])
    _load_extensions()
    r = CliRunner().invoke(cli, ["--db", str(db_path), "export"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["contacts"][0]["display_name"] == "Ann"
    assert data["last_seq"] == mirror.changes()[-1].seq
    # `--full` (redundant: an export is always whole) still works for old scripts,
    # and is no longer offered in --help.
    r = CliRunner().invoke(cli, ["--db", str(db_path), "export", "--full"])
    again = json.loads(r.output)
    assert r.exit_code == 0 and again["contacts"] == data["contacts"]
    assert again["last_seq"] == data["last_seq"]
    r = CliRunner().invoke(cli, ["export", "--help"])
    assert "--full" not in r.output
