"""One self-contained HTML page for a ticket: the verdict, the findings as the markdown report
words them, a diagram of each traced path (node, Azure's fabric, the hops, the destination: who owns
each step and where the flow died) and the failing flows. Pure over a Report.

Nothing is loaded from anywhere: inline CSS, inline SVG, no script, and a Content-Security-Policy
of `default-src 'none'` that allows only this page's own style element (by its hash). Every text is
escaped: findings carry what servers said (a hostile one must not write markup into the page)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from html import escape

from agent.model import Finding, Owner, PathStep, Report, StepState, primary_address
from agent.output.markdown import FLOW_COLUMNS, flow_cells
from agent.output.status import headline, tally

# Who takes the ticket for a step: the lines under each box's address
OWNERS = {
    Owner.NODE: ("this node",),
    Owner.FABRIC: ("the NSG owner",),
    Owner.APPLIANCE: ("appliance, firewall or", "on-premises network team"),
    Owner.SERVICE: ("the service",),
}
STATES = {
    StepState.PASSED: "passed",
    StepState.DIED: "✕ the flow died here",
    StepState.SILENT: "silent",
    StepState.REACHED: "reached",
    StepState.NOT_REACHED: "not reached",
}
DIED_COLOUR = "#c62828"  # the box of the step where the flow died (tests find it in a screenshot)

_CSS = f"""
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 72em; padding: 0 1em; color: #1a1a1a; }}
h1 {{ font-size: 1.5em; margin: 0 0 .3em; }}
h2 {{ font-size: 1.15em; margin: 0 0 .5em; }}
code, pre {{ font-family: ui-monospace, monospace; font-size: 12.5px; }}
pre {{ background: #f4f4f4; padding: .6em .8em; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }}
table {{ border-collapse: collapse; margin: .5em 0 1em; }}
th, td {{ border: 1px solid #ccc; padding: .25em .5em; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }}
dt {{ font-weight: 600; margin-top: .6em; }}
dd {{ margin: .1em 0 0 0; }}
.verdict {{ padding: .6em 1em; border-radius: 4px; color: #fff; font-weight: 600; margin: .5em 0 1em; }}
.status-ok {{ background: #2e7d32; }} .status-warning {{ background: #b26a00; }}
.status-critical {{ background: {DIED_COLOUR}; }} .status-unknown {{ background: #6a1b9a; }}
.finding {{ border-left: 6px solid #999; padding: .6em 1em; margin: 1em 0; background: #fafafa; }}
.severity-critical {{ border-color: {DIED_COLOUR}; }} .severity-warning {{ border-color: #b26a00; }}
.severity-info {{ border-color: #1565c0; }}
.label {{ font-weight: 700; }}
.diagram svg {{ max-width: 100%; height: auto; margin: .4em 0; }}
.step rect {{ stroke-width: 2; }}
.step text {{ font: 12px ui-monospace, monospace; fill: #1a1a1a; }}
.step .role {{ font-weight: 700; }}
.step-passed rect, .step-reached rect {{ fill: #e8f5e9; stroke: #2e7d32; }}
.step-died rect {{ fill: {DIED_COLOUR}; stroke: #7f0000; }}
.step-died text {{ fill: #fff; }}
.step-silent rect, .step-not-reached rect {{ fill: #fff; stroke: #9e9e9e; stroke-dasharray: 6 4; }}
.step-silent text, .step-not-reached text {{ fill: #757575; }}
.link {{ stroke: #555; stroke-width: 2; }}
.link-dead {{ stroke: #bbb; stroke-dasharray: 5 4; }}
.arrow {{ fill: #555; }}
.arrow-dead {{ fill: #bbb; }}
"""

_GAP, _CHAR, _PAD, _LINE = 36, 7.3, 10, 17  # pixels; _CHAR: one character of the 12px monospace


def render_html(report: Report) -> str:
    style_hash = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
    policy = f"default-src 'none'; style-src 'sha256-{style_hash}'"  # only the style element below
    hostname = str(report.node.get("hostname", "?"))
    body = [
        f"<h1>Azure ML network check: {_e(report.status.upper())} on {_e(hostname)}</h1>",
        f'<p class="verdict status-{_e(report.status)}" id="verdict">{_e(headline(report))}: status '
        f"{_e(report.status)}, exit code {report.exit_code}"
        + (f"; run incomplete: {_e(report.interrupted)}" if report.interrupted else "") + "</p>",
        *_head(report),
        *(_finding(index, finding) for index, finding in enumerate(report.findings, 1)),
        *_flows(report),
        _footer(report),
    ]
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(policy)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>aml-netcheck: {_e(report.status)} on {_e(hostname)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        *body,
        "</body>",
        "</html>",
        "",
    ])


def _head(report: Report) -> list[str]:
    resolvers = report.node.get("resolvers")
    shown = ", ".join(str(r) for r in resolvers) if isinstance(resolvers, list) else ""
    vantage = report.node.get("vantage")
    rows = [("When", f"{report.started_at} ({report.duration_ms / 1000:.1f}s, catalog {report.catalog_version})"),
            ("Node address", f"{primary_address(report.node) or 'unknown'}; resolvers: {shown or 'none'}")]
    if isinstance(vantage, dict):
        rows.append(("Seen from", f"{vantage.get('kind')} {vantage.get('name')}"))
    context = [(key, value.value, value.source) for key, value in report.context.items() if value.value is not None]
    return ["<dl>", *(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows), "</dl>",
            _table(("context", "value", "source"), context, id_="context")]


def _finding(index: int, finding: Finding) -> str:
    parts = [(f'<section class="finding severity-{finding.severity.label}" id="finding-{index}" '
              f'data-code="{_e(finding.code)}">'),
             (f'<h2>{index}. <span class="label">{_e(finding.severity.label.upper())}</span> '
              f"<code>{_e(finding.code)}</code>: {_e(finding.summary)}</h2>")]
    if finding.trace:
        parts += [f'<div class="diagram">{_diagram(index, finding.trace)}</div>']
    fields = [("Path", finding.path), ("Observed", finding.cause), ("Change needed", finding.remedy),
              ("Flow", finding.flow)]
    parts += ["<dl>", *(f"<dt>{label}</dt><dd>{_e(text)}</dd>" for label, text in fields if text)]
    if finding.confirm:
        parts += ["<dt>Check it in Azure (Network Watcher, the NIC's effective rules and routes)</dt>",
                  f"<dd><pre>{_e(chr(10).join(finding.confirm))}</pre></dd>"]
    if finding.docs:
        parts += ["<dt>Docs</dt>", "<dd>" + " ".join(_link(url) for url in finding.docs) + "</dd>"]
    return "\n".join([*parts, "</dl>", "</section>"])


def _diagram(index: int, steps: Sequence[PathStep]) -> str:
    """The path left to right, one box per step (its role, address, owner and what the flow did
    there), linked by arrows; past the step where the flow died the links are dashed. Wider than
    the page, it is scaled down to fit (every step stays in sight)."""
    boxes = [_lines(step) for step in steps]
    widths = [max(120, round(_PAD * 2 + _CHAR * max(len(text) for text, _ in lines))) for lines in boxes]
    box_height = 12 + _LINE * max(len(lines) for lines in boxes)
    width, height = sum(widths) + _GAP * (len(steps) - 1) + 4, box_height + 4
    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="traced path of finding {index}">'),
           *(f'<defs><marker id="{kind}-{index}" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto">'
             f'<path class="arrow{"-dead" if kind == "dead" else ""}" d="M0,0 L8,4 L0,8 z"/></marker></defs>'
             for kind in ("head", "dead"))]
    x, dead, middle = 2, False, 2 + box_height / 2
    for number, (step, lines, box) in enumerate(zip(steps, boxes, widths, strict=True)):
        if number:
            out.append(f'<line class="link{" link-dead" if dead else ""}" x1="{x - _GAP + 2}" y1="{middle}" '
                       f'x2="{x - 3}" y2="{middle}" marker-end="url(#{"dead" if dead else "head"}-{index})"/>')
        out.append(f'<g class="step step-{step.state.value}" id="finding-{index}-step-{number}" '
                   f'data-owner="{step.owner.value}" data-state="{step.state.value}" '
                   f'data-hop="{"" if step.hop is None else step.hop}">'
                   f"<title>{_e(' · '.join(text for text, _ in lines))}</title>"
                   f'<rect x="{x}" y="2" width="{box}" height="{box_height}" rx="6"/>'
                   + "".join(f'<text x="{x + _PAD}" y="{20 + row * _LINE}" class="{kind}">{_e(text)}</text>'
                             for row, (text, kind) in enumerate(lines))
                   + "</g>")
        dead = dead or step.state in (StepState.DIED, StepState.SILENT)
        x += box + _GAP
    return "".join([*out, "</svg>"])


def _lines(step: PathStep) -> list[tuple[str, str]]:
    """A box's lines with their classes: what the step is, its address, who owns it, what the flow did."""
    if step.owner is Owner.NODE:
        role, address = f"node {step.name}".strip(), step.address or "address unknown"
    elif step.owner is Owner.SERVICE:
        role, address = step.name or "destination", step.address or "?"
    elif step.owner is Owner.FABRIC:  # it answers no hop limit: silent where it drops, unseen where it passes
        role = "Azure fabric" + (f", hop {step.hop}" if step.hop else "")
        address = "* (no hop answered)" if step.state is StepState.DIED else "NSG, platform"
    else:
        role, address = f"hop {step.hop}", step.address or ("*" if step.state is StepState.SILENT else "?")
    return [(role, "role"), (address, "address"), *((owner, "owner") for owner in OWNERS[step.owner]),
            (STATES[step.state], "state")]


def _flows(report: Report) -> list[str]:
    failing = [r for r in report.results if report.failing(r)]
    if not failing:
        return []
    source = primary_address(report.node) or "this node"
    rows = [flow_cells(r, source, report) for r in failing]
    return ["<h2>Failing flows</h2>", _table(FLOW_COLUMNS, rows, id_="failing-flows",
                                             keys=[r.check.id for r in failing])]


def _footer(report: Report) -> str:
    return f"<p>{_e(tally(report))}. Generated by aml-netcheck.</p>"


def _table(header: Sequence[str], rows: Iterable[Sequence[object]], *, id_: str,
           keys: Sequence[str] | None = None) -> str:
    """A table; `keys` (check ids) go on the rows as data-check, for scripts reading the page."""
    body = []
    for number, row in enumerate(rows):
        key = f' data-check="{_e(keys[number])}"' if keys is not None else ""
        body.append(f"<tr{key}>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>")
    return "\n".join([f'<table id="{id_}">', "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>",
                      *body, "</table>"])


def _link(url: str) -> str:
    """A documentation link; anything but an https URL is shown as text, never as a link."""
    return f'<a href="{_e(url)}">{_e(url)}</a>' if url.startswith("https://") else f"<code>{_e(url)}</code>"


def _e(value: object) -> str:
    return escape(str(value), quote=True)

