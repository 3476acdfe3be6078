"""JUnit XML for CI pipelines (Jenkins, GitLab, Azure Pipelines): one <testcase> per case of
agent/output/cases.py, in one <testsuite> for the run. Pure over a Report.

A suite is the run on one node from one vantage (named after both, its hostname attribute the
node's): a requirement spans layers and hosts, so a suite per layer would split a test case, and a
suite per service tag would leave the requirements without one (PyPI, the node's own checks) in
none; a fleet's files then merge into one suite per node, with the same test names in each. The
document is valid against both schemas CI servers read: Jenkins' junit-10.xsd and Ant's JUnit.xsd
(tests/unit/schemas), which is why a test case carries its detail in its <failure>, <error> or
<skipped> (Ant allows nothing else in it) and the timestamp has no zone (it is UTC; the exact
start is the property started_at)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from agent import __version__
from agent.model import Finding, Report
from agent.output import draw
from agent.output.cases import Case, Kind, Outcome, cases, finding_line, printable
from agent.output.text import text_lines

_ELEMENT = {Outcome.FAILED: "failure", Outcome.ERROR: "error", Outcome.SKIPPED: "skipped"}


def render_junit(report: Report) -> str:
    found = cases(report)
    counts = {outcome: sum(c.outcome is outcome for c in found) for outcome in Outcome}
    hostname = str(report.node.get("hostname") or "localhost")
    seen_from = "" if report.vantage == "host" else f" from {report.vantage}"
    root = ET.Element("testsuites")
    suite = ET.SubElement(root, "testsuite", _clean({
        "name": f"aml-netcheck on {hostname}{seen_from}", "package": "aml-netcheck", "id": "0",
        "hostname": hostname, "timestamp": report.started_at[:19], "time": _seconds(report.duration_ms / 1000),
        "tests": str(len(found)), "failures": str(counts[Outcome.FAILED]), "errors": str(counts[Outcome.ERROR]),
        "skipped": str(counts[Outcome.SKIPPED])}))
    properties = ET.SubElement(suite, "properties")
    for name, value in _properties(report):
        ET.SubElement(properties, "property", _clean({"name": name, "value": value}))
    for case in found:
        _testcase(suite, case)
    ET.SubElement(suite, "system-out").text = printable(draw.plain_lines(text_lines(report)))
    ET.SubElement(suite, "system-err").text = printable(f"run incomplete: {report.interrupted}\n"
                                                        if report.interrupted else "")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _properties(report: Report) -> list[tuple[str, str]]:
    head = [("aml-netcheck.version", __version__), ("catalog.version", report.catalog_version),
            ("started_at", report.started_at), ("vantage", report.vantage), ("status", report.status),
            ("exit_code", str(report.exit_code))]
    if report.interrupted:
        head.append(("interrupted", report.interrupted))
    return head + [(f"context.{key}", str(value.value)) for key, value in report.context.items()
                   if value.value is not None]


def _testcase(suite: ET.Element, case: Case) -> None:
    element = ET.SubElement(suite, "testcase", _clean({
        "name": case.name, "classname": f"aml-netcheck.{case.kind.value}", "time": _seconds(case.elapsed)}))
    if case.outcome is Outcome.PASSED:
        return
    attributes = {"message": case.message}
    if case.outcome is not Outcome.SKIPPED:  # Ant's <skipped> has a message only
        attributes["type"] = case.code
    detail = ET.SubElement(element, _ELEMENT[case.outcome], _clean(attributes))
    detail.text = _body(case)


def _body(case: Case) -> str:
    """The findings (what, why, the fix) and the case's checks, as the text report writes them."""
    lines = [line for finding in case.findings for line in _finding(finding)]
    if case.kind is Kind.RUN:
        lines.append(case.message)
    if case.lines:
        lines += ["checks:", *(f"  {line}" for line in case.lines)]
    return "".join(" ".join(printable(line).splitlines()) + "\n" for line in lines)  # a line each, whatever was sent


def _finding(finding: Finding) -> list[str]:
    labelled = [("why", finding.cause), ("fix", finding.remedy), ("path", finding.path), ("flow", finding.flow),
                ("docs", " ".join(finding.docs))]
    return [finding_line(finding), *(f"  {label}: {text}" for label, text in labelled if text)]


def _seconds(value: float) -> str:
    return f"{value:.3f}"


def _clean(attributes: dict[str, str]) -> dict[str, str]:
    return {key: printable(value) for key, value in attributes.items()}
