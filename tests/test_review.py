"""Rule 5 (fuzzy candidates are suggestions), the review queue through the CLI,
the opt-in automatic link, and the matching commands."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from contactsync_agent import rules
from contactsync_agent.mirror import Mirror

JON = dict(name="Jon Smith", email="jon.smith@example.com", mobile="0400 000 001",
           street="12 George St", postcode="2000")
INCOMING = dict(external_id="X1", given_name="John", family_name="SMITH",
                email="jon.smith@example.com", mobile="+61400000001",
                street="12 George Street", postcode="2000")


def cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "contactsync_agent.cli", "--db", str(db), *args],
                          capture_output=True, text=True, timeout=120, check=False)


def seed(db: Path) -> int:
    with Mirror.open(db) as m:
        cid = m.add_contact(**JON)
        m.add_contact(name="Unrelated Person", email="u@p.com", mobile="0400 999 999")
    return cid


def test_fuzzy_candidate_is_a_review_item_never_a_conversion(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    local = seed(db)
    with Mirror.open(db) as m:
        report = m.sync("xpm", [INCOMING])
        assert m.get(local).record_type == "manual"  # never converted on its own
        [item] = m.review.items()
        assert (item.candidate_id, item.kind) == (local, "fuzzy")
        assert item.contact_id == 3 and m.get(3).external_id == "X1"
        assert item.score is not None and item.score > 0.5
        assert item.explanation["email"]["level"] == "exact"
        assert item.explanation["mobile"]["level"].startswith("exact")
        assert "email" in item.reason and "agree" in item.reason
        assert report.counts["review_items"] == 1 and report.counts["converted"] == 0


def test_accept_through_the_cli_links_the_local_contact(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    local = seed(db)
    with Mirror.open(db) as m:
        m.sync("xpm", [INCOMING])
    items = json.loads(cli(db, "review", "list", "--json").stdout)
    assert [i["candidate_id"] for i in items] == [local]
    shown = cli(db, "review", "show", str(items[0]["id"]))
    assert shown.returncode == 0 and "jon.smith@example.com" in shown.stdout
    done = cli(db, "review", "accept", str(items[0]["id"]))
    assert done.returncode == 0, done.stderr
    with Mirror.open(db) as m:
        c = m.get(local)
        assert (c.record_type, c.source, c.external_id) == ("sync", "xpm", "X1")
        assert c.street == "12 George Street"  # the source's values now
        assert m.get(3).deleted_at is not None  # the created duplicate merged away
        ops = [(ch.contact_id, ch.op) for ch in m.changes()][-2:]
        assert ops == [(3, "delete"), (local, "convert")]
        assert m.review.items() == []
        # The next sync finds the record by its external id on the local contact.
        report = m.sync("xpm", [INCOMING])
        assert report.counts["unchanged"] == 1 and report.counts["created"] == 0
    again = cli(db, "review", "accept", str(items[0]["id"]))
    assert again.returncode != 0 and "already accepted" in again.stderr
    assert "Traceback" not in again.stderr


def test_reject_through_the_cli_remembers_the_pair(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    local = seed(db)
    with Mirror.open(db) as m:
        m.sync("xpm", [INCOMING])
    [item] = json.loads(cli(db, "review", "list", "--json").stdout)
    out = cli(db, "review", "reject", str(item["id"]), "--json")
    assert out.returncode == 0, out.stderr
    with Mirror.open(db) as m:
        assert m.get(local).record_type == "manual"
        assert m.store.review.rejected_pairs("xpm") == {("X1", local)}
        assert [i.status for i in m.review.items(status=None)] == ["rejected"]
    # The rule drops a remembered pair wherever it comes up again.
    pairs = [(local, 3, 0.9, {"email": {"level": "exact", "weight": 3.0}})]
    assert rules.decide_fuzzy(pairs, {3: "X1"}, {("X1", local)}) == []
    assert len(rules.decide_fuzzy(pairs, {3: "X1"}, set())) == 1


def test_automatic_link_is_opt_in(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    local = seed(db)
    with Mirror.open(db, auto_link_threshold=0.5) as m:
        report = m.sync("xpm", [INCOMING])
        c = m.get(local)
        assert (c.record_type, c.external_id) == ("sync", "X1")
        assert report.counts["converted"] == 1 and report.counts["created"] == 0
        assert [x.id for x in m.contacts()] == [1, 2]  # no duplicate left behind
        assert report.decision_for(local).reason.startswith(  # type: ignore[union-attr]
            "converted: fuzzy match")
        assert m.sync("xpm", [INCOMING]).counts["unchanged"] == 1


def test_automatic_link_leaves_no_organisation_link_of_the_dropped_contact(
        tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    local = seed(db)
    with Mirror.open(db, auto_link_threshold=0.5) as m:
        m.sync("xpm", [{**INCOMING, "organisation_ref": "O1"}])
        links = m.store.conn.execute(
            "SELECT contact_id, organisation_ref FROM contact_organisations").fetchall()
        assert links == [(local, "O1")]  # the taken-over contact's, no orphan


def test_duplicates_command_finds_clusters(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        a = m.add_contact(**JON)
        b = m.add_contact(name="John Smith", email="jon.smith@example.com",
                          mobile="+61 400 000 001", postcode="2000")
        for i in range(30):
            m.add_contact(name=f"Person{i} Other{i}", email=f"p{i}@x.com",
                          mobile=f"0411 {i:03d} {i * 7 % 1000:03d}")
    out = cli(db, "duplicates", "--threshold", "0.5", "--json")
    assert out.returncode == 0, out.stderr
    clusters = json.loads(out.stdout)
    assert [sorted(c["ids"]) for c in clusters] == [[a, b]]


def test_match_and_dedupe_commands_write_pairs(tmp_path: Path) -> None:
    left, right = tmp_path / "left.csv", tmp_path / "right.csv"
    cols = ["id", "given_name", "family_name", "email", "mobile", "postcode"]
    people = [(f"L{i}", f"Given{i}", f"Family{i}", f"g{i}@x.com", f"0400 {i:03d} 100", "2000")
              for i in range(50)]
    for path, rows in ((left, people),
                       (right, [(f"R{i}", g, f.upper(), e, m.replace(" ", ""), pc)
                                for i, (_, g, f, e, m, pc) in enumerate(people[:20])])):
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            w.writerows(rows)
    out = tmp_path / "pairs.csv"
    run = cli(tmp_path / "unused.db", "match", str(left), str(right), "--out", str(out), "--json")
    assert run.returncode == 0, run.stderr
    with out.open() as fh:
        pairs = {(r["left_id"], r["right_id"]) for r in csv.DictReader(fh)}
    assert pairs == {(f"L{i}", f"R{i}") for i in range(20)}
    dd = cli(tmp_path / "unused.db", "dedupe", str(left), "--json")
    assert dd.returncode == 0 and json.loads(dd.stdout)["pairs"] == 0


# ---------------------------------------------------------------- review in bulk (issue 12)

BULK = [("Jon", "Smith", "John", "SMITH", "jon.s@example.com", "0400 000 101", "1 George St"),
        ("Mary", "Jones", "Marie", "JONES", "mary.j@example.org", "0400 000 202", "2 King St"),
        ("Pete", "Brown", "Peter", "BROWN", "pb@example.net", "0400 000 303", "3 Queen St")]
BULK_LOCAL = [dict(given_name=g, family_name=f, email=e, mobile=m, street=st, postcode="2000")
              for g, f, _, _, e, m, st in BULK]
BULK_INCOMING = [dict(external_id=f"B{k}", given_name=g, family_name=f, email=e,
                      mobile="+61" + m[1:].replace(" ", ""), street=st.replace("St", "Street"),
                      postcode="2000")
                 for k, (_, _, g, f, e, m, st) in enumerate(BULK)]


def bulk_seed(db: Path, weak: bool = True) -> list[int]:
    incoming = list(BULK_INCOMING)
    if weak:  # the last pair agrees on less: a lower score
        incoming[2] = {**incoming[2], "mobile": "0499 999 999", "street": "", "postcode": ""}
    with Mirror.open(db) as m:
        ids = [m.add_contact(**p) for p in BULK_LOCAL]
        m.sync("xpm", incoming)
        assert len(m.review.items()) == 3
    return ids


def test_review_list_shows_names_emails_and_score(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    bulk_seed(db)
    out = cli(db, "review", "list")
    assert out.returncode == 0, out.stderr
    for g, f, g2, f2, e, _, _ in BULK:
        assert f"{g} {f}" in out.stdout and f"{g2} {f2}" in out.stdout and e in out.stdout
    assert "%" in out.stdout
    items = json.loads(cli(db, "review", "list", "--json").stdout)
    assert sorted((i["incoming"]["name"], i["candidate"]["name"]) for i in items) == sorted(
        (f"{g2} {f2}", f"{g} {f}") for g, f, g2, f2, _, _, _ in BULK)
    assert all(i["incoming"]["email"] == i["candidate"]["email"] for i in items)
    assert all(0 < i["score"] <= 1 for i in items)


def test_review_show_is_side_by_side_with_agreement_levels(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    local = bulk_seed(db)
    with Mirror.open(db, readonly=True) as m:
        [item] = [i for i in m.review.items() if i.candidate_id == local[0]]
    doc = json.loads(cli(db, "review", "show", str(item.id), "--json").stdout)
    fields = {f["field"]: f for f in doc["fields"]}
    assert fields["email"]["incoming"] == fields["email"]["candidate"] == "jon.s@example.com"
    assert fields["email"]["level"] == item.explanation["email"]["level"] == "exact"
    assert (fields["given_name"]["incoming"], fields["given_name"]["candidate"]) == (
        "John", "Jon")
    assert fields["given_name"]["level"] == item.explanation["given_name"]["level"]
    text = cli(db, "review", "show", str(item.id)).stdout
    assert "agreement" in text and "exact" in text and "Jon" in text and "SMITH" in text
    missing = cli(db, "review", "show", "999")
    assert missing.returncode == 6 and "no review item with id 999" in missing.stderr


def test_review_accept_and_reject_several_ids(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    local = bulk_seed(db)
    with Mirror.open(db, readonly=True) as m:
        by_candidate = {i.candidate_id: i.id for i in m.review.items()}
        ids = [by_candidate[c] for c in local]
    out = cli(db, "review", "accept", str(ids[0]), str(ids[1]), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [d["contact"] for d in doc["done"]] == local[:2] and doc["failed"] == []
    again = cli(db, "review", "reject", str(ids[1]), str(ids[2]), "--json")
    assert again.returncode == 1  # one was decided already: reported, the other done
    doc = json.loads(again.stdout)
    assert [d["item"] for d in doc["done"]] == [ids[2]]
    assert doc["failed"][0]["item"] == ids[1] and "already accepted" in doc["failed"][0]["error"]
    with Mirror.open(db, readonly=True) as m:
        assert [m.get(c).record_type for c in local] == ["sync", "sync", "manual"]
        assert m.review.items() == []


def test_review_accept_all_above_a_score_asks_first(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    local = bulk_seed(db)
    with Mirror.open(db, readonly=True) as m:
        scores = {i.id: i.score for i in m.review.items()}
    weak = min(scores, key=lambda k: scores[k] or 0)
    assert len(set(scores.values())) > 1
    cut = f"{(sorted(scores.values())[0] + sorted(scores.values())[1]) / 2:.4f}"
    # No --yes and no answer: nothing is done.
    cmd = [sys.executable, "-m", "contactsync_agent.cli", "--db", str(db), "review", "accept",
           "--all", "--min-score", cut]
    refused = subprocess.run(cmd, input="n\n", capture_output=True, text=True, timeout=120,
                             check=False)
    assert refused.returncode == 1
    assert "2 open review item(s) scored at least" in refused.stderr
    with Mirror.open(db, readonly=True) as m:
        assert len(m.review.items()) == 3
    done = subprocess.run([*cmd, "--yes", "--json"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert sorted(d["item"] for d in json.loads(done.stdout)["done"]) == sorted(
        k for k in scores if k != weak)
    with Mirror.open(db, readonly=True) as m:
        assert [i.id for i in m.review.items()] == [weak]
        assert [m.get(c).record_type for c in local] == ["sync", "sync", "manual"]
    usage = cli(db, "review", "reject")
    assert usage.returncode == 2 and "--all" in usage.stderr
    rest = cli(db, "review", "reject", "--all", "--yes")
    assert rest.returncode == 0, rest.stderr
    with Mirror.open(db, readonly=True) as m:
        assert m.review.items() == []
        assert m.review.summaries(status="rejected")[0]["id"] == weak
