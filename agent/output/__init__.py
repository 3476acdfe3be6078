"""The report's formats, one module each, every one a pure function of the Report (they import
neither diagnosis nor the engine: tests/unit/test_architecture.py). `render` picks one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from probes._compat import StrEnum

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


# format -> (module of agent.output, its function of the Report)
_RENDERERS: dict[Format, tuple[str, str]] = {
    Format.JSON: ("jsonreport", "to_json"),
    Format.MARKDOWN: ("markdown", "render_markdown"),
    Format.PROMETHEUS: ("prometheus", "render_prometheus"),
    Format.HTML: ("html", "render_html"),
    Format.JUNIT: ("junit", "render_junit"),
    Format.TAP: ("tap", "render_tap"),
    Format.NDJSON: ("ndjson", "render_ndjson"),
}


def render(report: Report, fmt: Format, *, verbose: bool = False, console: Console | None = None) -> str:
    """The report as text in `fmt`. The text report goes to `console` when one is given (a
    terminal: rich's colour and width), else it is plain text, never wrapped (files and pipes want
    whole lines), and rich is not loaded."""
    if fmt is not Format.TEXT:  # each format's module loads only when asked for
        from importlib import import_module

        module, function = _RENDERERS[fmt]
        rendered: str = getattr(import_module(f"{__name__}.{module}"), function)(report)
        return rendered
    from agent.output import draw
    from agent.output.text import text_lines

    lines = text_lines(report, verbose=verbose)
    if console is None:
        return draw.plain_lines(lines)
    draw.to_console(lines, console)
    return ""
