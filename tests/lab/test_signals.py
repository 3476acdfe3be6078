"""SIGTERM and SIGINT at random moments of a real `check` in the lab: during start-up (imports,
option parsing, config), while probing, and while the report is written. Every stop is exit 3
with no traceback, and the --output file is either absent or a complete report marked unknown.

The moments are counted from when the process's handlers are in place (its SigCgt in
/proc/PID/status shows SIGTERM caught), a few milliseconds after exec: before that the interpreter
is still starting and no Python program can catch anything."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from lab import Lab, scenario
from tests.lab.test_scenarios import SILENT_UNTIL_TIMEOUT, schema

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not (os.geteuid() == 0 and shutil.which("ip") and shutil.which("nft")),
                       reason="the lab needs root, `ip` and `nft`"),
]

TRIALS = 20
LATEST = 2.5  # seconds: start-up is the first ~0.3-0.6 s, then probing (SMB on 445 never answers, --timeout 30)


def _handlers_in_place(pid: int) -> bool:
    """The process is python (the `ip netns exec`, sh and env before it exec'd in place) and
    catches SIGTERM."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return Path(exe).name.startswith("python") and bool(caught & (1 << (signal.SIGTERM - 1)))


def test_a_stop_at_any_moment_is_exit_3_and_a_complete_or_absent_report(tmp_path: Path) -> None:
    rng = random.Random(10)
    outcomes = []
    with Lab(scenario(SILENT_UNTIL_TIMEOUT)) as lab:
        for trial in range(TRIALS):
            output = tmp_path / f"report-{trial}.json"
            first = rng.choice((signal.SIGTERM, signal.SIGINT))
            delay = rng.uniform(0, LATEST)
            # a third of the stops get a second signal soon after: it lands while the report is written
            again = rng.choice((signal.SIGTERM, signal.SIGINT)) if trial % 3 == 0 else None
            proc = subprocess.Popen(lab.node_command(
                [sys.executable, "-m", "agent", "check", *lab.scenario.check_args(), "--timeout", "30",
                 "--format", "json", "--output", str(output)]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
            while not _handlers_in_place(proc.pid):
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.001)
            time.sleep(delay)
            proc.send_signal(first)
            if again is not None:
                time.sleep(rng.uniform(0, 0.05))
                proc.send_signal(again)
            _stdout, stderr = proc.communicate(timeout=60)
            where = f"trial {trial}: {first.name} at {delay:.3f}s{f' then {again.name}' if again else ''}"
            assert proc.returncode == 3, f"{where}: exit {proc.returncode}: {stderr}"
            assert "Traceback" not in stderr, f"{where}: {stderr}"
            assert not list(tmp_path.glob(f".{output.name}.*")), where  # no temporary file left behind
            if output.exists():
                report = json.loads(output.read_text())  # complete: it parses
                jsonschema.validate(report, schema())
                assert (report["status"], report["exit_code"]) == ("unknown", 3), where
                assert report["interrupted"] == f"stopped by {first.name}", where
                outcomes.append("report")
            else:
                assert stderr.strip().splitlines()[-1] == "aml-netcheck: interrupted", f"{where}: {stderr}"
                outcomes.append("absent")
    # both kinds of moment were drawn: during start-up (no report yet) and during the run
    assert set(outcomes) == {"report", "absent"}, outcomes
