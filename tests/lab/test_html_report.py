"""The html report of a real run, in a real browser: `check --format html --output FILE` in the lab's
appliance-drop scenario, rendered by headless chromium (tests/headless.py) and looked at as a reader
would: the path diagram's boxes laid out left to right and in sight, the appliance's hop the one
marked as where the flow died (its pixels in the screenshot have the "died" colour), and nothing
fetched but the page itself."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from agent.output.html import DIED_COLOUR
from lab import Lab, addresses, scenario
from tests import headless

pytestmark = [
    pytest.mark.lab,
    pytest.mark.browser,
    pytest.mark.skipif(not (os.geteuid() == 0 and shutil.which("ip") and shutil.which("nft")),
                       reason="the lab needs root, `ip` and `nft`"),
]

# Every box of the egress-blocked finding's diagram: what it says, where it is, what is drawn on top of its middle
STEPS = """(() => {
  const section = [...document.querySelectorAll('section.finding')].find(s => s.dataset.code === 'egress-blocked');
  const steps = [...section.querySelectorAll('g.step')];
  const died = steps.find(g => g.dataset.state === 'died');
  died.scrollIntoView({block: 'center', inline: 'center'});
  return steps.map(g => {
    const r = g.querySelector('rect').getBoundingClientRect();
    const top = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
    return {owner: g.dataset.owner, state: g.dataset.state, hop: g.dataset.hop, text: g.textContent,
            x: r.x, y: r.y, width: r.width, height: r.height, on_top: !!top && g.contains(top)};
  });
})()"""


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _share(image: headless.Image, box: dict[str, float], colour: tuple[int, int, int]) -> float:
    """The part of the box's pixels (inside its border) that are `colour`."""
    xs = range(int(box["x"]) + 4, int(box["x"] + box["width"]) - 4)
    ys = range(int(box["y"]) + 4, int(box["y"] + box["height"]) - 4)
    hits = sum(image.pixel(x, y) == colour for x in xs for y in ys)
    return hits / (len(xs) * len(ys))


def test_the_appliance_drop_is_drawn_where_the_flow_died(tmp_path: Path) -> None:
    headless.chromium()  # fail at once, naming ./dev, where the browser is missing
    chosen = scenario("appliance-drop")
    page_file = tmp_path / "report.html"
    with Lab(chosen) as lab:
        done = lab.run_in_node([sys.executable, "-m", "agent", "check", *chosen.check_args(), "--format", "html",
                                "--output", str(page_file), "--timeout", "3"], timeout=120)
    assert done.returncode == chosen.expected_exit, done.stderr
    assert f"report written to {page_file}" in done.stderr and not list(tmp_path.glob(".*.tmp"))  # atomic

    with headless.browser() as browser:
        page = browser.open(page_file)
        steps = page.evaluate(STEPS)
        image = page.screenshot()
    (tmp_path / "report.png").write_bytes(image.png)  # beside the page, for a look when this fails
    assert page.requests == [page_file.resolve().as_uri()]  # nothing fetched but the page

    assert [(s["owner"], s["state"]) for s in steps] == [
        ("node", "passed"), ("azure-fabric", "passed"), ("appliance", "died"), ("appliance", "silent"),
        ("service", "not-reached")]
    appliance = steps[2]
    assert appliance["hop"] == "1" and addresses.GATEWAY in appliance["text"], appliance
    assert "on-premises network team" in appliance["text"] and "died here" in appliance["text"]
    lefts = [s["x"] for s in steps]
    assert lefts == sorted(lefts) and len(set(lefts)) == len(lefts)  # left to right, one after the other
    for box in steps:  # every box in sight, and nothing drawn over it
        assert box["width"] > 40 and box["height"] > 40, box
        assert box["x"] >= 0 and box["x"] + box["width"] <= image.width, box
        assert box["y"] >= 0 and box["y"] + box["height"] <= image.height, box
        assert box["on_top"], box
    died = _rgb(DIED_COLOUR)
    assert _share(image, appliance, died) > 0.5  # the appliance's box is painted the colour of death
    assert all(_share(image, box, died) == 0 for box in steps if box is not appliance)
