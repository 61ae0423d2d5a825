"""Shared fixtures: a fresh mirror database in a temporary directory; another
process holding a mirror's writer lock (`holder`); the
Hypothesis `long` profile and the `--model-legacy` option of the stateful
model test (tests/test_model_mirror.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from contactsync_agent.mirror import Mirror
from contactsync_agent.sync import VERIFY_ENV
from hypothesis import HealthCheck, settings

# Every sync in the suite (in this process and in the agents it starts) checks
# that the link snapshot it saves equals the links rebuilt from the table.
os.environ[VERIFY_ENV] = "1"

# The nightly run of the stateful model test: `pytest --hypothesis-profile=long
# tests/test_model_mirror.py` (about 20x the default run's examples, longer runs).
settings.register_profile(
    "long", max_examples=1000, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--model-legacy", default="", metavar="1,2,3",
        help="tests/test_model_mirror.py: switch the model back to today's behaviour for "
             "these defects of issue 12 (a failure that goes away names its defect)",
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "mirror.db"


@pytest.fixture
def mirror(db_path: Path) -> Iterator[Mirror]:
    with Mirror.open(db_path) as m:
        yield m


# Another process holding the writer lock until its stdin gets a line.
HOLD = """
import sys
from pathlib import Path
from contactsync_agent.locking import WriterLock
lock = WriterLock(Path(sys.argv[1]))
lock.acquire()
print("held", flush=True)
sys.stdin.readline()
lock.release()
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """Another process holding the writer lock of tmp/m.db (as an agent run would)."""
    from agent_helpers import env

    db = tmp_path / "m.db"
    with Mirror.open(db) as m:
        m.add_contact(name="Ann Example")
    with subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, env=env()) as proc:
        assert proc.stdout is not None
        try:
            assert proc.stdout.readline().strip() == "held"
            yield proc, db
        finally:
            proc.kill()
            proc.wait(10)
