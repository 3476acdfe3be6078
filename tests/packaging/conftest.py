"""The release artifacts, built once per session with the documented command (`packaging/build`)
into a temporary DIST_DIR, shared by test_artifacts.py and test_systemd_container.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from packaging_support import SYSTEM_PYTHON, build, needs


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("AML_NETCHECK_TEST_DEB")  # a .deb built before, to iterate on the tests
    if given:
        return Path(given).resolve()
    needs("dpkg-deb", "dpkg")
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"the .deb is built on {SYSTEM_PYTHON}, which is missing")
    dist = tmp_path_factory.mktemp("dist-deb")
    build("deb", dist)
    (found,) = dist.glob("aml-netcheck_*.deb")
    return found


@pytest.fixture(scope="session")
def deb_tree(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("deb-tree")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    return tree
