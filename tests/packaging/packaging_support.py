"""Helpers shared by the packaging tests (their fixtures are in conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 120,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)


def build(target: str, dist: Path) -> None:
    result = run([str(REPO / "packaging" / "build"), target], cwd=REPO, timeout=900,
                 env={**os.environ, "DIST_DIR": str(dist)})
    assert result.returncode == 0, f"packaging/build {target}:\n{result.stdout}\n{result.stderr}"


def needs(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (./dev installs it)")
