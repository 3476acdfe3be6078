"""A ready-to-send summary for the network team: what is broken, the flows to open and the
records to add, with the evidence. Pure over a Report; credentials were redacted upstream."""

from __future__ import annotations

from agent.catalog import Catalog
from agent.diagnose import attempted
from agent.model import Report, Result
from probes._trace import Fact
from probes.reasons import Status


def render_markdown(report: Report, catalog: Catalog) -> str:
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
        "| context | value | source |",
        "|---|---|---|",
        *(f"| {key} | {_cell(value.value)} | {value.source} |" for key, value in ctx.items() if value.value is not None),
        "",
    ]
    if report.findings:
        lines += ["## Findings", ""]
    for index, finding in enumerate(report.findings, 1):
        lines += [
            f"### {index}. {finding.severity.label.upper()} `{finding.code}`: {finding.summary}",
            "",
            f"**Observed:** {finding.cause}",
            "",
            f"**Change needed:** {finding.remedy}",
            "",
            *( [f"**Docs:** {' '.join(finding.docs)}", ""] if finding.docs else []),
        ]
    failing = [r for r in report.results if r.status in (Status.FAIL, Status.WARN)]
    if failing:
        lines += ["## Failing flows", "",
                  "| source | destination | address | port/proto | observed | needed |",
                  "|---|---|---|---|---|---|"]
        lines += [_flow(r, source, catalog, ctx) for r in failing]
        lines.append("")
    return "\n".join(lines)


def primary_address(node: dict[str, Fact] | object) -> str | None:
    """The IPv4 address of the interface holding the default route: the source of every flow."""
    if not isinstance(node, dict):
        return None
    routes = node.get("default_routes")
    interfaces = node.get("interfaces")
    names = [r.get("interface") for r in routes if isinstance(r, dict)] if isinstance(routes, list) else []
    for interface in interfaces if isinstance(interfaces, list) else []:
        if isinstance(interface, dict) and interface.get("name") in names:
            for address in _strings(interface.get("addresses")):
                if ":" not in address:
                    return address.split("/")[0]
    return None


def _flow(result: Result, source: str, catalog: Catalog, ctx: object) -> str:
    check = result.check
    port = f"{check.protocol.upper()} {check.port}" if check.port else "DNS"
    observed = f"{check.layer.value}: {result.reason.value if result.reason else ''}" + (
        f" ({result.detail})" if result.detail else "")
    return (f"| {source} | {check.host}{' via proxy' if check.path == 'proxy' else ''} | "
            f"{_cell(', '.join(attempted(result)) or '-')} | {port} | {_cell(observed)} | "
            f"{_cell(_needed(result, catalog, ctx))} |")


def _needed(result: Result, catalog: Catalog, ctx: object) -> str:
    region = getattr(ctx, "get", lambda _k: None)("region")
    region_name = getattr(region, "value", None) or "<region>"
    rules = []
    for requirement_id in result.check.requirements:
        try:
            requirement = catalog.by_id(requirement_id)
        except KeyError:
            continue
        tag = requirement.service_tag.replace("{region}", str(region_name))
        if result.check.layer.value == "dns":
            rules.append(f"resolve {result.check.host}" + (" to the private endpoint" if requirement.dns_private else ""))
        elif tag:
            rules.append(f"allow outbound {requirement.protocol.upper()} {result.check.port} to {tag}")
        else:
            rules.append(f"allow {requirement.rule_fqdn}:{result.check.port}")
    return "; ".join(dict.fromkeys(rules))


def _strings(value: Fact | object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")
