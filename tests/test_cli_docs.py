"""docs/cli.md is generated from the typer app and must match it (regenerate with the
command in its first line's comment when a command or option changes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "typer shardb.cli utils docs --name shardb --title {title!r} --output docs/cli.md"
TITLE = "shardb command reference (generated)"


def test_cli_reference_matches_the_typer_app(tmp_path: Path) -> None:
    out = tmp_path / "cli.md"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "typer",
            "shardb.cli",
            "utils",
            "docs",
            "--name",
            "shardb",
            "--title",
            TITLE,
            "--output",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=120,
        cwd=ROOT,
    )
    committed = (ROOT / "docs" / "cli.md").read_text()
    assert out.read_text() == committed, "docs/cli.md is out of date; run: " + REGENERATE.format(
        title=TITLE
    )
