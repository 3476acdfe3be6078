"""Newline-delimited JSON for log shippers (Azure Monitor Agent's custom JSON logs, Fluent Bit,
Vector, Filebeat): one object per line, a `run` line first, then one per check and one per
finding. Pure over a Report.

Every line carries the run's identity, so a log table joins them: `time` (when the run started,
RFC 3339 UTC: the same on each line of a run), `hostname` and `vantage` (host, or KIND:NAME for a
network namespace or container), with `type` saying which object it is. A check and a finding are
the JSON report's objects (agent/data/report-1.schema.json's check and finding), the run line is
the report's head. json's default ASCII escapes keep every line ASCII, as AMA requires (ASCII or
UTF-8, one record per line)."""

from __future__ import annotations

import json
from typing import Any

from agent.model import Report
from agent.output.jsonreport import check_fields, finding_fields, head_fields

SCHEMA_ID = "aml-netcheck.ndjson/1"


def render_ndjson(report: Report) -> str:
    identity = {"schema": SCHEMA_ID, "time": report.started_at, "hostname": report.node.get("hostname"),
                "vantage": report.vantage}
    run = {key: value for key, value in head_fields(report).items() if key != "schema"}
    records: list[dict[str, Any]] = [{"type": "run", **identity, **run}]
    records += [{"type": "check", **identity, **check_fields(r, report)} for r in report.results]
    records += [{"type": "finding", **identity, **finding_fields(f)} for f in report.findings]
    return "".join(json.dumps(record) + "\n" for record in records)
