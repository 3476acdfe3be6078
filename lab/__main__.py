"""Manual debugging: `python -m lab up [SCENARIO]` builds a lab and keeps it until Ctrl-C;
`python -m lab list` names the scenarios."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys

from lab import DEFAULT_SCENARIO, SCENARIOS, Lab, LabUnavailable, scenario


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="build a lab and keep it until Ctrl-C")
    up.add_argument("scenario", nargs="?", default=DEFAULT_SCENARIO, choices=sorted(SCENARIOS))
    commands.add_parser("list", help="name the scenarios")
    args = parser.parse_args(argv)

    if args.command == "list":
        width = max(map(len, SCENARIOS))
        for s in SCENARIOS.values():
            print(f"{s.name:{width}}  {s.summary}")
        return 0
    try:
        with Lab(scenario(args.scenario)) as lab:
            print(f"lab {lab.scenario.name} up in {lab.bringup_seconds:.2f}s")
            print(f"  node namespace  {lab.node_ns}")
            print(f"  az namespace    {lab.az_ns}")
            print(f"  CA bundle       {lab.ca_bundle}")
            print(f"  faults          {', '.join(map(str, lab.faults)) or 'none'}")
            print("  run in the node:", shlex.join(lab.node_command(["bash"])))
            print("Ctrl-C tears it down.", flush=True)
            signal.pause()
    except LabUnavailable as error:
        print(f"lab unavailable: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
