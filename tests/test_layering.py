"""The pure core must stay pure: no IO, no clock, no threads, no global randomness.

Non-negotiable 1 of the project: ``consensus/{api,types,quorum,host,codec}.py``,
``consensus/raft/`` and ``consensus/paxos/`` are deterministic. An AST walk rejects imports
of IO modules and calls of module-level ``random`` functions (an injected
``random.Random`` instance is how the cores get randomness).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "consensus"
PURE_FILES = [
    "api.py",
    "types.py",
    "quorum.py",
    "host.py",
    "codec.py",
    "membership.py",
    "backends.py",
    "invariants.py",
]
PURE_PACKAGES = ["raft", "paxos"]
FORBIDDEN_MODULES = {
    "trio",
    "anyio",
    "asyncio",
    "socket",
    "selectors",
    "ssl",
    "apsw",
    "sqlite3",
    "time",
    "threading",
    "_thread",
    "multiprocessing",
    "concurrent",
    "subprocess",
    "os",
    "signal",
    "datetime",
    "secrets",
    "uuid",
}
# Drawing from the process-wide generator makes a run unrepeatable.
RANDOM_MODULE_FUNCTIONS = {
    "random",
    "randint",
    "randrange",
    "choice",
    "choices",
    "shuffle",
    "sample",
    "uniform",
    "gauss",
    "seed",
    "getrandbits",
    "randbytes",
    "triangular",
    "expovariate",
}


def pure_sources() -> list[Path]:
    files = [ROOT / name for name in PURE_FILES if (ROOT / name).exists()]
    for pkg in PURE_PACKAGES:
        files.extend(sorted((ROOT / pkg).rglob("*.py")))
    return files


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"{path.name}:{node.lineno} imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = node.module.split(".")[0]
            if top in FORBIDDEN_MODULES:
                found.append(f"{path.name}:{node.lineno} imports from {node.module}")
            if top == "random":
                bad = [a.name for a in node.names if a.name in RANDOM_MODULE_FUNCTIONS]
                if bad:
                    found.append(f"{path.name}:{node.lineno} imports random.{bad[0]}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "random"
            and node.func.attr in RANDOM_MODULE_FUNCTIONS
        ):
            found.append(f"{path.name}:{node.lineno} calls random.{node.func.attr}()")
    return found


def test_pure_sources_exist() -> None:
    names = {p.name for p in pure_sources()}
    assert {"api.py", "types.py", "quorum.py"} <= names


@pytest.mark.parametrize("path", pure_sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_has_no_io_or_global_randomness(path: Path) -> None:
    assert violations(path) == []


def test_checker_catches_forbidden_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import trio\nfrom time import monotonic\nimport random\nx = random.random()\n")
    found = violations(bad)
    assert len(found) == 3, found
