"""Many node reports into one fleet view: which findings on which nodes, and the nodes that
differ from the rest (on a cluster, one node resolving differently is the clue). Pure: dicts in,
dict out, and text or markdown from the dict; the CLI reads the files."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from agent.output.jsonreport import SCHEMA_ID
from agent.output.markdown import inline, table

FLEET_SCHEMA = "aml-netcheck.fleet/1"
_STATUS_ORDER = ("ok", "warning", "unknown", "critical")


class ReportError(ValueError):
    """A file is not an aml-netcheck report; the message names it."""


def validate(name: str, report: Any) -> Mapping[str, Any]:
    if not isinstance(report, dict) or report.get("schema") != SCHEMA_ID:
        raise ReportError(f"{name}: not an {SCHEMA_ID} report")
    for key in ("node", "status", "exit_code", "findings", "checks"):
        if key not in report:
            raise ReportError(f"{name}: report has no {key!r}")
    return report


def _vantage(report: Mapping[str, Any]) -> str:
    """Where the report looked from: "" for the node itself, else `container job-1`, `netns PATH`."""
    vantage = report["node"].get("vantage")
    return f"{vantage.get('kind')} {vantage.get('name')}" if isinstance(vantage, dict) else ""


def merge(reports: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """`reports` are (source name, report). Nodes are named by hostname, and by vantage where a
    report looked from another namespace (the source name when two reports still share one name);
    the vantages of one host are compared with each other, as nodes are with the fleet."""
    nodes = []
    for source, report in reports:
        hostname = str(report["node"].get("hostname") or source)
        vantage = _vantage(report)
        codes = sorted({f["code"] for f in report["findings"] if f.get("severity") != "info"})
        nodes.append({"node": f"{hostname} from {vantage}" if vantage else hostname, "host": hostname,
                      "vantage": vantage or None, "source": source, "status": report["status"],
                      "exit_code": report["exit_code"], "started_at": report.get("started_at"),
                      # failing as Report.failing says: failed or warned, and not judged unneeded
                      "findings": codes, "failing_checks": sorted(c["id"] for c in report["checks"]
                                                                  if c.get("status") in ("fail", "warn")
                                                                  and not c.get("unneeded"))})
    names = Counter(n["node"] for n in nodes)
    for node in nodes:
        if names[node["node"]] > 1:
            node["node"] = f"{node['node']} ({node['source']})"
    usual = _usual(nodes)
    findings: dict[str, dict[str, Any]] = {}
    for (_, report), node in zip(reports, nodes, strict=True):
        for finding in report["findings"]:
            if finding.get("severity") == "info":
                continue
            entry = findings.setdefault(finding["code"], {"code": finding["code"], "severity": finding["severity"],
                                                          "summary": finding["summary"], "remedy": finding["remedy"],
                                                          "nodes": []})
            if _rank(finding["severity"]) > _rank(entry["severity"]):
                entry["severity"] = finding["severity"]
            if node["node"] not in entry["nodes"]:
                entry["nodes"].append(node["node"])
    worst = max((n["status"] for n in nodes), key=_STATUS_ORDER.index, default="ok")
    return {
        "schema": FLEET_SCHEMA,
        "nodes_total": len(nodes),
        "status": worst,
        "exit_code": {"ok": 0, "warning": 1, "critical": 2}.get(worst, 3),
        "usual_findings": sorted(usual),
        "findings": sorted(findings.values(), key=lambda f: (-_rank(f["severity"]), -len(f["nodes"]), f["code"])),
        "outliers": [{"node": n["node"], "extra": sorted(set(n["findings"]) - usual),
                      "missing": sorted(usual - set(n["findings"]))}
                     for n in nodes if set(n["findings"]) != usual],
        "vantages": _vantage_differences(nodes),
        "nodes": nodes,
    }


def _vantage_differences(nodes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per host seen from more than one vantage: the findings each vantage has that the host's own
    run (else the first vantage) does not, and the ones it lacks. What a container sees and its host
    does not (a bridge MTU, a resolver of its own) is the container's problem alone."""
    by_host: dict[str, list[Mapping[str, Any]]] = {}
    for node in nodes:
        by_host.setdefault(node["host"], []).append(node)
    differences = []
    for host, seen in by_host.items():
        if len({n["vantage"] for n in seen}) < 2:
            continue
        base = next((n for n in seen if n["vantage"] is None), seen[0])
        for other in seen:
            own, theirs = set(other["findings"]), set(base["findings"])
            extra, missing = own - theirs, theirs - own
            if other is not base and (extra or missing):
                differences.append({"host": host, "vantage": other["vantage"] or "the host", "compared_with":
                                    base["vantage"] or "the host", "extra": sorted(extra), "missing": sorted(missing)})
    return differences


def _usual(nodes: Sequence[Mapping[str, Any]]) -> set[str]:
    """The finding set most nodes share (ties: the smaller set, i.e. the healthier majority)."""
    counts = Counter(tuple(n["findings"]) for n in nodes)
    if not counts:
        return set()
    best = max(counts.items(), key=lambda item: (item[1], -len(item[0])))
    return set(best[0])


def _rank(severity: str) -> int:
    return {"info": 0, "warning": 1, "critical": 2}.get(severity, 0)


def render_text(fleet: Mapping[str, Any]) -> str:
    lines = [f"{fleet['nodes_total']} nodes, fleet status {fleet['status']}"]
    usual = ", ".join(fleet["usual_findings"]) or "none"
    lines.append(f"most nodes share these findings: {usual}")
    for finding in fleet["findings"]:
        nodes = finding["nodes"]
        lines.append(f"  {finding['severity'].upper():<8} {finding['code']}: {len(nodes)}/{fleet['nodes_total']} "
                     f"nodes ({', '.join(nodes[:6])}{', ...' if len(nodes) > 6 else ''})")
    for outlier in fleet["outliers"]:
        parts = [f"+{', +'.join(outlier['extra'])}" if outlier["extra"] else "",
                 f"-{', -'.join(outlier['missing'])}" if outlier["missing"] else ""]
        lines.append(f"  differs: {outlier['node']}: {' '.join(p for p in parts if p)}")
    for difference in fleet.get("vantages", ()):
        parts = [f"+{', +'.join(difference['extra'])}" if difference["extra"] else "",
                 f"-{', -'.join(difference['missing'])}" if difference["missing"] else ""]
        lines.append(f"  {difference['host']} from {difference['vantage']} differs from {difference['compared_with']}: "
                     f"{' '.join(p for p in parts if p)}")
    return "\n".join(lines) + "\n"


def render_markdown(fleet: Mapping[str, Any]) -> str:
    """The fleet view for a ticket: the status, each finding's node count, the nodes and vantages
    that differ, then each finding's remedy once (not once per node). Every string from a report
    is escaped (a summary carries what a server said)."""
    total = fleet["nodes_total"]
    findings = fleet["findings"]
    affected = len({node for finding in findings for node in finding["nodes"]})
    found = f"{len(findings)} finding(s) on {affected} of {total} nodes" if findings else "no findings"
    lines = [f"# Azure ML network check: {fleet['status'].upper()} on {total} nodes", "",
             f"- **Result:** fleet status {fleet['status']}, exit code {fleet['exit_code']}; {found}",
             f"- **Most nodes share:** {_codes(fleet['usual_findings'], 'no findings')}", ""]
    if findings:
        lines += ["## Findings", "", *table(("severity", "finding", "nodes", "summary", "on"), [
            (f["severity"].upper(), f"`{f['code']}`", f"{len(f['nodes'])}/{total}", f["summary"], ", ".join(f["nodes"]))
            for f in findings]), ""]
    if fleet["outliers"]:
        lines += ["## Nodes that differ from the rest", "", *table(("node", "has, unlike most", "lacks, unlike most"), [
            (o["node"], _codes(o["extra"]), _codes(o["missing"])) for o in fleet["outliers"]]), ""]
    if fleet.get("vantages"):
        lines += ["## Vantages that differ from their host", "",
                  *table(("host", "seen from", "compared with", "has", "lacks"), [
                      (d["host"], d["vantage"], d["compared_with"], _codes(d["extra"]), _codes(d["missing"]))
                      for d in fleet["vantages"]]), ""]
    if findings:
        lines += ["## Changes needed", "", *(f"- `{f['code']}` ({len(f['nodes'])}/{total} nodes): {inline(f['remedy'])}"
                                             for f in findings), ""]
    return "\n".join(lines)


def _codes(codes: Sequence[str], none: str = "-") -> str:
    """Finding codes (slugs, as the report schema's pattern has them) as code spans."""
    return ", ".join(f"`{code}`" for code in codes) or none
