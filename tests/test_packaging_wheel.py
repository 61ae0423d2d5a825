"""The wheel an admin installs: built as `make wheel` builds it (maturin, release,
manylinux_2_28, abi3), installed into a fresh virtualenv (no -e, no source tree on
the path, no extras) and run there: `make demo`'s sync and status, the systemd
unit with that venv's paths, shell completion, and a sql source refused for want
of the [sql] extra.

The suite builds the wheel from the release build `make setup` left in target/
(a packing, about 2 s: the same code and package data, tagged `linux`, for this
host's glibc); `make wheel-check` builds the manylinux_2_28 wheel (zig links it
against glibc 2.28's symbols, a separate build of minutes from scratch) and runs
these tests on it through CONTACTSYNC_WHEEL, where the tag is checked too.
Installing pulls the dependencies from PyPI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample-export.csv"
# A release build of the extension can take minutes on a loaded machine.
pytestmark = pytest.mark.timeout(1800)


def run(*args: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=1500, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("CONTACTSYNC_WHEEL")
    if given:
        return Path(given)
    maturin = shutil.which("maturin", path=str(Path(sys.executable).parent)) \
        or shutil.which("maturin")
    assert maturin, "maturin is a dev dependency: pip install -e '.[dev]'"
    out = tmp_path_factory.mktemp("wheels")
    r = run(maturin, "build", "--release", "--compatibility", "linux", "--out", out, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    (built,) = out.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("fresh")
    target = home / "venv"
    r = run(sys.executable, "-m", "venv", target)
    assert r.returncode == 0, r.stderr
    r = run(target / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check",
            wheel)
    assert r.returncode == 0, r.stderr[-3000:]
    yield target


def env_for(home: Path) -> dict[str, str]:
    """No source tree, no config of this machine: only the fresh venv."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "CONTACTSYNC_DB")}
    return {**env, "XDG_CONFIG_HOME": str(home / "config"), "XDG_DATA_HOME": str(home / "data"),
            "CONTACTSYNC_CONFIG": ""}


def test_the_wheel_is_manylinux_abi3_with_its_data_and_extras(wheel: Path) -> None:
    assert "-cp311-abi3-" in wheel.name
    if os.environ.get("CONTACTSYNC_WHEEL"):  # `make wheel-check`: the wheel an admin gets
        assert "manylinux_2_28_x86_64" in wheel.name or "manylinux_2_28_aarch64" in wheel.name
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        unit = z.read("contactsync_agent/data/contactsync-agent.service")
        guide = z.read("contactsync_agent/data/operations.md")
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert unit == (ROOT / "packaging" / "contactsync-agent.service").read_bytes()
    assert guide == (ROOT / "docs" / "operations.md").read_bytes()
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith("/LICENSE")
               for n in names), names
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    plain = [line for line in requires if "extra ==" not in line]
    assert not any(p in line.lower() for line in plain
                   for p in ("sqlalchemy", "psycopg", "sqlite-utils")), plain
    assert "Provides-Extra: sql" in meta and "Provides-Extra: postgres" in meta
    assert any("psycopg[binary]" in line and "extra == 'postgres'" in line
               for line in requires), requires


def test_the_installed_package_is_the_wheels_alone(venv: Path, tmp_path: Path) -> None:
    r = run(venv / "bin" / "python", "-c",
            "import contactsync_agent, contactsync_agent._core as c; print(c.__file__)\n"
            "import importlib.util as u\n"
            "print(u.find_spec('sqlalchemy'), u.find_spec('psycopg'), u.find_spec('sqlite_utils'))",
            cwd=tmp_path, env=env_for(tmp_path))
    assert r.returncode == 0, r.stderr
    core, missing = r.stdout.splitlines()
    assert Path(core).is_relative_to(venv), core
    assert missing == "None None None"  # no extras asked for: none installed


def test_the_demo_runs_from_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    """`make demo`: sync examples/sample-export.csv into a mirror of its own, then status."""
    exe = venv / "bin" / "contactsync"
    db = tmp_path / "demo-mirror.db"
    rows = len(SAMPLE.read_text(encoding="utf-8").splitlines()) - 1
    r = run(exe, "--db", db, "sync", "--source", "sample", SAMPLE, "--json",
            cwd=tmp_path, env=env_for(tmp_path))
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["counts"]["created"] > 0
    assert report["counts"]["created"] + report["counts"].get("quarantined", 0) <= rows
    r = run(exe, "--db", db, "status", cwd=tmp_path, env=env_for(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sample" in r.stdout
    r = run(exe, "--db", db, "contacts", "list", "--json", cwd=tmp_path, env=env_for(tmp_path))
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == report["counts"]["created"]


def test_the_unit_names_the_installed_executable(venv: Path, tmp_path: Path) -> None:
    r = run(venv / "bin" / "contactsync", "install-service", "--print",
            cwd=tmp_path, env=env_for(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert f"ExecStart={venv / 'bin' / 'contactsync'} daemon" in lines
    (doc,) = [line.split("file://", 1)[1] for line in lines if line.startswith("Documentation=")]
    assert Path(doc).is_relative_to(venv) and Path(doc).is_file()


def test_completion_from_the_installed_executable(venv: Path, tmp_path: Path) -> None:
    env = {**env_for(tmp_path), "_CONTACTSYNC_COMPLETE": "bash_source"}
    r = run(venv / "bin" / "contactsync", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "complete -o nosort -F _contactsync_completion contactsync" in r.stdout


def test_a_sql_source_without_the_extra_names_it(venv: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[sources.pms]\nkind = "sql"\nenabled = true\nmode = "full"\n'
                   f'url = "sqlite:///{tmp_path}/pms.sqlite"\ntable = "clients"\n',
                   encoding="utf-8")
    r = run(venv / "bin" / "contactsync", "--config", cfg, "--db", tmp_path / "m.db",
            "sync", "--source", "pms", cwd=tmp_path, env=env_for(tmp_path))
    assert r.returncode == 2, r.stderr
    assert "pip install 'contactsync-agent[sql]'" in r.stderr
    assert "Traceback" not in r.stderr
