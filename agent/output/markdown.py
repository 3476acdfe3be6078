"""A ready-to-send summary for the network team: what is broken, the flows to open and the
records to add, with the evidence. Pure over a Report; credentials were redacted upstream."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from agent import netrules
from agent.model import Report, Result, primary_address
from probes._trace import Fact
from probes.specs import Layer


def render_markdown(report: Report) -> str:
    ctx = report.context
    source = primary_address(report.node) or "this node"
    lines = [
        f"# Azure ML network check: {report.status.upper()} on {report.node.get('hostname', '?')}",
        "",
        f"- **When:** {report.started_at} ({report.duration_ms / 1000:.1f}s, catalog {report.catalog_version})",
        f"- **Node address:** {source}; resolvers: {', '.join(_strings(report.node.get('resolvers'))) or 'none'}",
        f"- **Result:** {len(report.findings)} finding(s), exit code {report.exit_code}"
        + (f"; run incomplete: {report.interrupted}" if report.interrupted else ""),
        "",
        *table(("context", "value", "source"),
               [(key, value.value, value.source) for key, value in ctx.items() if value.value is not None]),
        "",
    ]
    if report.findings:
        lines += ["## Findings", ""]
    for index, finding in enumerate(report.findings, 1):
        lines += [
            f"### {index}. {finding.severity.label.upper()} `{finding.code}`: {finding.summary}",
            "",
            *([f"**Path:** {finding.path}", ""] if finding.path else []),
            f"**Observed:** {finding.cause}",
            "",
            f"**Change needed:** {finding.remedy}",
            "",
            *([f"**Flow:** `{finding.flow}`. Check it in Azure (Network Watcher, the NIC's effective rules, routes):",
               "", "```sh", *finding.confirm, "```", ""] if finding.confirm else []),
            *( [f"**Docs:** {' '.join(finding.docs)}", ""] if finding.docs else []),
        ]
    failing = [r for r in report.results if report.failing(r)]
    if failing:
        lines += ["## Failing flows", "", *table(FLOW_COLUMNS, [flow_cells(r, source, report) for r in failing]), ""]
    return "\n".join(lines)


FLOW_COLUMNS = ("source", "destination", "address", "port/proto", "observed", "needed")


def flow_cells(result: Result, source: str, report: Report) -> tuple[str, ...]:
    """A failing flow's row of the ticket's table (FLOW_COLUMNS): the html report's too."""
    check = result.check
    port = f"{check.protocol.upper()} {check.port}" if check.port else "DNS" if check.layer is Layer.DNS else "-"
    observed = f"{check.layer.value}: {result.reason.value if result.reason else ''}" + (
        f" ({result.detail})" if result.detail else "")
    return (source, f"{check.host}{' via proxy' if check.path == 'proxy' else ''}", ", ".join(result.attempted) or "-",
            port, observed, _needed(result, report))


def _needed(result: Result, report: Report) -> str:
    """A name must resolve (privately, where the plan expects it); a local check needs a change on
    the node; any other flow needs the rules `aml-netcheck rules` derives for it."""
    check = result.check
    if check.layer is Layer.LOCAL:  # the node itself (Docker's bridge, a listener, its firewall): no rule fixes it
        codes = [f"`{f.code}`" for f in report.findings if check.id in f.checks]
        return "a change on this node, not in the network" + (f": see {', '.join(codes)}" if codes else "")
    if check.layer is Layer.DNS:
        private = getattr(check.spec, "expect", "any") == "private"
        return f"resolve {check.host}" + (" to the private endpoint" if private else "")
    rules = netrules.for_flows(report.catalog, report.context, ((rid, check.port) for rid in check.requirements))
    return netrules.describe(rules) or f"allow {check.target}"


def _strings(value: Fact | object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A GFM table's lines, every cell escaped: the fleet view's tables too."""
    return [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}",
            *(f"| {' | '.join(cell(value) for value in row)} |" for row in rows)]


def cell(value: object) -> str:
    """One table cell of any text (a server's words reach findings): on one line, and no pipe or
    backslash of its own ends the cell (GFM reads `\\|` as a backslash, then a cell border)."""
    return inline(value).replace("\\", "\\\\").replace("|", "\\|")


def inline(value: object) -> str:
    """Text on one line, so that none of it starts a block (a heading, a list, a table row)."""
    return " ".join(str(value).splitlines())
