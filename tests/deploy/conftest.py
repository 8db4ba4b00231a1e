"""The deploy checks' one fixture; their shared helpers are in tests/deploy/common.py."""

from __future__ import annotations

import pytest

from tests.deploy.common import DOCKERFILE, Stage, parse_dockerfile


@pytest.fixture(scope="session")
def dockerfile() -> tuple[list[Stage], dict[str, str]]:
    return parse_dockerfile(DOCKERFILE.read_text())
