"""The output contract: every format of a report says the same thing about which checks fail.

`check_agreement` takes the rendered outputs of one report (the JSON dict, the Prometheus text,
the markdown, the verbose text report and the npd line; any but the JSON may be None), extracts
from each what it calls failing, unneeded and healthy, and raises ContractError when one format
calls failing what another (or the same one) calls healthy or unneeded. With `verdict=True` it also
requires one status, exit code and set of findings across the formats. It reads only the rendered
text, never the Report, so the lab can hand it the outputs of real runs (JSON and Prometheus from
one run, markdown from another: pass `verdict=False` when the runs may differ).

What each format calls failing, unneeded and healthy:
- JSON: status fail or warn with `unneeded` null; `unneeded` set; status pass with `unneeded` null.
- Prometheus: check_success 0 or a check_failure_info series; check_unneeded; check_success 1
  without a failure series.
- markdown: the rows of 'Failing flows'; it names nothing unneeded or healthy.
- text: FAIL/warn result lines; lines marked 'not needed'; ok lines. A requirement's header says
  FAIL/warn (one of its needed checks fails) or ok (all of its needed checks pass).
- npd: OK exactly when the status is ok.
- NDJSON: as JSON, from its check lines; the status, exit code and findings from its run and finding lines.
- JUnit and TAP (a test case per requirement): the check lines of a case that did not pass
  (fail/warn; `-> not needed`; pass); every needed check of a passed requirement is healthy.
- html: the rows of its failing flows table (each names its check id, `data-check`); the verdict
  (its `status-*` class and exit code) and the findings (`data-code`, `severity-*`) as sections.

Markdown and text name flows (layer, host, port, path), not check ids: a line is matched to the
JSON's checks with that flow (and that reason, where it narrows the match). A claim that still
matches several checks contradicts another format only if every check it matches is called
healthy or unneeded there."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from agent.model import Report
from agent.output import draw, html, jsonreport, junit, markdown, ndjson, prometheus, status, tap, text


class ContractError(AssertionError):
    """The formats of one report disagree, or one of them is malformed; the message lists how."""


# --- Prometheus text exposition, parsed strictly ---------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
_LABELS = rf"[a-zA-Z_][a-zA-Z0-9_]*={_LABEL_VALUE}(?:,[a-zA-Z_][a-zA-Z0-9_]*={_LABEL_VALUE})*"
_VALUE = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN"
_SAMPLE = re.compile(rf"(?P<name>{_NAME})(?:\{{(?P<labels>{_LABELS})?\}})? (?P<value>{_VALUE})(?: -?\d+)?")
_LABEL = re.compile(rf"(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)=(?P<value>{_LABEL_VALUE})")
_HELP = re.compile(rf"# HELP (?P<name>{_NAME}) (?P<text>(?:[^\\\n]|\\[\\n])*)")
_TYPE = re.compile(rf"# TYPE (?P<name>{_NAME}) (?P<kind>counter|gauge|histogram|summary|untyped)")


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


@dataclass
class Family:
    name: str
    kind: str | None = None
    help: str | None = None
    samples: list[Sample] = field(default_factory=list)


def parse_prometheus(exposition: str) -> dict[str, Family]:
    """The metric families of a text exposition (format 0.0.4), or ContractError at the first line
    that breaks it: a malformed line, a sample before its TYPE, a family split in two, a series
    given twice, a missing final newline."""
    if not exposition.endswith("\n"):
        raise ContractError("prometheus: the exposition does not end with a newline")
    families: dict[str, Family] = {}
    series: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    current: str | None = None
    for number, line in enumerate(exposition[:-1].split("\n"), 1):
        where = f"prometheus line {number} ({line!r})"
        if line.startswith("#"):
            if (match := _HELP.fullmatch(line) or _TYPE.fullmatch(line)) is None:
                raise ContractError(f"{where}: not a HELP or TYPE line")
            name = match["name"]
            family = families.get(name)
            if family is not None and name != current:
                raise ContractError(f"{where}: family {name} is split")
            family = families.setdefault(name, Family(name))
            current = name
            if line.startswith("# HELP"):
                if family.help is not None:
                    raise ContractError(f"{where}: second HELP for {name}")
                family.help = _unescape(match["text"])
            else:
                if family.kind is not None or family.samples:
                    raise ContractError(f"{where}: TYPE for {name} repeated or after its samples")
                family.kind = match["kind"]
            continue
        if (match := _SAMPLE.fullmatch(line)) is None:
            raise ContractError(f"{where}: not a sample line")
        name = match["name"]
        if name != current or families[name].kind is None:
            raise ContractError(f"{where}: sample of {name} outside its family or before its TYPE")
        labels = {m["key"]: _unescape(m["value"][1:-1]) for m in _LABEL.finditer(match["labels"] or "")}
        if len(labels) != len(_LABEL.findall(match["labels"] or "")):
            raise ContractError(f"{where}: a label name given twice")
        key = (name, tuple(sorted(labels.items())))
        if key in series:
            raise ContractError(f"{where}: series given twice")
        series.add(key)
        families[name].samples.append(Sample(name, labels, float(match["value"])))
    return families


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], value)


# --- What each format says ------------------------------------------------------------------

Claim = frozenset[str]  # the check ids a statement may be about (one, unless a line names a shared flow)


@dataclass
class View:
    """What one format says about the checks and the node."""

    name: str
    failing: list[Claim] = field(default_factory=list)
    unneeded: list[Claim] = field(default_factory=list)
    healthy: list[Claim] = field(default_factory=list)
    status: str | None = None
    exit_code: int | None = None
    findings: set[tuple[str, str]] | None = None  # (code, severity)

    def definite(self, kind: str) -> set[str]:
        return {next(iter(c)) for c in getattr(self, kind) if len(c) == 1}

    @property
    def failing_ids(self) -> set[str]:
        return self.definite("failing")


class _Checks:
    """The JSON report's checks, looked up by the flow a text line or a markdown row names."""

    def __init__(self, report: Mapping[str, Any]) -> None:
        self.by_id: dict[str, Mapping[str, Any]] = {c["id"]: c for c in report["checks"]}

    def match(self, where: str, reason: str | None, **flow: object) -> Claim:
        found = [c for c in self.by_id.values() if all(_flow(c)[k] == v for k, v in flow.items())]
        if not found:
            raise ContractError(f"{where}: names no check of the JSON report")
        narrowed = [c for c in found if c["reason"] == reason]
        return frozenset(c["id"] for c in (narrowed or found))

    def of_requirement(self, requirement: str) -> list[Mapping[str, Any]]:
        return [c for c in self.by_id.values() if requirement in c["requirements"] and not c.get("unneeded")]


def _flow(check: Mapping[str, Any]) -> dict[str, object]:
    port = check["port"]
    return {"layer": check["layer"], "host": check["host"], "port": port, "path": check.get("path", "direct"),
            "proxied": check.get("path") == "proxy",
            "target": f"{check['host']}:{port}/{check['protocol']}" if port else check["host"]}


def _failing(check: Mapping[str, Any]) -> bool:
    return check["status"] in ("fail", "warn") and not check.get("unneeded")


def json_view(report: Mapping[str, Any]) -> View:
    view = View("json", status=report["status"], exit_code=report["exit_code"],
                findings={(f["code"], f["severity"]) for f in report["findings"]})
    for check in report["checks"]:
        claim = frozenset({check["id"]})
        if check.get("unneeded"):
            view.unneeded.append(claim)
        elif _failing(check):
            view.failing.append(claim)
        elif check["status"] == "pass":
            view.healthy.append(claim)
    return view


def prometheus_view(exposition: str, checks: _Checks) -> View:
    families = parse_prometheus(exposition)

    def samples(name: str) -> list[Sample]:
        family = families.get(f"aml_netcheck_{name}")
        if family is None:
            raise ContractError(f"prometheus: no aml_netcheck_{name} family")
        return family.samples

    statuses = [s.labels["status"] for s in samples("status") if s.value == 1]
    if len(statuses) != 1 or any(s.value not in (0, 1) for s in samples("status")):
        raise ContractError(f"prometheus: aml_netcheck_status is 1 for {statuses}, not for exactly one status")
    [exit_code] = samples("exit_code")
    view = View("prometheus", status=statuses[0], exit_code=int(exit_code.value),
                findings={(s.labels["code"], s.labels["severity"]) for s in samples("finding") if s.value == 1})
    failing = {s.labels["check"] for s in samples("check_success") if s.value == 0}
    failing |= {s.labels["check"] for s in samples("check_failure_info") if s.value == 1}
    success = {s.labels["check"] for s in samples("check_success") if s.value == 1}
    unneeded = {s.labels["check"] for s in samples("check_unneeded") if s.value == 1}
    for check_id in failing | success | unneeded:
        if check_id not in checks.by_id:
            raise ContractError(f"prometheus: check {check_id} is not in the JSON report")
    view.failing = [frozenset({c}) for c in sorted(failing)]
    view.healthy = [frozenset({c}) for c in sorted(success - failing)]
    view.unneeded = [frozenset({c}) for c in sorted(unneeded)]
    return view


_MD_TITLE = re.compile(r"# Azure ML network check: (?P<status>OK|WARNING|CRITICAL|UNKNOWN) on .*")
_MD_RESULT = re.compile(r"- \*\*Result:\*\* \d+ finding\(s\), exit code (?P<exit>\d+)(?:; .*)?")
_MD_FINDING = re.compile(r"### \d+\. (?P<severity>CRITICAL|WARNING|INFO) `(?P<code>[a-z0-9-]+)`: .*")
_MD_FLOWS_HEADER = "| source | destination | address | port/proto | observed | needed |"


def markdown_view(document: str, checks: _Checks) -> View:
    lines = document.splitlines()
    view = View("markdown", findings=set())
    for line in lines:
        if match := _MD_TITLE.fullmatch(line):
            view.status = match["status"].lower()
        elif match := _MD_RESULT.fullmatch(line):
            view.exit_code = int(match["exit"])
        elif match := _MD_FINDING.fullmatch(line):
            view.findings.add((match["code"], match["severity"].lower()))  # type: ignore[union-attr]
    if view.status is None or view.exit_code is None:
        raise ContractError("markdown: no title with the status, or no result line with the exit code")
    if "## Failing flows" not in lines:
        if any(line == _MD_FLOWS_HEADER for line in lines):
            raise ContractError("markdown: a flows table outside 'Failing flows'")
        return view
    start = lines.index("## Failing flows")
    if lines[start + 1: start + 4] != ["", _MD_FLOWS_HEADER, "|---|---|---|---|---|---|"]:
        raise ContractError("markdown: 'Failing flows' has no table")
    for line in lines[start + 4:]:
        if not line.startswith("|"):
            break
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) != 6:
            raise ContractError(f"markdown: flow row {line!r} has {len(cells)} cells, not 6")
        destination, port_proto, observed = cells[1], cells[3], cells[4]
        host, proxied = (destination[:-len(" via proxy")], True) if destination.endswith(" via proxy") \
            else (destination, False)
        layer, _, rest = observed.partition(": ")
        port = None if port_proto in ("DNS", "-") else int(port_proto.split()[-1])
        view.failing.append(checks.match(f"markdown flow {line!r}", rest.split(" ", 1)[0] or None,
                                         layer=layer, host=host, port=port, proxied=proxied))
    return view


_TEXT_RESULT = re.compile(
    r" {7}(?P<label>ok|warn|FAIL|\?\?|skip) +(?P<layer>[a-z]+) +(?P<target>\S+)"
    r"(?P<path> via the proxy| \(the proxy\))?(?P<rest>.*)")
_TEXT_REASON = re.compile(r"(?: \[[^\]]*\])?(?:  (?P<reason>[a-z]+\.[a-z-]+)(?: in \S+)?)?(?::|  ->|$)")
_TEXT_REQUIREMENT = re.compile(r"(?P<label>  ok|warn|FAIL|  \?\?|skip) (?P<rest>\S.*)")
_TEXT_FINDING = re.compile(r"\d+\. (?P<severity>CRITICAL|WARNING|INFO) \[(?P<code>[a-z0-9-]+)\] .*")
_TEXT_FOOTER = re.compile(r"\d+ checks \(.*\) in [\d.]+s; status (?P<status>ok|warning|critical|unknown), "
                          r"exit (?P<exit>\d+)")
_TEXT_HEADLINE = re.compile(r"(?:(?P<count>\d+) problems? found|no problems found)")


def text_view(report_text: str, checks: _Checks) -> View:
    lines = report_text.splitlines()
    view = View("text", findings=set())
    requirements = sorted({r for c in checks.by_id.values() for r in c["requirements"]}, key=len, reverse=True)
    headline: int | None = None
    problems = 0  # finding lines of warning or critical severity: the headline counts them
    for line in lines:
        if match := _TEXT_RESULT.fullmatch(line):
            _text_result(match, line, checks, view)
        elif match := _TEXT_FINDING.fullmatch(line):
            view.findings.add((match["code"], match["severity"].lower()))  # type: ignore[union-attr]
            problems += match["severity"] != "INFO"
        elif match := _TEXT_FOOTER.fullmatch(line):
            view.status, view.exit_code = match["status"], int(match["exit"])
        elif (match := _TEXT_HEADLINE.fullmatch(line)) and headline is None:
            headline = int(match["count"] or 0)
        elif match := _TEXT_REQUIREMENT.fullmatch(line):
            requirement = next((r for r in requirements if match["rest"].startswith(r)), None)
            if requirement is None:
                continue  # a line of a finding's text that happens to start like a header
            needed = checks.of_requirement(requirement)
            label = match["label"].strip()
            if label in ("FAIL", "warn"):
                if not needed:
                    raise ContractError(f"text: {line!r}: the requirement has no needed check")
                view.failing.append(frozenset(c["id"] for c in needed))
            elif label == "ok":
                view.healthy += [frozenset({c["id"]}) for c in needed]
    if view.status is None or headline is None:
        raise ContractError("text: no headline, or no footer with the status and exit code")
    if headline != problems:
        raise ContractError(f"text: the headline counts {headline} problem(s), the findings list {problems}")
    return view


def _text_result(match: re.Match[str], line: str, checks: _Checks, view: View) -> None:
    rest = match["rest"]
    note = rest.rpartition("  -> ")[2] if "  -> " in rest else ""
    reason = _TEXT_REASON.match(rest)
    path = {" via the proxy": "proxy", " (the proxy)": "to-proxy", None: "direct"}[match["path"]]
    claim = checks.match(f"text line {line!r}", reason["reason"] if reason else None,
                         layer=match["layer"], target=match["target"], path=path)
    if note.startswith("not needed"):
        view.unneeded.append(claim)
    elif match["label"] in ("FAIL", "warn"):
        view.failing.append(claim)
    elif match["label"] == "ok":
        view.healthy.append(claim)


def ndjson_view(stream: str) -> View:
    import json

    records = [json.loads(line) for line in stream.splitlines()]
    runs = [r for r in records if r.get("type") == "run"]
    if len(runs) != 1 or records[0] is not runs[0]:
        raise ContractError("ndjson: not exactly one run line, first")
    checks = [r for r in records if r.get("type") == "check"]
    findings = [r for r in records if r.get("type") == "finding"]
    if len(checks) + len(findings) + 1 != len(records):
        raise ContractError("ndjson: a line that is no run, check or finding")
    view = json_view({**runs[0], "checks": checks, "findings": findings})
    view.name = "ndjson"
    return view


# a case's check line: agent/output/cases.py's result_line
_CASE_CHECK = re.compile(r"(?P<layer>[a-z]+) (?P<target>\S+)(?P<path> via the proxy| \(the proxy\))?: "
                         r"(?P<status>pass|fail|warn|inconclusive|skip)(?: (?P<reason>[a-z]+\.[a-z-]+))?.*")


def _case_checks(name: str, requirement: str, lines: Sequence[str], checks: _Checks, view: View) -> None:
    """What a case that did not pass says of each check it lists."""
    for line in lines:
        match = _CASE_CHECK.fullmatch(line)
        if match is None:
            raise ContractError(f"{name}: case {requirement}: {line!r} is no check line")
        if match["layer"] == "local":  # named by what it inspects
            claim = frozenset({f"local:{match['target']}"}) & checks.by_id.keys()
            if not claim:
                raise ContractError(f"{name}: {line!r} names no check of the JSON report")
        else:
            path = {" via the proxy": "proxy", " (the proxy)": "to-proxy", None: "direct"}[match["path"]]
            claim = checks.match(f"{name} line {line!r}", match["reason"], layer=match["layer"],
                                 target=match["target"], path=path)
        if "  -> not needed" in line:
            view.unneeded.append(claim)
        elif match["status"] in ("fail", "warn"):
            view.failing.append(claim)
        elif match["status"] == "pass":
            view.healthy.append(claim)


def _passed(requirement: str, checks: _Checks, view: View) -> None:
    view.healthy += [frozenset({c["id"]}) for c in checks.of_requirement(requirement)]


def junit_view(document: str, checks: _Checks) -> View:
    import xml.etree.ElementTree as ET

    suites = ET.fromstring(document).findall("testsuite")
    if len(suites) != 1:
        raise ContractError(f"junit: {len(suites)} test suites, not one")
    properties = {p.get("name"): p.get("value") for p in suites[0].iter("property")}
    view = View("junit", status=properties.get("status"), exit_code=int(properties.get("exit_code") or -1))
    for case in suites[0].iter("testcase"):
        name, kind = case.get("name", ""), case.get("classname")
        detail = list(case)
        if kind != "aml-netcheck.requirement":
            continue
        if not detail:
            _passed(name, checks, view)
            continue
        body = (detail[0].text or "").splitlines()
        listed = body[body.index("checks:") + 1:] if "checks:" in body else []
        _case_checks("junit", name, [line.removeprefix("  ") for line in listed], checks, view)
    return view


_TAP_POINT = re.compile(r"(?P<ok>ok|not ok) \d+ - (?P<kind>[a-z]+) (?P<name>\S+): .*")
_TAP_CHECK = re.compile(r"    - (?P<line>\".*\")")
_TAP_TAIL = re.compile(r"# \d+ checks in [\d.]+s; status (?P<status>[a-z]+), exit (?P<exit>\d+)")


def tap_view(stream: str, checks: _Checks) -> View:
    import json

    view = View("tap")
    point: re.Match[str] | None = None
    listed: list[str] = []

    def close() -> None:
        if point is None or point["kind"] != "requirement":
            return
        if point["ok"] == "ok" and not listed:
            _passed(point["name"], checks, view)
        else:
            _case_checks("tap", point["name"], listed, checks, view)

    for line in stream.splitlines():
        if match := _TAP_POINT.fullmatch(line):
            close()
            point, listed = match, []
        elif match := _TAP_CHECK.fullmatch(line):
            listed.append(json.loads(match["line"]))
        elif match := _TAP_TAIL.fullmatch(line):
            view.status, view.exit_code = match["status"], int(match["exit"])
    close()
    if view.status is None:
        raise ContractError("tap: no closing comment with the status and exit code")
    return view


class _Html(HTMLParser):
    """What an html report's elements say: the verdict, the findings, the failing flows' check ids."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.status: str | None = None
        self.verdict = ""
        self.findings: set[tuple[str, str]] = set()
        self.failing: list[str] = []
        self._in_verdict = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        classes = str(named.get("class") or "").split()
        if tag == "p" and "verdict" in classes:
            self.status = next((c[len("status-"):] for c in classes if c.startswith("status-")), None)
            self._in_verdict = True
        elif tag == "section" and "finding" in classes:
            severity = next((c[len("severity-"):] for c in classes if c.startswith("severity-")), "?")
            self.findings.add((str(named.get("data-code")), severity))
        elif tag == "tr" and "data-check" in named:
            self.failing.append(str(named["data-check"]))

    def handle_endtag(self, tag: str) -> None:
        self._in_verdict = self._in_verdict and tag != "p"

    def handle_data(self, data: str) -> None:
        if self._in_verdict:
            self.verdict += data


def html_view(document: str, checks: _Checks) -> View:
    parsed = _Html()
    parsed.feed(document)
    parsed.close()
    exit_code = re.search(r"exit code (\d+)", parsed.verdict)
    if parsed.status is None or exit_code is None:
        raise ContractError("html: no verdict with the status and exit code")
    for check_id in parsed.failing:
        if check_id not in checks.by_id:
            raise ContractError(f"html: failing flow {check_id} is not in the JSON report")
    return View("html", failing=[frozenset({c}) for c in parsed.failing], status=parsed.status,
                exit_code=int(exit_code[1]), findings=parsed.findings)


_NPD = re.compile(r"(?P<status>OK|WARNING|CRITICAL|UNKNOWN) (?P<code>\S+) ?.*")


def npd_view(line: str) -> View:
    match = _NPD.fullmatch(line)
    if match is None:
        raise ContractError(f"npd: {line!r} is not '<STATUS> <code> <target> <summary>'")
    view = View("npd", status=match["status"].lower())
    if match["status"] == "OK" and line != "OK aml-netcheck: no problems":
        raise ContractError(f"npd: {line!r} says OK and names a problem")
    if match["code"] != "aml-netcheck:":
        view.findings = {(match["code"], "?")}
    return view


# --- Agreement ------------------------------------------------------------------------------

@dataclass
class Views:
    """Every view extracted, by format name, for a test to look into."""

    by_name: dict[str, View]

    def __getitem__(self, name: str) -> View:
        return self.by_name[name]


def check_agreement(json_report: Mapping[str, Any], *, prometheus_text: str | None = None,
                    markdown_text: str | None = None, text_report: str | None = None,
                    npd_line: str | None = None, junit_text: str | None = None, tap_text: str | None = None,
                    ndjson_text: str | None = None, html_text: str | None = None, verdict: bool = True) -> Views:
    """Raise ContractError unless the given outputs agree; return what each one says."""
    checks = _Checks(json_report)
    views = [json_view(json_report)]
    if prometheus_text is not None:
        views.append(prometheus_view(prometheus_text, checks))
    if junit_text is not None:
        views.append(junit_view(junit_text, checks))
    if tap_text is not None:
        views.append(tap_view(tap_text, checks))
    if ndjson_text is not None:
        views.append(ndjson_view(ndjson_text))
    if markdown_text is not None:
        views.append(markdown_view(markdown_text, checks))
    if text_report is not None:
        views.append(text_view(text_report, checks))
    if html_text is not None:
        views.append(html_view(html_text, checks))
    problems = _contradictions(views)
    if verdict:
        problems += _verdicts(views)
    if npd_line is not None:
        npd = npd_view(npd_line)
        if (npd.status == "ok") != (json_report["status"] == "ok") or (verdict and npd.status != views[0].status):
            problems.append(f"npd says {npd.status}, json says {json_report['status']}")
        codes = {code for code, _ in views[0].findings or ()}
        if verdict and npd.findings and not {code for code, _ in npd.findings} <= codes:
            problems.append(f"npd names {npd.findings}, which is not a finding of the JSON report")
        views.append(npd)
    if problems:
        raise ContractError("the formats disagree:\n  " + "\n  ".join(problems))
    return Views({v.name: v for v in views})


def _contradictions(views: Sequence[View]) -> list[str]:
    problems = []
    for one in views:
        for other in views:
            for kind in ("healthy", "unneeded"):
                definite = other.definite(kind)
                problems += [f"{one.name} calls {_ids(claim)} failing, {other.name} calls it {kind}"
                             for claim in one.failing if claim <= definite]
    return problems


def _verdicts(views: Sequence[View]) -> list[str]:
    problems = []
    first = views[0]
    for view in views[1:]:
        if view.status != first.status:
            problems.append(f"{view.name} says status {view.status}, {first.name} says {first.status}")
        if view.exit_code != first.exit_code:
            problems.append(f"{view.name} says exit code {view.exit_code}, {first.name} says {first.exit_code}")
        if view.findings is not None and view.findings != first.findings:
            problems.append(f"{view.name} lists findings {sorted(view.findings)}, "
                            f"{first.name} lists {sorted(first.findings or ())}")
    return problems


def _ids(claim: Iterable[str]) -> str:
    ids = sorted(claim)
    return ids[0] if len(ids) == 1 else "one of " + ", ".join(ids)


# --- Rendering one report in every format, as the CLI does ----------------------------------

@dataclass(frozen=True)
class Rendered:
    json: dict[str, Any]
    prometheus: str
    markdown: str
    text: str  # verbose
    npd: str
    junit: str
    tap: str
    ndjson: str
    html: str


def render_verbose_text(report: Report) -> str:
    return draw.plain_lines(text.text_lines(report, verbose=True))


def render_all(report: Report) -> Rendered:
    import json

    return Rendered(json.loads(jsonreport.to_json(report)), prometheus.render_prometheus(report),
                    markdown.render_markdown(report), render_verbose_text(report), status.npd_line(report),
                    junit.render_junit(report), tap.render_tap(report), ndjson.render_ndjson(report),
                    html.render_html(report))


def check_report(report: Report, *, verdict: bool = True) -> Views:
    """Every format of `report` rendered and checked against the others."""
    rendered = render_all(report)
    return check_agreement(rendered.json, prometheus_text=rendered.prometheus, markdown_text=rendered.markdown,
                           text_report=rendered.text, npd_line=rendered.npd, junit_text=rendered.junit,
                           tap_text=rendered.tap, ndjson_text=rendered.ndjson, html_text=rendered.html,
                           verdict=verdict)
