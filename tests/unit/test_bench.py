"""The benchmark runner works (bench/run.py): its quick host cases run and are judged, and the
scale cases' config is one the agent loads. Timings are printed by the runner, never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.inputs import config
from bench.run import endpoints_config

ROOT = Path(__file__).resolve().parents[2]


def test_runner_measures_and_judges_a_host_case() -> None:
    proc = subprocess.run([sys.executable, "bench/run.py", "--only", "version", "--runs", "1", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout.splitlines()[-1])
    version = figures["results"]["version"]["summary"]
    assert version["runs"] == 1 and version["exit_codes"] == [0] and version["fds"] > 0
    [target] = figures["targets"]
    assert target["target"].startswith("--version") and target["verdict"] in ("meets", "short")


@pytest.mark.parametrize(("probe", "asked"), [("tcp", 3), ("https", 5000), ("tcp", 6000)])
def test_scale_config_is_loaded_by_the_agent_up_to_its_bound(tmp_path: Path, probe: str, asked: int) -> None:
    path, written = endpoints_config(tmp_path, probe, asked)
    endpoints = config.load(path).endpoints
    assert written == min(asked, config.MAX_ENDPOINTS) == len(endpoints) == len({e.host for e in endpoints})
    assert {(e.probe, e.port) for e in endpoints} == {(probe, 443 if probe == "https" else 8787)}
