"""The output contract (tests/unit/contract.py) over the synthetic report set: every format of one
report agrees on what fails, and the checker catches the disagreements it exists for."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from agent.model import Report
from agent.output import junit, markdown, ndjson, prometheus, status, tap

from .contract import ContractError, check_agreement, check_report, render_all, render_verbose_text
from .synthetic import SCENARIOS, SMB, Scenario, build

IDS = [s.name for s in SCENARIOS]


def scenario(name: str) -> Scenario:
    return next(s for s in SCENARIOS if s.name == name)


def flattened(claims: list[frozenset[str]]) -> set[str]:
    return {check for claim in claims for check in claim}


@pytest.mark.parametrize("case", SCENARIOS, ids=IDS)
def test_every_format_agrees(case: Scenario) -> None:
    report = build(case)
    views = check_report(report)
    failing = {r.check.id for r in report.results if report.failing(r)}
    unneeded = set(report.diagnosis.unneeded)
    assert views["json"].failing_ids == failing
    assert views["prometheus"].failing_ids == failing  # one series per check: every claim is definite
    assert flattened(views["prometheus"].unneeded) == unneeded
    assert flattened(views["markdown"].failing) >= failing
    assert all(claim & failing for claim in views["markdown"].failing)
    assert all(claim & failing for claim in views["text"].failing)
    assert flattened(views["text"].unneeded) == unneeded  # verbose text marks every one
    assert views["ndjson"].failing_ids == failing and flattened(views["ndjson"].unneeded) == unneeded
    for kind in ("junit", "tap"):  # every check of a case that did not pass, and none judged unneeded, is named
        assert flattened(views[kind].failing) >= failing and all(claim & failing for claim in views[kind].failing)
        assert flattened(views[kind].unneeded) <= unneeded
    assert views["html"].failing_ids == failing  # its rows name their checks
    for kind in ("json", "prometheus", "markdown", "text", "npd", "html", "junit", "tap", "ndjson"):
        assert views[kind].status == report.status


def without_unneeded(report: Report) -> Report:
    """The report as the renderers saw it before diagnosis judged checks unneeded, once for all."""
    return dataclasses.replace(report, diagnosis=dataclasses.replace(report.diagnosis, unneeded={}))


def test_behind_a_working_proxy_no_format_calls_the_direct_paths_failing() -> None:
    """The regression that motivated the contract: behind a working proxy `check` said no problems
    while the markdown listed the unneeded direct paths under 'Failing flows'."""
    report = build(scenario("proxy only"))
    rendered = render_all(report)
    views = check_report(report)
    assert views["json"].failing == [] and len(views["json"].unneeded) == len(report.diagnosis.unneeded) > 20
    assert "## Failing flows" not in rendered.markdown
    assert rendered.npd == "OK aml-netcheck: no problems"
    old_markdown = markdown.render_markdown(without_unneeded(report))
    assert "## Failing flows" in old_markdown
    with pytest.raises(ContractError,
                       match=r"markdown calls tcp:login\.microsoftonline\.com:443 failing, json calls it unneeded"):
        check_agreement(rendered.json, prometheus_text=rendered.prometheus, markdown_text=old_markdown)


def test_each_format_is_held_to_the_json_verdict_on_unneeded_checks() -> None:
    report = build(scenario("proxy only"))
    rendered = render_all(report)
    stale = without_unneeded(report)
    with pytest.raises(ContractError, match=r"prometheus calls .* failing, json calls it unneeded"):
        check_agreement(rendered.json, prometheus_text=prometheus.render_prometheus(stale))
    with pytest.raises(ContractError, match=r"text calls .* failing, json calls it unneeded"):
        check_agreement(rendered.json, text_report=render_verbose_text(stale))
    for name, render in [("junit", junit.render_junit), ("tap", tap.render_tap), ("ndjson", ndjson.render_ndjson)]:
        with pytest.raises(ContractError, match=rf"{name} calls .* failing, json calls it unneeded"):
            check_agreement(rendered.json, **{f"{name}_text": render(stale)})


def test_partial_inputs() -> None:
    """The lab hands over what one run wrote: any of markdown, text and Prometheus may be missing."""
    rendered = render_all(build(scenario("smb dropped")))
    assert set(check_agreement(rendered.json).by_name) == {"json"}
    assert set(check_agreement(rendered.json, prometheus_text=rendered.prometheus).by_name) == {"json", "prometheus"}
    views = check_agreement(rendered.json, markdown_text=rendered.markdown, npd_line=rendered.npd)
    assert set(views.by_name) == {"json", "markdown", "npd"}
    assert views["markdown"].failing == [frozenset({SMB})]


def test_json_and_prometheus_of_one_run_with_markdown_of_another() -> None:
    first, second = render_all(build(scenario("smb dropped"))), render_all(build(scenario("smb dropped")))
    check_agreement(first.json, prometheus_text=first.prometheus, markdown_text=second.markdown)
    both = render_all(build(scenario("two egress-blocked findings")))  # a later run found less: no contradiction
    check_agreement(both.json, prometheus_text=both.prometheus,
                    markdown_text=render_all(build(scenario("batch dropped"))).markdown, verdict=False)
    other = render_all(build(scenario("tundra closed")))  # one that found something else
    with pytest.raises(ContractError, match=r"markdown calls udp:eastus\.tundra\.azureml\.ms:5831 failing, json "
                                            r"calls it healthy"):
        check_agreement(first.json, prometheus_text=first.prometheus, markdown_text=other.markdown, verdict=False)
    with pytest.raises(ContractError, match="markdown lists findings"):
        check_agreement(first.json, prometheus_text=first.prometheus, markdown_text=other.markdown)


def test_a_check_failing_in_one_format_and_healthy_in_another() -> None:
    failing, healthy = render_all(build(scenario("smb dropped"))), render_all(build(scenario("healthy")))
    with pytest.raises(ContractError, match=f"json calls {SMB} failing, prometheus calls it healthy"):
        check_agreement(failing.json, prometheus_text=healthy.prometheus, verdict=False)
    with pytest.raises(ContractError, match=f"json calls {SMB} failing, text calls it healthy"):
        check_agreement(failing.json, text_report=healthy.text, verdict=False)
    with pytest.raises(ContractError, match=f"markdown calls {SMB} failing, json calls it healthy"):
        check_agreement(healthy.json, markdown_text=failing.markdown, verdict=False)
    for name in ("junit", "tap"):  # a passed case calls every needed check of its requirement healthy
        with pytest.raises(ContractError, match=f"json calls {SMB} failing, {name} calls it healthy"):
            check_agreement(failing.json, **{f"{name}_text": getattr(healthy, name)}, verdict=False)
        with pytest.raises(ContractError, match=f"{name} calls {SMB} failing, json calls it healthy"):
            check_agreement(healthy.json, **{f"{name}_text": getattr(failing, name)}, verdict=False)
    with pytest.raises(ContractError, match=f"html calls {SMB} failing, json calls it healthy"):
        check_agreement(healthy.json, html_text=failing.html, verdict=False)
    with pytest.raises(ContractError, match="html says status critical, json says ok"):
        check_agreement(healthy.json, html_text=failing.html)


def test_the_verdicts_must_agree() -> None:
    rendered = render_all(build(scenario("smb dropped")))
    relabelled: dict[str, Any] = {**rendered.json, "status": "warning", "exit_code": 1}
    with pytest.raises(ContractError, match="prometheus says status critical, json says warning"):
        check_agreement(relabelled, prometheus_text=rendered.prometheus)
    with pytest.raises(ContractError, match="npd says critical, json says warning"):
        check_agreement(relabelled, npd_line=rendered.npd)
    healthy = render_all(build(scenario("healthy")))
    with pytest.raises(ContractError, match="npd says ok"):
        check_agreement(rendered.json, npd_line=healthy.npd, verdict=False)
    with pytest.raises(ContractError, match="says OK and names a problem"):
        check_agreement(healthy.json, npd_line="OK smb-blocked x:445/tcp blocked")


def test_malformed_outputs_are_errors_not_agreement() -> None:
    rendered = render_all(build(scenario("smb dropped")))
    foreign = rendered.markdown.replace("contosomlsa.file.core.windows.net |", "elsewhere.example |")
    with pytest.raises(ContractError, match="names no check of the JSON report"):
        check_agreement(rendered.json, markdown_text=foreign)
    with pytest.raises(ContractError, match="the headline counts 2 problem"):
        check_agreement(rendered.json, text_report=rendered.text.replace("1 problem found", "2 problems found"))
    with pytest.raises(ContractError, match="no footer"):
        check_agreement(rendered.json, text_report=rendered.text.rsplit("\n", 2)[0])
    repeated = rendered.prometheus + rendered.prometheus.splitlines()[-1] + "\n"
    with pytest.raises(ContractError, match="series given twice"):
        check_agreement(rendered.json, prometheus_text=repeated)
    with pytest.raises(ContractError, match="html: no verdict"):
        check_agreement(rendered.json, html_text=rendered.html.replace('class="verdict', 'class="'))


def test_npd_line_of_an_unknown_run() -> None:
    report = build(scenario("stopped by SIGTERM"))
    assert status.npd_line(report).startswith("UNKNOWN smb-blocked ")
    assert check_report(report)["npd"].status == "unknown"
