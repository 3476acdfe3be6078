"""tcp probe against real loopback peers: a listener, a closed port, a full accept queue."""

from __future__ import annotations

import asyncio

import pytest

from probe_loopback import Serve, proxy
from probes import tcp
from probes._trace import ProbeError, Trace
from probes.reasons import Reason, classify
from probes.specs import Proxy

pytest_plugins = ["probe_peers"]


async def test_connected(tcp_listener: int, trace: Trace) -> None:
    await tcp.run(tcp.Spec("svc.test", tcp_listener), ("127.0.0.1",), trace)
    assert trace.facts["addresses_ok"] == ["127.0.0.1"]
    [attempt] = trace.facts["attempts"]  # type: ignore[misc]
    assert attempt["outcome"] == "connected" and attempt["errno"] is None  # type: ignore[index]
    # the handshake's round trip as the kernel measured it (tcp_info): what the tcp latency threshold reads
    assert isinstance(attempt["rtt_ms"], float) and attempt["rtt_ms"] >= 0  # type: ignore[index]
    assert "partial" not in trace.facts
    assert [p.name for p in trace.phases] == ["connect"] and trace.current is None


async def test_refused(refused_port: int, trace: Trace) -> None:
    with pytest.raises(ConnectionRefusedError) as info:
        await tcp.run(tcp.Spec("svc.test", refused_port), ("127.0.0.1",), trace)
    assert classify(info.value) is Reason.TCP_REFUSED
    assert trace.current == "connect"
    assert trace.facts["attempts"] == [{"address": "127.0.0.1", "outcome": "tcp.refused",
                                        "errno": "ECONNREFUSED", "elapsed_ms": pytest.approx(0, abs=1e3)}]
    assert trace.facts["addresses_ok"] == []


async def test_partial(tcp_listener: int, trace: Trace) -> None:
    # The listener is IPv4 only, so ::1 on the same port is refused.
    await tcp.run(tcp.Spec("svc.test", tcp_listener), ("::1", "127.0.0.1"), trace)
    assert trace.facts["addresses_ok"] == ["127.0.0.1"]
    assert trace.facts["partial"] is True
    outcomes = {a["address"]: a["outcome"] for a in trace.facts["attempts"]}  # type: ignore[union-attr,index]
    assert outcomes == {"127.0.0.1": "connected", "::1": "tcp.refused"}


async def test_timeout_is_the_engines(stalled_port: int, trace: Trace, unit: float) -> None:
    """The probe has no timer: the engine's scope cuts it off, and the open phase names where."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(6 * unit):
            await tcp.run(tcp.Spec("svc.test", stalled_port), ("127.0.0.1",), trace)
    assert trace.current == "connect"
    assert trace.phases[-1].end is None
    assert trace.facts["attempts"] == [] and trace.facts["addresses_ok"] == []


async def test_no_address_is_a_skip(trace: Trace) -> None:
    with pytest.raises(ProbeError) as info:
        await tcp.run(tcp.Spec("svc.test", 443), (), trace)
    assert info.value.reason is Reason.SKIP_DEPENDENCY


async def test_a_tunnel_through_the_proxy(tcp_listener: int, serve: Serve, trace: Trace) -> None:
    """8787/18881 as the node's clients reach them behind a proxy: CONNECT, the proxy resolves."""
    proxy_port = await serve(proxy(200))
    via = Proxy.parse(f"http://127.0.0.1:{proxy_port}")
    await tcp.run(tcp.Spec("ci.test", tcp_listener, proxy=via), (), trace)
    assert trace.facts["via_proxy"] is True and [p.name for p in trace.phases] == ["connect"]


async def test_a_proxy_refusing_the_port_names_it(serve: Serve, trace: Trace) -> None:
    """A stock squid answers CONNECT outside its SSL_ports with 403."""
    proxy_port = await serve(proxy(403))
    with pytest.raises(ProbeError) as info:
        await tcp.run(tcp.Spec("ci.test", 8787, proxy=Proxy.parse(f"http://127.0.0.1:{proxy_port}")), (), trace)
    assert info.value.reason is Reason.PROXY_DENIED and "ci.test:8787" in info.value.detail
    assert trace.facts["proxy_status"] == 403 and trace.current == "connect"
