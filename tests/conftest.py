"""Options shared by the whole test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="regenerate the expected output of tests/interaction scripts in place",
    )


@pytest.fixture(autouse=True)
def _isolated_structlog() -> Iterator[None]:
    """Commands run in-process (typer's CliRunner) configure structlog for a CLI: warnings
    only, to the stderr of that invocation. Undo it after every test so that later tests log
    (and capture logs) with the defaults, and never write to a stream that was closed."""
    yield
    if structlog.is_configured():
        structlog.reset_defaults()
