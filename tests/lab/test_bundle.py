"""`check --bundle FILE` in the lab, and `check`'s default format off a terminal.

The scenario is `proxy-auth-ok`: the node's proxy variables carry lab.squid.CREDENTIALS, which no
member of the bundle may show. The bundle is written atomically: stopped at any moment, the file is
absent or a whole archive, and no temporary file stays behind."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import Lab, scenario, squid
from tests.lab.test_signals import _handlers_in_place

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not (os.geteuid() == 0 and shutil.which("ip") and shutil.which("nft")),
                       reason="the lab needs root, `ip` and `nft`"),
]

MEMBERS = {"README.txt", "report.json", "report.md", "plan.json", "detection.json", "versions.json", "command.json",
           "node/resolv.conf", "node/hosts", "node/route", "node/nft-ruleset.txt", "node/proxy.json"}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(scenario("proxy-auth-ok")) as running:
        yield running


def unpack(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, mode="r:gz") as tar:
        return {info.name.removeprefix("aml-netcheck-bundle/"): tar.extractfile(info).read()  # type: ignore[union-attr]
                for info in tar.getmembers()}


def test_piped_check_is_text_and_the_bundle_holds_the_run_redacted(lab: Lab, tmp_path: Path) -> None:
    """No --format, stdout a pipe: the text report, plain (no colour, no progress), as on a terminal."""
    target = tmp_path / "support.tar.gz"
    done = lab.run_in_node([sys.executable, "-m", "agent", "check", *lab.scenario.check_args(), "--timeout", "3",
                            "--bundle", str(target)], timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("aml-netcheck on ") and "\x1b[" not in done.stdout + done.stderr
    assert "probing" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"aml-netcheck: support bundle written to {target}"
    assert target.stat().st_mode & 0o777 == 0o600
    files = unpack(target)
    optional = {"node/ipv6_route", "node/nsswitch.conf", "node/resolved-upstreams.conf"}  # where the node has them
    assert MEMBERS <= set(files) <= MEMBERS | optional
    report = json.loads(files["report.json"])
    assert (report["status"], report["exit_code"]) == ("ok", 0)
    assert [c["id"] for c in json.loads(files["plan.json"])["checks"]] == [c["id"] for c in report["checks"]]
    assert files["report.md"].decode().startswith("# Azure ML network check: OK")
    assert b"nameserver" in files["node/resolv.conf"]
    assert b"nft list ruleset" not in files["node/nft-ruleset.txt"]  # root in the lab: readable
    proxy = json.loads(files["node/proxy.json"])
    assert proxy["environment"]["HTTPS_PROXY"].startswith("http://***@")
    for name, data in files.items():
        for secret in squid.CREDENTIALS:
            assert secret.encode() not in data, f"{name} shows {secret}"


def test_a_stopped_bundle_is_absent_or_whole(lab: Lab, tmp_path: Path) -> None:
    rng = random.Random(12)
    for trial in range(6):
        target = tmp_path / f"bundle-{trial}.tar.gz"
        proc = subprocess.Popen(lab.node_command(
            [sys.executable, "-m", "agent", "check", *lab.scenario.check_args(), "--timeout", "3",
             "--format", "json", "--bundle", str(target)]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while not _handlers_in_place(proc.pid):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 1.5))
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert "Traceback" not in stderr, stderr
        assert not list(tmp_path.glob(f".{target.name}.*")), f"trial {trial}: a temporary file is left"
        if target.exists():
            report = json.loads(unpack(target)["report.json"])
            assert report["interrupted"] in (None, "stopped by SIGTERM")
            assert proc.returncode == (3 if report["interrupted"] else 0)
        else:
            assert proc.returncode == 3


def test_the_bundle_member_list_is_read_from_a_stream(lab: Lab, tmp_path: Path) -> None:
    """`tar tzf` reads it as a support engineer will."""
    target = tmp_path / "b.tgz"
    done = lab.run_in_node([sys.executable, "-m", "agent", "check", *lab.scenario.check_args(), "--timeout", "3",
                            "--format", "json", "--bundle", str(target)], timeout=120)
    assert done.returncode == 0, done.stderr
    json.loads(done.stdout)
    listed = subprocess.run(["tar", "tzf", str(target)], capture_output=True, text=True, check=True).stdout
    assert {line.removeprefix("aml-netcheck-bundle/") for line in listed.split()} >= MEMBERS
    with tarfile.open(fileobj=io.BytesIO(target.read_bytes()), mode="r:gz") as tar:
        assert all(info.isfile() for info in tar.getmembers())
