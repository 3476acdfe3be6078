"""The command line: with agent/__main__.py (where the process starts and ends), the only module that prints.

Usage errors, bad config and internal errors all exit 3 (unknown) with one line on stderr and no
traceback, so a setup script can tell "the agent could not decide" from "the network is broken"."""

import copy
import functools
import inspect
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from click import exceptions as click_exceptions  # typer below 0.20 (pyproject.toml) parses with click

from agent import catalog, latency, version_line
from agent.diagnose.verdict import Profile, exit_code
from agent.inputs import config, context, values
from agent.inputs.given import InputError, Inputs
from agent.model import Check, Report, Result
from agent.output import Format, draw, render
from probes._compat import StrEnum

if TYPE_CHECKING:  # check and serve import them: plan, rules and merge need no event loop
    from agent import runner
    from agent.inputs.vantage import Vantage

EXIT_UNKNOWN = 3
_SIGNALS = (signal.SIGINT, signal.SIGTERM)

PROG = "aml-netcheck"
COMPLETE_VAR = "_AML_NETCHECK_COMPLETE"  # click's name for it: the variable the completion scripts set

# typer's own completion (add_completion) adds --install-completion, which edits the user's shell
# start-up files, and --show-completion, which finds the shell by walking the process tree
# (shellingham) and imports it at every start: `completion SHELL` prints click's script instead,
# and click answers the shell's requests (_complete, below).
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Diagnose the network paths Azure Machine Learning compute needs, from the node.")


class UsageProblem(Exception):
    """Bad input detected after option parsing (config file, context values)."""


class PlanFormat(StrEnum):
    table = "table"
    json = "json"


def _within(bound: values.Bound) -> Callable[[float | None], float | None]:
    """An option callback checking the value against the bound the config file uses too: the one
    check, whatever typer or click would let through (click's FloatRange passes NaN)."""
    def check(value: float | None) -> float | None:
        if value is None:
            return None
        try:
            return bound.check(value)
        except values.ValueProblem as exc:
            raise typer.BadParameter(str(exc)) from None

    return check


def _latency(value: str | None) -> str | None:
    """--latency tcp=300,tls=1000: checked as the config file's [latency] is (values.LATENCY_MS)."""
    if value is not None:
        try:
            latency.parse(value)
        except values.ValueProblem as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _thresholds(settings: config.Settings, given: str | None) -> latency.Thresholds:
    """The option's layers over the config file's, over the defaults."""
    return latency.thresholds({**settings.latency, **(latency.parse(given) if given else {})})


_LATENCY_HELP = ("Latency thresholds in milliseconds, LAYER=MS[,...] for dns, tcp, tls, http "
                 f"({values.LATENCY_MS}) [default: {latency.DEFAULT.shown()}]: slower, a check that works "
                 "warns (latency-degraded).")


def _version(value: bool) -> None:
    if value:
        print(version_line())
        raise typer.Exit(0)


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Diagnose the network paths Azure Machine Learning compute needs, from the node."""


# Context options shared by check, plan and rules: declared once, added to each command.
_CONTEXT_OPTIONS: list[inspect.Parameter] = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False if name == "no_detect" else None,
                      annotation=annotation)
    for name, annotation in [
        ("region", Annotated[str | None, typer.Option(help="Azure region of the workspace, e.g. eastus.")]),
        ("cloud", Annotated[str | None, typer.Option(help="public, usgov or china.")]),
        ("compute", Annotated[str | None, typer.Option(
            help="instance, cluster, serverless, vm, hdinsight or databricks.")]),
        ("public_ip", Annotated[bool | None, typer.Option(
            "--public-ip/--no-public-ip", help="The compute has a public IP.", show_default=False)]),
        ("private_endpoint", Annotated[bool | None, typer.Option(
            "--private-endpoint/--no-private-endpoint",
            help="The workspace is reached through a private endpoint.", show_default=False)]),
        ("peered", Annotated[bool | None, typer.Option(
            "--peered/--no-peered", help="The compute is in another VNet (or region) than the workspace's "
            "private endpoint, reached through VNet peering.", show_default=False)]),
        ("forced_tunnel", Annotated[bool | None, typer.Option(
            "--forced-tunnel/--no-forced-tunnel", help="The compute subnet's route table sends 0.0.0.0/0 to a "
            "virtual appliance or on-premises (forced tunnelling).", show_default=False)]),
        ("managed_network", Annotated[str | None, typer.Option(
            help="The workspace's managed virtual network: allow_internet_outbound, allow_only_approved_outbound, "
            "or disabled (the compute is in your own VNet) [default: not said, your own VNet].")]),
        ("dns_private_resolver", Annotated[bool | None, typer.Option(
            "--dns-private-resolver/--no-dns-private-resolver", help="The VNet's DNS is an Azure DNS Private "
            "Resolver (its inbound endpoint, or a DNS forwarding ruleset linked to the VNet).", show_default=False)]),
        ("registry_data_endpoint", Annotated[bool | None, typer.Option(
            "--registry-data-endpoint/--no-registry-data-endpoint",
            help="The container registry has dedicated data endpoints (<registry>.<region>.data.azurecr.io, "
            "Premium only).", show_default=False)]),
        ("storage_private_endpoint", Annotated[bool | None, typer.Option(
            "--storage-private-endpoint/--no-storage-private-endpoint",
            help="The workspace storage account has its own private endpoint, so its names must resolve privately "
            "[default: read from the CNAME chain].", show_default=False)]),
        ("key_vault_private_endpoint", Annotated[bool | None, typer.Option(
            "--key-vault-private-endpoint/--no-key-vault-private-endpoint",
            help="The workspace key vault has its own private endpoint, so its names must resolve privately "
            "[default: read from the CNAME chain].", show_default=False)]),
        ("registry_private_endpoint", Annotated[bool | None, typer.Option(
            "--registry-private-endpoint/--no-registry-private-endpoint",
            help="The workspace container registry has its own private endpoint, so its names must resolve privately "
            "[default: read from the CNAME chain].", show_default=False)]),
        ("workspace_id", Annotated[str | None, typer.Option(help="Workspace GUID.")]),
        ("workspace_name", Annotated[str | None, typer.Option(help="Workspace name.")]),
        ("storage_account", Annotated[str | None, typer.Option(help="The workspace's default storage account.")]),
        ("container_registry", Annotated[str | None, typer.Option(help="The workspace's container registry.")]),
        ("key_vault", Annotated[str | None, typer.Option(help="The workspace's key vault.")]),
        ("compute_name", Annotated[str | None, typer.Option(help="Name of this compute instance or cluster.")]),
        ("config_file", Annotated[Path | None, typer.Option(
            "--config", help="TOML file with context keys and settings.", dir_okay=False)]),
        ("features", Annotated[str | None, typer.Option(
            "--with", help="Situational requirements to include, comma-separated (e.g. rstudio).")]),
        ("no_detect", Annotated[bool, typer.Option(
            "--no-detect", help="Use only the options and the config file; detect nothing.")]),
    ]
]
_CONTEXT_NAMES = [p.name for p in _CONTEXT_OPTIONS]


def _with_context_options(command: Callable[..., int | None]) -> Callable[..., int | None]:
    """Give a command the shared context options; it receives them as one `options` dict."""
    own = [p for p in inspect.signature(command).parameters.values() if p.name != "options"]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> int | None:
        options = {name: kwargs.pop(name) for name in _CONTEXT_NAMES}
        return command(options=options, **kwargs)

    parameters = own + _CONTEXT_OPTIONS
    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    del wrapper.__wrapped__  # typer must see the combined signature, not the original
    return wrapper


def _inputs(options: dict[str, Any], use_identity: bool = False) -> Inputs:
    cfg = config.load(options["config_file"]) if options["config_file"] else config.Config()
    features = tuple(f.strip() for f in (options["features"] or "").split(",") if f.strip())
    given = {k: v for k, v in options.items() if k in context.KEYS_BY_NAME}
    try:
        return Inputs.build(given, cfg, features, detect_context=not options["no_detect"], use_identity=use_identity)
    except InputError as exc:
        raise UsageProblem(str(exc)) from None


def _planned(options: dict[str, Any]) -> tuple[Inputs, dict[str, Any], catalog.Catalog, tuple[Any, ...]]:
    """Inputs, context (detected from local files only: nothing is sent) and the plan, for the
    commands that never probe."""
    inputs = _inputs(options)
    try:
        values = inputs.context(inputs.local_detection())
    except InputError as exc:
        raise UsageProblem(str(exc)) from None
    cat, checks = inputs.plan(values)
    return inputs, values, cat, checks


@app.command()
@_with_context_options
def check(
    options: dict[str, Any],
    output_format: Annotated[Format, typer.Option(
        "--format", help="text (the default, to a terminal, a pipe or a file alike: colour and progress only on a "
                         "terminal), json, markdown, prometheus, html (one self-contained page with a diagram of "
                         "each traced path); for CI and log pipelines: junit (JUnit XML), tap (TAP 14) or ndjson "
                         "(a JSON object per check and finding per line).")] = Format.TEXT,
    output: Annotated[Path | None, typer.Option(help="Write the report to this file (atomically), in --format.",
                                                   dir_okay=False)] = None,
    textfile: Annotated[Path | None, typer.Option(
        help="Also write Prometheus metrics to this file (atomically), for node_exporter's textfile collector.",
        dir_okay=False)] = None,
    timeout: Annotated[float | None, typer.Option(
        help=f"Seconds each check may take, {values.TIMEOUT} [default: 5].", callback=_within(values.TIMEOUT))] = None,
    deadline: Annotated[float | None, typer.Option(
        help=f"Seconds the whole run may take, {values.DEADLINE}.", callback=_within(values.DEADLINE))] = None,
    wait: Annotated[float | None, typer.Option(
        help=f"Hook mode: re-run failing checks with backoff until healthy or this many seconds have passed, "
             f"{values.WAIT}.", callback=_within(values.WAIT))] = None,
    concurrency: Annotated[int | None, typer.Option(
        help=f"Checks probing at once, {values.CONCURRENCY} [default: 128].",
        callback=_within(values.CONCURRENCY))] = None,
    latency_ms: Annotated[str | None, typer.Option("--latency", help=_LATENCY_HELP, callback=_latency)] = None,
    exit_codes: Annotated[Profile, typer.Option(
        help="nagios: 0 ok, 1 warning, 2 critical, 3 unknown; npd: 0 ok, 1 problem, 2 unknown, the worst "
             "finding first on stdout; simple: 0 healthy, 1 not.")] = Profile.NAGIOS,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show passing checks too.")] = False,
    netns: Annotated[str | None, typer.Option(
        help="Diagnose from inside this network namespace (/run/netns/NAME, /proc/PID/ns/net): where a job "
             "runs.")] = None,
    container: Annotated[str | None, typer.Option(
        help="Diagnose from inside this running Docker container's network namespace, with its resolver "
             "files.")] = None,
    use_identity: Annotated[bool, typer.Option(
        "--use-identity", help="Also ask the key vault, the registry and ARM once each with a token of the "
        "node's managed identity (from IMDS): tells a resource's network-rule denial from an RBAC one. No "
        "secret is read; the token is never shown.")] = False,
    bundle: Annotated[Path | None, typer.Option(
        help="Also write a support bundle to this file (a tar.gz, atomically, mode 0600): the JSON and markdown "
             "reports, the plan, the node files behind the diagnosis, the versions; credentials redacted.",
        dir_okay=False)] = None,
) -> int:
    """Diagnose this node: probe every required endpoint and report the causes of failures."""
    inputs = _inputs(options, use_identity)
    if netns is not None or container is not None:
        inputs = replace(inputs, vantage=_vantage(netns, container))
    for target in (output, textfile, bundle):  # fail before probing, not after a run whose report is lost
        if target is not None and not os.access(target.parent if str(target.parent) else Path("."), os.W_OK):
            raise UsageProblem(f"cannot write {target}: its directory does not exist or is not writable")
    import asyncio

    from agent import engine, runner  # the probes pull in asyncio, dnspython, h11 and websockets: only check needs them
    from agent.clock import Deadline
    from agent.output import prometheus as metrics
    from agent.output import status

    settings = inputs.config.settings
    limits = runner.Limits(timeout=timeout or settings.timeout or engine.DEFAULT_TIMEOUT,
                           deadline=Deadline.from_process_start(deadline or settings.deadline),
                           wait=Deadline.from_process_start(wait) if wait else None,
                           concurrency=concurrency or settings.concurrency or engine.DEFAULT_CONCURRENCY,
                           latency=_thresholds(settings, latency_ms))
    # The format is never chosen by where the output goes (`check | less` reads as the terminal does);
    # only colour and progress are.
    interactive = output_format is Format.TEXT and sys.stderr.isatty() and not wait
    try:
        report = asyncio.run(_run_check(inputs, limits, progress=interactive))  # returns with the signals held
        code = exit_code(report.diagnosis.health, exit_codes)
        if exit_codes is Profile.NPD:
            print(status.npd_line(report)[:80])  # node-problem-detector keeps only the first 80 bytes
            if output is not None:
                _emit(report, output_format, output, verbose, code)
        else:
            _emit(report, output_format, output, verbose, code)
        if textfile is not None:
            _write(textfile, metrics.render_prometheus(report))
        if bundle is not None:
            _write_bundle(bundle, report)
        sys.stdout.flush()  # out whole before a held signal may end the process
        sys.stderr.flush()
    finally:  # a signal that arrived meanwhile is delivered now, to the process's own handler
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    return code


def _write_bundle(path: Path, report: Report) -> None:
    """The support bundle, from the report and the node's files as they are now (in the vantage, when
    the run entered one), mode 0600: it names the node's addresses and names."""
    from agent import versions
    from agent.output import bundle
    from probes import node

    files = bundle.members(report, node.source_files(), node.nft_ruleset(), versions(), ["aml-netcheck", *sys.argv[1:]])
    _write(path, bundle.archive(report, files), 0o600)
    print(f"aml-netcheck: support bundle written to {path}", file=sys.stderr)


def _vantage(netns: str | None, container: str | None) -> "Vantage":
    """Enter the vantage asked for, before anything is probed (one line and exit 3 if it cannot be)."""
    from agent.inputs import vantage

    if netns is not None and container is not None:
        raise UsageProblem("--netns and --container: give one vantage, not both")
    try:
        chosen = vantage.of_netns(netns) if netns is not None else vantage.of_container(str(container))
        return vantage.enter(chosen)
    except vantage.VantageError as exc:
        raise UsageProblem(str(exc)) from None


async def _run_check(inputs: Inputs, limits: "runner.Limits", *, progress: bool) -> Report:
    import asyncio

    from agent import engine, runner

    loop = asyncio.get_running_loop()
    state = engine.RunState()
    task = asyncio.current_task()

    def stop(signame: str) -> None:
        state.interrupted = state.interrupted or f"stopped by {signame}"  # the first stop is the reason
        assert task is not None
        task.cancel()

    def round_done(number: int, results: Sequence[Result], pause: float) -> None:
        failing = sorted({r.check.id for r in results if r.status.value == "fail"})
        print(f"aml-netcheck: round {number}: {len(failing)} failing ({', '.join(failing[:3])}"
              f"{', ...' if len(failing) > 3 else ''}); retrying in {pause:.0f}s", file=sys.stderr, flush=True)

    before = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    for sig in _SIGNALS:
        loop.add_signal_handler(sig, stop, sig.name)
    display = _Progress() if progress else None
    try:
        return await runner.diagnose_node(
            inputs, limits, state, on_result=display.advance if display else None,
            on_plan=display.start if display else None, on_round=round_done)
    finally:
        # From here until the report is out whole, a signal waits (check() releases it): removing
        # the loop's handler resets the signal's default action, which would kill the process.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)
            signal.signal(sig, before[sig])
        if display:
            display.close()


class Waiting:
    """The checks of a run still open and since when, so the progress line can name the one it waits
    on longest. A check opens when the check it needs has finished (at once when it needs none); the
    times are the display's own clock, given by the caller: the engine keeps the run's."""

    def __init__(self, checks: Sequence[Check], now: float) -> None:
        self._after: dict[str, list[str]] = {}  # a check's id -> the checks that need it
        self._open: dict[str, float] = {}
        for check in checks:
            if check.skip is not None:
                continue
            if check.needs is None:
                self._open[check.id] = now
            else:
                self._after.setdefault(check.needs, []).append(check.id)

    def finished(self, check_id: str, now: float) -> None:
        self._open.pop(check_id, None)
        for waiting in self._after.pop(check_id, ()):
            self._open[waiting] = now

    def longest(self, now: float) -> tuple[str, float] | None:
        """(check id, seconds open) of the check open longest; None when none is."""
        opened = list(self._open.items())  # read by the display's refresh thread: a copy, made at once
        if not opened:
            return None
        check_id, since = min(opened, key=lambda item: item[1])
        return check_id, now - since


WAITED = 1.0  # seconds a check is open before the progress line names it


def progress_note(failed: int, longest: tuple[str, float] | None) -> str:
    """What follows the progress bar's count: failures so far, and the check it waits on."""
    parts = [f"{failed} failing"] if failed else []
    if longest is not None and longest[1] >= WAITED:
        parts.append(f"waiting on {longest[0]} ({longest[1]:.1f} s)")
    return ", ".join(parts)


class _Progress:
    """Live progress on stderr while probing (interactive text mode only): "93/94, waiting on
    tls:foo:443 (4.1 s)" rather than a count that sits still."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn
        from rich.text import Text

        display = self

        class Note(ProgressColumn):
            def render(self, task: Task) -> Text:  # at every refresh, so the waited time runs on
                return Text(progress_note(display._failed, display._waiting.longest(time.monotonic())))

        self._clock = time.monotonic
        self._progress = Progress(TextColumn("probing"), BarColumn(), MofNCompleteColumn(), Note(),
                                  console=Console(stderr=True), transient=True)
        self._task = self._progress.add_task("", total=None)
        self._failed = 0
        self._waiting = Waiting((), self._clock())

    def start(self, checks: Sequence[Check]) -> None:
        """Called again when the run starts over with a new plan: the bar restarts."""
        self._waiting = Waiting(checks, self._clock())
        self._progress.reset(self._task, total=len(checks))
        self._progress.start()

    def advance(self, result: Result) -> None:
        self._failed += result.status.value == "fail"
        self._waiting.finished(result.check.id, self._clock())
        self._progress.update(self._task, advance=1)

    def close(self) -> None:
        self._progress.stop()


def _emit(report: Report, fmt: Format, output: Path | None, verbose: bool, code: int) -> None:
    if output is not None:
        _write(output, render(report, fmt, verbose=verbose))
        # The code this process exits with, in its --exit-codes profile (the report's is nagios's)
        print(f"aml-netcheck: {report.status} (exit {code}); report written to {output}",
              file=sys.stderr)
        return
    if fmt is not Format.TEXT or not sys.stdout.isatty():  # rich is loaded only for a terminal
        sys.stdout.write(render(report, fmt, verbose=verbose))
        return
    from rich.console import Console

    # On a terminal the text report gets colour and width; a pipe gets whole lines (grep, tickets).
    render(report, fmt, verbose=verbose, console=Console())


def _write(path: Path, content: str | bytes, mode: int = 0o644) -> None:
    from agent.output.files import write_atomic

    try:
        write_atomic(path, content, mode)
    except OSError as exc:
        raise UsageProblem(f"cannot write {path}: {exc.strerror or exc}") from None


@app.command()
@_with_context_options
def plan(
    options: dict[str, Any],
    output_format: Annotated[PlanFormat, typer.Option("--format", help="table or json.")] = PlanFormat.table,
) -> int:
    """List the checks `check` would run for this context, without sending a packet."""
    from agent.output import plan as shown

    _, values, cat, checks = _planned(options)
    if output_format is PlanFormat.json:
        print(json.dumps(shown.to_dict(cat, values, checks), indent=2))
    else:
        _print_table((shown.table(cat, checks),))
    return 0


def _print_table(tables: Sequence[draw.Table]) -> None:
    """On a terminal, rich's tables at its width, at least 140 columns; elsewhere plain text."""
    if not sys.stdout.isatty():
        sys.stdout.write(draw.plain_tables(tables))
        return
    from rich.console import Console

    Console(width=max(Console().width, 140)).print(draw.rich_tables(tables))


class RulesFormat(StrEnum):
    table = "table"
    az = "az"
    json = "json"


@app.command()
@_with_context_options
def rules(
    options: dict[str, Any],
    output_format: Annotated[RulesFormat, typer.Option(
        "--format", help="table, az (ready-to-run Azure CLI commands) or json.")] = RulesFormat.table,
    resource_group: Annotated[str, typer.Option(help="For --format az.")] = "<resource-group>",
    nsg: Annotated[str, typer.Option(help="For --format az: the compute subnet's NSG.")] = "<nsg-name>",
    firewall: Annotated[str, typer.Option(help="For --format az: the Azure Firewall.")] = "<firewall-name>",
    vnet: Annotated[str, typer.Option(help="For --format az: the compute VNet's resource id.")] = "<vnet-id>",
    subnet_prefix: Annotated[str, typer.Option(
        help="For --format az: the compute subnet's address prefix.")] = "<compute-subnet-prefix>",
    route_table: Annotated[str, typer.Option(
        help="For --format az: the compute subnet's route table (routes, with --forced-tunnel).")] = "<route-table>",
) -> int:
    """The NSG, firewall, route and DNS changes this context needs (a managed network's outbound rules),
    from the same catalog as the checks."""
    from agent import netrules as network_rules
    from agent.netrules import render

    inputs, values, cat, _ = _planned(options)
    ruleset = network_rules.rules(cat, values, inputs.plan_options.features)
    if output_format is RulesFormat.json:
        print(json.dumps(render.to_dict(ruleset), indent=2))
    elif output_format is RulesFormat.az:
        workspace = str(values["workspace_name"].value or "<workspace-name>")  # the managed network's
        print(render.render_az(ruleset, resource_group=resource_group, nsg=nsg, firewall=firewall, vnet=vnet,
                               subnet_prefix=subnet_prefix, route_table=route_table, workspace=workspace), end="")
    else:
        _print_table(render.render_table(ruleset))
    return 0


@app.command()
@_with_context_options
def serve(
    options: dict[str, Any],
    interval: Annotated[float, typer.Option(help=f"Seconds between diagnoses, {values.INTERVAL}.",
                                            callback=_within(values.INTERVAL))] = 300,
    state: Annotated[Path | None, typer.Option(
        help="Where the last report is kept (atomically) [default: $STATE_DIRECTORY/report.json, "
             "else /var/lib/aml-netcheck/report.json].", dir_okay=False)] = None,
    textfile: Annotated[Path | None, typer.Option(
        help="Prometheus metrics for node_exporter's textfile collector (written atomically).",
        dir_okay=False)] = None,
    listen: Annotated[str | None, typer.Option(
        help="Serve /healthz (200/503) and /metrics on this loopback HOST:PORT, e.g. 127.0.0.1:9119.")] = None,
    timeout: Annotated[float | None, typer.Option(
        help=f"Seconds each check may take, {values.TIMEOUT} [default: 5].", callback=_within(values.TIMEOUT))] = None,
    concurrency: Annotated[int | None, typer.Option(
        help=f"Checks probing at once, {values.CONCURRENCY} [default: 128].",
        callback=_within(values.CONCURRENCY))] = None,
    latency_ms: Annotated[str | None, typer.Option("--latency", help=_LATENCY_HELP, callback=_latency)] = None,
) -> int:
    """Run as a systemd health check: diagnose every interval, log only changes, keep the last report."""
    import asyncio

    from agent import engine, runner
    from agent.modes import serve as daemon
    from agent.modes.systemd import Journal, Notifier

    def load() -> Inputs:
        return _inputs(options)

    inputs = load()
    settings = inputs.config.settings
    address = _loopback(listen) if listen else None
    state_path = state or Path(os.environ.get("STATE_DIRECTORY", "/var/lib/aml-netcheck").split(":")[0]) / "report.json"
    try:
        state_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageProblem(f"cannot use the state directory {state_path.parent}: {exc.strerror or exc}") from None
    limits = runner.Limits(timeout=timeout or settings.timeout or engine.DEFAULT_TIMEOUT,
                           concurrency=concurrency or settings.concurrency or engine.DEFAULT_CONCURRENCY,
                           latency=_thresholds(settings, latency_ms))
    serving = daemon.Settings(interval=interval, state=state_path, textfile=textfile,
                              listen=address, round_deadline=settings.deadline or interval)
    try:
        return asyncio.run(daemon.Daemon(load, limits, serving, Notifier(), Journal()).run())
    except daemon.ServeError as exc:
        raise UsageProblem(str(exc)) from None


class MergeFormat(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


@app.command()
def merge(
    reports: Annotated[list[Path], typer.Argument(help="Node reports (check --format json).", dir_okay=False)],
    output_format: Annotated[MergeFormat, typer.Option(
        "--format", help="table (text), json or markdown (for a ticket).")] = MergeFormat.table,
) -> int:
    """Merge many node reports into one fleet view: findings per node, and the nodes that differ."""
    from agent.output import fleet

    loaded = []
    for path in reports:
        try:
            loaded.append((str(path), fleet.validate(str(path), json.loads(path.read_text("utf-8")))))
        except OSError as exc:
            raise UsageProblem(f"cannot read {path}: {exc.strerror or exc}") from None
        except (ValueError, fleet.ReportError) as exc:
            raise UsageProblem(f"{path}: {exc}" if not isinstance(exc, fleet.ReportError) else str(exc)) from None
    view = fleet.merge(loaded)
    if output_format is MergeFormat.json:
        print(json.dumps(view, indent=2))
    else:
        sys.stdout.write(fleet.render_markdown(view) if output_format is MergeFormat.markdown
                         else fleet.render_text(view))
    return int(view["exit_code"])


def _loopback(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if host not in ("127.0.0.1", "::1", "localhost") or not values.is_port(port):
        raise UsageProblem(f"--listen must be a loopback HOST:PORT such as 127.0.0.1:9119, not {listen!r}")
    return host, int(port)


@app.command()
def demo(
    scenario: Annotated[str | None, typer.Argument(help="Lab scenario [default: healthy-private].")] = None,
    list_scenarios: Annotated[bool, typer.Option("--list", help="Name the scenarios and exit.")] = False,
    output_format: Annotated[Format, typer.Option("--format", help="text or json.")] = Format.TEXT,
) -> int:
    """Build the lab (a simulated Azure VNet in network namespaces), diagnose it, tear it down."""
    import lab

    if list_scenarios:
        for item in lab.SCENARIOS.values():
            print(f"{item.name:<28} {item.description}")
        return 0
    try:
        chosen = lab.scenario(scenario or "healthy-private")
    except KeyError:
        raise UsageProblem(f"unknown scenario {scenario!r}; `aml-netcheck demo --list` names them") from None
    package = __name__.rpartition(".")[0]  # agent, or aml_netcheck.agent as installed (packaging/make_wheel_tree.py)
    argv = [sys.executable, "-m", package, "check", *chosen.check_args(), "--format", output_format.value]
    # The lab tears itself down on a stop (its own handlers, or KeyboardInterrupt): the signals'
    # usual dispositions, not the process's exit at once (agent/__main__.py).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"lab: building scenario {chosen.name}: {chosen.description}", file=sys.stderr)
    try:
        with lab.Lab(chosen) as running:
            # The report streams straight to this terminal (progress and colour included).
            proc = running.run_in_node(argv, timeout=300, stdout=None, stderr=None)
    except lab.LabUnavailable as exc:
        raise UsageProblem(f"lab unavailable: {exc}") from None
    return proc.returncode


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


@app.command()
def completion(shell: Annotated[Shell, typer.Argument(help="bash, zsh or fish.")]) -> int:
    """Print the shell completion script for SHELL: commands, options and their choices complete with TAB.

    bash: `aml-netcheck completion bash > /etc/bash_completion.d/aml-netcheck` (or `eval "$(aml-netcheck
    completion bash)"` in ~/.bashrc); zsh: the output as `_aml-netcheck` in a directory of $fpath;
    fish: `aml-netcheck completion fish > ~/.config/fish/completions/aml-netcheck.fish`."""
    from click import get_current_context
    from click.shell_completion import get_completion_class

    complete = get_completion_class(shell.value)
    assert complete is not None  # click has all three
    # The script only names the program and the variable; the requests it makes build the whole tree.
    sys.stdout.write(complete(get_current_context().find_root().command, {}, PROG, COMPLETE_VAR).source())
    return 0


def _complete(instruction: str) -> int:
    """click's answer to its completion scripts' request (`bash_complete`, ...), from the whole command
    tree. Asked first: typer's own handler, inside main(), reads typer's instruction style
    (`complete_bash`), which click's scripts do not send."""
    from click.shell_completion import shell_complete

    return shell_complete(typer.main.get_command(app), {}, PROG, COMPLETE_VAR, instruction)


def _click_command(args: Sequence[str]) -> Any:
    """click's command group for `args`, with only the command they name when they name one:
    typer builds each command from its signature, and the five a run does not use cost 15 ms of
    every start. Help, --version and an unknown name get every command."""
    named = [info for info in app.registered_commands if args and info.callback is not None
             and (info.name or typer.main.get_command_name(info.callback.__name__)) == args[0]]
    if not named:
        return typer.main.get_command(app)
    only = copy.copy(app)
    only.registered_commands = named
    return typer.main.get_command(only)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(argv) if argv is not None else sys.argv[1:]
    try:
        if os.environ.get(COMPLETE_VAR):  # a shell asking, through the script `completion` printed
            return _complete(os.environ[COMPLETE_VAR])
        result = _click_command(args).main(args=args, prog_name=PROG, standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except click_exceptions.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help() if exc.ctx else exc.format_message(), file=sys.stderr)
        return EXIT_UNKNOWN
    except click_exceptions.ClickException as exc:
        print(f"aml-netcheck: error: {exc.format_message()}", file=sys.stderr)
        return EXIT_UNKNOWN
    except (typer.Abort, KeyboardInterrupt):
        print("aml-netcheck: interrupted", file=sys.stderr)
        return EXIT_UNKNOWN
    except (UsageProblem, config.ConfigError) as exc:
        print(f"aml-netcheck: error: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    except Exception as exc:  # the last boundary: one line, never a traceback
        print(f"aml-netcheck: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    return result if isinstance(result, int) else 0
