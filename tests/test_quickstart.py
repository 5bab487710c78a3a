"""The README's first quickstart command, followed from a fresh virtual environment.

Slow (it installs shardb and its dependencies into a new venv), so it runs with
``pytest -m slow tests/test_quickstart.py``; the README's *test* command is checked on every
CI run by tests/test_readme.py and by CI itself.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_readme import ROOT, readme_commands

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_the_demo_quickstart_works_in_a_fresh_venv(tmp_path: Path) -> None:
    first = readme_commands()[0]
    # The README runs the interactive demo; here the same install, then the demo with -e.
    assert first.endswith(".venv/bin/shardb demo"), first
    venv = tmp_path / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "-e", str(ROOT)], check=True, timeout=900
    )
    demo = subprocess.run(
        [
            str(venv / "bin" / "shardb"),
            "demo",
            "-e",
            "SELECT count(*) FROM products",
            "--format",
            "csv",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert demo.returncode == 0, demo.stderr
    assert demo.stdout.strip().splitlines()[-1] == "1000", (demo.stdout, shlex.quote(first))
