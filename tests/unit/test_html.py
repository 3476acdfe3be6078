"""The html report over synthetic reports: one page that loads nothing, every text escaped (a
hostile server's words stay words), what the markdown report says, and a diagram of each traced
path marking where the flow died and who owns each step. The last test renders a hostile page in
a real browser (tests/headless.py: Debian's chromium)."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from agent.model import Report
from agent.output import Format, render
from agent.output.html import render_html
from probes.reasons import Reason
from tests import headless

from . import synthetic
from .helpers import Outcome
from .synthetic import SCENARIOS, Scenario, build

# The elements a page may hold: none loads anything or runs anything
ALLOWED = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "dl", "dt", "dd", "section", "span",
           "code", "pre", "div", "table", "tr", "th", "td", "a", "svg", "defs", "marker", "path", "line", "g", "rect",
           "text"}
HOSTILE = '<script>alert(1)</script><img src="http://198.51.100.7/x.png" onerror="alert(2)">"\'&'


class Page(HTMLParser):
    """The elements (tag, attributes) and the text of a page, as a browser's parser reads them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.chunks: list[str] = []
        self.style = ""
        self._in_style = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style += data
        else:
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.chunks).split())

    def having(self, attribute: str) -> list[dict[str, str | None]]:
        return [attrs for _, attrs in self.elements if attribute in attrs]


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("case", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_every_report_is_one_page_that_loads_nothing(case: Scenario) -> None:
    html = render(build(case), Format.HTML)
    page = Page(html)
    assert {tag for tag, _ in page.elements} <= ALLOWED
    assert not [a for _, attrs in page.elements for a in attrs if a.startswith("on") or a in ("src", "srcset")]
    assert all(tag == "a" and str(attrs["href"]).startswith("https://") for tag, attrs in page.elements
               if "href" in attrs)
    assert re.findall(r"url\(([^)]*)\)", html) == [f"#{a['marker-end'][5:-1]}" for a in page.having("marker-end")]
    policy = next(attrs["content"] for tag, attrs in page.elements if attrs.get("http-equiv") ==
                  "Content-Security-Policy")
    digest = base64.b64encode(hashlib.sha256(page.style.encode()).digest()).decode()
    assert policy == f"default-src 'none'; style-src 'sha256-{digest}'"  # the page's own style, nothing else


@pytest.mark.parametrize("case", [s for s in SCENARIOS if s.codes], ids=[s.name for s in SCENARIOS if s.codes])
def test_the_page_says_what_the_markdown_report_says(case: Scenario) -> None:
    report = build(case)
    page = Page(render_html(report))
    for finding in report.findings:
        for text in (finding.code, finding.severity.label.upper(), finding.summary, finding.cause, finding.remedy,
                     finding.path, finding.flow, *finding.confirm, *finding.docs):
            assert words(text) in page.text, text
    assert [a["data-check"] for a in page.having("data-check")] == [r.check.id for r in report.results
                                                                    if report.failing(r)]
    assert f"status {report.status}, exit code {report.exit_code}" in page.text


def hostile_report() -> Report:
    """What a server controls, hostile: the words of its error page (a check's detail, the
    finding's cause), and a hostname on the node."""
    case = Scenario("hostile", {"http:contosomlsa.blob.core.windows.net:443": Outcome(
        Reason.HTTP_RESOURCE_DENIED, detail=f"HTTP 403 AuthorizationFailure: {HOSTILE}")},
        frozenset({"resource-firewall-denied"}), node={**synthetic.NODE, "hostname": HOSTILE})
    return build(case)


def test_what_a_hostile_server_says_stays_text() -> None:
    report = hostile_report()
    assert HOSTILE in report.findings[0].cause
    page = Page(render_html(report))
    assert {tag for tag, _ in page.elements} <= ALLOWED
    assert not page.having("onerror") and not page.having("src")
    assert page.text.count(words(HOSTILE)) >= 4  # title, heading, the finding's cause, the failing flow's row


TRACED = {s.name: s for s in SCENARIOS if "(traced)" in s.name}


@pytest.mark.parametrize(("name", "steps"), [
    ("dropped past an appliance (traced)", [
        ("node", "passed", ""), ("azure-fabric", "passed", ""), ("appliance", "passed", "1"),
        ("appliance", "died", "2"), ("appliance", "silent", "3"), ("service", "not-reached", "")]),
    ("dropped at the first hop (traced)", [
        ("node", "passed", ""), ("azure-fabric", "died", "1"), ("service", "not-reached", "")]),
    ("rejected on the way (traced)", [
        ("node", "passed", ""), ("azure-fabric", "passed", ""), ("appliance", "passed", "1"),
        ("appliance", "died", "2"), ("service", "not-reached", "")]),
])
def test_a_traced_path_is_drawn_step_by_step_with_its_owners(name: str, steps: list[tuple[str, str, str]]) -> None:
    report = build(TRACED[name])
    page = Page(render_html(report))
    drawn = [(a["data-owner"], a["data-state"], a["data-hop"]) for a in page.having("data-state")]
    assert drawn == steps
    died = next(index for index, (_, state, _) in enumerate(steps) if state == "died")
    links = [a["class"] for tag, a in page.elements if tag == "line"]
    assert links == ["link"] * died + ["link link-dead"] * (len(steps) - 1 - died)  # dashed past the death
    owners = {"azure-fabric": "the NSG owner", "appliance": "on-premises network team", "service": "the service"}
    assert all(owners[owner] in page.text for owner, _, _ in steps if owner in owners)


def test_an_untraced_finding_has_no_diagram() -> None:
    page = Page(render_html(build(next(s for s in SCENARIOS if s.name == "two egress-blocked findings"))))
    assert not [tag for tag, _ in page.elements if tag == "svg"] and page.text.count("egress-blocked") == 2


@pytest.mark.browser
def test_a_hostile_page_in_a_real_browser_runs_nothing_and_fetches_nothing(tmp_path: Path) -> None:
    """Chromium parses the page with a hostile server's words in it: no element of theirs, no
    request but the page's own, and the words shown as text."""
    report = hostile_report()
    page_file = tmp_path / "report.html"
    page_file.write_text(render_html(report), encoding="utf-8")
    with headless.browser() as browser:
        page = browser.open(page_file)
        assert page.requests == [page_file.resolve().as_uri()]
        assert page.evaluate("document.querySelectorAll('script, img, iframe, object, embed, link').length") == 0
        assert HOSTILE in page.evaluate("document.body.innerText")
        assert page.evaluate("document.styleSheets.length") == 1  # the CSP let the page's own style through
        assert page.evaluate("getComputedStyle(document.getElementById('verdict')).backgroundColor") != \
            "rgba(0, 0, 0, 0)"
