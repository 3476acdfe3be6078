"""Benchmarks: the whole agent process, in the lab and on the host, against issue 10's targets.

One invocation runs every case side by side and prints, per case, the medians of several runs of
wall time, CPU time (user + system of the agent process and its children), peak RSS and peak open
descriptors, then each target with its figure, the ratio figure/target and "meets" or "short".
Every `check` runs in a lab's node namespace (never on the host); the host runs only `--version`,
`plan` and `rules`, which send nothing. Timings are measured here, never asserted in tests.

    ./dev bench [--runs 5] [--scale-runs 3] [--quick] [--only CASE,...] [--endpoints 1000,5000] [--json] [--save]

Cases (names for --only):
  python              interpreter start-up alone (the floor under every figure; no target)
  version, plan, rules  the host commands (`plan` and `rules` for the healthy-private context)
  healthy-lab-ca      healthy-private, the lab's one-CA bundle as SSL_CERT_FILE (what the lab tests see)
  healthy-system-ca   the same with a system-size bundle: /etc/ssl/certs/ca-certificates.crt plus the lab CA
  healthy-delay       healthy-system-ca with DELAY ms more on every round trip of the lab link
  drop-445, nmap      nsg-drop-445 with --timeout 3, and nmap -sT (default timing) on the same TCP targets,
                      alternating run by run in the same lab
  tcp-N, https-N      healthy-system-ca plus N extra endpoints of the config file ([[endpoint]]), lab names
                      served in the lab (at most the config's bound, said when it caps N); first once each at
                      `ulimit -n` 256 and 64 (which also warms up), whose results must be those of the others
  deadline            --deadline D with every packet dropped (no-egress plus a drop of all TCP and UDP)
Every lab case except healthy-lab-ca uses the system-size bundle: a real node's trust store.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.inputs.config import MAX_BYTES, MAX_ENDPOINTS  # noqa: E402  (after the path is set)
from bench import measure  # noqa: E402
from bench.measure import Summary  # noqa: E402
from lab import Fault, Lab, LabUnavailable, delay, scenario  # noqa: E402

SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
NOFILE_LIMITS = (256, 64)
_HOST_PATH = f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_CASES = ("python", "version", "plan", "rules")
QUICK_CASES = (*HOST_CASES, "healthy-lab-ca", "healthy-system-ca")


@dataclass(frozen=True, slots=True)
class Result:
    """One case: its medians (None when it could not run) and what the figures need said."""

    case: str
    summary: Summary | None
    note: str = ""
    capped: int | None = None  # endpoints measured when the config's bound is below the count asked
    same_results: bool | None = None  # at every NOFILE_LIMITS (scale cases)


@dataclass(frozen=True, slots=True)
class Target:
    """A target of issue 10: `metric` of `case` at most `limit` (a number, or a case whose median
    wall time is the limit, for "no slower than nmap"); metric "results": unchanged at the limits."""

    text: str
    case: str
    metric: str
    limit: float | str | None = None
    unit: str = "s"


def targets(deadline: float, https: int = 1000, tcp: int = 5000) -> tuple[Target, ...]:
    return (
        Target("healthy default diagnosis, system-size CA bundle: wall <= 0.5 s", "healthy-system-ca", "wall_s", 0.5),
        Target("healthy default diagnosis, system-size CA bundle: CPU <= 0.35 s", "healthy-system-ca", "cpu_s", 0.35),
        Target("healthy default diagnosis, system-size CA bundle: peak RSS <= 60 MiB", "healthy-system-ca", "rss_mib",
               60, "MiB"),
        Target("one dropped port (nsg-drop-445, --timeout 3): wall <= nmap -sT, same run", "drop-445", "wall_s",
               "nmap"),
        Target(f"{https:,} HTTPS endpoints: wall <= 3 s", f"https-{https}", "wall_s", 3),
        Target(f"{https:,} HTTPS endpoints: peak RSS <= 120 MiB", f"https-{https}", "rss_mib", 120, "MiB"),
        Target(f"{tcp:,} TCP endpoints: wall <= 5 s", f"tcp-{tcp}", "wall_s", 5),
        Target(f"{https:,} HTTPS endpoints: results unchanged at ulimit -n 256 and 64", f"https-{https}", "results"),
        Target(f"{tcp:,} TCP endpoints: results unchanged at ulimit -n 256 and 64", f"tcp-{tcp}", "results"),
        Target("--version: wall <= 0.1 s", "version", "wall_s", 0.1),
        Target("plan: wall <= 0.2 s", "plan", "wall_s", 0.2),
        Target("rules: wall <= 0.2 s", "rules", "wall_s", 0.2),
        Target(f"--deadline {deadline:g} with everything dropped: wall <= D + 0.2 s", "deadline", "wall_s",
               deadline + 0.2),
    )


# -- running things -------------------------------------------------------------------------------


def agent(*args: str) -> list[str]:
    """The agent as `python -m agent` from this tree (the cwd of every run is the repository)."""
    return [sys.executable, "-m", "agent", *args]


def host_env() -> dict[str, str]:
    return {"PATH": _HOST_PATH, "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}


def repeat(argv: Sequence[str], runs: int, *, env: dict[str, str] | None = None,
           warm: bool = True) -> tuple[Summary, list[measure.Sample]]:
    """Medians of `runs` runs, after one unmeasured run that warms the page cache and the lab
    servers' certificate cache."""
    if warm:
        measure.run(argv, cwd=REPO, env=env)
    samples = [measure.run(argv, cwd=REPO, env=env) for _ in range(runs)]
    return Summary.of(samples), samples


def verdicts(stdout: bytes) -> frozenset[tuple[str, str, str | None]] | None:
    """What a JSON report says of each check: (id, status, reason); None without a report. A check that
    worked slowly (latency.slow) counts as the pass it is: how fast the lab's one server answers
    thousands of checks on two cores is its load, not a verdict the descriptor limit may change."""
    try:
        return frozenset((c["id"], "pass", None) if c["reason"] == "latency.slow"
                         else (c["id"], c["status"], c["reason"]) for c in json.loads(stdout)["checks"])
    except (ValueError, KeyError, TypeError):
        return None


def report_note(sample: measure.Sample) -> str:
    try:
        report = json.loads(sample.stdout)
    except ValueError:
        return "no JSON report"
    findings = ",".join(f["code"] for f in report.get("findings", [])) or "no findings"
    return f"{len(report['checks'])} checks, {findings}, {len(sample.stdout) / 1024:,.0f} KiB report"


@contextmanager
def trust_store(lab: Lab, system: bool) -> Iterator[None]:
    """The node's SSL_CERT_FILE (the lab's bundle) with the system store in front of the lab CA."""
    original = Path(lab.ca_bundle).read_bytes()
    if system:
        Path(lab.ca_bundle).write_bytes(SYSTEM_BUNDLE.read_bytes() + b"\n" + original)
    try:
        yield
    finally:
        Path(lab.ca_bundle).write_bytes(original)


def endpoints_config(directory: Path, probe: str, count: int) -> tuple[Path, int]:
    """A config file with `count` extra endpoints (at most the config's bound), each a distinct lab
    name: the lab resolves every name outside the private zones into 198.18.0.0/15, which its az
    namespace serves (TCP 8787 and HTTPS 443 on every address). An array of inline tables is the
    same TOML as [[endpoint]] tables, in fewer bytes. Returns the file and the count written."""
    written = min(count, MAX_ENDPOINTS)
    port = 443 if probe == "https" else 8787
    rows = "".join(f'{{host="{probe}{i}.bench.contoso.com",port={port},probe="{probe}"}},\n' for i in range(written))
    path = directory / f"{probe}-{written}.toml"
    text = f"endpoint=[\n{rows}]\n"
    if len(text.encode()) > MAX_BYTES:
        raise ValueError(f"{written} {probe} endpoints need {len(text.encode()):,} bytes of config, "
                         f"over the config's bound of {MAX_BYTES:,}")
    path.write_text(text)
    return path, written


# -- the cases ------------------------------------------------------------------------------------


class Bench:
    def __init__(self, runs: int, scale_runs: int, selected: frozenset[str], *, delay_ms: float,
                 deadline: float) -> None:
        self.runs = runs
        self.scale_runs = scale_runs
        self.selected = selected
        self.delay_ms = delay_ms
        self.deadline = deadline
        self.results: dict[str, Result] = {}

    def wants(self, *cases: str) -> bool:
        return any(case in self.selected for case in cases)

    def add(self, result: Result) -> None:
        self.results[result.case] = result
        print(f"  {row(result)}", flush=True)

    def host(self) -> None:
        context = scenario("healthy-private").check_args()
        commands = {"python": [sys.executable, "-c", "pass"], "version": agent("--version"),
                    "plan": agent("plan", *context), "rules": agent("rules", *context)}
        for case, argv in commands.items():
            if self.wants(case):
                summary, _ = repeat(argv, self.runs, env=host_env())
                self.add(Result(case, summary, "host" if case != "python" else "python -c pass (no target)"))

    def healthy(self, endpoint_counts: Sequence[int]) -> None:
        scale = [f"{probe}-{n}" for probe in ("tcp", "https") for n in endpoint_counts]
        if not self.wants("healthy-lab-ca", "healthy-system-ca", "healthy-delay", *scale):
            return
        with Lab(scenario("healthy-private")) as lab:
            argv = agent("check", *lab.scenario.check_args(), "--format", "json")
            if self.wants("healthy-lab-ca"):
                self.add(self.lab_case(lab, "healthy-lab-ca", argv, "lab CA only (1 certificate)"))
            with trust_store(lab, system=True):
                certificates = Path(lab.ca_bundle).read_bytes().count(b"BEGIN CERTIFICATE")
                if self.wants("healthy-system-ca"):
                    self.add(self.lab_case(lab, "healthy-system-ca", argv, f"{certificates} certificates"))
                if self.wants("healthy-delay"):
                    self.add(self.delayed(lab, argv))
                with tempfile.TemporaryDirectory(prefix="bench-", dir=lab.workdir) as directory:
                    for case in scale:
                        if self.wants(case):
                            self.add(self.endpoints(lab, case, Path(directory)))

    def lab_case(self, lab: Lab, case: str, argv: Sequence[str], note: str) -> Result:
        summary, samples = repeat(lab.node_command(argv), self.runs)
        return Result(case, summary, f"{note}; {report_note(samples[0])}")

    def delayed(self, lab: Lab, argv: Sequence[str]) -> Result:
        try:
            with delay.link_delay(lab, self.delay_ms) as how:
                summary, samples = repeat(lab.node_command(argv), self.runs)
        except delay.DelayUnavailable as error:
            return Result("healthy-delay", None, f"unavailable: {error}")
        return Result("healthy-delay", summary, f"+{self.delay_ms:g} ms per round trip ({how}); "
                                                f"{report_note(samples[0])}")

    def endpoints(self, lab: Lab, case: str, directory: Path) -> Result:
        probe, count = case.split("-")
        config, written = endpoints_config(directory, probe, int(count))
        same_config = next((r for r in self.results.values() if r.case.startswith(f"{probe}-")
                            and r.capped == written), None)
        if same_config is not None:  # both counts capped to the bound: the same config, measured once
            return replace(same_config, case=case, note=same_config.note.replace(
                f"{written} of {int(same_config.case.split('-')[1]):,}", f"{written} of {int(count):,}"))
        argv = lab.node_command(agent("check", *lab.scenario.check_args(), "--config", str(config),
                                      "--format", "json"))
        limited = {n: measure.run(argv, cwd=REPO, nofile=n) for n in NOFILE_LIMITS}  # these warm up too
        summary, samples = repeat(argv, self.scale_runs, warm=False)
        expected = verdicts(samples[0].stdout)
        differing = {n: -1 if expected is None or got is None else len(expected ^ got)
                     for n, got in ((n, verdicts(s.stdout)) for n, s in limited.items())}
        same = all(d == 0 for d in differing.values())
        at_limits = ", ".join(
            f"nofile {n}: {'same' if d == 0 else 'no report' if d < 0 else f'{d} differ'} "
            f"({limited[n].wall_s:.2f} s, {limited[n].fds} fds)" for n, d in differing.items())
        bound = f"{written} of {int(count):,} endpoints (the config's bound); " if written < int(count) else ""
        return Result(case, summary, f"{bound}{report_note(samples[0])}; {at_limits}",
                      capped=written if written < int(count) else None, same_results=same)

    def dropped(self) -> None:
        if not self.wants("drop-445", "nmap"):
            return
        with Lab(scenario("nsg-drop-445")) as lab, trust_store(lab, system=True):
            argv = lab.node_command(agent("check", *lab.scenario.check_args(), "--timeout", "3", "--format", "json"))
            first = measure.run(argv, cwd=REPO)  # warms up, and names the TCP targets
            checks = json.loads(first.stdout)["checks"]
            addresses = sorted({a for c in checks if c["layer"] == "tcp" for a in c["addresses"]},
                               key=ipaddress.ip_address)
            ports = sorted({c["port"] for c in checks if c["layer"] == "tcp"})
            connects = sum(len(c["addresses"]) for c in checks if c["layer"] == "tcp")
            nmap = shutil.which("nmap")
            scan = lab.node_command(["nmap", "-sT", "-Pn", "-n", "-oG", "-", "-p", ",".join(map(str, ports)),
                                     *addresses]) if nmap else None
            agent_runs, nmap_runs = [], []
            for _ in range(self.runs):  # alternating, so both see the same machine
                agent_runs.append(measure.run(argv, cwd=REPO))
                if scan is not None:
                    nmap_runs.append(measure.run(scan, cwd=REPO))
            self.add(Result("drop-445", Summary.of(agent_runs), f"--timeout 3; {report_note(agent_runs[0])}; "
                                                                f"{connects} TCP connects"))
            if scan is None:
                self.add(Result("nmap", None, "nmap is not installed (./dev bench installs it)"))
                return
            grepable = nmap_runs[0].stdout.decode(errors="replace")
            states = {state: grepable.count(f"/{state}/tcp") for state in ("open", "filtered", "closed")}
            self.add(Result("nmap", Summary.of(nmap_runs),
                            f"nmap -sT -Pn -n, default timing: {len(addresses)} addresses x {len(ports)} ports "
                            f"({','.join(map(str, ports))}) = {len(addresses) * len(ports)} probes: "
                            + ", ".join(f"{n} {state}" for state, n in states.items())))

    def everything_dropped(self) -> None:
        if not self.wants("deadline"):
            return
        with Lab(scenario("no-egress")) as lab:
            for protocol in ("tcp", "udp"):
                lab.apply(Fault("drop", protocol, None))
            argv = agent("check", *lab.scenario.check_args(), "--deadline", f"{self.deadline:g}", "--format", "json")
            summary, samples = repeat(lab.node_command(argv), self.runs)
            self.add(Result("deadline", summary, f"--deadline {self.deadline:g}, every TCP and UDP packet dropped; "
                                                 f"{report_note(samples[0])}"))


# -- the table ------------------------------------------------------------------------------------

HEADER = f"{'case':<18} {'runs':>4} {'wall s':>7} {'(min-max)':>13} {'CPU s':>6} {'RSS MiB':>7} {'fds':>5} exit  note"


def row(result: Result) -> str:
    s = result.summary
    if s is None:
        return f"{result.case:<18} {'-':>4} {'':>7} {'':>13} {'':>6} {'':>7} {'':>5} -     {result.note}"
    codes = ",".join(map(str, s.exit_codes))
    return (f"{result.case:<18} {s.runs:>4} {s.wall_s:7.3f} {f'({s.wall_min_s:.3f}-{s.wall_max_s:.3f})':>13} "
            f"{s.cpu_s:6.3f} {s.rss_mib:7.1f} {s.fds:>5} {codes:<5} {result.note}")


@dataclass(frozen=True, slots=True)
class Judged:
    target: str
    figure: str
    limit: str
    ratio: float | None
    verdict: str  # meets | short | not measured


def judge(target: Target, results: dict[str, Result]) -> Judged:
    result = results.get(target.case)
    if result is None or result.summary is None:
        return Judged(target.text, "-", "-", None, "not measured" + (f" ({result.note})" if result else ""))
    at = f" (at {result.capped} endpoints, the config's bound)" if result.capped is not None else ""
    if target.metric == "results":
        same = bool(result.same_results)
        return Judged(target.text, "same" if same else "changed", "same", None, ("meets" if same else "short") + at)
    figure: float = getattr(result.summary, target.metric)
    if isinstance(target.limit, str):
        other = results.get(target.limit)
        if other is None or other.summary is None:
            return Judged(target.text, f"{figure:.3f} s", target.limit, None, f"not measured ({target.limit})")
        limit, limit_text = other.summary.wall_s, f"{target.limit} {other.summary.wall_s:.3f} s"
    else:
        assert target.limit is not None
        limit, limit_text = target.limit, f"{target.limit:g} {target.unit}"
    ratio = figure / limit
    return Judged(target.text, f"{figure:.3f} {target.unit}" if target.unit == "s" else f"{figure:.1f} {target.unit}",
                  limit_text, ratio, ("meets" if figure <= limit else "short") + at)


def print_targets(judged: Sequence[Judged]) -> None:
    width = max(len(j.target) for j in judged)
    print(f"\n{'target (issue 10)':<{width}}  {'figure':>10}  {'target':>16}  {'ratio':>6}  verdict")
    for j in judged:
        ratio = f"{j.ratio:.2f}x" if j.ratio is not None else "-"
        print(f"{j.target:<{width}}  {j.figure:>10}  {j.limit:>16}  {ratio:>6}  {j.verdict}")


@dataclass(frozen=True, slots=True)
class Options:
    runs: int
    scale_runs: int
    cases: frozenset[str]
    endpoints: tuple[int, ...]
    delay_ms: float
    deadline: float
    save: bool
    json: bool


def parse(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__[__doc__.index("Cases"):],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=None, help="measured runs per case (default 5; 1 with --quick)")
    parser.add_argument("--scale-runs", type=int, default=None,
                        help="measured runs of the tcp-N and https-N cases (default 3, at most --runs)")
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_CASES)}")
    parser.add_argument("--only", default="", help="comma-separated case names (see below)")
    parser.add_argument("--endpoints", default="1000,5000", help="extra endpoint counts (default 1000,5000)")
    parser.add_argument("--delay-ms", type=float, default=20, help="added delay of healthy-delay (default 20)")
    parser.add_argument("--deadline", type=float, default=2, help="the deadline case's --deadline (default 2)")
    parser.add_argument("--json", action="store_true", help="print every figure as one JSON line at the end")
    parser.add_argument("--save", action="store_true", help="append that JSON line to bench/results/bench.jsonl")
    args = parser.parse_args(argv)
    counts = tuple(int(n) for n in args.endpoints.split(",") if n.strip())
    every = (*HOST_CASES, "healthy-lab-ca", "healthy-system-ca", "healthy-delay",
             *(f"{p}-{n}" for p in ("tcp", "https") for n in counts), "drop-445", "nmap", "deadline")
    cases = frozenset(c.strip() for c in args.only.split(",") if c.strip()) or frozenset(
        QUICK_CASES if args.quick else every)
    unknown = sorted(cases - set(every))
    if unknown:
        parser.error(f"unknown case {', '.join(unknown)} (known: {', '.join(every)})")
    runs = args.runs if args.runs is not None else 1 if args.quick else 5
    scale_runs = args.scale_runs if args.scale_runs is not None else min(runs, 3)
    if min(runs, scale_runs) < 1:
        parser.error("--runs and --scale-runs must be at least 1")
    return Options(runs, scale_runs, cases, counts, args.delay_ms, args.deadline, args.save, args.json)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    bench = Bench(options.runs, options.scale_runs, options.cases, delay_ms=options.delay_ms, deadline=options.deadline)
    print(f"aml-netcheck benchmarks: medians of {options.runs} runs per case ({options.scale_runs} of tcp-N and "
          f"https-N), {os.cpu_count()} CPUs, "
          f"config bound {MAX_ENDPOINTS} endpoints\n  {HEADER}", flush=True)
    scale = tuple(f"{probe}-{n}" for probe in ("tcp", "https") for n in options.endpoints)
    steps: tuple[tuple[tuple[str, ...], Callable[[], None]], ...] = (
        (HOST_CASES, bench.host),
        (("healthy-lab-ca", "healthy-system-ca", "healthy-delay", *scale), lambda: bench.healthy(options.endpoints)),
        (("drop-445", "nmap"), bench.dropped),
        (("deadline",), bench.everything_dropped),
    )
    for cases, step in steps:
        try:
            step()
        except (LabUnavailable, RuntimeError, OSError, ValueError, KeyError) as error:
            # a lab that cannot be built or a report that cannot be read ends that step, not the run
            for case in cases:
                if case in options.cases and case not in bench.results:
                    bench.add(Result(case, None, f"{type(error).__name__}: {error}"))
    judged = [j for t in targets(options.deadline) if t.case in options.cases
              for j in [judge(t, bench.results)]]
    if judged:
        print_targets(judged)
    line = json.dumps({"benchmark": "aml-netcheck", "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "runs": options.runs, "cpus": os.cpu_count(),
                       "results": {k: asdict(v) for k, v in bench.results.items()},
                       "targets": [asdict(j) for j in judged]})
    if options.json:
        print(line)
    if options.save:
        results = REPO / "bench" / "results"
        results.mkdir(exist_ok=True)
        with open(results / "bench.jsonl", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
