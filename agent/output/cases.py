"""The report as test cases, for the formats CI pipelines read (JUnit, TAP): one case per
requirement the plan checked (what a user knows as a check), one per finding that names no check
(a node finding: IMDS unreadable), and one for a run that did not finish. Pure over a Report.

A case fails when a check of it fails or warns (Report.failing, as every format says) or a warning
or critical finding names one of its checks (DNS resolvers that disagree fail no check); it is in
error when a check ended inconclusive (no answer about the network is not a pass); it is skipped
when a check was not run (a context value missing, blocked by policy), as the text report ranks a
requirement; otherwise it passed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from agent.catalog import Requirement
from agent.model import Finding, Report, Result, Severity
from probes.reasons import Status
from probes.specs import Layer


class Outcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"


INCOMPLETE = "run.incomplete"  # the code of the case a run that did not finish fails


class Kind(StrEnum):
    REQUIREMENT = "requirement"
    FINDING = "finding"  # a finding that names no check
    RUN = "run"  # the run itself, when it did not finish


@dataclass(frozen=True, slots=True)
class Case:
    kind: Kind
    name: str  # the requirement id, the finding code, or "complete"
    title: str  # one line: the requirement's purpose, the finding's summary
    outcome: Outcome
    message: str  # one line: why it failed, errored or was skipped; "" when it passed
    code: str  # what decided that: the finding code, else the check's reason code; "" when it passed
    results: tuple[Result, ...]
    lines: tuple[str, ...]  # a result_line per result, a check judged unneeded saying so
    findings: tuple[Finding, ...]  # the findings naming its checks, worst first
    elapsed: float  # seconds: its checks' own durations summed (they may have run at the same time)


def by_requirement(report: Report) -> list[tuple[Requirement, list[Result]]]:
    """Each requirement the plan checked with its results, in catalog order (a check serving two
    requirements is in both)."""
    results: dict[str, list[Result]] = {}
    for result in report.results:
        for requirement_id in result.check.requirements:
            results.setdefault(requirement_id, []).append(result)
    return [(r, results[r.id]) for r in report.catalog.requirements if r.id in results]


def cases(report: Report) -> list[Case]:
    named: set[str] = set()
    found = []
    for requirement, results in by_requirement(report):
        ids = {r.check.id for r in results}
        named |= ids
        findings = tuple(f for f in report.findings if ids.intersection(f.checks))
        found.append(_requirement_case(report, requirement, results, findings))
    for finding in report.findings:
        if not named.intersection(finding.checks):
            failed = finding.severity >= Severity.WARNING
            found.append(Case(Kind.FINDING, finding.code, finding.summary,
                              Outcome.FAILED if failed else Outcome.PASSED, finding_line(finding) if failed else "",
                              finding.code if failed else "", (), (), (finding,), 0.0))
    if report.interrupted:
        found.append(Case(Kind.RUN, "complete", "the run finished", Outcome.ERROR,
                          f"run incomplete: {report.interrupted}", INCOMPLETE, (), (), (), report.duration_ms / 1000))
    return found


def _requirement_case(report: Report, requirement: Requirement, results: list[Result],
                      findings: tuple[Finding, ...]) -> Case:
    counted = [r for r in results if report.unneeded(r) is None]
    failing = [r for r in counted if report.failing(r)]
    serious = [f for f in findings if f.severity >= Severity.WARNING]
    undecided = [r for r in counted if r.status is Status.INCONCLUSIVE]
    skipped = [r for r in counted if r.status is Status.SKIP]
    elapsed = sum(r.elapsed for r in results)
    lines = tuple(result_line(r, judged.text if (judged := report.unneeded(r)) else "") for r in results)
    lead: Finding | None = next(iter(serious or findings), None)
    if failing or serious:
        outcome, deciding = Outcome.FAILED, failing
    elif undecided:
        outcome, deciding = Outcome.ERROR, undecided
    elif skipped:
        outcome, deciding, lead = Outcome.SKIPPED, skipped, None
    else:
        return Case(Kind.REQUIREMENT, requirement.id, requirement.purpose, Outcome.PASSED, "", "", tuple(results),
                    lines, findings, elapsed)
    if lead is not None:
        message, code = finding_line(lead), lead.code
    else:
        first = deciding[0]
        share = f"{len(deciding)} of {len(counted)} checks {_SHARE[outcome]}; " if len(deciding) < len(counted) else ""
        message, code = share + result_line(first), first.reason.value if first.reason else first.status.value
    return Case(Kind.REQUIREMENT, requirement.id, requirement.purpose, outcome, message, code, tuple(results),
                lines, findings, elapsed)


_SHARE = {Outcome.FAILED: "failing", Outcome.ERROR: "inconclusive", Outcome.SKIPPED: "skipped"}


def finding_line(finding: Finding) -> str:
    return f"{finding.severity.label.upper()} {finding.code}: {finding.summary}"


def result_line(result: Result, note: str = "") -> str:
    """`layer target: status reason in phase: detail[  -> note]`, the text report's check line in
    one piece (a local check is named by what it inspects: every one's target is localhost)."""
    check = result.check
    target = check.id.partition(":")[2] if check.layer is Layer.LOCAL else check.target
    via = {"proxy": " via the proxy", "to-proxy": " (the proxy)"}.get(check.path, "")
    reason = f" {result.reason.value}" if result.reason else ""
    phase = f" in {result.phase}" if result.phase and result.reason else ""
    detail = f": {result.detail}" if result.detail else ""
    return f"{check.layer.value} {target}{via}: {result.status.value}{reason}{phase}{detail}" + (
        f"  -> {note}" if note else "")


# What XML 1.0 and YAML 1.2 may both carry as text: the C0 controls but tab, newline and return,
# DEL and the C1 controls, surrogates and the two non-characters are shown as \uXXXX instead.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def printable(text: str) -> str:
    """`text` with every character XML 1.0 or YAML 1.2 refuses written as its \\uXXXX escape:
    findings carry what servers sent (a banner, a reason phrase, a certificate's subject)."""
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
