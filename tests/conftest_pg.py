"""A real PostgreSQL server for the SQL source tests, started by the suite itself.

initdb into a temporary directory, start on a free 127.0.0.1 port (no Unix
socket), password auth (scram), stop and remove it at the end of the session.
initdb refuses to run as root, so as root the server runs as `nobody` (runuser).
Import the `postgres` fixture from a test module: `from conftest_pg import postgres`.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTALL_HINT = "install the Debian package `postgresql` (apt-get install -y postgresql)"


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    user: str
    password: str
    dbname: str = "postgres"

    def url(self, *, password: bool = True) -> str:
        auth = f"{self.user}:{self.password}" if password else self.user
        return f"postgresql+psycopg://{auth}@{self.host}:{self.port}/{self.dbname}"


def find_bindir() -> Path | None:
    """The newest PostgreSQL server binaries: $PG_BINDIR, Debian's layout, or PATH."""
    env = os.environ.get("PG_BINDIR")
    if env and (Path(env) / "initdb").exists():
        return Path(env)
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    candidates += glob.glob("/usr/local/pgsql/bin/initdb")
    candidates = [c for c in candidates if os.access(c, os.X_OK)]
    if candidates:

        def version(path: str) -> tuple[int, ...]:
            part = Path(path).parent.parent.name
            return tuple(int(x) for x in part.split(".") if x.isdigit()) or (0,)

        return Path(max(candidates, key=version)).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_user(cmd: list[str]) -> list[str]:
    """Runs `cmd` as nobody when we are root (initdb and postgres refuse root)."""
    if not _root():
        return cmd
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "nobody", "--", *cmd]
    return ["su", "-s", "/bin/sh", "nobody", "-c", " ".join(map(_quote, cmd))]


def _root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _as_user(cmd), capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(f"no PostgreSQL server binaries (initdb, pg_ctl) found: {INSTALL_HINT}")
    # As root the server runs as nobody, who must reach the directory: /tmp, not $TMPDIR.
    base = Path(tempfile.mkdtemp(prefix="contactsync-pg-", dir="/tmp" if _root() else None))
    if _root():
        shutil.chown(base, "nobody")
    data, log = base / "data", base / "server.log"
    password = "pg-" + secrets.token_hex(12)
    pwfile = base / "pw"
    pwfile.write_text(password + "\n", encoding="utf-8")
    if _root():
        shutil.chown(pwfile, "nobody")
    started = False
    try:
        r = _run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "tester",
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        if r.returncode != 0:
            pytest.fail(f"initdb failed ({r.returncode}): {r.stderr or r.stdout}")
        pwfile.unlink()
        for _attempt in range(3):
            port = free_port()
            opts = (
                f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            r = _run(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-o",
                    opts,
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                timeout=90,
            )
            if r.returncode == 0:
                started = True
                break
            time.sleep(0.2)  # most likely someone took the port in between: try another
        if not started:
            text = log.read_text(errors="replace") if log.exists() else r.stderr
            pytest.fail(f"PostgreSQL did not start: {text[-2000:]}")
        yield PgServer("127.0.0.1", port, "tester", password)
    finally:
        if started:
            _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(base, ignore_errors=True)


#: Rows of `audited_clients` tables: (first_name, last_name, email, mobile).
CLIENTS = (("Ann", "Lee", "ann@pg.example", "0412000001"),
           ("Bob", "Ray", "bob@pg.example", "0412000002"),
           ("Cat", "Orr", "cat@pg.example", "0412000003"))


def audited_clients(engine: object, table: str, rows: int = len(CLIENTS)) -> None:
    """A fresh `table` of clients (the first `rows` of CLIENTS) with a
    `{table}_audit` table a trigger fills with every applied change of an
    e-mail: the two-way tests' proof of "applied exactly once"."""
    import sqlalchemy as sa

    assert isinstance(engine, sa.Engine)
    with engine.begin() as c:
        c.execute(sa.text(f"DROP TABLE IF EXISTS {table}, {table}_audit"))
        c.execute(sa.text(f"CREATE TABLE {table} (client_id bigserial PRIMARY KEY, "
                          "first_name text, last_name text, email text, mobile text)"))
        c.execute(sa.text(f"CREATE TABLE {table}_audit (client_id bigint, email text)"))
        c.execute(sa.text(
            f"CREATE FUNCTION {table}_audit_fn() RETURNS trigger AS $$ BEGIN "
            f"INSERT INTO {table}_audit VALUES (NEW.client_id, NEW.email); RETURN NEW; END "
            "$$ LANGUAGE plpgsql"))
        c.execute(sa.text(
            f"CREATE TRIGGER {table}_audit_tr AFTER UPDATE OF email ON {table} FOR EACH ROW "
            f"WHEN (OLD.email IS DISTINCT FROM NEW.email) EXECUTE FUNCTION {table}_audit_fn()"))
        c.execute(sa.text(f"INSERT INTO {table} (first_name, last_name, email, mobile) "
                          "VALUES (:f, :l, :e, :m)"),
                  [dict(zip("flem", r, strict=True)) for r in CLIENTS[:rows]])
