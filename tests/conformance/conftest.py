"""Every conformance test runs once per backend, through the ``backend`` fixture."""

from __future__ import annotations

import pytest

from .harness import BACKENDS


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name
