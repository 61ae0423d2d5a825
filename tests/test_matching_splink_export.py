"""`--export-splink` (issue 16): the fitted model as a Splink settings file that
Splink (DuckDB backend) loads unchanged and that, on a sample, predicts the
same pairs as our engine (pair-set F1 >= 0.99)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from agent_helpers import env
from contactsync_agent.matching import BlockingRule, Field, MatchConfig, dedupe
from contactsync_agent.splink_export import normalised_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches"))
import matchgen

splink = pytest.importorskip("splink", reason="splink is in the dev extras")

# no field groups: Splink adds every field, so a grouped model cannot agree
CONFIG = MatchConfig(
    fields=(
        Field("given_name", "given_name", tf=True),
        Field("family_name", "family_name", tf=True),
        Field("email", "email"),
        Field("mobile", "phone"),
        Field("date_of_birth", "date"),
        Field("postcode", "postcode"),
    ),
    blocking=(
        BlockingRule(("email",)),
        BlockingRule(("mobile",)),
        BlockingRule(("given_name", "family_name"), unordered=True),
        BlockingRule(("date_of_birth",)),
    ),
)


def _f1(a: set[tuple[str, str]], b: set[tuple[str, str]]) -> float:
    tp = len(a & b)
    return 2 * tp / (len(a) + len(b)) if a or b else 1.0


def test_splink_loads_our_model_and_agrees(tmp_path: Path) -> None:
    from splink import DuckDBAPI, Linker

    records = list(matchgen.generate(3000, seed=21))
    ours = dedupe(records, CONFIG)
    path = tmp_path / "settings.json"
    notes = ours.to_splink_settings(path)
    assert path.stat().st_mode & 0o077 == 0
    settings = json.loads(path.read_text(encoding="utf-8"))
    assert settings["probability_two_random_records_match"] == ours.model["prior"]
    assert any("nick" in n for n in notes)

    import pyarrow as pa

    db_api = DuckDBAPI()
    df = db_api.register(pa.Table.from_pylist(normalised_rows(records, CONFIG)))
    linker = Linker(df, str(path), log_level=40)  # loaded unchanged, no training
    pred = linker.inference.predict(threshold_match_probability=CONFIG.threshold)
    rows = pred.as_duckdbpyrelation().select("unique_id_l, unique_id_r").fetchall()
    theirs = {tuple(sorted((str(a), str(b)))) for a, b in rows}
    mine = {tuple(sorted(p)) for p in ours.id_pairs()}
    assert len(mine) > 500
    assert _f1(mine, theirs) >= 0.99, (len(mine), len(theirs), len(mine & theirs))


def test_cli_writes_splink_settings(tmp_path: Path) -> None:
    import csv

    data = tmp_path / "contacts.csv"
    with open(data, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=matchgen.COLUMNS)
        w.writeheader()
        w.writerows(matchgen.generate(500, seed=2))
    out = tmp_path / "settings.json"
    exe = Path(sys.executable).with_name("contactsync")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "contactsync_agent.cli"]
    r = subprocess.run([*cmd, "dedupe", str(data), "--export-splink", str(out), "--json"],
                       capture_output=True, text=True, env=env(), timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["splink_settings"] == str(out)
    settings = json.loads(out.read_text(encoding="utf-8"))
    assert settings["link_type"] == "dedupe_only"
    assert {c["output_column_name"] for c in settings["comparisons"]} >= {"given_name", "email"}
    # the default contact config's household group cannot be said in Splink
    assert any("group" in n for n in doc["splink_notes"])
