"""Early verdicts in the lab (probes/_timing.py): a port the NSG drops on a fast path gets its
tcp.timeout early, marked as such, with the finding it always had; with delay and jitter on the lab
link no early verdict contradicts the ground truth, run after run. No timing assertions: the
evidence and the verdicts are what is checked."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from lab import Lab, addresses, delay, scenario
from lab.netns import NODE_IF
from tests.lab.test_scenarios import STORAGE_FILE, by_id, check_in

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not (os.geteuid() == 0 and shutil.which("ip") and shutil.which("nft")),
                       reason="the lab needs root, `ip` and `nft`"),
]

DROPPED = f"tcp:{STORAGE_FILE}:445"
RUNS = 3  # per scenario under jitter
DELAY_MS, JITTER_MS = 60.0, 50.0  # every reply 10-110 ms late, each its own draw: samples spread 10x


def test_a_dropped_port_on_a_fast_path_gets_an_early_verdict() -> None:
    with Lab(scenario("nsg-drop-445")) as lab:
        report, code = check_in(lab)
    assert (code, report["findings"][0]["code"]) == (2, "smb-blocked")
    dropped = by_id(report)[DROPPED]
    assert (dropped["status"], dropped["reason"], dropped["phase"]) == ("fail", "tcp.timeout", "connect")
    evidence = dropped["evidence"]
    assert evidence["early_verdict"] is True and "early verdict" in dropped["detail"]
    [attempt] = evidence["attempts"]
    assert (attempt["tries"], attempt["early_verdict"]) == (2, True)
    assert evidence["rtt_estimate"]["route"] == f"{NODE_IF} via {addresses.GATEWAY}, private"
    assert isinstance(evidence["waited_ms"], float)


def _ground_truth(report: dict[str, Any], dropped: set[str]) -> list[str]:
    """What contradicts the lab's ground truth: every TCP and UDP check passes but the dropped ones,
    which fail as timeouts; no passing check carries an early verdict."""
    wrong = []
    for check in report["checks"]:
        if check["layer"] not in ("tcp", "udp"):
            continue
        expected = ("fail", "tcp.timeout") if check["id"] in dropped else ("pass", None)
        if (check["status"], check["reason"]) != expected or \
                (check["status"] == "pass" and "early_verdict" in check["evidence"]):
            wrong.append(f"{check['id']}: {check['status']} {check['reason']} {check['detail']}")
    return wrong


@pytest.fixture(params=["healthy-private", "nsg-drop-445"])
def jittery(request: pytest.FixtureRequest) -> Iterator[Lab]:
    with Lab(scenario(request.param)) as lab, delay.link_delay(lab, DELAY_MS, JITTER_MS, seed=10):
        yield lab


def test_no_early_verdict_contradicts_the_ground_truth_under_jitter(jittery: Lab) -> None:
    dropped = {DROPPED} if jittery.scenario.name == "nsg-drop-445" else set()
    for _ in range(RUNS):
        report, code = check_in(jittery)
        assert _ground_truth(report, dropped) == []
        assert code == jittery.scenario.expected_exit
        assert [f["code"] for f in report["findings"] if f["severity"] != "info"] == \
            list(jittery.scenario.expected_findings)
