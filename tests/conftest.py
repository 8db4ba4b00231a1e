"""Fixtures for every suite, registered once here: tiny artifacts (tests.factories), synthetic MNIST
(tests.fixtures_mnist) and served apps (tests.serving)."""

import pytest

pytest_plugins = ["tests.factories", "tests.fixtures_mnist", "tests.serving"]


@pytest.fixture
def anyio_backend() -> str:
    """The service runs on asyncio (uvloop); anyio would also run every async test on trio when trio is installed."""
    return "asyncio"
