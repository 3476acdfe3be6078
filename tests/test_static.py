"""Static checks are part of the suite: a ruff finding anywhere in the repository, or a mypy --strict
error in the shipped packages, fails the test run like any other test. Both tools are test
dependencies (the `test` extra), so a missing tool fails here too rather than skipping."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def root(request: pytest.FixtureRequest) -> Path:
    return request.config.rootpath


def run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=root, capture_output=True, text=True,
                          timeout=600, check=False)


def test_ruff(root: Path) -> None:
    proc = run(root, "ruff", "check", "--output-format", "concise", str(root))
    code = proc.returncode
    assert code == 0, f"ruff check failed (exit {code}):\n{proc.stdout}{proc.stderr}"


def test_mypy_strict(root: Path) -> None:
    proc = run(root, "mypy", "--strict", "--cache-dir", str(root / ".mypy_cache"), "agent", "probes", "lab")
    code = proc.returncode
    assert code == 0, f"mypy --strict failed (exit {code}):\n{proc.stdout}{proc.stderr}"
