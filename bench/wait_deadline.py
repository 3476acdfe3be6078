"""Benchmark: how far `check --wait` runs past its wait on a fault that never clears.

The hook contract is "never past the deadline by more than a second"; this measures the overrun
of the agent process (wall time minus the wait) in the lab's nsg-drop-445 scenario, median of
several runs. Timings are measured here, never asserted in tests.

    .venv/bin/python bench/wait_deadline.py [--runs 3] [--wait 8] [--timeout 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import Lab, scenario


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--wait", type=float, default=8)
    parser.add_argument("--timeout", default="2")
    args = parser.parse_args()
    overruns = []
    with Lab(scenario("nsg-drop-445")) as lab:
        argv = [sys.executable, "-m", "agent", "check", *lab.scenario.check_args(), "--wait", f"{args.wait:g}",
                "--timeout", args.timeout, "--format", "json"]
        for _ in range(args.runs):
            started = time.monotonic()
            proc = subprocess.run(lab.node_command(argv), capture_output=True, check=False)
            overruns.append(time.monotonic() - started - args.wait)
            print(f"  exit {proc.returncode}, overrun {overruns[-1]:+.3f}s (interpreter start-up included)")
    print(f"check --wait {args.wait:g}: overrun median {statistics.median(overruns):+.3f}s, "
          f"max {max(overruns):+.3f}s over {args.runs} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
