"""The formats for CI and log pipelines over the synthetic report set, each read by a real
consumer: JUnit validated against Jenkins' and Ant's schemas (xmlschema), TAP parsed by node-tap's
TAP 14 parser in strict mode, NDJSON parsed line by line by json and by jq, its checks and
findings validated against the published report schema. A hostile string (what a server may put
in a banner, a reason phrase or a certificate) goes through each of them."""

from __future__ import annotations

import json
from dataclasses import replace
from importlib import resources
from typing import Any

import jsonschema
import pytest

from agent.model import Report, Severity
from agent.output import Format, render
from agent.output.cases import INCOMPLETE, Case, Kind, Outcome, by_requirement, cases, printable
from agent.output.ndjson import SCHEMA_ID
from probes.reasons import Status

from .ci_consumers import jq_lines, junit_errors, parse_junit, parse_tap
from .synthetic import SCENARIOS, SMB, Scenario, build

IDS = [s.name for s in SCENARIOS]
# C0 and C1 controls, a lone surrogate, the non-characters, markup, a CDATA end, quotes, TAP's
# directive and escape characters, and lines that read as TAP, YAML and XML of their own
HOSTILE = ("\x00\x01\x08\x0b\x0c\x1b[31mred\x7f\x85\x9f\ud800\ufffe\uffff <b>&amp;</b> ]]> \"dq\" 'sq' "
           "# SKIP not a directive \\ back\nnot ok 99 - injected\r\n  ---\n  ...\n</failure><x/>\u00e9\u2603")


def scenario(name: str) -> Scenario:
    return next(s for s in SCENARIOS if s.name == name)


def case_of(report: Report, name: str) -> Case:
    return next(c for c in cases(report) if c.name == name)


def hostile(report: Report) -> Report:
    """`report` with the hostile string wherever a server's words or a user's names can end up:
    the failing check's detail, the finding's texts, the hostname, a context value."""
    results = tuple(replace(r, detail=HOSTILE) if r.check.id == SMB else r for r in report.results)
    findings = tuple(replace(f, summary=HOSTILE, cause=HOSTILE, remedy=HOSTILE, path=HOSTILE) for f in report.findings)
    context = {**report.context, "compute_name": replace(report.context["compute_name"], value=HOSTILE)}
    return replace(report, results=results, diagnosis=replace(report.diagnosis, findings=findings),
                   node={**report.node, "hostname": HOSTILE}, context=context)


# -- the cases both JUnit and TAP report ---------------------------------------------------------------


@pytest.mark.parametrize("case", SCENARIOS, ids=IDS)
def test_a_case_per_requirement_checked_and_none_passes_over_a_problem(case: Scenario) -> None:
    report = build(case)
    found = cases(report)
    requirements = [c.name for c in found if c.kind is Kind.REQUIREMENT]
    assert requirements == [r.id for r, _ in by_requirement(report)]
    assert set(requirements) == {rid for r in report.results for rid in r.check.requirements}
    failed = {c.name for c in found if c.outcome is Outcome.FAILED}
    for result in report.results:  # every failing check fails each requirement it serves
        if report.failing(result):
            assert set(result.check.requirements) <= failed, result.check.id
        if result.status is Status.INCONCLUSIVE and report.unneeded(result) is None:
            assert all(case_of(report, rid).outcome in (Outcome.FAILED, Outcome.ERROR)
                       for rid in result.check.requirements)
    for finding in report.findings:  # a warning or critical finding fails a case, wherever it points
        if finding.severity >= Severity.WARNING:
            assert any(finding in c.findings and c.outcome is Outcome.FAILED for c in found), finding.code
    assert any(c.kind is Kind.RUN for c in found) == bool(report.interrupted)
    for item in found:
        assert (item.outcome is Outcome.PASSED) == (item.message == "") == (item.code == ""), item


def test_a_healthy_node_fails_no_case_and_skips_what_it_could_not_check() -> None:
    found = cases(build(scenario("healthy")))
    skipped = [c for c in found if c.outcome is Outcome.SKIPPED]
    assert {c.outcome for c in found} == {Outcome.PASSED, Outcome.SKIPPED}
    assert [(c.name, c.code) for c in skipped] == [("acr", "skip.missing-context"),
                                                  ("workspace-key-vault", "skip.missing-context")]
    assert "give --container-registry" in skipped[0].message


def test_a_finding_on_passing_checks_fails_its_requirement() -> None:
    """Resolvers that disagree fail no check: the finding still fails the case it names."""
    report = build(scenario("resolvers disagree"))
    [finding] = report.findings
    failed = [c for c in cases(report) if c.outcome is Outcome.FAILED]
    [check] = finding.checks
    assert [c.name for c in failed] == [r.id for r, results in by_requirement(report)
                                        if check in {x.check.id for x in results}]
    for case in failed:
        assert case.findings == (finding,) and case.code == "dns-resolvers-disagree"
        assert all(r.status is not Status.FAIL for r in case.results)


def test_an_inconclusive_check_is_an_error_and_an_interrupted_run_a_case_in_error() -> None:
    undecided = case_of(build(scenario("tls inspected, trusted, plus a cancelled check")), "mcr")
    assert (undecided.outcome, undecided.code) == (Outcome.ERROR, "probe.cancelled")
    assert undecided.message.startswith("1 of 5 checks inconclusive; tcp mcr.microsoft.com:443/tcp: inconclusive")
    stopped = build(scenario("stopped by SIGTERM"))
    run = case_of(stopped, "complete")
    assert (run.kind, run.outcome, run.code, run.message) == (
        Kind.RUN, Outcome.ERROR, INCOMPLETE, f"run incomplete: {stopped.interrupted}")


def test_a_finding_that_names_no_check_is_a_case_of_its_own() -> None:
    """IMDS unreadable at detection names no check: info passes, a warning (the region unknown) fails."""
    report = build(scenario("imds unreadable"))
    [info] = report.findings
    assert info.checks == () and case_of(report, info.code).outcome is Outcome.PASSED
    warned = replace(info, severity=Severity.WARNING)
    report = replace(report, diagnosis=replace(report.diagnosis, findings=(warned,)))
    case = case_of(report, info.code)
    assert (case.kind, case.outcome, case.code, case.findings) == (Kind.FINDING, Outcome.FAILED, info.code, (warned,))


# -- JUnit -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", SCENARIOS, ids=IDS)
def test_junit_is_valid_for_jenkins_and_ant_and_says_what_the_cases_say(case: Scenario) -> None:
    report = build(case)
    root = parse_junit(render(report, Format.JUNIT))
    [suite] = root
    found = cases(report)
    testcases = suite.findall("testcase")
    assert [t.get("name") for t in testcases] == [c.name for c in found]
    assert [t.get("classname") for t in testcases] == [f"aml-netcheck.{c.kind.value}" for c in found]
    outcome = {"failure": Outcome.FAILED, "error": Outcome.ERROR, "skipped": Outcome.SKIPPED}
    for element, item in zip(testcases, found, strict=True):
        children = list(element)
        assert [outcome[c.tag] for c in children] == ([] if item.outcome is Outcome.PASSED else [item.outcome])
        for child in children:
            assert child.get("message") == item.message
            assert child.get("type") == (None if item.outcome is Outcome.SKIPPED else item.code)
            assert all(f"{f.severity.label.upper()} {f.code}: " in (child.text or "") for f in item.findings)
        assert float(element.get("time", "")) == pytest.approx(item.elapsed, abs=0.001)
    counts = {o: sum(c.outcome is o for c in found) for o in Outcome}
    assert {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": str(len(found)), "failures": str(counts[Outcome.FAILED]), "errors": str(counts[Outcome.ERROR]),
        "skipped": str(counts[Outcome.SKIPPED])}
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert (properties["status"], properties["exit_code"], properties["started_at"]) == (
        report.status, str(report.exit_code), report.started_at)
    assert (suite.get("hostname"), suite.get("timestamp")) == ("ci-alice", "2026-11-23T12:00:00")
    assert float(suite.get("time", "")) == report.duration_ms / 1000


def test_junit_names_the_vantage_in_the_suite() -> None:
    report = build(scenario("healthy"))
    report = replace(report, node={**report.node, "vantage": {"kind": "container", "name": "job-1"}})
    [suite] = parse_junit(render(report, Format.JUNIT))
    assert suite.get("name") == "aml-netcheck on ci-alice from container:job-1"


def test_a_hostile_string_leaves_junit_valid_and_readable() -> None:
    """XML 1.0 cannot carry most control characters, not even escaped: without printable() the
    document is not XML at all (a parser stops at the first one)."""
    report = hostile(build(scenario("smb dropped")))
    document = render(report, Format.JUNIT)
    [suite] = parse_junit(document)
    failure = suite.find("testcase[@name='storage-file-smb']/failure")
    assert failure is not None and failure.text is not None
    shown = printable(HOSTILE)
    assert failure.get("message") == f"CRITICAL smb-blocked: {shown}"
    one_line = " ".join(shown.splitlines())  # the body has a line per field and per check
    assert f"  why: {one_line}\n" in failure.text and f": fail tcp.timeout: {one_line}\n" in failure.text
    assert suite.get("hostname") == shown and "\\u0000\\u0001" in shown and "\u2603" in shown
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["context.compute_name"] == shown
    [refused] = junit_errors(document.replace("\\u0001", "\x01", 1))  # the raw character is no XML
    assert refused.startswith("not XML: ")


# -- TAP -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", SCENARIOS, ids=IDS)
def test_tap_14_is_read_by_node_tap_as_the_cases_say(case: Scenario) -> None:
    report = build(case)
    stream = render(report, Format.TAP)
    assert stream.startswith("TAP version 14\n1..")
    parsed = parse_tap(stream)
    found = cases(report)
    final = parsed["final"]
    assert parsed["version"] == 14 and parsed["extra"] == [] and final["plan"]["end"] == final["count"] == len(found)
    failing = [c for c in found if c.outcome in (Outcome.FAILED, Outcome.ERROR)]
    assert (final["ok"], final["fail"], final["skip"]) == (
        not failing, len(failing), sum(c.outcome is Outcome.SKIPPED for c in found))
    for point, item in zip(parsed["asserts"], found, strict=True):
        assert point["ok"] == (item.outcome in (Outcome.PASSED, Outcome.SKIPPED))
        assert point["name"] == f"{item.kind.value} {item.name}: {item.title}"
        assert (point["skip"] or None) == (item.message if item.outcome is Outcome.SKIPPED else None)
        diag = point.get("diag") or {}
        if item.outcome is not Outcome.PASSED:
            assert (diag["outcome"], diag["message"], diag["code"]) == (item.outcome.value, item.message, item.code)
        assert [f["code"] for f in diag.get("findings", [])] == [f.code for f in item.findings]
    assert parsed["comments"][-1].strip() == (f"# {len(report.results)} checks in {report.duration_ms / 1000:.1f}s; "
                                              f"status {report.status}, exit {report.exit_code}")


def test_a_hostile_string_stays_inside_its_tap_diagnostics() -> None:
    """A newline with `not ok 99`, `---` and `...` in a server's words adds no test point and
    ends no YAML block; `#` and `\\` in a description are escaped, not a directive."""
    report = hostile(build(scenario("smb dropped")))
    named = replace(report, catalog=replace(report.catalog, requirements=tuple(
        replace(r, purpose="SMB # TODO not a directive \\ x") if r.id == "storage-file-smb" else r
        for r in report.catalog.requirements)))
    parsed = parse_tap(render(named, Format.TAP))
    assert parsed["extra"] == [] and parsed["final"]["count"] == len(cases(named))
    [failed] = [p for p in parsed["asserts"] if not p["ok"]]
    assert failed["name"] == "requirement storage-file-smb: SMB # TODO not a directive \\ x" and not failed["todo"]
    [finding] = failed["diag"]["findings"]
    assert finding["why"] == finding["summary"] == printable(HOSTILE)
    assert f"tcp contosomlsa.file.core.windows.net:445/tcp: fail tcp.timeout: {printable(HOSTILE)}" in (
        failed["diag"]["checks"])


# -- NDJSON ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(resources.files("agent").joinpath("data/report-1.schema.json").read_text())
    return schema


def _validator(schema: dict[str, Any], definition: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$schema": schema["$schema"], "$defs": schema["$defs"],
                                            "$ref": f"#/$defs/{definition}"})


@pytest.mark.parametrize("case", SCENARIOS, ids=IDS)
def test_ndjson_is_a_run_then_a_line_per_check_and_finding(case: Scenario, report_schema: dict[str, Any]) -> None:
    report = build(case)
    stream = render(report, Format.NDJSON)
    lines = stream.splitlines()
    assert stream.endswith("\n") and all(line.isascii() for line in lines)
    records = [json.loads(line) for line in lines]
    assert [r["type"] for r in records] == ["run"] + ["check"] * len(report.results) + ["finding"] * len(
        report.findings)
    identity = {"schema": SCHEMA_ID, "time": report.started_at, "hostname": "ci-alice", "vantage": report.vantage}
    assert all({k: r[k] for k in identity} == identity for r in records)
    run = records[0]
    assert (run["status"], run["exit_code"], run["interrupted"], run["summary"]["total"]) == (
        report.status, report.exit_code, report.interrupted, len(report.results))
    checks, findings = _validator(report_schema, "check"), _validator(report_schema, "finding")
    for record in records[1:]:
        validator = checks if record["type"] == "check" else findings
        assert [e.message for e in validator.iter_errors(record)] == []
    assert [r["id"] for r in records if r["type"] == "check"] == [r.check.id for r in report.results]
    assert [r["code"] for r in records if r["type"] == "finding"] == [f.code for f in report.findings]
    assert jq_lines(stream) == records


def test_ndjson_lines_join_on_the_run_identity_in_jq() -> None:
    report = build(scenario("two egress-blocked findings"))
    report = replace(report, node={**report.node, "vantage": {"kind": "netns", "name": "/run/netns/job"}})
    stream = render(report, Format.NDJSON)
    joined = jq_lines(stream, 'select(.type == "finding") | [.hostname, .vantage, .time, .code, (.checks | length)]')
    assert joined == [["ci-alice", "netns:/run/netns/job", report.started_at, f.code, len(f.checks)]
                      for f in report.findings]
    failing = jq_lines(stream, 'select(.type == "check" and (.status == "fail" or .status == "warn") '
                               'and .unneeded == null) | .id')
    assert failing == [r.check.id for r in report.results if report.failing(r)]


def test_a_hostile_string_is_carried_exactly_in_ndjson() -> None:
    report = hostile(build(scenario("smb dropped")))
    stream = render(report, Format.NDJSON)
    lines = stream.splitlines()
    assert len(lines) == 1 + len(report.results) + len(report.findings) and all(line.isascii() for line in lines)
    records = [json.loads(line) for line in lines]
    [smb] = [r for r in records if r.get("id") == SMB]
    [finding] = [r for r in records if r["type"] == "finding"]
    exact = HOSTILE.replace("\ud800", "\\ud800")  # but for the lone surrogate, which I-JSON and jq refuse
    assert smb["detail"] == finding["cause"] == records[0]["hostname"] == exact
    assert jq_lines(stream, 'select(.type == "finding") | .code') == ["smb-blocked"]


def test_every_format_renders() -> None:
    report = build(scenario("smb dropped"))
    assert all(render(report, fmt) for fmt in Format)
