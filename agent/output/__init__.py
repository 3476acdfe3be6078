"""The report's formats, one module each, every one a pure function of the Report (they import
neither diagnosis nor the engine: tests/unit/test_architecture.py). `render` picks one."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from agent.model import Report


class Format(StrEnum):
    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"
    PROMETHEUS = "prometheus"
    HTML = "html"
    JUNIT = "junit"
    TAP = "tap"
    NDJSON = "ndjson"


def render(report: Report, fmt: Format, *, verbose: bool = False, console: Console | None = None) -> str:
    """The report as text in `fmt`. The text report goes to `console` when one is given (a
    terminal: rich's colour and width), else it is plain text, never wrapped (files and pipes want
    whole lines), and rich is not loaded."""
    if fmt is Format.JSON:
        from agent.output.jsonreport import to_json
        return to_json(report)
    if fmt is Format.MARKDOWN:
        from agent.output.markdown import render_markdown
        return render_markdown(report)
    if fmt is Format.PROMETHEUS:
        from agent.output.prometheus import render_prometheus
        return render_prometheus(report)
    if fmt is Format.HTML:
        from agent.output.html import render_html
        return render_html(report)
    if fmt is Format.JUNIT:
        from agent.output.junit import render_junit
        return render_junit(report)
    if fmt is Format.TAP:
        from agent.output.tap import render_tap
        return render_tap(report)
    if fmt is Format.NDJSON:
        from agent.output.ndjson import render_ndjson
        return render_ndjson(report)
    from agent.output import draw
    from agent.output.text import text_lines

    lines = text_lines(report, verbose=verbose)
    if console is None:
        return draw.plain_lines(lines)
    draw.to_console(lines, console)
    return ""
