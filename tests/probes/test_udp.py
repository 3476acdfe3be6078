"""udp probe with nmap semantics against loopback: an echo server, a closed port (the kernel's
ICMP port unreachable, read back from the error queue), and a bound socket that never answers."""

from __future__ import annotations

import pytest

from probes import udp
from probes._trace import ProbeError, Trace
from probes.reasons import Reason, Status

pytest_plugins = ["probe_peers"]


def spec(port: int, unit: float) -> udp.Spec:
    return udp.Spec("svc.test", port, payload=b"ping", attempts=3, interval=unit)


async def test_reply(udp_echo: int, trace: Trace, unit: float) -> None:
    await udp.run(spec(udp_echo, unit), ("127.0.0.1",), trace)
    assert trace.facts["addresses_ok"] == ["127.0.0.1"]
    assert trace.facts["replies"] == 1
    [attempt] = trace.facts["attempts"]  # type: ignore[misc]
    assert attempt["outcome"] == "reply" and attempt["datagrams"] == 1  # type: ignore[index]
    assert trace.current is None


@pytest.mark.parametrize(("peer", "reason", "icmp", "datagrams"), [
    ("closed_udp_port", Reason.UDP_CLOSED, {"origin": 2, "type": 3, "code": 3, "offender": "127.0.0.1"}, 1),
    ("silent_udp", Reason.UDP_NO_REPLY, None, 3),
])
async def test_failures(peer: str, reason: Reason, icmp: dict[str, object] | None, datagrams: int,
                        request: pytest.FixtureRequest, trace: Trace, unit: float) -> None:
    port = request.getfixturevalue(peer)
    with pytest.raises(ProbeError) as info:
        await udp.run(spec(port, unit), ("127.0.0.1",), trace)
    assert info.value.reason is reason
    assert trace.current == "exchange"
    [attempt] = trace.facts["attempts"]  # type: ignore[misc]
    assert attempt["outcome"] == reason.value  # type: ignore[index]
    assert attempt["icmp"] == icmp and attempt["datagrams"] == datagrams  # type: ignore[index]
    assert trace.facts["addresses_ok"] == [] and trace.facts["replies"] == 0


def test_silence_is_inconclusive() -> None:
    """Silence must not raise the exit code: UDP 5831 never answers an empty datagram."""
    assert Reason.UDP_NO_REPLY.status is Status.INCONCLUSIVE
    assert Reason.UDP_CLOSED.status is Status.FAIL


async def test_empty_datagram(udp_echo: int, trace: Trace, unit: float) -> None:
    """The default payload is empty, and an empty datagram is really sent (asyncio would drop it)."""
    await udp.run(udp.Spec("svc.test", udp_echo, interval=unit), ("127.0.0.1",), trace)
    assert trace.facts["addresses_ok"] == ["127.0.0.1"]


async def test_any_reply_passes(udp_echo: int, trace: Trace, unit: float) -> None:
    # The echo server is IPv4 only: ::1 on that port is closed, and the probe still passes.
    await udp.run(spec(udp_echo, unit), ("::1", "127.0.0.1"), trace)
    assert trace.facts["addresses_ok"] == ["127.0.0.1"]
    outcomes = {a["address"]: (a["outcome"], a["icmp"]) for a in trace.facts["attempts"]}  # type: ignore[union-attr,index]
    assert outcomes == {"127.0.0.1": ("reply", None),
                        "::1": ("udp.closed", {"origin": 3, "type": 1, "code": 4, "offender": "::1"})}
