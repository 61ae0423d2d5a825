"""Contact–customer links with roles and the access check, over the B2B example
of seed 004: five contacts, three customers, bill-to / sold-to / ship-to /
correspondence flags (NA: the customer is not of that type)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from contactsync_agent.cli import _load_extensions, cli
from contactsync_agent.mirror import Mirror

PEOPLE = [{"id": p, "name": n} for p, n in (
    ("SALLY", "Sally AP"), ("ED", "Ed AP"), ("TIM", "Tim PO"), ("BRIAN", "Brian PO"),
    ("MARY", "Mary Manager"))]
# Seed 004's contact/customer table, as the source would export it.
LINKS = [
    ("SALLY", "5001", "Y", "N", "NA", "Y"),
    ("SALLY", "6001", "Y", "N", "N", "Y"),
    ("ED", "7001", "Y", "NA", "N", "Y"),
    ("TIM", "6001", "N", "Y", "N", "N"),
    ("BRIAN", "5001", "N", "Y", "NA", "N"),
    ("MARY", "5001", "N", "Y", "NA", "N"),
    ("MARY", "6001", "Y", "Y", "N", "N"),
]


def link_records(links=LINKS):
    return [{"Contact ID": c, "Customer ID": cu, "Bill To": b, "Sold To": s, "Ship To": sh,
             "Correspondence": co} for c, cu, b, s, sh, co in links]


@pytest.fixture
def b2b(mirror: Mirror) -> tuple[Mirror, dict[str, int]]:
    mirror.sync("erp", PEOPLE)
    mirror.entities.sync_customer_links("erp", link_records())
    ids = {c.external_id: c.id for c in mirror.contacts()}
    return mirror, ids


@pytest.mark.parametrize(("who", "customer", "role", "allowed", "reason"), [
    ("SALLY", "5001", "bill_to", True, "allowed: contact {id} may act for customer 5001 as "
                                       "bill-to"),
    ("SALLY", "6001", "bill_to", True, "allowed"),
    ("SALLY", "7001", "bill_to", False, "denied: contact {id} is not assigned to customer 7001"),
    ("SALLY", "5001", "sold_to", False, "denied: contact {id} is assigned to customer 5001, but "
                                        "not for sold-to"),
    ("SALLY", "5001", "ship_to", False, "denied: customer 5001 is not a ship-to customer"),
    ("SALLY", "6001", "correspondence", True, "allowed"),
    ("ED", "7001", "bill_to", True, "allowed"),
    ("ED", "7001", "sold_to", False, "denied: customer 7001 is not a sold-to customer"),
    ("ED", "7001", "ship_to", False, "but not for ship-to"),
    ("TIM", "6001", "sold_to", True, "allowed"),
    ("TIM", "6001", "bill_to", False, "but not for bill-to"),
    ("TIM", "5001", "sold_to", False, "not assigned to customer 5001"),
    ("BRIAN", "5001", "sold_to", True, "allowed"),
    ("BRIAN", "6001", "sold_to", False, "not assigned"),
    ("MARY", "5001", "sold_to", True, "allowed"),
    # The seed: "N (if Mary needs to View Bills, this is Y)".
    ("MARY", "5001", "bill_to", False, "but not for bill-to"),
    ("MARY", "6001", "bill_to", True, "allowed"),
    ("MARY", "6001", "sold_to", True, "allowed"),
])
def test_access_table(b2b, who, customer, role, allowed, reason) -> None:
    m, ids = b2b
    d = m.access.check(ids[who], customer, role)
    assert d.allowed is allowed
    assert reason.format(id=ids[who]) in d.reason
    assert d.reason.startswith("allowed" if allowed else "denied")


def test_roles_change_and_links_go(b2b) -> None:
    m, ids = b2b
    # Mary is given bill-to on 5001 (the seed's "if Mary needs to View Bills").
    links = [x if x[:2] != ("MARY", "5001") else ("MARY", "5001", "Y", "Y", "NA", "N")
             for x in LINKS]
    last = m.changes()[-1].seq
    r = m.entities.sync_customer_links("erp", link_records(links))
    assert r.counts["updated"] == 1
    new = m.changes(since=last)
    assert [(c.entity_type, c.op, c.fields) for c in new] == [
        ("customer_link", "update", {"bill_to": ["N", "Y"]})]
    assert m.access.check(ids["MARY"], "5001", "bill_to").allowed
    # Tim's link removed by an incremental delete.
    m.entities.sync_customer_links(
        "erp", [{"Contact ID": "TIM", "Customer ID": "6001", "Deleted": "1"}], mode="incremental")
    assert "not assigned" in m.access.check(ids["TIM"], "6001", "sold_to").reason


def test_deleted_unknown_and_manual_contacts_are_denied(b2b) -> None:
    m, ids = b2b
    assert "no contact with id 999" in m.access.check(999, "5001", "bill_to").reason
    manual = m.add_contact(name="Walk In")
    assert "not linked to a source" in m.access.check(manual, "5001", "bill_to").reason
    m.sync("erp", [p for p in PEOPLE if p["id"] != "ED"])
    assert "was deleted" in m.access.check(ids["ED"], "7001", "bill_to").reason


def test_customers_of_a_contact_and_views(b2b) -> None:
    m, ids = b2b
    got = m.access.customers(ids["MARY"])
    assert [(c["customer"], c["roles"]) for c in got] == [
        ("5001", ["sold_to"]), ("6001", ["bill_to", "sold_to"])]
    rows = m.store.conn.execute(
        "SELECT contact_id, customer, role FROM contact_customer_access "
        "WHERE customer = '6001' ORDER BY contact_id, role").fetchall()
    assert (ids["SALLY"], "6001", "bill_to") in rows
    assert (ids["TIM"], "6001", "sold_to") in rows
    assert (ids["TIM"], "6001", "bill_to") not in rows
    n = m.store.conn.execute("SELECT count(*) FROM contact_customer_roles").fetchone()[0]
    assert n == len(LINKS)


def test_cli_access_exit_codes_and_show(b2b, db_path) -> None:
    _m, ids = b2b
    _load_extensions()
    run = CliRunner()
    r = run.invoke(cli, ["--db", str(db_path), "access", str(ids["SALLY"]), "5001",
                         "--role", "bill_to"])
    assert r.exit_code == 0 and r.output.startswith("allowed")
    r = run.invoke(cli, ["--db", str(db_path), "access", str(ids["SALLY"]), "5001",
                         "--role", "ship_to", "--json"])
    assert r.exit_code == 1
    assert json.loads(r.output) == {
        "allowed": False, "reason": "denied: customer 5001 is not a ship-to customer",
        "contact_id": ids["SALLY"], "customer": "5001", "role": "ship_to"}
    r = run.invoke(cli, ["--db", str(db_path), "contacts", "show", str(ids["MARY"])])
    assert "5001: may act as sold_to" in r.output
    assert "6001: may act as bill_to, sold_to" in r.output
    r = run.invoke(cli, ["--db", str(db_path), "contacts", "show", str(ids["MARY"]), "--json"])
    assert [c["customer"] for c in json.loads(r.output)["customers"]] == ["5001", "6001"]
