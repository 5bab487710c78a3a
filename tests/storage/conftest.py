"""Fixtures for the log store tests: real SQLite files under ``tmp_path``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consensus.storage import SQLiteLogStore

from .helpers import CLUSTER, NODE, OpenStore


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "node1" / "log.db"


@pytest.fixture
def open_store(db_path: Path) -> Iterator[OpenStore]:
    """Open stores on ``db_path`` (created on first use); all are closed at teardown."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    opened: list[SQLiteLogStore] = []

    def _open(**overrides: Any) -> SQLiteLogStore:
        kwargs: dict[str, Any] = {"cluster_id": CLUSTER, "node_id": NODE, "create": True}
        kwargs.update(overrides)
        store = SQLiteLogStore(db_path, **kwargs)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()
