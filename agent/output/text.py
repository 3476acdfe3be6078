"""Human-readable text report: findings first (the causes and their fixes), then every
requirement with the checks behind it. Pure over a Report: lines that agent/output/draw.py
makes plain text (files, pipes) or hands to rich (a terminal)."""

from __future__ import annotations

from agent.model import Finding, Report, Result, Severity
from agent.output.cases import by_requirement
from agent.output.draw import Line
from agent.output.status import headline, tally
from probes.reasons import Status

_STATUS_STYLE = {
    Status.PASS: ("ok", "green"), Status.WARN: ("warn", "yellow"), Status.FAIL: ("FAIL", "bold red"),
    Status.INCONCLUSIVE: ("??", "cyan"), Status.SKIP: ("skip", "dim"),
}
_SEVERITY_STYLE = {Severity.CRITICAL: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
_REPORT_STYLE = {"ok": "bold green", "warning": "bold yellow", "critical": "bold red", "unknown": "bold magenta"}
_BLANK = Line()


def text_lines(report: Report, *, verbose: bool = False) -> list[Line]:
    """The report as lines: agent/output/draw.py makes them plain text or hands them to rich."""
    return [*_header(report), *(line for index, finding in enumerate(report.findings, 1)
                                for line in _finding(index, finding)),
            _BLANK, *_requirements(report, verbose), *_footer(report)]


def _header(report: Report) -> list[Line]:
    ctx = report.context
    shape = ", ".join(filter(None, [
        f"compute {ctx['compute'].value}" + (f" {ctx['compute_name'].value}" if ctx["compute_name"].value else ""),
        str(ctx["region"].value or "region unknown"),
        f"{ctx['cloud'].value} cloud",
        "public IP" if ctx["public_ip"].value else "no public IP",
        "private-endpoint workspace" if ctx["private_endpoint"].value else "public workspace",
    ]))
    vantage = report.node.get("vantage")
    seen_from = f" as seen from {vantage.get('kind')} {vantage.get('name')}" if isinstance(vantage, dict) else ""
    lines = [Line(((f"aml-netcheck on {report.node.get('hostname', '?')}{seen_from}: {shape}", "bold"),)),
             Line(((headline(report), _REPORT_STYLE[report.status]),))]
    if report.interrupted:
        lines.append(Line(((f"run incomplete: {report.interrupted}", "bold magenta"),)))
    return lines


def _finding(index: int, finding: Finding) -> list[Line]:
    severity = (f"{finding.severity.label.upper()} ", _SEVERITY_STYLE[finding.severity])
    lines = [_BLANK, Line(((f"{index}. ", ""), severity, (f"[{finding.code}] ", "bold"), (finding.summary, "")))]
    for label, text in (("path:", finding.path), ("why:", finding.cause), ("fix:", finding.remedy),
                        ("flow:", finding.flow), ("docs:", " ".join(finding.docs))):
        if text or label not in ("docs:", "path:", "flow:"):
            lines.append(Line((("   ", ""), (label, "dim"), (" " * (6 - len(label)) + text, "")), highlight=True))
    if finding.confirm:
        lines.append(Line((("   ", ""), ("check it in Azure (Network Watcher, the NIC's effective rules and routes):",
                                         "dim"))))
        lines += [Line((("         ", ""), (command, "")), highlight=False) for command in finding.confirm]
    return lines


def _requirements(report: Report, verbose: bool) -> list[Line]:
    codes = {check: f.code for f in report.findings for check in f.checks}
    lines = []
    for requirement, results in by_requirement(report):
        worst = max((r.status for r in results if report.unneeded(r) is None), key=_RANK.__getitem__,
                    default=Status.PASS)
        label, style = _STATUS_STYLE[worst]
        lines.append(Line(((f"{label:>4} ", style), (f"{requirement.id:<28}", "bold"),
                           (requirement.purpose, "dim" if worst is Status.PASS else ""))))
        for result in results:
            judged = report.unneeded(result)
            if judged is not None:  # the proxy path works: the direct one is not needed
                if verbose:
                    lines.append(_result_line(result, judged.text))
            elif verbose or result.status not in (Status.PASS, Status.SKIP) or result.reason_is_context_skip:
                lines.append(_result_line(result, codes.get(result.check.id)))
    return lines


_RANK = {status: rank for rank, status in enumerate(
    [Status.PASS, Status.SKIP, Status.INCONCLUSIVE, Status.WARN, Status.FAIL])}


def _result_line(result: Result, note: str | None) -> Line:
    label, style = _STATUS_STYLE[result.status]
    segments = [("       ", ""), (f"{label:<4} ", style), (f"{result.check.layer.value:<9} {result.check.target}", "")]
    if result.check.path != "direct":
        segments.append((" via the proxy" if result.check.path == "proxy" else " (the proxy)", "dim"))
    if result.addresses and result.status is Status.PASS:
        segments.append((f" [{', '.join(result.addresses)}]", "dim"))
    if result.reason:
        where = f" in {result.phase}" if result.phase else ""
        segments.append((f"  {result.reason.value}{where}", style))
    if result.detail:
        segments.append((f": {result.detail}", "dim"))
    if note:
        segments.append((f"  -> {note}", "bold"))
    return Line(tuple(segments))


def _footer(report: Report) -> list[Line]:
    return [_BLANK, Line(((tally(report), _REPORT_STYLE[report.status]),))]
