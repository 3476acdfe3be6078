"""Every output format over the synthetic report set (tests/unit/synthetic.py): the JSON against
its published schema, the Prometheus exposition parsed strictly, the one-line forms, and the fleet
merge over the JSON reports. prometheus_client is not a dependency, so contract.parse_prometheus
(a strict parser of the text format) reads the metrics."""

from __future__ import annotations

import copy
import io
import json
from datetime import datetime
from importlib import resources
from typing import Any

import jsonschema
import pytest
from rich.console import Console

from agent.diagnose.findings import Code
from agent.model import Report
from agent.output import Format, fleet, jsonreport, markdown, prometheus, render, status

from .contract import ContractError, Family, parse_prometheus
from .helpers import Outcome
from .synthetic import PROXY_TCP, SCENARIOS, SMB, UNCOVERED, Scenario, build

IDS = [s.name for s in SCENARIOS]


def scenario(name: str) -> Scenario:
    return next(s for s in SCENARIOS if s.name == name)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(resources.files("agent").joinpath("data/report-1.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def as_json(report: Report) -> dict[str, Any]:
    """The report as a reader of the file sees it (serialised, then parsed)."""
    document: dict[str, Any] = json.loads(jsonreport.to_json(report))
    return document


def test_the_synthetic_set_covers_every_finding_code() -> None:
    produced = {code for s in SCENARIOS for code in s.codes}
    assert produced == {c.value for c in Code} - UNCOVERED
    assert not UNCOVERED & produced


@pytest.mark.parametrize("case", SCENARIOS, ids=IDS)
def test_diagnosis_gives_the_scenarios_findings(case: Scenario) -> None:
    report = build(case)
    assert {f.code for f in report.findings} == case.codes


@pytest.mark.parametrize("case", SCENARIOS, ids=IDS)
def test_json_validates_against_the_published_schema(case: Scenario,
                                                     validator: jsonschema.Draft202012Validator) -> None:
    report = build(case)
    document = as_json(report)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
    assert errors == []
    assert (document["status"], document["exit_code"]) == (report.status, report.exit_code)
    assert datetime.fromisoformat(document["started_at"]).tzinfo is not None
    assert [f["code"] for f in document["findings"]] == [f.code for f in report.findings]
    assert [c["id"] for c in document["checks"]] == [r.check.id for r in report.results]
    assert document["summary"]["total"] == len(document["checks"]) == sum(
        v for k, v in document["summary"].items() if k != "total")


@pytest.mark.parametrize("case", SCENARIOS, ids=IDS)
def test_json_is_the_document_with_a_check_per_line(case: Scenario) -> None:
    """Indenting 10,100 checks took json's pure-Python encoder 1.4 s and 64 MiB: each check is
    one line, the rest indented as before, and the text says exactly what to_dict does."""
    report = build(case)
    text = jsonreport.to_json(report)
    assert json.loads(text) == json.loads(json.dumps(jsonreport.to_dict(report)))
    lines = [line for line in text.splitlines() if line.startswith('    {"id": ')]
    assert [json.loads(line.rstrip(","))["id"] for line in lines] == [r.check.id for r in report.results]
    assert text.startswith('{\n  "schema": ') and text.endswith("\n}\n")


def test_the_schema_rejects_what_it_must(validator: jsonschema.Draft202012Validator) -> None:
    """The validation above means something: the schema catches a broken report."""
    document = as_json(build(scenario("smb dropped")))
    for path, value in [(("status",), "fine"), (("checks", 0, "reason"), "tcp.timeout"),
                        (("checks", 0, "unneeded"), "because"), (("findings", 0, "severity"), "high")]:
        broken = copy.deepcopy(document)
        target: Any = broken
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert not validator.is_valid(broken), path


def test_proxy_only_json_marks_the_direct_failures_unneeded() -> None:
    document = as_json(build(scenario("proxy only")))
    failed = [c for c in document["checks"] if c["status"] == "fail"]
    assert failed and all(c["unneeded"] in ("reached-through-proxy", "resolved-by-proxy") for c in failed)
    assert {c["unneeded"] for c in failed} == {"reached-through-proxy", "resolved-by-proxy"}
    assert all(c["unneeded"] is None for c in document["checks"] if c["path"] != "direct")
    assert (document["status"], document["findings"]) == ("ok", [])


def metrics(report: Report) -> dict[str, Family]:
    return parse_prometheus(prometheus.render_prometheus(report))


def values(families: dict[str, Family], name: str, label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for s in families[f"aml_netcheck_{name}"].samples}


@pytest.mark.parametrize("case", SCENARIOS, ids=IDS)
def test_prometheus_exposition_parses_strictly(case: Scenario) -> None:
    report = build(case)
    families = metrics(report)
    assert all(f.kind == "gauge" and f.help for f in families.values())
    assert values(families, "status", "status") == {s: float(s == report.status)
                                                   for s in ("ok", "warning", "critical", "unknown")}
    assert families["aml_netcheck_exit_code"].samples[0].value == report.exit_code
    by_status = values(families, "checks", "status")
    assert sum(by_status.values()) == len(report.results)
    finding_series = {(s.labels["code"], s.labels["severity"]) for s in families["aml_netcheck_finding"].samples}
    assert finding_series == {(f.code, f.severity.label) for f in report.findings}


def test_prometheus_check_series_follow_the_diagnosis() -> None:
    report = build(scenario("proxy 407 with direct egress dropped"))
    families = metrics(report)
    success = values(families, "check_success", "check")
    assert success["http:management.azure.com:443@proxy"] == 0
    assert success[PROXY_TCP] == 1
    unneeded = values(families, "check_unneeded", "check")
    assert "tcp:management.azure.com:443" in unneeded and "tcp:management.azure.com:443" not in success
    assert "tcp:management.azure.com:443" not in values(families, "check_failure_info", "check")
    reasons = {s.labels["check"]: s.labels["reason"] for s in families["aml_netcheck_check_failure_info"].samples}
    assert reasons == {"http:management.azure.com:443@proxy": "proxy.auth-required"}


def test_prometheus_timestamp_keeps_its_precision() -> None:
    """%g printed 1795435200.123 as 1.79544e+09: the run's start 80 minutes off."""
    report = build(scenario("healthy"))
    [sample] = metrics(report)["aml_netcheck_last_run_timestamp_seconds"].samples
    assert sample.value == datetime.fromisoformat(report.started_at).timestamp()
    [duration] = metrics(report)["aml_netcheck_run_duration_seconds"].samples
    assert duration.value == report.duration_ms / 1000


def test_prometheus_gives_each_finding_series_once() -> None:
    """Two groups of one code (two service tags dropped) are two findings but one series: a
    repeated series makes Prometheus and node_exporter's textfile collector reject the scrape."""
    report = build(scenario("two egress-blocked findings"))
    assert [f.code for f in report.findings] == ["egress-blocked", "egress-blocked"]
    [series] = metrics(report)["aml_netcheck_finding"].samples
    assert (series.labels, series.value) == ({"code": "egress-blocked", "severity": "critical"}, 1)


def test_a_warned_check_is_a_failing_check_in_prometheus() -> None:
    """A check that warned counts as failing (Report.failing; a critical finding can explain it):
    the metrics say so like the other formats."""
    report = build(scenario("some addresses timed out (warn)"))
    families = metrics(report)
    assert values(families, "check_success", "check")["tcp:mcr.microsoft.com:443"] == 0
    assert values(families, "check_failure_info", "check") == {"tcp:mcr.microsoft.com:443": 1}


def test_the_strict_parser_rejects_broken_expositions() -> None:
    good = prometheus.render_prometheus(build(scenario("smb dropped")))
    parse_prometheus(good)
    lines = good.splitlines()
    broken = {
        "no final newline": good[:-1],
        "bad label quoting": good.replace('status="ok"', "status=ok"),
        "unescaped quote": good.replace('reason="tcp.timeout"', 'reason="tcp"timeout"'),
        "bad value": good.replace("aml_netcheck_exit_code 2", "aml_netcheck_exit_code two"),
        "repeated series": "\n".join([*lines, lines[2]]) + "\n",
        "sample before TYPE": "\n".join([lines[2], *lines]) + "\n",
        "family split": "\n".join([*lines, *lines[:3]]) + "\n",
        "blank line": good.replace("\n# HELP aml_netcheck_exit_code", "\n\n# HELP aml_netcheck_exit_code"),
    }
    for name, exposition in broken.items():
        with pytest.raises(ContractError):
            parse_prometheus(exposition)
        assert exposition != good, name


@pytest.mark.parametrize("case", SCENARIOS, ids=IDS)
def test_one_line_forms(case: Scenario) -> None:
    report = build(case)
    line = status.npd_line(report)
    assert line.split(" ", 1)[0] == report.status.upper()
    assert (line == "OK aml-netcheck: no problems") == (report.status == "ok")
    assert "\n" not in line and status.summary(report).startswith(f"{report.status}: ")
    code, body = status.healthz(report, verbose=True)
    assert code == (200 if report.exit_code in (0, 1) else 503)
    assert all(f"{f.code}: " in body for f in report.findings)


@pytest.mark.parametrize("case", SCENARIOS, ids=IDS)
def test_a_terminal_is_told_what_a_pipe_is_told(case: Scenario) -> None:
    """Off a terminal the text report is drawn without rich; on one rich draws the same lines,
    styled: wide enough not to wrap, rich's text is the plain text, character for character."""
    report = build(case)
    for verbose in (False, True):
        terminal = Console(file=io.StringIO(), record=True, width=100_000, force_terminal=True)
        render(report, Format.TEXT, verbose=verbose, console=terminal)
        assert terminal.export_text() == render(report, Format.TEXT, verbose=verbose)


@pytest.mark.parametrize("case", SCENARIOS, ids=IDS)
def test_text_and_markdown_render_every_report(case: Scenario) -> None:
    report = build(case)
    for verbose in (False, True):
        lines = render(report, Format.TEXT, verbose=verbose).splitlines()
        assert lines[-1].endswith(f"status {report.status}, exit {report.exit_code}")
        assert (f"run incomplete: {report.interrupted}" in lines) == bool(report.interrupted)
    document = markdown.render_markdown(report)
    assert document.startswith(f"# Azure ML network check: {report.status.upper()} on ci-alice\n")
    assert ("## Failing flows" in document) == any(report.failing(r) for r in report.results)


def test_markdown_local_checks_are_no_network_flows() -> None:
    """A local check is not a DNS flow and no network rule fixes it (Docker's bridge, a port with
    nothing listening): the row says so instead of asking the network team for a rule."""
    for name, code in [("docker bridge", "docker-bridge-overlap"), ("nothing listening", "inbound-port-closed")]:
        document = markdown.render_markdown(build(scenario(name)))
        [row] = [line for line in document.splitlines() if line.startswith("| 10.0.0.4 |")]
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert cells[3] != "DNS" and "NSG" not in cells[5] and "firewall" not in cells[5], row
        assert code in cells[5], row


def node_report(case: str, hostname: str) -> dict[str, Any]:
    document = as_json(build(scenario(case)))
    document["node"]["hostname"] = hostname
    return document


def test_fleet_names_the_node_that_differs() -> None:
    reports = [(f"n{i}.json", node_report(case, f"node-{i}")) for i, case in
               enumerate(["healthy", "proxy only", "healthy", "smb dropped"], 1)]
    for name, document in reports:
        assert fleet.validate(name, document) is document
    merged = fleet.merge(reports)
    assert (merged["schema"], merged["nodes_total"], merged["status"], merged["exit_code"]) == (
        "aml-netcheck.fleet/1", 4, "critical", 2)
    assert merged["usual_findings"] == []
    assert merged["outliers"] == [{"node": "node-4", "extra": ["smb-blocked"], "missing": []}]
    assert [(f["code"], f["nodes"]) for f in merged["findings"]] == [("smb-blocked", ["node-4"])]
    failing = {n["node"]: n["failing_checks"] for n in merged["nodes"]}
    assert failing == {"node-1": [], "node-2": [], "node-3": [], "node-4": [SMB]}  # node-2's fails are unneeded
    assert any(c["status"] == "fail" for c in reports[1][1]["checks"])
    assert "differs: node-4: +smb-blocked" in fleet.render_text(merged)


def test_fleet_outlier_missing_the_usual_finding_and_shared_hostnames() -> None:
    reports = [("a.json", node_report("tls unexpected issuer", "ci")),
               ("b.json", node_report("tls unexpected issuer", "ci")),
               ("c.json", node_report("healthy", "other"))]
    merged = fleet.merge(reports)
    assert merged["usual_findings"] == ["tls-intercepted"] and merged["status"] == "warning"
    assert merged["outliers"] == [{"node": "other", "extra": [], "missing": ["tls-intercepted"]}]
    assert [n["node"] for n in merged["nodes"]] == ["ci (a.json)", "ci (b.json)", "other"]
    assert merged["findings"][0]["nodes"] == ["ci (a.json)", "ci (b.json)"]
    assert "-tls-intercepted" in fleet.render_text(merged)


def test_fleet_compares_the_vantages_of_one_host() -> None:
    """A host's own run and a run from its container (check --container): named apart, and what the
    container sees that its host does not is the container's difference."""
    host = node_report("healthy", "ci")
    container = node_report("smb dropped", "ci")
    container["node"]["vantage"] = {"kind": "container", "name": "job-1", "host": {}}
    merged = fleet.merge([("host.json", host), ("job.json", container), ("o.json", node_report("healthy", "o"))])
    assert [n["node"] for n in merged["nodes"]] == ["ci", "ci from container job-1", "o"]
    assert merged["vantages"] == [{"host": "ci", "vantage": "container job-1", "compared_with": "the host",
                                   "extra": ["smb-blocked"], "missing": []}]
    assert "ci from container job-1 differs from the host: +smb-blocked" in fleet.render_text(merged)
    assert fleet.merge([("host.json", host), ("o.json", node_report("healthy", "o"))])["vantages"] == []


def test_fleet_counts_a_warned_check_as_failing() -> None:
    """failing_checks follows Report.failing: a warned check that a critical finding explains is
    failing on that node."""
    merged = fleet.merge([("w.json", node_report("some addresses timed out (warn)", "w"))])
    assert merged["nodes"][0]["failing_checks"] == ["tcp:mcr.microsoft.com:443"]


def test_fleet_leaves_info_findings_out() -> None:
    merged = fleet.merge([("i.json", node_report("nothing listening", "i")), ("h.json", node_report("healthy", "h"))])
    assert merged["findings"] == [] and merged["outliers"] == [] and merged["status"] == "ok"


@pytest.mark.parametrize(("document", "message"), [
    ({"schema": "something/1"}, "not an aml-netcheck.report/1 report"),
    ([], "not an aml-netcheck.report/1 report"),
    ({"schema": "aml-netcheck.report/1", "node": {}, "status": "ok", "exit_code": 0, "findings": []},
     "report has no 'checks'"),
])
def test_fleet_rejects_what_is_not_a_report(document: object, message: str) -> None:
    with pytest.raises(fleet.ReportError, match=message):
        fleet.validate("x.json", document)


def test_prometheus_gives_blackbox_style_http_status_phases_and_certificate_expiry() -> None:
    """blackbox_exporter's probe_http_status_code and probe_http_duration_seconds{phase}, by check:
    an http check's phases are the dns, tcp and tls checks it stands on, then the first byte."""
    answers = {"http:mcr.microsoft.com:443": Outcome(evidence={"status": 200, "first_byte_ms": 12.5}),
               "tls:mcr.microsoft.com:443": Outcome(evidence={"cert": {"not_after": "2027-03-01T12:00:00+00:00"}})}
    report = build(Scenario("answered", answers, frozenset()))
    families = metrics(report)
    http = [r for r in report.results if r.check.layer.value == "http" and isinstance(r.evidence.get("status"), int)]
    assert [r.check.id for r in http] == ["http:mcr.microsoft.com:443"]
    codes = values(families, "http_status_code", "check")
    assert codes == {r.check.id: r.evidence["status"] for r in http}
    first = http[0]
    phases = {s.labels["phase"]: s.value for s in families["aml_netcheck_http_duration_seconds"].samples
              if s.labels["check"] == first.check.id}
    by_id = {r.check.id: r for r in report.results}
    tls = by_id[str(first.check.needs)]
    tcp = by_id[str(tls.check.needs)]
    dns = by_id[str(tcp.check.needs)]
    assert list(phases) == ["resolve", "connect", "tls", "processing"] and phases["processing"] == 0.0125
    assert (phases["resolve"], phases["connect"], phases["tls"]) == (
        round(dns.elapsed, 4), round(tcp.elapsed, 4), round(tls.elapsed, 4))
    expiries = values(families, "tls_cert_expiry_timestamp_seconds", "check")
    with_cert = {r.check.id: r.evidence["cert"]["not_after"] for r in report.results  # type: ignore[index]
                 if r.check.layer.value == "tls" and isinstance(r.evidence.get("cert"), dict)}
    assert expiries == {cid: datetime.fromisoformat(str(when)).timestamp() for cid, when in with_cert.items()}
    assert expiries["tls:mcr.microsoft.com:443"] == 1803902400
