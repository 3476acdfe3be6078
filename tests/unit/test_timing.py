"""The run's RTT estimator and the early verdict it allows: the estimator is pure (samples in, a bound
out; a routing table's text in, a route key out) and tested with tables; the verdict through the
engine against real loopback peers (a full accept queue drops SYNs as a firewall would). No timing
assertions: what is asserted is what the evidence and the classification say."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Awaitable, Callable

import pytest

from agent import engine
from agent.clock import Deadline
from agent.model import Check
from probe_loopback import dns_reply
from probes._timing import CEILING, FLOOR, MIN_SAMPLES, SLOWEST_FACTOR, Estimator, Rtt, parse_routes, route_of
from probes.reasons import Reason, Status
from probes.specs import DnsSpec, TcpSpec, UdpSpec

pytest_plugins = ["probe_peers"]

FAST = 0.001  # a VNet round trip
# samples fed in order -> the bound (None: no early verdict on this route)
BOUNDS: list[tuple[list[float], float | None]] = [
    ([], None),
    ([FAST] * (MIN_SAMPLES - 1), None),  # too few
    ([FAST] * MIN_SAMPLES, FLOOR),  # a fast route: the floor
    ([FAST, FAST, 0.1], SLOWEST_FACTOR * 0.1),  # one destination farther than the rest: its multiple
    ([0.1] * 5, SLOWEST_FACTOR * 0.1),
    ([0.3] * 3, SLOWEST_FACTOR * 0.3),  # 0.9 s: still under the ceiling
    ([0.5] * 3, None),  # a slow route: the engine's timeout decides
    ([FAST] * 20 + [0.4], None),  # one slow sample is enough to make a route slow
]


@pytest.mark.parametrize(("samples", "bound"), BOUNDS)
def test_bound_from_samples(samples: list[float], bound: float | None) -> None:
    rtt = Rtt()
    for sample in samples:
        rtt = rtt.add(sample)
    assert rtt.samples == len(samples)
    assert rtt.bound == (pytest.approx(bound) if bound is not None else None)
    if rtt.bound is not None:
        assert FLOOR <= rtt.bound <= CEILING


def test_rfc6298_smoothing() -> None:
    first = Rtt().add(0.1)
    assert (first.srtt, first.rttvar, first.slowest) == (0.1, 0.05, 0.1)
    second = first.add(0.2)  # RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R|, then SRTT = 7/8 SRTT + 1/8 R
    assert second.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.1)
    assert second.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.2)
    assert second.slowest == 0.2


def _v4(destination: str, gateway: str, mask: str, flags: int, iface: str = "eth0", metric: int = 0) -> str:
    def hexed(address: str) -> str:
        return f"{int.from_bytes(ipaddress.IPv4Address(address).packed, sys.byteorder):08X}"

    return f"{iface}\t{hexed(destination)}\t{hexed(gateway)}\t{flags:04X}\t0\t0\t{metric}\t{hexed(mask)}\t0\t0\t0"


ROUTE_HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"
IPV4 = "\n".join([
    ROUTE_HEADER,
    _v4("0.0.0.0", "10.0.0.1", "0.0.0.0", 0x3, metric=100),  # default via the subnet's gateway
    _v4("0.0.0.0", "10.0.0.254", "0.0.0.0", 0x3, metric=50, iface="eth1"),  # a better default
    _v4("10.0.0.0", "0.0.0.0", "255.255.255.0", 0x1),  # the subnet, on-link
    _v4("10.8.0.0", "10.0.0.9", "255.255.0.0", 0x3, iface="vpn0"),  # a longer prefix
    _v4("10.9.0.0", "0.0.0.0", "255.255.0.0", 0x201),  # a reject route: unusable
])
IPV6 = ("00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 "
        "00000400 00000001 00000000 00000003     eth0\n"
        "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 "
        "00000100 00000002 00000000 00000001     eth0\n")
ROUTES: list[tuple[str, str]] = [
    ("10.0.0.9", "eth0 on-link, private"),
    ("10.0.1.7", "eth1 via 10.0.0.254, private"),  # lowest metric of the equal prefixes
    ("198.18.3.4", "eth1 via 10.0.0.254, public"),  # the same route, another scope
    ("10.8.1.1", "vpn0 via 10.0.0.9, private"),  # longest prefix
    ("10.9.1.1", "eth1 via 10.0.0.254, private"),  # the reject route is skipped
    ("127.0.0.1", "lo, loopback"),
    ("::1", "lo, loopback"),
    ("fd00::5", "eth0 on-link, private"),
    ("2001:db8::1", "eth0 via fe80::1, public"),
]


@pytest.mark.parametrize(("address", "route"), ROUTES)
def test_route_of(address: str, route: str) -> None:
    assert route_of(address, parse_routes(IPV4, IPV6)) == route


def test_no_route_table_is_one_route_per_scope() -> None:
    assert route_of("10.0.1.7", ()) == "no route, private"
    assert route_of("198.18.3.4", parse_routes("", "")) == "no route, public"


def test_samples_are_kept_per_route() -> None:
    estimator = Estimator(parse_routes(IPV4, IPV6))
    for _ in range(MIN_SAMPLES):
        estimator.add("10.0.1.7", FAST)
    assert estimator.bound("10.0.1.8") == FLOOR  # the same route and scope
    assert estimator.bound("198.18.3.4") is None  # public: none yet
    assert estimator.fact("10.0.1.8") == {"route": "eth1 via 10.0.0.254, private", "srtt_ms": 1.0, "rttvar_ms": 0.281,
                                          "samples": MIN_SAMPLES, "slowest_ms": 1.0, "bound_ms": FLOOR * 1000}


# -- the early verdict, through the engine, against loopback peers --------------------------------


def tcp_check(port: int, index: int = 0, host: str = "127.0.0.1") -> Check:
    return Check(id=f"tcp:peer-{index}:{port}", spec=TcpSpec(host=host, port=port), host=host, port=port,
                 protocol="tcp", requirements=("test",))


async def test_a_dropped_port_on_a_fast_route_gets_an_early_verdict(stalled_port: int, tcp_listener: int) -> None:
    checks = [*(tcp_check(tcp_listener, i) for i in range(MIN_SAMPLES + 1)), tcp_check(stalled_port)]
    *answered, silent = await engine.run(checks, timeout=60)
    assert {r.status for r in answered} == {Status.PASS}
    assert (silent.status, silent.reason, silent.phase) == (Status.FAIL, Reason.TCP_TIMEOUT, "connect")
    assert silent.evidence["early_verdict"] is True and "early verdict" in silent.detail
    [attempt] = silent.evidence["attempts"]  # type: ignore[misc]
    assert (attempt["outcome"], attempt["tries"], attempt["early_verdict"]) == ("tcp.timeout", 2, True)  # type: ignore[index]
    estimate = silent.evidence["rtt_estimate"]
    assert isinstance(estimate, dict) and estimate["route"] == "lo, loopback"
    assert isinstance(estimate["samples"], int) and estimate["samples"] >= MIN_SAMPLES
    assert isinstance(silent.evidence["waited_ms"], float)
    assert not any("early_verdict" in r.evidence for r in answered)


async def test_some_addresses_passing_is_the_same_warning_early(
        half_stalled: int, tcp_listener: int, dns_server: Callable[..., Awaitable[str]]) -> None:
    """The early verdict is the timeout's: an address that passed makes it a warning, as at the timeout."""
    server = await dns_server(lambda query: dns_reply(query, "svc.test. 60 IN A 127.0.0.2",
                                                      "svc.test. 60 IN A 127.0.0.1"))
    resolve = Check(id="dns:svc.test", spec=DnsSpec(host="svc.test", resolvers=(server,), system=False),
                    host="svc.test", port=None, protocol="udp", requirements=("test",))
    connect = Check(id="tcp:svc.test", spec=TcpSpec(host="svc.test", port=half_stalled), host="svc.test",
                    port=half_stalled, protocol="tcp", requirements=("test",), needs=resolve.id)
    *_, result = await engine.run([*(tcp_check(tcp_listener, i) for i in range(MIN_SAMPLES)), resolve, connect],
                                  timeout=60)
    assert (result.status, result.reason, result.phase) == (Status.WARN, Reason.TCP_TIMEOUT, "connect")
    assert result.addresses == ("127.0.0.2",) and "1 address(es) passed" in result.detail
    assert result.evidence["early_verdict"] is True


async def test_without_samples_the_timeout_decides(stalled_port: int) -> None:
    (result,) = await engine.run([tcp_check(stalled_port)], timeout=3 * FLOOR)  # past where a verdict would be
    assert (result.status, result.reason) == (Status.FAIL, Reason.TCP_TIMEOUT)
    assert "early_verdict" not in result.evidence
    assert result.detail == f"no answer within {3 * FLOOR:g}s during connect"


async def test_a_deadline_before_the_early_verdict_is_no_verdict(stalled_port: int, tcp_listener: int) -> None:
    """The verdict needs two bounds of at least FLOOR each; the run ends after one."""
    checks = [*(tcp_check(tcp_listener, i) for i in range(MIN_SAMPLES)), tcp_check(stalled_port)]
    *_, silent = await engine.run(checks, timeout=60, deadline=Deadline.after(FLOOR))
    assert (silent.status, silent.reason) == (Status.INCONCLUSIVE, Reason.PROBE_CANCELLED)
    assert "early_verdict" not in silent.evidence


async def test_a_lone_attempt_outside_a_run_has_no_estimator(stalled_port: int, tcp_listener: int) -> None:
    for _ in range(MIN_SAMPLES):
        assert (await engine.attempt(tcp_check(tcp_listener), ("127.0.0.1",), timeout=1)).status is Status.PASS
    result = await engine.attempt(tcp_check(stalled_port), ("127.0.0.1",), timeout=3 * FLOOR)
    assert result.reason is Reason.TCP_TIMEOUT and "early_verdict" not in result.evidence


def udp_check(port: int) -> Check:
    return Check(id=f"udp:127.0.0.1:{port}", spec=UdpSpec(host="127.0.0.1", port=port), host="127.0.0.1", port=port,
                 protocol="udp", requirements=("test",))


async def test_udp_silence_is_paced_and_stays_inconclusive(silent_udp: int, closed_udp_port: int,
                                                           tcp_listener: int) -> None:
    """Retransmitted at the route's pace once it has samples, never a failure of its own."""
    checks = [*(tcp_check(tcp_listener, i) for i in range(MIN_SAMPLES)), udp_check(silent_udp),
              udp_check(closed_udp_port)]
    *_, silent, closed = await engine.run(checks, timeout=60)
    assert (silent.status, silent.reason) == (Status.INCONCLUSIVE, Reason.UDP_NO_REPLY)
    [attempt] = silent.evidence["attempts"]  # type: ignore[misc]
    assert attempt["datagrams"] == UdpSpec("x", 1).attempts  # type: ignore[index]
    assert attempt["window_ms"] == FLOOR * 1000  # type: ignore[index]
    assert (closed.status, closed.reason) == (Status.FAIL, Reason.UDP_CLOSED)  # ICMP is an answer, as before
