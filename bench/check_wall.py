"""Benchmark: whole-process cost of `aml-netcheck check` in the lab.

The lab runs the default catalog for the healthy private-endpoint scenario with one blackholed
port (the NSG drops TCP 445), and `check --timeout 3` runs N times in the node namespace. Reports
the median and spread of wall time, CPU time (user + system) and peak RSS of the agent process,
as a table and as one JSON line (appended to bench/results/check_wall.jsonl when --save is
given). Timings are measured here, never asserted in tests.

With --system-bundle the node's trust store is a system-size one (Debian's bundle plus the lab CA)
instead of the lab's one-CA bundle: what a TLS context costs to load on a real node.

    ./dev bench [--runs 7] [--timeout 3] [--scenario nsg-drop-445] [--system-bundle] [--save]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import Lab, scenario

SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # Debian's and Ubuntu's store


def system_bundle(lab: Lab) -> list[str]:
    """An `env` prefix giving the node a system-size trust store: the system bundle plus the lab CA."""
    bundle = lab.workdir / "system-bundle.pem"
    bundle.write_bytes(SYSTEM_BUNDLE.read_bytes() + Path(lab.ca_bundle).read_bytes())
    return ["env", f"SSL_CERT_FILE={bundle}"]


def measure(lab: Lab, timeout: str, prefix: list[str]) -> dict[str, float]:
    argv = [*prefix, sys.executable, "-m", "agent", "check", *lab.scenario.check_args(), "--format", "json",
            "--timeout", timeout]
    started = time.monotonic()
    proc = subprocess.Popen(lab.node_command(argv), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    stdout = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    report = json.loads(stdout)
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024,
            "checks": len(report["checks"]), "exit_code": proc.returncode}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--timeout", default="3")
    parser.add_argument("--scenario", default="nsg-drop-445")
    parser.add_argument("--system-bundle", action="store_true",
                        help=f"the node trusts {SYSTEM_BUNDLE} plus the lab CA instead of the lab CA alone")
    parser.add_argument("--save", action="store_true", help="append the result to bench/results/check_wall.jsonl")
    args = parser.parse_args()
    with Lab(scenario(args.scenario)) as lab:
        prefix = system_bundle(lab) if args.system_bundle else []
        measure(lab, args.timeout, prefix)  # warm the page cache and the lab's certificate cache
        samples = [measure(lab, args.timeout, prefix) for _ in range(args.runs)]
    summary: dict[str, object] = {
        "benchmark": "check_wall", "scenario": args.scenario, "timeout_s": float(args.timeout),
        "runs": args.runs, "system_bundle": args.system_bundle, "checks": samples[0]["checks"],
        "exit_code": samples[0]["exit_code"],
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(f"check in lab scenario {args.scenario}: {summary['checks']} checks, --timeout {args.timeout}, "
          f"{args.runs} runs (exit {summary['exit_code']})"
          + (", system-size CA bundle" if args.system_bundle else ""))
    for key in ("wall_s", "cpu_s", "peak_rss_mib"):
        values = [s[key] for s in samples]
        summary[key] = {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                        "max": round(max(values), 3)}
        print(f"  {key:<13} median {statistics.median(values):8.3f}   min {min(values):8.3f}   max {max(values):8.3f}")
    line = json.dumps(summary)
    print(line)
    if args.save:
        results = Path(__file__).resolve().parent / "results"
        results.mkdir(exist_ok=True)
        with open(results / "check_wall.jsonl", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
