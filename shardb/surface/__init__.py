"""The user surface: ``shardb demo / up / down / sql / cluster ...``.

- ``session``: the shell's ``Session`` over the async client (statements, ``meta``, leader
  transfer, fault injection, crash/restart of local node processes).
- ``dataset``: the demo's sample tables.
- ``config``: flags > environment (``SHARDB_ADDR``, ``SHARDB_DATA_DIR``) > config file.
- ``run``: the commands as sync functions returning exit codes; ``cli``: their typer flags.

Names are imported on first use: ``shardb.cli`` (which every node process runs) mounts the
commands from ``shardb.surface.cli`` without loading the shell and the client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shardb.surface.config import (
        ConfigError,
        FileConfig,
        Target,
        load_file,
        resolve_target,
    )
    from shardb.surface.dataset import DemoTable, demo_tables, load_demo_data
    from shardb.surface.processes import NodeProcesses, ProcessControlError
    from shardb.surface.session import (
        DEFAULT_HEAL_AFTER_MS,
        AdminError,
        ClusterSession,
        open_session,
    )

_LAZY = {
    "ConfigError": "shardb.surface.config",
    "FileConfig": "shardb.surface.config",
    "Target": "shardb.surface.config",
    "load_file": "shardb.surface.config",
    "resolve_target": "shardb.surface.config",
    "DemoTable": "shardb.surface.dataset",
    "demo_tables": "shardb.surface.dataset",
    "load_demo_data": "shardb.surface.dataset",
    "NodeProcesses": "shardb.surface.processes",
    "ProcessControlError": "shardb.surface.processes",
    "DEFAULT_HEAL_AFTER_MS": "shardb.surface.session",
    "AdminError": "shardb.surface.session",
    "ClusterSession": "shardb.surface.session",
    "open_session": "shardb.surface.session",
}

__all__ = [
    "DEFAULT_HEAL_AFTER_MS",
    "AdminError",
    "ClusterSession",
    "ConfigError",
    "DemoTable",
    "FileConfig",
    "NodeProcesses",
    "ProcessControlError",
    "Target",
    "demo_tables",
    "load_demo_data",
    "load_file",
    "open_session",
    "resolve_target",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
