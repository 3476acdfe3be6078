"""`aml-netcheck merge` on reports made in the lab: two healthy nodes and one whose NSG drops 445."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from agent.cli import main
from lab import Lab, scenario

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not (os.geteuid() == 0 and shutil.which("ip") and shutil.which("nft")),
                       reason="the lab needs root, `ip` and `nft`"),
]


def report_from(name: str, output: Path) -> Path:
    with Lab(scenario(name)) as lab:
        proc = lab.run_in_node([sys.executable, "-m", "agent", "check", *lab.scenario.check_args(), "--timeout", "3",
                                "--format", "json", "--output", str(output)], timeout=120)
    assert proc.returncode in (0, 2), proc.stderr
    return output


def test_merge_finds_the_node_that_differs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reports = [report_from("healthy-private", tmp_path / "node-0.json"),
               report_from("nsg-drop-445", tmp_path / "node-1.json"),
               report_from("healthy-private", tmp_path / "node-2.json")]
    assert main(["merge", *map(str, reports), "--format", "json"]) == 2
    fleet = json.loads(capsys.readouterr().out)
    assert (fleet["nodes_total"], fleet["status"], fleet["usual_findings"]) == (3, "critical", [])
    [smb] = fleet["findings"]
    assert smb["code"] == "smb-blocked" and len(smb["nodes"]) == 1 and smb["nodes"][0].endswith("node-1.json)")
    [outlier] = fleet["outliers"]
    assert outlier["node"] == smb["nodes"][0] and outlier["extra"] == ["smb-blocked"]
    assert main(["merge", *map(str, reports)]) == 2
    text = capsys.readouterr().out
    assert "3 nodes, fleet status critical" in text and "smb-blocked: 1/3 nodes" in text and "differs: " in text
