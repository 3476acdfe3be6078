"""Newline-delimited JSON for log shippers (Azure Monitor Agent's custom JSON logs, Fluent Bit,
Vector, Filebeat): one object per line, a `run` line first, then one per check and one per
finding. Pure over a Report.

Every line carries the run's identity, so a log table joins them: `time` (when the run started,
RFC 3339 UTC: the same on each line of a run), `hostname` and `vantage` (host, or KIND:NAME for a
network namespace or container), with `type` saying which object it is. A check and a finding are
the JSON report's objects (agent/data/report-1.schema.json's check and finding), the run line is
the report's head. json's ASCII escapes keep every line ASCII, as AMA requires (ASCII or UTF-8,
one record per line), and every string is exactly what was observed, but for a lone surrogate."""

from __future__ import annotations

import json
import re
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
    return "".join(_line(record) + "\n" for record in records)


_SURROGATE = re.compile("[\ud800-\udfff]")  # in a str, only ever a lone one (bytes that did not decode)


def _line(record: dict[str, Any]) -> str:
    """The record as one line of I-JSON (RFC 7493): a lone surrogate, which jq and other strict
    readers refuse, is written as the text \\uXXXX."""
    text = json.dumps(record)
    if "\\ud" not in text:  # no escaped surrogate at all: the common case, one pass
        return text
    raw = _SURROGATE.sub(lambda m: f"\\\\u{ord(m.group()):04x}", json.dumps(record, ensure_ascii=False))
    return json.dumps(json.loads(raw))
