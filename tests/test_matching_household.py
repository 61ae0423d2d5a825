"""Given-name evidence inside one household (issue 16): members of a household
share a family name, an address and a landline, rarely a given name. The same
person with only an initial for the given name and a new mobile at the same
address is a duplicate (it scored 0.35 when the initial weighed as among
strangers);
another member of the household is not. Scored against a background of the
realistic generated population, so EM fits the model as it would in use."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from contactsync_agent.matching import MatchResult, dedupe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches"))
import matchgen

HOME = {"family_name": "Quilliam", "street": "17 Tarragon Crescent", "city": "Ballarat",
        "postcode": "3350", "phone": "03 5331 7788", "organisation": ""}
PERSON = {"id": "h1", "given_name": "Jonathan", "email": "jq.home@example.net",
          "mobile": "0412 345 678", "date_of_birth": "1984-03-12", **HOME}
# the same person: an initial for the given name, a new mobile, no e-mail or birth date
SAME = {"id": "h2", "given_name": "J", "email": "", "mobile": "0498 765 432",
        "date_of_birth": "", **HOME}
# another member of the household: another given name, mobile and birth date
OTHER = {"id": "h3", "given_name": "Margaret", "email": "", "mobile": "0455 111 222",
         "date_of_birth": "1986-07-30", **HOME}


@pytest.fixture(scope="module")
def result() -> MatchResult:
    background = list(matchgen.generate(50_000, seed=5, population="realistic"))
    for r in background:
        r.pop("cluster")
    return dedupe([*background, PERSON, SAME, OTHER])


def _prob(res: MatchResult, a: str, b: str) -> float:
    return max((p.probability for p in res if {p.left_id, p.right_id} == {a, b}), default=0.0)


def test_given_name_initial_in_one_household_is_the_same_person(result: MatchResult) -> None:
    assert _prob(result, "h1", "h2") >= 0.5


def test_another_member_of_the_household_is_not_a_duplicate(result: MatchResult) -> None:
    assert _prob(result, "h1", "h3") < 0.5
    assert _prob(result, "h2", "h3") < 0.5


def test_model_reports_the_household_weights(result: MatchResult) -> None:
    model = result.model
    assert set(model["household_keys"]) >= {"street", "phone"}
    given = next(f for f in model["fields"] if f["field"] == "given_name")
    exact = next(lv for lv in given["levels"] if lv["level"] == "exact")
    # two members of one household rarely share a given name
    assert exact["household_weight"] > exact["weight"] + 1
    for level in ("initial", "very similar (jw>=0.92 or 1 edit)"):
        lv = next(x for x in given["levels"] if x["level"] == level)
        assert lv["household_weight"] > lv["weight"] + 1, level
    # group members (the household's own fields) weigh as before
    family = next(f for f in model["fields"] if f["field"] == "family_name")
    assert all(lv["household_weight"] == lv["weight"] for lv in family["levels"])
