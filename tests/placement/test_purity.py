"""The meta state machine and the planner are pure, like the consensus cores.

They run on every meta replica and inside the simulator, so they must not read clocks, touch
IO or draw global randomness: the same inputs must give the same bytes on every replica. This
mirrors tests/test_layering.py for the placement modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PLACEMENT = Path(__file__).resolve().parents[2] / "shardb" / "placement"
PURE_MODULES = ["meta.py", "planner.py", "wire.py", "descriptors.py"]
FORBIDDEN = {
    "trio", "anyio", "asyncio", "socket", "selectors", "ssl", "apsw", "sqlite3", "time",
    "threading", "_thread", "multiprocessing", "concurrent", "subprocess", "os", "signal",
    "datetime", "secrets", "uuid", "random", "pickle",
}  # fmt: skip


@pytest.mark.parametrize("name", PURE_MODULES)
def test_placement_module_is_pure(name: str) -> None:
    """No IO, clock, thread, pickle or randomness import in the pure placement modules."""
    tree = ast.parse((PLACEMENT / name).read_text(), filename=name)
    imported: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.append(node.module.split(".")[0])
    assert sorted(set(imported) & FORBIDDEN) == []
