"""Probes: one module per layer, each with `async def run(spec, addresses, trace) -> None` over
its frozen Spec from probes.specs (where the planner builds them). Knows nothing of agent/.

The contract the engine relies on:

* `addresses` are IP literals that passed the layer below (the dns probe gets ()); a probe never
  resolves the target name again to connect. Through an explicit proxy (http, websocket) the
  proxy resolves the target, so `addresses` may be empty there.
* Success: return normally. Every probe keeps `trace.facts["addresses_ok"]`, appended as each
  address passes, so a deadline that cuts a probe short still shows what worked.
* Unmet expectation: `ProbeError(reason, detail)`. Other exceptions (OSError, ssl errors,
  gaierror, some library errors with the OSError in their cause chain) propagate for
  `reasons.classify`.
* No timers: the engine's `asyncio.timeout()` is the deadline. The one exception is the run's RTT
  estimate (`_timing`): tcp retries a silent connect and raises `EarlyTimeout`, udp paces its
  retransmits, from waits derived from the run's own samples, always inside the engine's window.
  A phase left by an exception or by the deadline's cancellation stays open, so `trace.current`
  names the phase that failed, and the timeout's reason follows it (`reasons.timeout_reason`:
  smb's "negotiate" is not its "connect").
* Phases: dns "system", "direct"; tcp "connect"; udp "exchange"; tls "connect", "handshake"
  (plus "capture" after a verification failure); http "connect", "request"; websocket "connect",
  "upgrade"; smb "connect", "negotiate"; local "inspect". A layer that runs on the connection the
  layer below handed over (probes._stream) has no "connect" of its own.

`local` checks this node without sending a packet (listeners, netfilter rules, OS, Docker's
bridge) and ignores `addresses`.

`node` (facts about this machine, no traffic) is not a probe kind and is not registered."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from probes._trace import Fact, Phase, ProbeError, Trace
from probes.reasons import Reason, Status, classify
from probes.specs import Layer, Spec

Run = Callable[[Any, tuple[str, ...], Trace], Awaitable[None]]


def __getattr__(name: str) -> Any:
    """PROBES is built on first use: the probe modules pull in h11, websockets and dnspython,
    which `plan`, `rules` and `--version` never need (PEP 562)."""
    if name != "PROBES":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from probes import dns, http, local, smb, specs, tcp, tls, udp, websocket

    registry: dict[Layer, tuple[type[Spec], Run]] = {
        Layer.DNS: (specs.DnsSpec, dns.run),
        Layer.TCP: (specs.TcpSpec, tcp.run),
        Layer.UDP: (specs.UdpSpec, udp.run),
        Layer.TLS: (specs.TlsSpec, tls.run),
        Layer.HTTP: (specs.HttpSpec, http.run),
        Layer.WEBSOCKET: (specs.WebSocketSpec, websocket.run),
        Layer.SMB: (specs.SmbSpec, smb.run),
        Layer.LOCAL: (specs.LocalSpec, local.run),
    }
    globals()["PROBES"] = registry
    return registry


__all__ = ["PROBES", "Fact", "Layer", "Phase", "ProbeError", "Reason", "Run", "Spec", "Status", "Trace", "classify"]
