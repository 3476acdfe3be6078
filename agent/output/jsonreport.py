"""The JSON report (schema aml-netcheck.report/1).

The JSON shape is public API: scripts and dashboards read it. Add fields, never rename them. The
schema is published as agent/data/report-1.schema.json and every test report is checked against it."""

from __future__ import annotations

import json
from typing import Any

from agent import __version__
from agent.model import Finding, Report, Result

SCHEMA_ID = "aml-netcheck.report/1"


def to_dict(report: Report) -> dict[str, Any]:
    return {**head_fields(report), "checks": [check_fields(r, report) for r in report.results],
            "findings": [finding_fields(f) for f in report.findings]}


def head_fields(report: Report) -> dict[str, Any]:
    return {
        "schema": SCHEMA_ID,
        "version": __version__,
        "catalog_version": report.catalog_version,
        "started_at": report.started_at,
        "duration_ms": report.duration_ms,
        "status": report.status,
        "exit_code": report.exit_code,
        "interrupted": report.interrupted,
        "context": {k: {"value": v.value, "source": v.source} for k, v in report.context.items()},
        "node": dict(report.node),
        "summary": summary_counts(report),
    }


def to_json(report: Report) -> str:
    """to_dict's document, indented, with each check on one line of its own. Indenting is
    json's pure-Python encoder, and a report holds a check per layer per endpoint: at 5,000
    endpoints (10,100 checks) indenting them took 1.4 s and 64 MiB more than the report's 7 MB;
    one line per check is json's C encoder, a check at a time (and one line to grep)."""
    head = json.dumps(head_fields(report), indent=2).removesuffix("\n}")
    checks = "".join(f"\n    {json.dumps(check_fields(r, report))}," for r in report.results).removesuffix(",")
    findings = json.dumps([finding_fields(f) for f in report.findings], indent=2).replace("\n", "\n  ")
    close = "\n  " if checks else ""
    return f'{head},\n  "checks": [{checks}{close}],\n  "findings": {findings}\n}}\n'


def summary_counts(report: Report) -> dict[str, int]:
    counts = {"total": len(report.results), "pass": 0, "warn": 0, "fail": 0, "inconclusive": 0, "skip": 0}
    for result in report.results:
        counts[result.status.value] += 1
    return counts


def check_fields(result: Result, report: Report) -> dict[str, Any]:
    check = result.check
    return {
        "id": check.id,
        "requirement": check.requirements[0],
        "requirements": list(check.requirements),
        "layer": check.layer.value,
        "host": check.host,
        "port": check.port,
        "protocol": check.protocol,
        "path": check.path,
        "addresses": list(result.addresses),
        "status": result.status.value,
        "reason": result.reason.value if result.reason else None,
        "unneeded": judged.value if (judged := report.unneeded(result)) else None,
        "phase": result.phase,
        "detail": result.detail,
        "elapsed_ms": round(result.elapsed * 1000, 1),
        "phases": [{"name": p.name, "start_ms": round(p.start * 1000, 1),
                    "end_ms": None if p.end is None else round(p.end * 1000, 1)} for p in result.phases],
        "evidence": dict(result.evidence),
    }


def finding_fields(finding: Finding) -> dict[str, Any]:
    return {
        "code": finding.code,
        "severity": finding.severity.label,
        "summary": finding.summary,
        "cause": finding.cause,
        "remedy": finding.remedy,
        "targets": list(finding.targets),
        "checks": list(finding.checks),
        "docs": list(finding.docs),
        "path": finding.path or None,
        "flow": finding.flow or None,
        "confirm": list(finding.confirm),
        "trace": [{"owner": step.owner.value, "state": step.state.value, "address": step.address, "hop": step.hop,
                   "name": step.name} for step in finding.trace],
    }
