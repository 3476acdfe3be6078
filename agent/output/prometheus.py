"""Prometheus text exposition of a report: for node_exporter's textfile collector and the
serve mode's /metrics. Label values are bounded (check ids from the catalog, reason and finding
codes from the taxonomy), so the series count does not grow with failures."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from agent.model import Report, Result
from agent.output.jsonreport import summary_counts
from probes.reasons import Status
from probes.specs import Layer

_STATUSES = ("ok", "warning", "critical", "unknown")


def render_prometheus(report: Report) -> str:
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP aml_netcheck_{name} {help_text}")
        lines.append(f"# TYPE aml_netcheck_{name} {kind}")
        for labels, value in samples:
            rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            series = f"aml_netcheck_{name}{{{rendered}}}" if rendered else f"aml_netcheck_{name}"
            lines.append(f"{series} {_number(value)}")

    metric("status", "gauge", "1 for the node's current status (ok, warning, critical, unknown).",
           [({"status": s}, float(report.status == s)) for s in _STATUSES])
    metric("exit_code", "gauge", "Exit code of the last run (0 ok, 1 warning, 2 critical, 3 unknown).",
           [({}, float(report.exit_code))])
    metric("run_duration_seconds", "gauge", "Wall time of the last run.", [({}, report.duration_ms / 1000)])
    started = datetime.fromisoformat(report.started_at).timestamp()
    metric("last_run_timestamp_seconds", "gauge", "When the last run started (Unix time).", [({}, started)])
    metric("catalog_info", "gauge", "Requirement catalog version in use.", [({"version": report.catalog_version}, 1.0)])
    counts = summary_counts(report)
    metric("checks", "gauge", "Checks in the last run by status.",
           [({"status": s.value}, float(counts[s.value])) for s in Status])
    counted = [r for r in report.results if report.unneeded(r) is None]
    # Failing is what Report.failing says, as in every other format: a check that warned counts
    # (a critical finding can rest on it, e.g. a connect that timed out on some addresses).
    metric("check_success", "gauge", "1 if the check passed, 0 if it failed or warned; skipped, "
           "inconclusive and unneeded checks are left out.",
           [({"check": r.check.id, "layer": r.check.layer.value, "requirement": r.check.requirements[0]},
             float(not report.failing(r)))
            for r in counted if r.status in (Status.PASS, Status.WARN, Status.FAIL)])
    metric("check_duration_seconds", "gauge", "Time the check took.",
           [({"check": r.check.id}, round(r.elapsed, 4)) for r in report.results if r.status is not Status.SKIP])
    metric("check_failure_info", "gauge", "1 with the reason of each failing (or warned) check.",
           [({"check": r.check.id, "reason": r.reason.value}, 1.0)
            for r in counted if report.failing(r) and r.reason])
    metric("check_unneeded", "gauge", "1 for each check diagnosis judged not needed (reached through the proxy).",
           [({"check": r.check.id, "because": judged.value}, 1.0)
            for r in report.results if (judged := report.unneeded(r)) is not None])
    # Named after blackbox_exporter's series where the meaning is the same (probe_http_status_code,
    # probe_http_duration_seconds{phase}); one series per check id, so the set stays bounded.
    by_id = {r.check.id: r for r in report.results}
    answered = [r for r in report.results if r.check.layer is Layer.HTTP and _whole(r.evidence.get("status"))]
    metric("http_status_code", "gauge", "HTTP status of each http check that got an answer "
           "(blackbox_exporter's probe_http_status_code).",
           [({"check": r.check.id}, float(r.evidence["status"])) for r in answered])  # type: ignore[arg-type]
    metric("http_duration_seconds", "gauge", "Each http check's time by phase, as blackbox_exporter's "
           "probe_http_duration_seconds: resolve (its dns check), connect (tcp), tls, processing (the request "
           "until the first byte of the answer).",
           [({"check": r.check.id, "phase": phase}, seconds) for r in answered
            for phase, seconds in _phases(r, by_id)])
    expiries = [(r, _expiry(r)) for r in report.results if r.check.layer is Layer.TLS]
    metric("tls_cert_expiry_timestamp_seconds", "gauge", "When the leaf certificate each tls check was "
           "presented expires (Unix time; blackbox_exporter's probe_ssl_earliest_cert_expiry reads the whole "
           "chain, this the leaf).",
           [({"check": r.check.id}, when) for r, when in expiries if when is not None])
    # Two findings can share a code and severity (one per service tag blocked): one series for them,
    # since a series given twice makes the whole scrape (or textfile) invalid.
    metric("finding", "gauge", "1 for each finding code (and severity) of the last run.",
           [({"code": code, "severity": severity}, 1.0)
            for code, severity in dict.fromkeys((f.code, f.severity.label) for f in report.findings)])
    return "\n".join(lines) + "\n"


# The layers below an http check, as blackbox_exporter names their phases
_PHASES = {Layer.DNS: "resolve", Layer.TCP: "connect", Layer.TLS: "tls"}


def _phases(result: Result, by_id: Mapping[str, Result]) -> list[tuple[str, float]]:
    """(phase, seconds) of an http check: each layer it stands on (its `needs` chain) by that check's
    own time, then processing, the request until the answer's first byte."""
    phases: list[tuple[str, float]] = []
    below = by_id.get(result.check.needs) if result.check.needs else None
    while below is not None:
        if (phase := _PHASES.get(below.check.layer)) is not None:
            phases.append((phase, round(below.elapsed, 4)))
        below = by_id.get(below.check.needs) if below.check.needs else None
    first_byte = result.evidence.get("first_byte_ms")
    if isinstance(first_byte, (int, float)) and not isinstance(first_byte, bool):
        phases.append(("processing", round(first_byte / 1000, 4)))
    return sorted(phases, key=lambda p: _ORDER.index(p[0]))


_ORDER = ("resolve", "connect", "tls", "processing")  # blackbox_exporter's order (it adds transfer)


def _expiry(result: Result) -> float | None:
    cert = result.evidence.get("cert")
    not_after = cert.get("not_after") if isinstance(cert, dict) else None
    if not isinstance(not_after, str):
        return None
    try:
        return datetime.fromisoformat(not_after).timestamp()
    except ValueError:
        return None


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    """Whole numbers as integers ("1", not "1.0"); anything else in full (%g kept six digits, which
    turned a Unix timestamp into 1.79544e+09: up to 83 minutes off)."""
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
