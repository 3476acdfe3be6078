"""The CI and log formats from the real CLI in the lab: `check --format junit|tap|ndjson`, to
stdout and with --output (atomic), each read by its real consumer and exiting as the JSON run
of the same node does."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from lab import Lab, scenario
from tests.unit.ci_consumers import jq_lines, parse_junit, parse_tap

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not (os.geteuid() == 0 and shutil.which("ip") and shutil.which("nft")),
                       reason="the lab needs root, `ip` and `nft`"),
]


def test_every_ci_format_from_the_cli_with_the_exit_code_of_the_json_run(tmp_path: Path) -> None:
    with Lab(scenario("nsg-drop-445")) as lab:
        def check(*extra: str) -> tuple[str, int]:
            proc = lab.run_in_node([sys.executable, "-m", "agent", "check", *lab.scenario.check_args(),
                                    "--timeout", "3", *extra], timeout=120)
            assert "Traceback" not in proc.stderr, proc.stderr
            return proc.stdout, proc.returncode

        out, code = check("--format", "json")
        report = json.loads(out)
        assert code == report["exit_code"] == 2
        junit, tap, ndjson = tmp_path / "report.xml", tmp_path / "report.tap", tmp_path / "report.ndjson"
        assert check("--format", "junit", "--output", str(junit)) == ("", 2)
        stream, tap_code = check("--format", "tap")
        tap.write_text(stream)
        assert check("--format", "ndjson", "--output", str(ndjson)) == ("", 2)
        assert check("--format", "junit", "--exit-codes", "simple", "--output", str(tmp_path / "simple.xml"))[1] == 1
    assert tap_code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.ndjson", "report.tap", "report.xml", "simple.xml"]
    [suite] = parse_junit(junit.read_text())
    [failed] = [t for t in suite.iter("testcase") if t.find("failure") is not None]
    failure = failed.find("failure")
    assert failed.get("name") == "storage-file-smb" and failure is not None and failure.get("type") == "smb-blocked"
    # inside a container the Docker bridge check is inconclusive: an error, not a pass
    undecided = {r for c in report["checks"] if c["status"] == "inconclusive" for r in c["requirements"]} - {
        "storage-file-smb"}
    assert suite.get("failures") == "1" and suite.get("errors") == str(len(undecided))
    parsed = parse_tap(tap.read_text())
    assert parsed["version"] == 14 and parsed["extra"] == [] and parsed["final"]["fail"] == 1 + len(undecided)
    failed = [p["diag"]["code"] for p in parsed["asserts"] if (p["diag"] or {}).get("outcome") == "failed"]
    assert failed == ["smb-blocked"]
    records = jq_lines(ndjson.read_text())
    assert [r["type"] for r in records].count("check") == len(report["checks"])
    assert [r["code"] for r in records if r["type"] == "finding"] == [f["code"] for f in report["findings"]]
    assert {r["hostname"] for r in records} == {report["node"]["hostname"]}
