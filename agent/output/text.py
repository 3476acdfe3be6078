"""Human-readable text report: findings first (the causes and their fixes), then every
requirement with the checks behind it. Pure over a Report; the CLI picks the console."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from agent.model import Finding, Report, Result, Severity
from agent.output.jsonreport import summary_counts
from probes.reasons import Status

_STATUS_STYLE = {
    Status.PASS: ("ok", "green"), Status.WARN: ("warn", "yellow"), Status.FAIL: ("FAIL", "bold red"),
    Status.INCONCLUSIVE: ("??", "cyan"), Status.SKIP: ("skip", "dim"),
}
_SEVERITY_STYLE = {Severity.CRITICAL: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
_REPORT_STYLE = {"ok": "bold green", "warning": "bold yellow", "critical": "bold red", "unknown": "bold magenta"}


def render_text(report: Report, console: Console, *, verbose: bool = False) -> None:
    _header(report, console)
    for index, finding in enumerate(report.findings, 1):
        _finding(index, finding, console)
    console.print()
    _requirements(report, console, verbose)
    _footer(report, console)


def _header(report: Report, console: Console) -> None:
    ctx = report.context
    shape = ", ".join(filter(None, [
        f"compute {ctx['compute'].value}" + (f" {ctx['compute_name'].value}" if ctx["compute_name"].value else ""),
        str(ctx["region"].value or "region unknown"),
        f"{ctx['cloud'].value} cloud",
        "public IP" if ctx["public_ip"].value else "no public IP",
        "private-endpoint workspace" if ctx["private_endpoint"].value else "public workspace",
    ]))
    console.print(Text(f"aml-netcheck on {report.node.get('hostname', '?')}: {shape}", style="bold"))
    problems = [f for f in report.findings if f.severity >= Severity.WARNING]
    headline = f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found" if problems else "no problems found"
    console.print(Text(headline, style=_REPORT_STYLE[report.status]))
    if report.interrupted:
        console.print(Text(f"run incomplete: {report.interrupted}", style="bold magenta"))


def _finding(index: int, finding: Finding, console: Console) -> None:
    console.print()
    line = Text(f"{index}. ")
    line.append(f"{finding.severity.label.upper()} ", style=_SEVERITY_STYLE[finding.severity])
    line.append(f"[{finding.code}] ", style="bold")
    line.append(finding.summary)
    console.print(line)
    console.print(f"   [dim]why:[/dim]  {escape(finding.cause)}")
    console.print(f"   [dim]fix:[/dim]  {escape(finding.remedy)}")
    if finding.docs:
        console.print(f"   [dim]docs:[/dim] {escape(' '.join(finding.docs))}")


def _requirements(report: Report, console: Console, verbose: bool) -> None:
    codes = {check: f.code for f in report.findings for check in f.checks}
    by_requirement: dict[str, list[Result]] = {}
    for result in report.results:
        for requirement_id in result.check.requirements:
            by_requirement.setdefault(requirement_id, []).append(result)
    for requirement in report.catalog.requirements:
        results = by_requirement.get(requirement.id)
        if not results:
            continue
        worst = max((r.status for r in results if report.unneeded(r) is None), key=_rank, default=Status.PASS)
        label, style = _STATUS_STYLE[worst]
        line = Text(f"{label:>4} ", style=style)
        line.append(f"{requirement.id:<28}", style="bold")
        line.append(requirement.purpose, style="dim" if worst is Status.PASS else "")
        console.print(line)
        for result in results:
            judged = report.unneeded(result)
            if judged is not None:  # the proxy path works: the direct one is not needed
                if verbose:
                    _result_line(result, judged.text, console)
            elif verbose or result.status not in (Status.PASS, Status.SKIP) or result.reason_is_context_skip:
                _result_line(result, codes.get(result.check.id), console)


def _rank(status: Status) -> int:
    return [Status.PASS, Status.SKIP, Status.INCONCLUSIVE, Status.WARN, Status.FAIL].index(status)


def _result_line(result: Result, note: str | None, console: Console) -> None:
    label, style = _STATUS_STYLE[result.status]
    line = Text("       ")
    line.append(f"{label:<4} ", style=style)
    line.append(f"{result.check.layer.value:<9} {result.check.target}")
    if result.check.path != "direct":
        line.append(" via the proxy" if result.check.path == "proxy" else " (the proxy)", style="dim")
    if result.addresses and result.status is Status.PASS:
        line.append(f" [{', '.join(result.addresses)}]", style="dim")
    if result.reason:
        where = f" in {result.phase}" if result.phase else ""
        line.append(f"  {result.reason.value}{where}", style=style)
    if result.detail:
        line.append(f": {result.detail}", style="dim")
    if note:
        line.append(f"  -> {note}", style="bold")
    console.print(line)


def _footer(report: Report, console: Console) -> None:
    counts = summary_counts(report)
    parts = ", ".join(f"{counts[k]} {k}" for k in ("pass", "warn", "fail", "inconclusive", "skip") if counts[k])
    console.print()
    console.print(Text(f"{counts['total']} checks ({parts}) in {report.duration_ms / 1000:.1f}s; "
                       f"status {report.status}, exit {report.exit_code}", style=_REPORT_STYLE[report.status]))
