"""The packaging marker, registered here so that tests/packaging is self-contained under
--strict-markers."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "packaging: builds the release artifacts (slow: PyPI, a venv, dpkg-deb)")
