"""TAP version 14 (testanything.org/tap-version-14-specification.html): one test point per case of
agent/output/cases.py, for CI runners that read TAP (prove, node-tap, Jenkins' TAP plugin). Pure
over a Report.

A failed or inconclusive case is `not ok` (TAP has no error state, and no answer is not a pass), a
skipped one `ok ... # SKIP reason`; every case that is not a pass carries a YAML diagnostics block
with its findings (code, severity, summary, why, fix) and its checks, a line each. YAML strings are written as JSON
strings, which YAML reads as double-quoted scalars, after agent.output.cases.printable."""

from __future__ import annotations

import json

from agent.model import Finding, Report
from agent.output.cases import Case, Outcome, cases, printable
from agent.output.jsonreport import summary_counts

Yaml = str | int | float | bool | None | list["Yaml"] | dict[str, "Yaml"]


def render_tap(report: Report) -> str:
    found = cases(report)
    hostname = report.node.get("hostname") or "?"
    counts = summary_counts(report)
    lines = ["TAP version 14", f"1..{len(found)}",
             _comment(f"aml-netcheck on {hostname} ({report.vantage}) at {report.started_at}, "
                      f"catalog {report.catalog_version}")]
    for number, case in enumerate(found, 1):
        lines += _test_point(number, case)
    lines.append(_comment(f"{counts['total']} checks in {report.duration_ms / 1000:.1f}s; "
                          f"status {report.status}, exit {report.exit_code}"))
    return "\n".join(lines) + "\n"


def _test_point(number: int, case: Case) -> list[str]:
    ok = "ok" if case.outcome in (Outcome.PASSED, Outcome.SKIPPED) else "not ok"
    line = f"{ok} {number} - {_description(f'{case.kind.value} {case.name}: {case.title}')}"
    if case.outcome is Outcome.SKIPPED:
        line += f" # SKIP {_one_line(case.message)}"
    if case.outcome is Outcome.PASSED and not case.findings:
        return [line]
    block: dict[str, Yaml] = {"outcome": case.outcome.value}
    if case.message:
        block |= {"message": case.message, "code": case.code}
    block["duration_ms"] = round(case.elapsed * 1000, 1)
    if case.findings:
        block["findings"] = [_finding(f) for f in case.findings]
    if case.lines:
        block["checks"] = list(case.lines)
    return [line, "  ---", *(f"  {row}" for row in _yaml(block)), "  ..."]


def _finding(finding: Finding) -> dict[str, Yaml]:
    fields: dict[str, Yaml] = {"code": finding.code, "severity": finding.severity.label, "summary": finding.summary,
                               "why": finding.cause, "fix": finding.remedy}
    optional: dict[str, Yaml] = {"path": finding.path, "flow": finding.flow, "docs": list(finding.docs)}
    return fields | {key: value for key, value in optional.items() if value}


def _yaml(value: Yaml, indent: str = "") -> list[str]:
    """Block YAML of mappings and sequences, every scalar a JSON literal."""
    if isinstance(value, dict):
        rows = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                rows += [f"{indent}{key}:", *_yaml(item, indent + "  ")]
            else:
                rows.append(f"{indent}{key}: {_scalar(item)}")
        return rows
    if isinstance(value, list):
        rows = []
        for item in value:
            nested = _yaml(item, indent + "  ")
            rows += [f"{indent}- {nested[0].lstrip()}", *nested[1:]]
        return rows
    return [f"{indent}{_scalar(value)}"]


def _scalar(value: Yaml) -> str:
    if isinstance(value, str):
        return json.dumps(printable(value), ensure_ascii=False)
    return json.dumps(value)  # numbers, booleans, null; an empty list or mapping is [] or {}


def _description(text: str) -> str:
    """TAP 14: a description is one line, with `#` (a directive follows) and `\\` escaped."""
    return _one_line(text).replace("\\", "\\\\").replace("#", "\\#")


def _one_line(text: str) -> str:
    return " ".join(printable(text).split())


def _comment(text: str) -> str:
    return f"# {_one_line(text)}"
