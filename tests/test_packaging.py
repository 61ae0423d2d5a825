"""What an admin installs with the package, from this checkout's install (.venv):
the systemd unit (`install-service`), shell completion, and a sql source refused
with the extra to install when SQLAlchemy or psycopg is missing (simulated in a
child process by blocking their import; tests/test_packaging_wheel.py runs a
real install without them).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from contactsync_agent import service
from contactsync_agent.errors import ContactSyncError

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent / "contactsync"
SHIPPED_UNIT = ROOT / "packaging" / "contactsync-agent.service"


def cli(*args: str, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def settings(unit: str) -> list[tuple[str, str]]:
    out = []
    for line in unit.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out.append((key.strip(), value.strip()))
    return out


# ------------------------------------------------------------------ the unit


def test_print_shows_the_shipped_unit_with_this_installs_paths() -> None:
    r = cli("install-service", "--print")
    assert r.returncode == 0, r.stderr
    got = dict(settings(r.stdout))
    assert got["ExecStart"] == f"{EXE} daemon"
    assert Path(got["ExecStart"].split()[0]).is_file()
    doc_uri = got["Documentation"]
    assert doc_uri.startswith("file://")
    doc = Path(doc_uri.removeprefix("file://"))
    assert doc.read_text(encoding="utf-8") == (ROOT / "docs" / "operations.md").read_text(
        encoding="utf-8")
    # Every other setting is the shipped unit's, in its order.
    shipped = [(k, v) for k, v in settings(SHIPPED_UNIT.read_text(encoding="utf-8"))
               if k not in ("ExecStart", "Documentation")]
    assert [(k, v) for k, v in settings(r.stdout)
            if k not in ("ExecStart", "Documentation")] == shipped
    assert ("User", "contactsync") in shipped  # the system unit runs as its own account


def test_print_user_leaves_out_what_only_a_system_unit_has() -> None:
    r = cli("install-service", "--print", "--user")
    assert r.returncode == 0, r.stderr
    got = settings(r.stdout)
    keys = {k for k, _ in got}
    assert dict(got)["ExecStart"] == f"{EXE} daemon"
    for key in ("User", "Group", "ProtectHome", "ProtectSystem", "ReadWritePaths",
                "CapabilityBoundingSet", "StateDirectory", "PrivateTmp", "ProtectKernelLogs"):
        assert key not in keys, key
    assert {"NoNewPrivileges", "SystemCallFilter", "RestrictAddressFamilies"} <= keys
    assert "sudo" not in r.stdout and "useradd" not in r.stdout
    assert r.stdout.startswith("# systemd user unit of the contactsync agent")
    assert dict(got)["WantedBy"] == "default.target"
    assert not any("/etc/contactsync" in v for _, v in got)  # the user's own config
    assert {"Restart", "KillSignal", "UMask", "NoNewPrivileges"} <= keys


def test_print_json() -> None:
    r = cli("install-service", "--print", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["unit"] == cli("install-service", "--print").stdout


def test_an_executable_path_with_a_space_is_quoted() -> None:
    unit = service.service_unit(executable=Path("/opt/contact sync/bin/contactsync"))
    assert 'ExecStart="/opt/contact sync/bin/contactsync" daemon' in unit.splitlines()


def test_install_writes_the_unit_owner_only_and_keeps_a_changed_one(tmp_path: Path) -> None:
    folder = tmp_path / "units"
    r = cli("install-service", "--dir", str(folder), "--json")
    assert r.returncode == 0, r.stderr
    done = json.loads(r.stdout)
    path = folder / "contactsync-agent.service"
    assert done == {"path": str(path), "scope": "system",
                    "next": [f"cp {path} /etc/systemd/system/  # systemd reads units from there",
                             "systemctl daemon-reload",
                             "systemctl enable --now contactsync-agent"]}
    assert path.read_text(encoding="utf-8") == cli("install-service", "--print").stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert cli("install-service", "--dir", str(folder)).returncode == 0  # the same: fine
    path.write_text(path.read_text(encoding="utf-8") + "# a local edit\n", encoding="utf-8")
    r = cli("install-service", "--dir", str(folder))
    assert r.returncode == 2
    assert "exists and differs: --force replaces it" in r.stderr
    assert path.read_text(encoding="utf-8").endswith("# a local edit\n")
    assert cli("install-service", "--dir", str(folder), "--force").returncode == 0
    assert "# a local edit" not in path.read_text(encoding="utf-8")
    assert [p.name for p in folder.iterdir()] == ["contactsync-agent.service"]  # no temp left


def test_install_user_writes_where_the_users_systemd_reads(tmp_path: Path) -> None:
    r = cli("install-service", "--user", env={"XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    assert r.returncode == 0, r.stderr
    path = tmp_path / "cfg" / "systemd" / "user" / "contactsync-agent.service"
    assert path.read_text(encoding="utf-8") == cli("install-service", "--print", "--user").stdout
    assert f"wrote {path} (user unit)" in r.stdout
    assert "systemctl --user enable --now contactsync-agent" in r.stdout


def test_the_system_unit_asks_for_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ContactSyncError, match="needs root: run it with sudo") as e:
        service.install_service()
    assert "/etc/systemd/system" in str(e.value) and "--user" in str(e.value)


def test_a_folder_it_cannot_write_is_named(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    folder = tmp_path / "a-file" / "units"
    r = cli("install-service", "--dir", str(folder), "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["error"] == \
        f"{folder}: cannot write contactsync-agent.service: Not a directory"
    assert "Traceback" not in r.stderr


def test_the_shipped_files_are_package_data() -> None:
    data = Path(service.__file__).parent / "data"
    assert service.shipped_file("contactsync-agent.service").read_bytes() == \
        SHIPPED_UNIT.read_bytes()
    assert service.operations_doc_path().parent == data


# ------------------------------------------------------------------ shell completion


@pytest.mark.parametrize(("shell", "marker"), [
    ("bash", "complete -o nosort -F _contactsync_completion contactsync"),
    ("zsh", "#compdef contactsync"),
    ("fish", "complete --no-files --command contactsync"),
])
def test_the_completion_script_is_produced(shell: str, marker: str) -> None:
    r = cli(env={"_CONTACTSYNC_COMPLETE": f"{shell}_source"})
    assert r.returncode == 0, r.stderr
    assert marker in r.stdout


def test_completion_completes_commands_and_options() -> None:
    def complete(words: str) -> list[str]:
        r = cli(env={"_CONTACTSYNC_COMPLETE": "bash_complete", "COMP_WORDS": words,
                     "COMP_CWORD": str(len(words.split()) - 1)})
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    assert "plain,install-service" in complete("contactsync install-se")
    assert "plain,--user" in complete("contactsync install-service --us")


# ------------------------------------------------------------------ the SQL extras

BLOCK = """
import sys
for name in sys.argv[1].split(","):
    if name:
        sys.modules[name] = None  # `import name` raises ImportError, as if not installed
sys.argv = ["contactsync", *sys.argv[2:]]
from contactsync_agent.cli import main
main()
"""


def blocked(modules: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CONFIG_HOME": str(home / "cfg"),
           "XDG_DATA_HOME": str(home / "data"), "CONTACTSYNC_CONFIG": ""}
    return subprocess.run([sys.executable, "-c", BLOCK, modules, *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=home)


def sql_config(tmp_path: Path, url: str, enabled: bool = True) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[sources.pms]\nkind = "sql"\nenabled = {str(enabled).lower()}\nmode = "full"\n'
        f'url = "{url}"\ntable = "clients"\nid_column = "client_id"\n', encoding="utf-8")
    return cfg


def sqlite_source(tmp_path: Path) -> str:
    path = tmp_path / "pms.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE clients (client_id INTEGER PRIMARY KEY, name TEXT, "
                     "email TEXT)")
        conn.executemany("INSERT INTO clients VALUES (?, ?, ?)",
                         [(1, "Ann Lee", "ann@example.com"), (2, "Bo Chan", "bo@example.com")])
    conn.close()
    return f"sqlite:///{path}"


def test_a_sql_source_without_sqlalchemy_names_the_sql_extra(tmp_path: Path) -> None:
    cfg = sql_config(tmp_path, sqlite_source(tmp_path))
    r = blocked("sqlalchemy,psycopg", "--config", str(cfg), "--db", str(tmp_path / "m.db"),
                "sync", "--source", "pms", home=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "sources.pms.kind: a sql source needs the optional package sqlalchemy" in r.stderr
    assert "pip install 'contactsync-agent[sql]'" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_postgres_source_without_the_drivers_names_the_postgres_extra(tmp_path: Path) -> None:
    cfg = sql_config(tmp_path, "postgresql://agent@127.0.0.1:9/pms")
    for modules, missing in (("sqlalchemy,psycopg", "sqlalchemy"), ("psycopg", "psycopg")):
        r = blocked(modules, "--config", str(cfg), "--db", str(tmp_path / "m.db"),
                    "sync", "--source", "pms", home=tmp_path)
        assert r.returncode == 2, (modules, r.stderr)
        assert f"needs the optional package {missing}" in r.stderr
        assert "pip install 'contactsync-agent[postgres]'" in r.stderr


def test_sqlite_needs_only_the_sql_extra(tmp_path: Path) -> None:
    """SQLAlchemy without psycopg (the [sql] extra): a SQLite source syncs."""
    cfg = sql_config(tmp_path, sqlite_source(tmp_path))
    r = blocked("psycopg", "--config", str(cfg), "--db", str(tmp_path / "m.db"),
                "sync", "--source", "pms", "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["counts"]["created"] == 2


def test_a_disabled_sql_source_is_checked_without_sqlalchemy(tmp_path: Path) -> None:
    cfg = sql_config(tmp_path, "sqlite:///nowhere.db", enabled=False)
    r = blocked("sqlalchemy,psycopg", "--config", str(cfg), "source", "list", "--json",
                home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["name"] == "pms"
    # Its options are still checked (start-up's validate_sources) without SQLAlchemy.
    cfg.write_text(cfg.read_text(encoding="utf-8") + 'tabel = "x"\n', encoding="utf-8")
    check = ("import sys\nsys.modules['sqlalchemy'] = sys.modules['psycopg'] = None\n"
             "from contactsync_agent.config import load_config\n"
             "from contactsync_agent.errors import ConfigError\n"
             "from contactsync_agent.sources import validate_sources\n"
             "try:\n    validate_sources(load_config(sys.argv[1]))\n"
             "except ConfigError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", check, str(cfg)], capture_output=True, text=True,
                       timeout=60)
    assert "sources.pms.tabel: unknown setting for a sql source" in r.stdout, r.stderr


def test_the_agent_names_the_extra_for_the_source(tmp_path: Path) -> None:
    """The daemon keeps running (other sources go on) and logs the source's problem."""
    cfg = sql_config(tmp_path, sqlite_source(tmp_path))
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
           "XDG_DATA_HOME": str(tmp_path / "data")}
    proc = subprocess.Popen([sys.executable, "-c", BLOCK, "sqlalchemy,psycopg", "--config",
                             str(cfg), "--db", str(tmp_path / "m.db"), "daemon"],
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    assert proc.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr or ()],
                              daemon=True)
    reader.start()
    seen = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            if "contactsync-agent[sql]" in line:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(timeout=10)
        proc.stderr.close()
    while not lines.empty():
        seen.append(lines.get())
    text = "".join(seen)
    assert "source pms: sources.pms.kind: a sql source needs the optional package " \
        "sqlalchemy, which is not installed: pip install 'contactsync-agent[sql]'" in text, text


@pytest.mark.parametrize("user", [False, True])
def test_systemd_accepts_the_unit(tmp_path: Path, user: bool) -> None:
    """`systemd-analyze verify` reads the printed unit without a complaint (and does
    complain about a misspelt setting, so its silence means something)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze on this machine")
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    unit = tmp_path / "contactsync-agent.service"
    text = cli("install-service", "--print", *(["--user"] if user else [])).stdout

    def verify(body: str) -> subprocess.CompletedProcess[str]:
        unit.write_text(body, encoding="utf-8")
        return subprocess.run([analyze, *(["--user"] if user else []), "verify", str(unit)],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})

    r = verify(text)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    r = verify(text.replace("\nRestart=", "\nRestrat="))
    assert "Unknown key 'Restrat'" in r.stderr
