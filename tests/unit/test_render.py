"""The text and markdown renderers over synthetic reports (pure: no network)."""

from __future__ import annotations

import io
import json

from rich.console import Console

from agent import catalog, planner
from agent.diagnose import Facts, diagnose
from agent.model import Report
from agent.netrules import rules
from agent.netrules.render import render_table
from agent.output import Format, draw, plan, render
from agent.output.markdown import render_markdown
from probes.reasons import Reason
from probes.specs import Proxy

from .helpers import Outcome, make_context, make_plan, simulate

NODE = {"hostname": "ci-alice", "resolvers": ["168.63.129.16"], "default_routes": [{"interface": "eth0"}],
        "interfaces": [{"name": "eth0", "addresses": ["10.0.0.4/24"]}]}


def report_of(outcomes: dict[str, Outcome], options: planner.PlanOptions | None = None) -> Report:
    results = simulate(make_plan(options=options), outcomes)
    diagnosis = diagnose(results, Facts(catalog.load(), make_context(), NODE))
    return Report("2026-11-23T12:00:00.000Z", 1234, make_context(), NODE, results, diagnosis, catalog.load())


def text(report: Report, verbose: bool = False) -> str:
    return render(report, Format.TEXT, verbose=verbose)


def _words(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.strip()]


def test_tables_on_a_terminal_say_what_a_pipe_is_told() -> None:
    """`plan` and `rules` draw their tables without rich off a terminal: the same title, header
    and cells, row by row, as rich draws there (its layout aside); control characters and
    markup-like text as rich shows them."""
    checks = make_plan(options=planner.PlanOptions(blocked=("*.blob.core.windows.net",), blocked_reason="see [/x]"))
    odd = draw.Table("odd cells", ("a", "b"), (("bell\a and\rreturn", "[bold]not markup[/bold] :smile:"),))
    for tables in ((plan.table(catalog.load(), checks),),
                   render_table(rules(catalog.load(), make_context(), frozenset({"rstudio"}))), (odd,)):
        terminal = Console(file=io.StringIO(), record=True, width=100_000)
        terminal.print(draw.rich_tables(tables))
        assert _words(terminal.export_text()) == _words(draw.plain_tables(tables))


def test_text_leads_with_findings_and_names_each_failure() -> None:
    rendered = text(report_of({"tcp:contosomlsa.file.core.windows.net:445": Outcome(Reason.TCP_TIMEOUT)})).splitlines()
    assert rendered[1] == "1 problem found"
    assert rendered[3].startswith("1. CRITICAL [smb-blocked]")
    assert any("tcp.timeout" in line and ":445/tcp" in line and "-> smb-blocked" in line for line in rendered)
    assert rendered[-1].endswith("status critical, exit 2")


def test_a_traced_path_is_one_line_of_the_finding_in_text_markdown_and_json() -> None:
    traced = {"path": {"address": "10.0.1.7", "port": 445, "protocol": "tcp", "limit": 12, "hops": [
        {"ttl": 1, "answer": "time-exceeded", "address": "10.0.0.1", "rtt_ms": 0.3}]}}
    report = report_of({"tcp:contosomlsa.file.core.windows.net:445": Outcome(Reason.TCP_TIMEOUT, evidence=traced)})
    line = "node → 10.0.0.1 → * → 10.0.1.7:445 (dies past hop 1)"
    assert report.findings[0].path == line
    assert f"   path: {line}" in text(report).splitlines()
    assert f"**Path:** {line}" in render_markdown(report).splitlines()
    assert json.loads(render(report, Format.JSON))["findings"][0]["path"] == line
    untraced = report_of({"tcp:contosomlsa.file.core.windows.net:445": Outcome(Reason.TCP_TIMEOUT)})
    assert "path:" not in text(untraced) and json.loads(render(untraced, Format.JSON))["findings"][0]["path"] is None


def test_direct_failures_behind_a_working_proxy_are_not_shown_as_failures() -> None:
    proxied = planner.PlanOptions(proxy=Proxy.parse("http://proxy.contoso.net:3128"))
    report = report_of({"tcp:management.azure.com:443": Outcome(Reason.TCP_TIMEOUT)}, proxied)
    assert report.findings == ()
    rendered = text(report)
    assert "FAIL" not in rendered and "no problems found" in rendered
    assert "not needed: reached through the proxy" in text(report, verbose=True)


def test_markdown_lists_the_failing_flow_from_the_node_address() -> None:
    markdown = render_markdown(report_of({"udp:eastus.tundra.azureml.ms:5831": Outcome(Reason.UDP_CLOSED)}))
    assert "### 1. CRITICAL `udp-blocked`" in markdown
    flow = next(line for line in markdown.splitlines() if line.startswith("| 10.0.0.4 |"))
    assert "eastus.tundra.azureml.ms" in flow and "UDP 5831" in flow and "AzureMachineLearning" in flow


def test_markdown_behind_a_working_proxy_lists_no_unneeded_flow() -> None:
    """`check` said "no problems found" while markdown listed the unneeded direct paths under
    Failing flows and asked to open TCP 443 to AzureResourceManager, blocked there on purpose."""
    proxied = planner.PlanOptions(proxy=Proxy.parse("http://proxy.contoso.net:3128"))
    report = report_of({"tcp:management.azure.com:443": Outcome(Reason.TCP_TIMEOUT)}, proxied)
    assert report.exit_code == 0
    markdown = render_markdown(report)
    assert "## Failing flows" not in markdown and "AzureResourceManager" not in markdown
