"""`merge --format markdown`, the fleet view for a ticket, as pandoc's GFM reader sees it: the
headings, the tables cell by cell and each remedy once, whatever the reports' strings hold (a
finding's summary carries what a server said, a hostname is whatever the report file says)."""

from __future__ import annotations

from typing import Any

from agent.output import fleet, markdown

from .ci_consumers import gfm_blocks
from .test_outputs import node_report


def fleet_view() -> dict[str, Any]:
    """Four nodes (one blocks SMB) and a container on node-1 that blocks it too."""
    reports = [(f"n{i}.json", node_report(case, f"node-{i}")) for i, case in
               enumerate(["healthy", "proxy only", "healthy", "smb dropped"], 1)]
    container = node_report("smb dropped", "node-1")
    container["node"]["vantage"] = {"kind": "container", "name": "job-1", "host": {}}
    return fleet.merge([*reports, ("job.json", container)])


def parts(document: str) -> dict[str, Any]:
    """The document's headings, and each section's block under its heading's text."""
    blocks = gfm_blocks(document)
    sections: dict[str, Any] = {"headings": [content[1] for kind, content in blocks if kind == "heading"]}
    current = ""
    for kind, content in blocks:
        if kind == "heading":
            current = content[1]
        else:
            sections.setdefault(current, []).append((kind, content))
    return sections


def test_fleet_markdown_is_the_fleet_view() -> None:
    view = fleet_view()
    document = fleet.render_markdown(view)
    sections = parts(document)
    assert sections["headings"] == ["Azure ML network check: CRITICAL on 5 nodes", "Findings",
                                    "Nodes that differ from the rest", "Vantages that differ from their host",
                                    "Changes needed"]
    [(kind, summary)] = sections["Azure ML network check: CRITICAL on 5 nodes"]
    assert kind == "list" and summary == ["Result: fleet status critical, exit code 2; 1 finding(s) on 2 of 5 nodes",
                                          "Most nodes share: no findings"]
    [(_, findings)] = sections["Findings"]
    smb = view["findings"][0]
    assert findings == [["severity", "finding", "nodes", "summary", "on"],
                        ["CRITICAL", "smb-blocked", "2/5", smb["summary"], "node-4, node-1 from container job-1"]]
    assert sections["Nodes that differ from the rest"] == [("table", [
        ["node", "has, unlike most", "lacks, unlike most"], ["node-4", "smb-blocked", "-"],
        ["node-1 from container job-1", "smb-blocked", "-"]])]
    assert sections["Vantages that differ from their host"] == [("table", [
        ["host", "seen from", "compared with", "has", "lacks"],
        ["node-1", "container job-1", "the host", "smb-blocked", "-"]])]
    # the remedy once for the fleet, not once per node that has the finding
    assert sections["Changes needed"] == [("list", [f"smb-blocked (2/5 nodes): {smb['remedy']}"])]
    assert document.count(smb["remedy"]) == 1


def test_a_healthy_fleet_says_so_and_nothing_else() -> None:
    document = fleet.render_markdown(fleet.merge([(f"{n}.json", node_report("healthy", n)) for n in ("a", "b")]))
    assert parts(document) == {"headings": ["Azure ML network check: OK on 2 nodes"],
                               "Azure ML network check: OK on 2 nodes": [("list", [
                                   "Result: fleet status ok, exit code 0; no findings",
                                   "Most nodes share: no findings"])]}


HOSTILE = "a | b\n# not a heading\r\n| x | y |\rc \\| d\u2028e\\"


def test_fleet_markdown_escapes_what_the_reports_say() -> None:
    """Pipes, a backslash before a pipe (GFM reads `\\|` as a backslash and then a border) and any
    line break in a summary, a remedy or a hostname stay inside their cell or line."""
    reports = [(f"n{i}.json", node_report(case, f"node-{i}")) for i, case in enumerate(["healthy", "smb dropped"])]
    hostile = reports[1][1]
    hostile["node"]["hostname"] = f"host {HOSTILE}"
    for finding in hostile["findings"]:
        finding["summary"], finding["remedy"] = f"summary {HOSTILE}", f"remedy {HOSTILE}"
    sections = parts(fleet.render_markdown(fleet.merge(reports)))
    flat = " ".join(HOSTILE.splitlines())
    assert sections["headings"] == ["Azure ML network check: CRITICAL on 2 nodes", "Findings",
                                    "Nodes that differ from the rest", "Changes needed"]
    [(_, findings)] = sections["Findings"]
    assert findings[1] == ["CRITICAL", "smb-blocked", "1/2", f"summary {flat}", f"host {flat}"]
    assert sections["Nodes that differ from the rest"][0][1][1] == [f"host {flat}", "smb-blocked", "-"]
    # a remedy is inline markdown, as in the node's report (a code span quotes a hosts-file line):
    # one item of the list, its `\|` markdown's escaped pipe
    as_markdown = flat.replace("\\|", "|")
    assert sections["Changes needed"] == [("list", [f"smb-blocked (1/2 nodes): remedy {as_markdown}"])]


def test_the_markdown_tables_cells_hold_any_text() -> None:
    """The one table writer the node report and the fleet view share: a cell's backslash before a
    pipe ended the cell, and a carriage return or another line break was kept."""
    rows = [(HOSTILE, "plain"), ("\\", "`code`")]
    assert gfm_blocks("\n".join(markdown.table(("text", "other"), rows))) == [
        ("table", [["text", "other"], [" ".join(HOSTILE.splitlines()), "plain"], ["\\", "code"]])]
