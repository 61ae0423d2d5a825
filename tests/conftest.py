"""Shared fixtures: a fresh mirror database in a temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from contactsync_agent.mirror import Mirror


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "mirror.db"


@pytest.fixture
def mirror(db_path: Path) -> Iterator[Mirror]:
    with Mirror.open(db_path) as m:
        yield m
