"""Latency thresholds as tables (agent/latency.py): which figure each layer is judged on, what a slow
check becomes, and that nothing but a pass is ever touched. Diagnosis of slow checks is in
test_diagnose.py; the probes' kernel-timed figures against real loopback peers in tests/probes."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from agent import latency
from agent.inputs.values import ValueProblem
from probes._trace import Fact
from probes.reasons import Reason, Status

from .helpers import Outcome, make_plan, simulate

TCP, TLS, HTTP, DNS = ("tcp:mcr.microsoft.com:443", "tls:mcr.microsoft.com:443", "http:mcr.microsoft.com:443",
                       "dns:mcr.microsoft.com")
UDP = "udp:eastus.tundra.azureml.ms:5831"


def connected(*rtts: float | None, elapsed: float = 5.0) -> dict[str, Fact]:
    return {"attempts": [{"address": f"198.18.0.{i}", "outcome": "connected", "elapsed_ms": elapsed, "rtt_ms": rtt}
                         for i, rtt in enumerate(rtts, 1)]}


def servers(*answers: tuple[str, float | None]) -> dict[str, Fact]:
    return {"servers": [{"server": f"10.0.2.{i}", "rcode": rcode, "rtt_ms": rtt}
                        for i, (rcode, rtt) in enumerate(answers, 1)]}


@pytest.mark.parametrize(("check", "outcome", "measure", "ms"), [
    # tcp: the kernel's handshake round trip of the fastest address that connected
    (TCP, Outcome(evidence=connected(420.0, 350.5)), "connect-rtt", 350.5),
    (TCP, Outcome(evidence={"attempts": [{"outcome": "tcp.timeout", "elapsed_ms": 9000.0},
                                         {"outcome": "connected", "elapsed_ms": 600.0, "rtt_ms": 310.0}]}),
     "connect-rtt", 310.0),
    # no tcp_info RTT (a retransmitted SYN without timestamps): the connect as the loop timed it
    (TCP, Outcome(evidence=connected(None, elapsed=1020.0)), "connect-rtt", 1020.0),
    (TLS, Outcome(evidence={"server_hello_ms": 1500.0}), "server-hello", 1500.0),
    (HTTP, Outcome(evidence={"first_byte_ms": 2500.0}), "first-byte", 2500.0),
    # dns: the fastest resolver that answered with addresses; a SERVFAIL's speed says nothing
    (DNS, Outcome(evidence=servers(("SERVFAIL", 2.0), ("NOERROR", 1300.0), ("NOERROR", 1800.0))), "dns-answer",
     1300.0),
])
def test_a_pass_slower_than_its_layer_s_threshold_warns(check: str, outcome: Outcome, measure: str, ms: float) -> None:
    result = next(r for r in simulate(make_plan(), {check: outcome}) if r.check.id == check)
    judged = latency.judge(result, latency.DEFAULT)
    threshold = latency.DEFAULT.of(result.check.layer)
    assert (judged.status, judged.reason) == (Status.WARN, Reason.LATENCY_SLOW)
    assert judged.evidence["latency"] == {"measure": measure, "ms": ms, "threshold_ms": threshold}
    assert f"{ms:g} ms" in judged.detail and f"{threshold:g} ms threshold" in judged.detail
    assert judged.addresses == result.addresses  # the layer above still runs on them
    seen = latency.as_passed(judged)  # what every other rule sees: the pass, with its evidence
    assert (seen.status, seen.reason, seen.addresses) == (Status.PASS, None, result.addresses)


@pytest.mark.parametrize(("check", "outcome"), [
    (TCP, Outcome(evidence=connected(300.0))),  # at the threshold: not over it
    (TCP, Outcome(evidence=connected(1.2, 900.0))),  # one fast address: the path works fast
    (TCP, Outcome(evidence={"attempts": [{"outcome": "tcp.timeout", "elapsed_ms": 5000.0}]})),
    (TLS, Outcome(evidence={"server_hello_ms": 12.0})),
    (HTTP, Outcome(evidence={})),  # nothing measured: nothing judged
    (DNS, Outcome(evidence=servers(("NXDOMAIN", 4000.0)))),
    # never a failure, a warning or a skip: a slow check can only ever be a pass made a warning
    (TCP, Outcome(Reason.TCP_TIMEOUT, evidence=connected(2000.0))),
    (TLS, Outcome(Reason.TLS_UNEXPECTED_ISSUER, evidence={"server_hello_ms": 5000.0})),
    (HTTP, Outcome(Reason.HTTP_FIREWALL_DENIED, evidence={"first_byte_ms": 5000.0})),
    # layers without a threshold
    (UDP, Outcome(evidence={"attempts": [{"outcome": "reply", "elapsed_ms": 4000.0}]})),
])
def test_everything_else_is_left_as_it_is(check: str, outcome: Outcome) -> None:
    result = next(r for r in simulate(make_plan(), {check: outcome}) if r.check.id == check)
    assert latency.judge(result, latency.DEFAULT) is result


def test_thresholds_are_per_layer_and_the_option_overrides_the_config() -> None:
    result = next(r for r in simulate(make_plan(), {TCP: Outcome(evidence=connected(120.0))}) if r.check.id == TCP)
    config = {"tcp": 100.0, "http": 5000.0}
    option = latency.parse("tcp=150")
    chosen = latency.thresholds({**config, **option})
    assert (chosen.tcp, chosen.http, chosen.tls, chosen.dns) == (150.0, 5000.0, 1000.0, 1000.0)
    assert latency.judge(result, chosen) is result
    assert latency.judge(result, latency.thresholds(config)).status is Status.WARN


@pytest.mark.parametrize(("text", "expected"), [
    ("tcp=250", {"tcp": 250.0}),
    (" tls = 800 , http=2500.5", {"tls": 800.0, "http": 2500.5}),
    ("dns=1,tcp=300000", {"dns": 1.0, "tcp": 300000.0}),
])
def test_the_option_s_form(text: str, expected: Mapping[str, float]) -> None:
    assert latency.parse(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("tcp=-1", "tcp: expected a finite number of milliseconds from 1 to 300000, not -1.0"),
    ("tcp=0", "tcp: expected a finite number of milliseconds from 1 to 300000, not 0.0"),
    ("tcp=inf", "tcp: expected a finite number of milliseconds from 1 to 300000, not inf"),
    ("tcp=nan", "tcp: expected a finite number of milliseconds from 1 to 300000, not nan"),
    ("smb=100", "unknown layer 'smb' (known: dns, tcp, tls, http)"),
    ("tcp=fast", "expected LAYER=MILLISECONDS[,...] (layers: dns, tcp, tls, http), not 'tcp=fast'"),
    ("tcp", "expected LAYER=MILLISECONDS[,...]"),
    ("", "expected LAYER=MILLISECONDS[,...]"),
    ("tcp=1,tcp=2", "tcp: given twice"),
])
def test_bad_option_values_are_one_line(text: str, message: str) -> None:
    with pytest.raises(ValueProblem) as info:
        latency.parse(text)
    assert message in str(info.value) and "\n" not in str(info.value)
