"""Running ``python -m shardb.cli`` as a user would, and making sure no node outlives a test.

Every command runs with ``TMPDIR``, ``HOME`` and ``XDG_CONFIG_HOME`` inside the test's
``tmp_path``, so a demo's temporary cluster, the shell history and the config file all live
there; :func:`reap` then finds any node process whose command line names that directory and
stops it (the safety net for a failed test), and :func:`node_pids` lets a test assert that a
command cleaned up after itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

COMMAND_TIMEOUT_S = 120.0


def env_for(tmp_path: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SHARDB_") and key not in ("XDG_CONFIG_HOME",)
    }
    env.update(
        {
            "TMPDIR": str(tmp_path),
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": "200",
        }
    )
    env.update(extra or {})
    return env


def shardb(
    tmp_path: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m shardb.cli ARGS`` to completion (stdin closed unless ``input``)."""
    return subprocess.run(
        [sys.executable, "-m", "shardb.cli", *args],
        env=env_for(tmp_path, env),
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        cwd=cwd or tmp_path,
        check=False,
    )


def node_pids(under: Path) -> list[int]:
    """Live ``shardb.cli node start`` processes whose command line mentions ``under``."""
    needle = str(under).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().split(") ", 1)[1][:1]
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            continue
        if state != "Z" and b"node\0start" in cmdline and needle in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def reap(under: Path, grace_s: float = 10.0) -> list[int]:
    """Stop every node process started under ``under``; return the pids that were running."""
    pids = node_pids(under)
    for pid in pids:
        for signum in (signal.SIGCONT, signal.SIGTERM):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                break
    deadline = time.monotonic() + grace_s
    while node_pids(under) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in node_pids(under):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids
