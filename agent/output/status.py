"""The one-line forms of a report: node-problem-detector's line, systemd's STATUS= and the
/healthz answer of serve. Pure over a Report."""

from __future__ import annotations

from agent.model import Report, Severity
from agent.output.jsonreport import summary_counts


def headline(report: Report) -> str:
    """How many problems (warnings and critical findings) the node has, in words."""
    problems = sum(f.severity >= Severity.WARNING for f in report.findings)
    return f"{problems} problem{'s' if problems != 1 else ''} found" if problems else "no problems found"


def tally(report: Report) -> str:
    """The checks counted by status, the run's time and its verdict: the reports' last line."""
    counts = summary_counts(report)
    parts = ", ".join(f"{counts[k]} {k}" for k in ("pass", "warn", "fail", "inconclusive", "skip") if counts[k])
    return (f"{counts['total']} checks ({parts}) in {report.duration_ms / 1000:.1f}s; "
            f"status {report.status}, exit {report.exit_code}")


def npd_line(report: Report) -> str:
    """`<STATUS> <worst finding> <its first target> <summary>`: what node-problem-detector shows
    (it keeps the first 80 bytes)."""
    worst = report.findings[0] if report.findings else None
    if worst is None or report.status == "ok":
        return f"{report.status.upper()} aml-netcheck: no problems"
    target = worst.targets[0] if worst.targets else ""
    return f"{report.status.upper()} {worst.code} {target} {worst.summary}"


def summary(report: Report) -> str:
    """systemd's STATUS= line: the worst finding and how many others there are."""
    if not report.findings:
        return f"{report.status}: no problems ({len(report.results)} checks)"
    worst = report.findings[0]
    others = len(report.findings) - 1
    more = f" (and {others} other finding{'s' if others != 1 else ''})" if others else ""
    return f"{report.status}: {worst.code}: {worst.summary}{more}"


def healthz(report: Report | None, *, verbose: bool = False) -> tuple[int, str]:
    """(HTTP status, body): 200 while the node is ok or only warned, 503 otherwise or before the
    first report."""
    if report is None:
        return 503, "starting: no report yet\n"
    lines = [summary(report)]
    if verbose:
        lines += [f"[{'-' if f.severity >= Severity.WARNING else '+'}]{f.code}: {f.summary}" for f in report.findings]
    return (200 if report.exit_code in (0, 1) else 503), "\n".join(lines) + "\n"
