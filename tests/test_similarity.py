"""Comparators through the Python boundary, against known values."""

from __future__ import annotations

import pytest
from contactsync_agent import _core
from contactsync_agent.matching import field_levels


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [("martha", "marhta", 0.9611), ("dwayne", "duane", 0.84), ("dixon", "dicksonx", 0.8133)],
)
def test_jaro_winkler_known_values(a: str, b: str, expected: float) -> None:
    assert _core.jaro_winkler(a, b) == pytest.approx(expected, abs=1e-3)


def test_jaro() -> None:
    assert _core.jaro("martha", "marhta") == pytest.approx(0.9444, abs=1e-3)
    assert _core.jaro_winkler("", "") == 1.0
    assert _core.jaro_winkler("abc", "") == 0.0


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("ca", "abc", 2),
        ("kitten", "sitting", 3),
        ("smith", "smtih", 1),
        ("", "abc", 3),
        ("a", "a", 0),
    ],
)
def test_damerau_levenshtein(a: str, b: str, expected: int) -> None:
    assert _core.damerau_levenshtein(a, b) == expected


def test_token_set_handles_swaps_and_middle_names() -> None:
    assert _core.token_set_ratio("john smith", "smith john") == 1.0
    assert _core.token_set_ratio("john smith", "john michael smith") == 1.0
    assert _core.token_set_ratio("john smith", "jane doe") < 0.5
    assert _core.name_similarity("jon smiht", "smith john") > 0.9


def test_nicknames_from_the_compiled_table() -> None:
    assert _core.nickname_match("bob", "robert")
    assert _core.nickname_match("kate", "katherine")
    assert _core.nickname_match("bill", "william")
    assert not _core.nickname_match("bob", "william")


def test_soundex() -> None:
    assert _core.soundex("robert") == "R163"
    assert _core.soundex("ashcraft") == "A261"
    assert _core.soundex("smith") == _core.soundex("smyth")


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1984-03-07", "07/03/1984", "exact"),
        ("1984-03-07", "1984-07-03", "day_month_swapped"),
        ("1984-03-07", "1984-03-08", "one_digit_off"),
        ("1984-03-07", "1948-03-07", "one_digit_off"),
        ("1984-03-07", "1984-11-20", "same_year"),
        ("1984-03-07", "1990-11-20", "different"),
    ],
)
def test_dates(a: str, b: str, expected: str) -> None:
    assert _core.compare_dates(a, b) == expected


def test_unreadable_date_is_none() -> None:
    assert _core.compare_dates("soon", "1984-03-07") is None


@pytest.mark.parametrize(
    ("kind", "a", "b", "level"),
    [
        ("given_name", "Robert", "Bob", "nickname"),
        ("given_name", "John", "JOHN", "exact"),
        ("given_name", "J", "John", "initial"),
        ("family_name", "Smith", "Smyth", "very similar (jw>=0.92 or 1 edit)"),
        ("name", "Smith, John", "John Smith", "same words (order, middle names ignored)"),
        ("email", "John@A.com", "john@b.com", "local part exact, other domain"),
        ("email", "john@a.com", "jonh@a.com", "local part similar"),
        ("phone", "0400 000 001", "+61400000001", "exact (E.164)"),
        ("phone", "(04) 0000 0001", "0400 000 001", "exact (E.164)"),
        ("phone", "0400 000 001", "0400 000 002", "one digit off"),
        ("date", "1984-03-07", "1984-07-03", "one digit off or day/month swapped"),
        ("postcode", "2000", "2001", "one character off"),
        ("address", "12 Smith St", "12 smith street", "exact"),
        ("address", "12 Smith St", "14 Smith St", "different"),
        ("id", "A1", "A1", "exact"),
        ("text", "Acme Pty Ltd", "Acme Pty Lt", "similar (jw>=0.88)"),
        ("email", "", "john@a.com", "missing or uninformative"),
    ],
)
def test_compare_values_by_type(kind: str, a: str, b: str, level: str) -> None:
    assert _core.compare_values(kind, a, b) == level
    assert level in field_levels(kind)


def test_unknown_type_raises_value_error() -> None:
    with pytest.raises(ValueError, match="unknown field type"):
        _core.compare_values("colour", "red", "blue")
