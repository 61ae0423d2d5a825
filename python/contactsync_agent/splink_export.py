"""A fitted matching model as a Splink settings file (`--export-splink`).

Turns a run's configuration and fitted model (levels with m and u, the
prior, the blocking rules) into the settings dictionary Splink 4/5 loads
unchanged (`Linker(tables, settings, db_api)`), on DuckDB or Spark, so the
same model can score more records than one machine holds. Our comparators
become SQL conditions over the *normalised* columns (lower case, trimmed,
ISO dates, E.164 phones, a given name's first word and its nickname key:
what `normalised_rows` yields). What SQL cannot say is approximated and
listed in `SplinkExport.notes`: nicknames by one key per name, field groups
(Splink adds every field; a household's shared street and postcode count
twice there), swapped given/family names, and blocking keys built with
nick / soundex / metaphone / nysiis / last8 (those rules are left out).
Pure: reads no files, writes only the file asked for, imports no Splink.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from contactsync_agent.infile import open_private_text

_TRANSFORM = re.compile(r"^(\w+)\((.*)\)$")
_NO_SQL = {"nick", "soundex", "metaphone", "nysiis", "last8"}


@dataclass
class SplinkExport:
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def write(self, path: str | os.PathLike[str]) -> None:
        # Owner-only like every file we write (the settings hold no records,
        # but the term frequencies Splink adds later will).
        with open_private_text(path, exclusive=False, follow_links=True) as fh:
            fh.write(json.dumps(self.settings, indent=1))


def _q(col: str, side: str) -> str:
    return f'"{col}_{side}"'


def _levels(kind: str, col: str) -> list[tuple[str, str]]:
    """(our level label, SQL condition) from the best level down; "different" is ELSE."""
    lc, rc = _q(col, "l"), _q(col, "r")
    exact = f"{lc} = {rc}"
    jw = f"jaro_winkler_similarity({lc}, {rc})"
    dl = f"damerau_levenshtein({lc}, {rc})"
    one_edit = f"({dl} <= 1 OR {jw} >= 0.92)"
    if kind == "given_name":
        nick = f'"{col}_nick_l" = "{col}_nick_r"'
        return [("exact", exact),
                ("nickname", nick),
                ("initial", f"(length({lc}) = 1 OR length({rc}) = 1) AND "
                            f"substr({lc}, 1, 1) = substr({rc}, 1, 1)"),
                ("very similar (jw>=0.92 or 1 edit)", one_edit),
                ("similar (jw>=0.80)", f"{jw} >= 0.80")]
    if kind == "family_name":
        return [("exact", exact),
                ("very similar (jw>=0.92 or 1 edit)", one_edit),
                ("similar (jw>=0.80)", f"{jw} >= 0.80")]
    if kind == "name":
        return [("exact", exact),
                ("very similar words (>=0.92)", f"{jw} >= 0.92"),
                ("similar words (>=0.80)", f"{jw} >= 0.80")]
    if kind == "email":
        local = f"split_part({lc}, '@', 1) = split_part({rc}, '@', 1)"
        return [("exact", exact),
                ("local part exact, other domain", local),
                ("local part similar", f"split_part({lc}, '@', 2) = split_part({rc}, '@', 2) "
                                       f"AND {jw} >= 0.92")]
    if kind == "phone":
        return [("exact (E.164)", exact),
                ("same last 8 digits", f"right({lc}, 8) = right({rc}, 8)"),
                ("one digit off", f"length({lc}) = length({rc}) AND {dl} <= 1")]
    if kind == "date":
        swapped = (f"(substr({lc}, 1, 4) = substr({rc}, 1, 4) AND substr({lc}, 6, 2) = "
                   f"substr({rc}, 9, 2) AND substr({lc}, 9, 2) = substr({rc}, 6, 2))")
        return [("exact", exact),
                ("one digit off or day/month swapped", f"({dl} <= 1 OR {swapped})"),
                ("same year", f"substr({lc}, 1, 4) = substr({rc}, 1, 4)")]
    if kind == "postcode":
        return [("exact", exact),
                ("one character off", f"length({lc}) = length({rc}) AND {dl} <= 1")]
    if kind == "address":
        return [("exact", exact),
                ("very similar (>=0.90)", f"{jw} >= 0.90"),
                ("similar (>=0.75)", f"{jw} >= 0.75")]
    if kind == "id":
        return [("exact", exact)]
    return [("exact", exact), ("similar (jw>=0.88)", f"{jw} >= 0.88")]


def _key_sql(expr: str, side: str) -> str | None:
    m = _TRANSFORM.match(expr.strip())
    if not m:
        return f'{side}."{expr.strip()}"'
    fn, inner = m.group(1), m.group(2)
    if fn in _NO_SQL:
        return None
    arg = _key_sql(inner, side)
    if arg is None:
        return None
    if fn == "exact":
        return arg
    if fn == "initial":
        return f"substr({arg}, 1, 1)"
    if fn.startswith("prefix") and fn[6:].isdigit():
        return f"substr({arg}, 1, {int(fn[6:])})"
    if fn == "year":
        return f"substr({arg}, 1, 4)"
    if fn == "first":
        return f"split_part({arg}, ' ', 1)"
    if fn == "last":
        return f"split_part({arg}, ' ', -1)"
    if fn == "local":
        return f"split_part({arg}, '@', 1)"
    if fn == "domain":
        return f"split_part({arg}, '@', 2)"
    return None


def _rule_sql(keys: tuple[str, ...], unordered: bool) -> str | None:
    parts = [(_key_sql(k, "l"), _key_sql(k, "r")) for k in keys]
    if any(a is None or b is None for a, b in parts):
        return None
    straight = " AND ".join(f"{a} = {b}" for a, b in parts)
    if not unordered or len(parts) != 2:
        return straight
    (a0, b0), (a1, b1) = parts
    return f"({straight}) OR ({a0} = {b1} AND {a1} = {b0})"


def normalised_rows(records: Any, config: Any) -> list[dict[str, str | None]]:
    """Rows for Splink: `unique_id` plus each field's first column normalised
    as the engine compares it (None when empty), and `<given>_nick`."""
    from contactsync_agent import _core

    out: list[dict[str, str | None]] = []
    for rec in records:
        row: dict[str, str | None] = {"unique_id": str(rec[config.id_field])}
        for f in config.fields:
            raw = rec.get(f.columns[0])
            v = _core.normalize_value(f.type, "" if raw is None else str(raw), config.region)
            if f.type == "given_name":
                v = v.split(" ")[0]
                row[f"{f.name}_nick"] = _core.nickname_key(v) if v else None
            row[f.name] = v or None
        out.append(row)
    return out


def export(config: Any, model: dict[str, Any], link: bool) -> SplinkExport:
    """Settings for Splink from a `MatchConfig` and a fitted `MatchResult.model`."""
    notes: list[str] = []
    fitted = {f["field"]: f["levels"] for f in model["fields"]}
    comparisons = []
    for f in config.fields:
        levels = {lv["level"]: lv for lv in fitted[f.name]}
        out: list[dict[str, Any]] = [{
            "sql_condition": f"{_q(f.name, 'l')} IS NULL OR {_q(f.name, 'r')} IS NULL",
            "label_for_charts": "missing", "is_null_level": True}]
        for label, sql in _levels(f.type, f.name):
            lv = levels.get(label)
            if lv is None:
                continue
            level: dict[str, Any] = {"sql_condition": sql, "label_for_charts": label,
                                     "m_probability": lv["m"], "u_probability": lv["u"]}
            if f.tf and label == "exact":
                level["tf_adjustment_column"] = f.name
                level["tf_adjustment_weight"] = 1.0
            out.append(level)
        other = levels["different"]
        out.append({"sql_condition": "ELSE", "label_for_charts": "different",
                    "m_probability": other["m"], "u_probability": other["u"]})
        if f.type == "given_name":
            notes.append(f"{f.name}: nicknames compared by the {f.name}_nick column "
                         "normalised_rows writes (one key per name, not every group)")
        if f.group:
            notes.append(f"{f.name}: group {f.group!r} not expressible; Splink adds every member")
        comparisons.append({"output_column_name": f.name, "comparison_levels": out,
                            "comparison_description": f"contactsync {f.type}"})
    if model.get("household_keys"):
        notes.append("the household u (given name, mobile, birth date weighed by the u among "
                     f"members of one household, when {', '.join(model['household_keys'])} "
                     "agree) not expressible; Splink uses the population's u")
    rules = []
    for r in config.blocking:
        rule_sql = _rule_sql(tuple(r.keys), r.unordered)
        if rule_sql is None:
            notes.append(f"blocking rule {r.name or ' + '.join(r.keys)!r} left out "
                         "(nick/soundex/metaphone/nysiis/last8 have no portable SQL)")
            continue
        rules.append({"blocking_rule": rule_sql})
    if not rules:
        raise ValueError("no blocking rule can be written as Splink SQL")
    settings = {
        "link_type": "link_only" if link else "dedupe_only",
        "probability_two_random_records_match": model["prior"],
        "unique_id_column_name": "unique_id",
        "blocking_rules_to_generate_predictions": rules,
        "comparisons": comparisons,
        "retain_matching_columns": True,
        "retain_intermediate_calculation_columns": False,
    }
    return SplinkExport(settings, notes)
