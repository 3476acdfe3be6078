"""The engine against real loopback peers: deadlines, phase attribution, dependencies,
cancellation, the concurrency bound on descriptors (and a whole run at RLIMIT_NOFILE 64), and no
leaked tasks or sockets."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import dns.message
import pytest
import trustme

from agent import engine
from agent.clock import Deadline
from agent.model import Check
from probe_loopback import UNIT, Serve, descriptors_exhausted, dns_reply, server_context, silent
from probes import PROBES, _compat
from probes._hops import TRACE_DESCRIPTORS, TRACES_AT_ONCE
from probes._trace import Trace
from probes.reasons import Reason, Status
from probes.specs import DnsSpec, Layer, SmbSpec, TcpSpec, TlsSpec

pytest_plugins = ["probe_peers"]


def tcp_check(port: int, *, name: str = "127.0.0.1", needs: str | None = None) -> Check:
    """A tcp check of `name`; an IP literal is connected to directly, a name needs a dns check."""
    return Check(id=f"tcp:{name}:{port}", spec=TcpSpec(host=name, port=port),
                 host=name, port=port, protocol="tcp", requirements=("test",), needs=needs)


def stalled_checks(port: int, count: int) -> list[Check]:
    """`count` distinct checks of the same stalled loopback port."""
    return [Check(id=f"tcp:stalled-{i}:{port}", spec=TcpSpec(host="127.0.0.1", port=port),
                  host="127.0.0.1", port=port, protocol="tcp", requirements=("test",)) for i in range(count)]


def dns_check(name: str, server: str) -> Check:
    return Check(id=f"dns:{name}", spec=DnsSpec(host=name, resolvers=(server,), system=False,
                                                 query_timeout=2 * UNIT),
                 host=name, port=None, protocol="udp", requirements=("test",))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_timeout_names_the_open_phase(stalled_port: int) -> None:
    result = await engine.attempt(tcp_check(stalled_port), ("127.0.0.1",), timeout=0.2 * UNIT)
    assert (result.status, result.reason, result.phase) == (Status.FAIL, Reason.TCP_TIMEOUT, "connect")
    assert "no answer within" in result.detail and result.addresses == ()


def smb_check(port: int) -> Check:
    return Check(id=f"smb:127.0.0.1:{port}", spec=SmbSpec(host="127.0.0.1", port=port), host="127.0.0.1",
                 port=port, protocol="tcp", requirements=("test",))


async def test_a_silent_smb_peer_times_out_as_its_own_reason(serve: Serve) -> None:
    """Accepted, then silent: the timeout struck in negotiate, which is SMB's verdict, not TCP's."""
    result = await engine.attempt(smb_check(await serve(silent)), ("127.0.0.1",), timeout=2 * UNIT)
    assert (result.status, result.reason, result.phase) == (Status.FAIL, Reason.SMB_NO_NEGOTIATE_REPLY, "negotiate")
    assert result.detail == f"no answer within {2 * UNIT:g}s during negotiate"
    [seen] = result.evidence["attempts"]  # type: ignore[misc]
    assert (seen["outcome"], seen["bytes_seen"]) == ("smb.no-negotiate-reply", 0)  # type: ignore[index]


async def test_an_smb_connect_that_stalls_is_a_tcp_timeout(stalled_port: int) -> None:
    """The smb probe's own connect dropped (after its tcp check passed): a SYN drop, not a silent server."""
    result = await engine.attempt(smb_check(stalled_port), ("127.0.0.1",), timeout=2 * UNIT)
    assert (result.status, result.reason, result.phase) == (Status.FAIL, Reason.TCP_TIMEOUT, "connect")


async def test_some_addresses_passing_at_the_deadline_is_a_warning(half_stalled: int) -> None:
    result = await engine.attempt(tcp_check(half_stalled), ("127.0.0.2", "127.0.0.1"), timeout=0.3 * UNIT)
    assert (result.status, result.reason, result.phase) == (Status.WARN, Reason.TCP_TIMEOUT, "connect")
    assert result.addresses == ("127.0.0.2",)
    assert "1 address(es) passed" in result.detail


async def test_a_layer_uses_the_addresses_the_layer_below_passed(
        dns_server: object, tcp_listener: int) -> None:
    def answer(query: dns.message.Message) -> dns.message.Message:
        return dns_reply(query, "svc.test. 60 IN A 127.0.0.1")

    server = await dns_server(answer)  # type: ignore[operator]
    checks = [dns_check("svc.test", server), tcp_check(tcp_listener, name="svc.test", needs="dns:svc.test")]
    dns_result, tcp_result = await engine.run(checks, timeout=2 * UNIT)
    assert dns_result.status is Status.PASS and dns_result.addresses == ("127.0.0.1",)
    assert tcp_result.status is Status.PASS and tcp_result.addresses == ("127.0.0.1",)


async def test_a_failed_layer_skips_the_layers_above(dns_server: object, tcp_listener: int) -> None:
    def nxdomain(query: dns.message.Message) -> dns.message.Message:
        return dns_reply(query, rcode=dns.rcode.NXDOMAIN)

    server = await dns_server(nxdomain)  # type: ignore[operator]
    checks = [dns_check("gone.test", server), tcp_check(tcp_listener, name="gone.test", needs="dns:gone.test")]
    dns_result, tcp_result = await engine.run(checks, timeout=2 * UNIT)
    assert dns_result.reason is Reason.DNS_NXDOMAIN
    assert (tcp_result.status, tcp_result.reason) == (Status.SKIP, Reason.SKIP_DEPENDENCY)
    assert "dns:gone.test" in tcp_result.detail


async def test_run_deadline_cancels_what_is_left(stalled_port: int, tcp_listener: int) -> None:
    state = engine.RunState()
    checks = [tcp_check(tcp_listener), *stalled_checks(stalled_port, 1)]
    fast, slow = await engine.run(checks, timeout=60, deadline=Deadline.after(0.5 * UNIT), state=state)
    assert fast.status is Status.PASS
    assert (slow.status, slow.reason) == (Status.INCONCLUSIVE, Reason.PROBE_CANCELLED)
    assert state.interrupted and "deadline" in state.interrupted


async def test_cancellation_keeps_finished_results_and_leaks_nothing(stalled_port: int, tcp_listener: int) -> None:
    baseline = open_fds()
    state = engine.RunState()
    checks = [tcp_check(tcp_listener), *stalled_checks(stalled_port, 20)]
    first_done = asyncio.Event()
    task = asyncio.create_task(engine.run(checks, timeout=60, state=state,
                                          on_result=lambda r: first_done.set() if r.check.id == checks[0].id else None))
    await first_done.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    results = engine.finish(checks, state)
    assert results[0].status is Status.PASS
    assert {r.reason for r in results[1:]} == {Reason.PROBE_CANCELLED}
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert open_fds() == baseline


async def test_concurrency_bound_caps_open_sockets(stalled_port: int) -> None:
    baseline = open_fds()
    peak = baseline
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, open_fds())
            await asyncio.sleep(0)

    sampler = asyncio.create_task(sample())
    checks = stalled_checks(stalled_port, 300)
    results = await engine.run(checks, timeout=0.02 * UNIT, concurrency=16)
    done.set()
    await sampler
    assert {r.reason for r in results} == {Reason.TCP_TIMEOUT}
    # the bound, the loop's own descriptors, and the paths traced at once for silent connects
    assert peak - baseline <= 16 + 4 + TRACE_DESCRIPTORS
    assert open_fds() == baseline


@dataclass(frozen=True, slots=True)
class _BrokenSpec:
    layer: ClassVar[Layer] = Layer.LOCAL
    host: str
    bad_window: bool = False  # a Spec bug: it cannot derive its protocol windows

    def within(self, window: float) -> _BrokenSpec:
        if self.bad_window:
            raise ValueError("a bug in a spec")
        return self


async def _broken(spec: _BrokenSpec, addresses: tuple[str, ...], trace: Trace) -> None:
    with trace.phase("exchange"):
        raise RuntimeError("a bug in a probe")


def _broken_check(**spec: object) -> Check:
    return Check(id="local:x", spec=_BrokenSpec("x", **spec), host="x", port=None,  # type: ignore[arg-type]
                 protocol="tcp", requirements=("test",))


async def test_unexpected_errors_are_internal_results(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(PROBES, Layer.LOCAL, (_BrokenSpec, _broken))
    result = await engine.attempt(_broken_check(), (), timeout=1)
    assert (result.status, result.reason, result.phase) == (Status.INCONCLUSIVE, Reason.PROBE_INTERNAL, "exchange")
    assert "a bug in a probe" in result.detail
    assert "unexpected error" in caplog.text


async def test_a_bad_spec_is_an_internal_result_and_its_dependents_still_resolve(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Building the probe's input used to happen outside the error boundary: the check ended
    `probe.cancelled` with nothing logged, and a check depending on it waited for ever."""
    monkeypatch.setitem(PROBES, Layer.LOCAL, (_BrokenSpec, _broken))
    broken = _broken_check(bad_window=True)
    dependent = tcp_check(443, name="x", needs=broken.id)
    async with _compat.timeout(5):  # a hang fails the test instead of the suite
        first, second = await engine.run([broken, dependent], timeout=1)
    assert (first.status, first.reason) == (Status.INCONCLUSIVE, Reason.PROBE_INTERNAL)
    assert "a bug in a spec" in first.detail and "unexpected error" in caplog.text
    assert second.reason is Reason.SKIP_DEPENDENCY


def test_the_bound_is_what_the_descriptor_limit_allows() -> None:
    """min(requested, (limit - open - reserve) / per check), never below one."""
    per = engine.DESCRIPTORS_PER_CHECK + engine.DESCRIPTORS_PER_RESOLVE + engine.DESCRIPTORS_PER_PARKED
    reserve = engine.RESERVED_DESCRIPTORS
    assert engine.concurrency_bound(128, limit=64, in_use=10) == (64 - 10 - reserve) // per < 128
    assert engine.descriptor_budget(128, limit=64, in_use=10)[1] == 0  # too tight to trace: slots first
    traced = engine.descriptor_budget(128, limit=1024, in_use=10)
    assert traced == ((1024 - 10 - reserve - TRACE_DESCRIPTORS) // per, TRACES_AT_ONCE)
    assert engine.concurrency_bound(128, limit=1 << 20, in_use=10) == 128
    assert engine.concurrency_bound(3, limit=64, in_use=10) == 3
    assert engine.concurrency_bound(128, limit=20, in_use=10) == 1
    assert engine.concurrency_bound(128) <= 128  # this process's own limit and descriptors


async def test_an_address_never_tried_is_no_timeout_verdict(stalled_port: int) -> None:
    """127.0.0.1 drops the SYN, 127.0.0.2 could not be tried (EMFILE): the check said tcp.timeout."""
    with descriptors_exhausted(free=1):
        result = await engine.attempt(tcp_check(stalled_port), ("127.0.0.1", "127.0.0.2"), timeout=0.2 * UNIT)
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.LOCAL_RESOURCE_LIMIT)
    assert "no answer within" in result.detail and "127.0.0.2: EMFILE" in result.detail


_AT_64 = """
import asyncio, json, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))  # what `ulimit -n 64` sets
from agent import engine
from agent.model import Check
from probes.specs import TcpSpec
ports = json.loads(sys.argv[1])
checks = [Check(id=f"tcp:check-{i}:{port}", spec=TcpSpec(host="127.0.0.1", port=port), host="127.0.0.1",
                port=port, protocol="tcp", requirements=("test",)) for i, port in enumerate(ports)]
results = asyncio.run(engine.run(checks, timeout=10))
print(json.dumps({"bound": engine.concurrency_bound(engine.DEFAULT_CONCURRENCY),
                  "results": [[r.check.port, r.status, r.reason, r.detail] for r in results]}))
"""


def test_a_run_at_ulimit_64_stays_conclusive() -> None:
    """300 tcp checks of loopback listeners (and 5 of closed ports) in a process whose descriptor limit is
    64: at the default concurrency of 128 about 60 could have a socket at once, and the others failed with
    EMFILE (a false critical). The bound keeps every check to its real outcome."""
    with ExitStack() as stack:
        listeners = [stack.enter_context(socket.socket()) for _ in range(20)]
        for listener in listeners:  # never accepting: the kernel completes each handshake into the backlog
            listener.bind(("127.0.0.1", 0))
            listener.listen(128)
        open_ports = [int(s.getsockname()[1]) for s in listeners]
        closed = []
        for _ in range(5):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                closed.append(int(sock.getsockname()[1]))
        ports = [open_ports[i % len(open_ports)] for i in range(300)] + closed
        root = Path(__file__).resolve().parents[2]
        done = subprocess.run([sys.executable, "-c", _AT_64, json.dumps(ports)], cwd=root, capture_output=True,
                              text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(root)}, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert 1 <= report["bound"] < engine.DEFAULT_CONCURRENCY
    outcomes = [(port, status, reason) for port, status, reason, _ in report["results"]]
    assert not [r for r in report["results"] if r[2] and r[2].startswith("local.")], "a local failure"
    assert [o for o in outcomes if o[0] in open_ports] == [(p, "pass", None) for p in ports[:300]]
    assert [o for o in outcomes if o[0] in closed] == [(p, "fail", "tcp.refused") for p in closed]


async def test_the_checks_of_a_run_share_its_trust_store(serve: Serve, ca: trustme.CA, tmp_path: Path) -> None:
    """engine.run loads each trust store once for all its checks (probes._net.shared): the second
    check, started after the bundle was rewritten, still verifies with the store the run loaded.
    The next run loads the store again."""
    bundle = tmp_path / "bundle.pem"
    ca.cert_pem.write_to_path(str(bundle))
    port = await serve(silent, tls=server_context(ca.issue_cert("127.0.0.1")))

    def tls_check(n: int, needs: str | None = None) -> Check:
        return Check(id=f"tls:{n}:127.0.0.1:{port}", spec=TlsSpec("127.0.0.1", port, cafile=str(bundle)),
                     host="127.0.0.1", port=port, protocol="tcp", requirements=("test",), needs=needs)

    def rewrite(result: object) -> None:
        trustme.CA().cert_pem.write_to_path(str(bundle))  # the node's store changes mid-run

    first, second = tls_check(1), tls_check(2, needs=tls_check(1).id)
    results = await engine.run([first, second], timeout=10 * UNIT, on_result=rewrite)
    assert [r.status for r in results] == [Status.PASS, Status.PASS]
    (again,) = await engine.run([tls_check(3)], timeout=10 * UNIT)
    assert again.reason is Reason.TLS_UNTRUSTED


def resolver_threads() -> int:
    return sum(t.name == "aml-netcheck-resolve" for t in threading.enumerate())


async def test_resolver_threads_are_bounded_by_the_check_slots() -> None:
    """getaddrinfo runs in the loop's default executor, which gave every call a thread of its own: a
    stub that hangs under a thousand names held a thousand threads and their sockets. engine.run
    installs a pool of one thread per check slot: calls beyond it wait for a thread; threads end
    when no call waits."""
    await engine.run([], concurrency=2)
    loop = asyncio.get_running_loop()
    release = threading.Event()
    calls = [loop.run_in_executor(None, release.wait, 10) for _ in range(5)]
    assert resolver_threads() == 2
    release.set()
    assert await asyncio.gather(*calls) == [True] * 5
    for thread in [t for t in threading.enumerate() if t.name == "aml-netcheck-resolve"]:
        thread.join(5)  # a hang guard, not a timing
    assert resolver_threads() == 0
