"""Golden-output interaction scripts, one test per ``testdata/<backend>/<name>.txt``.

See ``runner.py`` for the script language. On a mismatch the test fails with a unified diff
(expected -> actual); ``pytest tests/interaction --rewrite`` writes the actual output into the
files instead, to be reviewed with ``git diff`` before it is committed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .runner import SafetyViolation, check_file
from .script import parse

TESTDATA = Path(__file__).parent / "testdata"


def _cases() -> list[object]:
    cases: list[object] = []
    for path in sorted(TESTDATA.glob("*/*.txt")):
        reason = parse(path.read_text()).xfail_reason()
        # Only the safety violation the script documents counts as the expected failure; a
        # mismatch in the output (e.g. once the bug is fixed) still fails loudly.
        marks = (
            [pytest.mark.xfail(reason=reason, raises=SafetyViolation, strict=True)]
            if reason
            else []
        )
        cases.append(pytest.param(path, id=f"{path.parent.name}/{path.name}", marks=marks))
    return cases


@pytest.mark.parametrize("path", _cases())
def test_script(path: Path, request: pytest.FixtureRequest) -> None:
    """The script's recorded output is exactly what the backend's core does today."""
    diff = check_file(path, rewrite=bool(request.config.getoption("--rewrite")))
    if diff is not None:
        pytest.fail(
            f"{path} differs from the core's output (rerun with --rewrite, review the diff):\n"
            + diff,
            pytrace=False,
        )
