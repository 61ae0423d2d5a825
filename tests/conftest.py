"""Shared fixtures: a fresh mirror database in a temporary directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from contactsync_agent.mirror import Mirror
from contactsync_agent.sync import VERIFY_ENV

# Every sync in the suite (in this process and in the agents it starts) checks
# that the link snapshot it saves equals the links rebuilt from the table.
os.environ[VERIFY_ENV] = "1"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "mirror.db"


@pytest.fixture
def mirror(db_path: Path) -> Iterator[Mirror]:
    with Mirror.open(db_path) as m:
        yield m
