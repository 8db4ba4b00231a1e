"""Fixtures for every suite, registered once here: tiny artifacts (tests.factories), synthetic MNIST
(tests.fixtures_mnist) and served apps (tests.serving)."""

pytest_plugins = ["tests.factories", "tests.fixtures_mnist", "tests.serving"]
