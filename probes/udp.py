"""UDP reachability with nmap's semantics: a reply proves it open, an ICMP error proves it closed or
prohibited, silence proves nothing (open|filtered). Inside a run, datagrams are retransmitted at the
pace of the route's RTT estimate (probes/_timing.py) where it has one: silence is then reached
sooner, and stays inconclusive."""

from __future__ import annotations

import asyncio
import time

from probes._datagram import exchange
from probes._net import errno_name, ms, require, since_ms
from probes._timing import estimator
from probes._trace import Fact, ProbeError, Trace
from probes.reasons import UDP_ERRNO_CODES, Reason, classify, local_limit
from probes.specs import UdpSpec as Spec


async def run(spec: Spec, addresses: tuple[str, ...], trace: Trace) -> None:
    """Probe every address at once; any reply passes. Otherwise an ICMP error fails the check
    and silence is inconclusive (UDP_NO_REPLY), which for UDP 5831 is the normal case."""
    attempts: list[Fact] = []
    trace.note(addresses_ok=[], attempts=attempts, replies=0)
    targets = require(addresses)
    rtt = estimator()

    async def probe(address: str) -> tuple[OSError | None, int]:
        start = time.monotonic()
        result = await exchange(address, spec.port, spec.payload, spec.attempts, spec.interval, rtt)
        if result.replies:
            outcome = "reply"
            trace.passed(address)
        else:
            outcome = (_reason(result.error) if result.error else Reason.UDP_NO_REPLY).value
        paced: dict[str, Fact] = {}
        if rtt is not None and result.window < spec.interval:  # retransmitted at the route's pace
            paced = {"window_ms": ms(result.window), "rtt_estimate": rtt.fact(address)}
        attempts.append({"address": address, "outcome": outcome,
                         "errno": errno_name(result.error) if result.error else None,
                         "icmp": result.icmp, "datagrams": result.sent, "elapsed_ms": since_ms(start), **paced})
        return result.error, result.replies

    with trace.phase("exchange"):
        results = await asyncio.gather(*(probe(a) for a in targets))
        trace.note(replies=sum(replies for _, replies in results))
        if trace.facts["addresses_ok"]:
            return
        failed = [(address, error) for address, (error, _) in zip(targets, results, strict=True)  # one per target
                  if error is not None]
        if failed:  # the first address's error, unless the node's own limit kept another from being tried
            address, error = next(((a, e) for a, e in failed if local_limit(e)), failed[0])
            raise ProbeError(_reason(error), f"{address}:{spec.port}: {_describe(error)}") from error
        raise ProbeError(Reason.UDP_NO_REPLY, f"no reply after {spec.attempts} datagrams to port "
                         f"{spec.port}: open|filtered (silence is normal for UDP 5831)")


def _reason(error: OSError) -> Reason:
    return UDP_ERRNO_CODES.get(error.errno or 0) or classify(error)


def _describe(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "ICMP port unreachable: nothing listens there, or a firewall rejects"
    return f"{errno_name(error) or 'error'}: {error.strerror or error}"
