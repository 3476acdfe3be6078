"""Local failures are local: with this process really out of descriptors (EMFILE, as under `ulimit -n`
on a busy node), every probe ends `local.resource-limit`, inconclusive, and never a verdict on the
network: not a refused port, an unreachable proxy or resolver, a missing name or record, an untrusted
certificate. The engine turns what a probe raises into a reason as `reason_of` does here."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import trustme

from probe_loopback import UNIT, descriptors_exhausted, dns_reply
from probes import _net, http, node, tcp, tls, udp, websocket
from probes import dns as dns_probe
from probes._trace import ProbeError, Trace
from probes.reasons import Reason, Status, classify
from probes.specs import DnsSpec, HttpSpec, Proxy, TlsSpec, WebSocketSpec

pytest_plugins = ["probe_peers"]

LOCAL = Reason.LOCAL_RESOURCE_LIMIT
NAME = "svc.azureml.test"
Server = Callable[..., Awaitable[str]]


def reason_of(exc: BaseException) -> Reason:
    """What the engine makes of it: a ProbeError's own reason, anything else classified."""
    return exc.reason if isinstance(exc, ProbeError) else classify(exc)


async def failure(probe: Awaitable[None]) -> Reason:
    """The reason the probe failed with; a hang fails the test instead of the suite."""
    try:
        async with asyncio.timeout(20 * UNIT):
            await probe
    except TimeoutError:
        raise AssertionError("the probe hung") from None
    except Exception as exc:  # the probe's own outcome, judged outside the exhausted window
        return reason_of(exc)
    raise AssertionError("the probe passed")


def test_the_reason_is_inconclusive_and_local() -> None:
    assert LOCAL.value == "local.resource-limit" and LOCAL.status is Status.INCONCLUSIVE and LOCAL.layer == "local"


async def test_tcp_without_a_descriptor(tcp_listener: int, trace: Trace) -> None:
    with descriptors_exhausted():
        reason = await failure(tcp.run(tcp.Spec(NAME, tcp_listener), ("127.0.0.1",), trace))
    assert reason is LOCAL
    assert [(a["outcome"], a["errno"]) for a in trace.facts["attempts"]] == [  # type: ignore[union-attr,index]
        ("local.resource-limit", "EMFILE")]


async def test_tcp_an_address_never_tried_leaves_the_check_open(refused_port: int, trace: Trace) -> None:
    """127.0.0.1 refuses, 127.0.0.2 could not be tried: the check said tcp.refused for both."""
    with descriptors_exhausted(free=1):
        reason = await failure(tcp.run(tcp.Spec(NAME, refused_port), ("127.0.0.1", "127.0.0.2"), trace))
    assert reason is LOCAL
    outcomes = {a["address"]: a["outcome"] for a in trace.facts["attempts"]}  # type: ignore[union-attr,index]
    assert outcomes == {"127.0.0.1": "tcp.refused", "127.0.0.2": "local.resource-limit"}


async def test_udp_without_a_descriptor(udp_echo: int, trace: Trace) -> None:
    with descriptors_exhausted():
        reason = await failure(udp.run(udp.Spec(NAME, udp_echo, attempts=1, interval=UNIT), ("127.0.0.1",), trace))
    assert reason is LOCAL


def _spec(*servers: str, system: bool = False, host: str = NAME) -> DnsSpec:
    return DnsSpec(host, resolvers=servers, system=system, query_timeout=4 * UNIT)


async def test_dns_a_question_never_sent_is_not_nodata(dns_server: Server, trace: Trace) -> None:
    """A answered NOERROR without records while AAAA could not be sent: this was dns.nodata, a critical
    dns-name-missing on a healthy network (the name may well have AAAA records)."""
    server = await dns_server(lambda query: dns_reply(query))
    with descriptors_exhausted(free=1):  # the A question takes the last descriptor
        reason = await failure(dns_probe.run(_spec(server), (), trace))
    assert reason is LOCAL
    [answer] = trace.facts["servers"]  # type: ignore[misc]
    assert (answer["rcode"], answer["error"]) == (None, "local: EMFILE")  # type: ignore[index]


async def test_dns_the_answer_to_the_question_sent_still_counts(dns_server: Server, trace: Trace) -> None:
    def answer(query: dns.message.Message) -> dns.message.Message:
        return dns_reply(query, f"{NAME}. 60 IN A 10.0.0.5") if query.question[0].rdtype == dns.rdatatype.A \
            else dns_reply(query)

    answer(dns.message.make_query(NAME, "A")).to_wire()  # dnspython imports its A class on first use: not then
    server = await dns_server(answer)
    with descriptors_exhausted(free=1):
        await dns_probe.run(_spec(server), (), trace)
    assert trace.facts["addresses_ok"] == ["10.0.0.5"]


async def test_dns_a_name_the_server_denies_stays_denied(dns_server: Server, trace: Trace) -> None:
    """NXDOMAIN is about the name, whatever the type: the answer to one question is enough."""
    server = await dns_server(lambda query: dns_reply(query, rcode=dns.rcode.NXDOMAIN))
    with descriptors_exhausted(free=1):
        reason = await failure(dns_probe.run(_spec(server), (), trace))
    assert reason is Reason.DNS_NXDOMAIN


async def test_dns_no_question_sent_is_not_an_unreachable_server(dns_server: Server, trace: Trace) -> None:
    server = await dns_server(lambda query: dns_reply(query, f"{NAME}. 60 IN A 10.0.0.5"))
    with descriptors_exhausted():
        reason = await failure(dns_probe.run(_spec(server, server.replace("127.0.0.1", "127.0.0.2")), (), trace))
    assert reason is LOCAL  # it was dns.server-unreachable: dns-unavailable, critical


async def test_dns_system_path_without_a_descriptor(dns_server: Server, trace: Trace) -> None:
    """getaddrinfo fails with EAI_SYSTEM (Python raises its EMFILE); /etc/hosts answers localhost otherwise."""
    server = await dns_server(lambda query: dns_reply(query))
    with descriptors_exhausted():
        reason = await failure(dns_probe.run(_spec(server, system=True, host="localhost"), (), trace))
    assert reason is LOCAL
    assert trace.facts["system_error"] == "EMFILE"


async def test_dns_the_system_path_alone_is_no_verdict(trace: Trace) -> None:
    """Where the direct questions were answered, the system path alone decided, and glibc out of
    descriptors may say EAI_NONAME (it did here, after other tests): that was dns.nxdomain."""
    answered: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
    answered.set_result([])  # the direct answers, which the system path reads only for a CNAME chain
    with descriptors_exhausted():
        result = await dns_probe._system(_spec(system=True, host="localhost"), trace, answered)
    assert isinstance(result, OSError) and not isinstance(result, socket.gaierror)
    assert classify(result) is LOCAL and trace.facts["system_error"] == "EMFILE"


async def test_dns_an_unreadable_resolv_conf_is_not_no_resolver(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trace: Trace) -> None:
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("nameserver 127.0.0.1\n")
    monkeypatch.setattr(node, "RESOLV_CONF", resolv_conf)
    with descriptors_exhausted():
        reason = await failure(dns_probe.run(_spec(), (), trace))
        best_effort = node.resolvers()  # the report's node facts still get a value, never an exception
    assert reason is LOCAL  # it was dns.no-resolver
    assert best_effort == () and node.resolvers() == ("127.0.0.1",)


@pytest.fixture
def system_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> trustme.CA:
    """The node's trust store is a file, as on Debian and Ubuntu: a test CA through SSL_CERT_FILE."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    return ca


def test_tls_an_unloadable_trust_store_is_the_node_s_error(system_store: trustme.CA) -> None:
    """OpenSSL loads the default store silently: under EMFILE it stays empty and every handshake said
    tls.untrusted (a critical tls-intercepted-untrusted naming no CA)."""
    with descriptors_exhausted(), pytest.raises(OSError, match="Too many open files") as info:
        _net.tls_context(None)
    assert classify(info.value) is LOCAL
    assert _net.tls_context(None).cert_store_stats()["x509_ca"] == 1


async def test_tls_without_a_descriptor_for_the_store(system_store: trustme.CA, tcp_listener: int,
                                                      trace: Trace) -> None:
    with descriptors_exhausted(free=1):  # the connection takes the last descriptor, the store gets none
        reason = await failure(tls.run(TlsSpec(NAME, tcp_listener), ("127.0.0.1",), trace))
    assert reason is LOCAL


async def test_tls_an_issuer_not_found_at_the_limit_is_no_verdict(tmp_path: Path, trace: Trace) -> None:
    """OpenSSL looks issuers up in a CA directory's files during verification; out of descriptors it finds
    none and says "unable to get local issuer certificate", as for a chain from an unknown CA. At the
    limit that is the limit; with descriptors to spare it stays the verdict it is."""
    server_ca, other_ca = trustme.CA(), trustme.CA()
    other_ca.cert_pem.write_to_path(str(tmp_path / "other.pem"))
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ca.issue_cert(NAME).configure_cert(server_context)

    async def verify(exhausted: bool) -> BaseException:
        context = _net.tls_context(str(tmp_path / "other.pem"))
        with socket.socket() as listener, socket.socket() as client:  # connected before the descriptors run out
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            client.connect(listener.getsockname())
            accepted, _ = listener.accept()
            server = threading.Thread(target=_serve_tls, args=(server_context, accepted), daemon=True)
            server.start()
            client.setblocking(False)
            with descriptors_exhausted() if exhausted else contextlib.nullcontext():
                try:
                    await tls.handshake(client, context, NAME, trace)
                except (OSError, ProbeError) as exc:  # an SSLError is an OSError
                    error: BaseException = exc
                else:
                    raise AssertionError("verified")
        server.join(10)  # the client closed: the server's handshake ends (a hang guard, not a timing)
        assert not server.is_alive()
        return error

    assert isinstance(await verify(exhausted=False), ssl.SSLCertVerificationError)
    assert classify(await verify(exhausted=True)) is LOCAL


def _serve_tls(context: ssl.SSLContext, sock: socket.socket) -> None:
    with sock, contextlib.suppress(OSError):  # the client aborts the handshake: part of the test
        context.wrap_socket(sock, server_side=True).close()


async def test_tls_without_a_descriptor(tcp_listener: int, trace: Trace) -> None:
    with descriptors_exhausted():
        reason = await failure(tls.run(TlsSpec(NAME, tcp_listener), ("127.0.0.1",), trace))
    assert reason is LOCAL


async def test_http_without_a_descriptor(tcp_listener: int, trace: Trace) -> None:
    spec = HttpSpec(f"http://{NAME}:{tcp_listener}/", NAME)
    with descriptors_exhausted():
        reason = await failure(http.run(spec, ("127.0.0.1",), trace))
    assert reason is LOCAL


async def test_http_no_socket_to_the_proxy_is_not_an_unreachable_proxy(tcp_listener: int, trace: Trace) -> None:
    spec = HttpSpec(f"http://{NAME}/", NAME, proxy=Proxy("http", "127.0.0.1", tcp_listener))
    with descriptors_exhausted():
        reason = await failure(http.run(spec, (), trace))
    assert reason is LOCAL  # it was proxy.unreachable: proxy-unreachable, critical
    assert trace.facts["proxy_errno"] == "EMFILE"


async def test_websocket_without_a_descriptor(tcp_listener: int, trace: Trace) -> None:
    spec = WebSocketSpec(f"ws://{NAME}:{tcp_listener}/", NAME)
    with descriptors_exhausted():
        reason = await failure(websocket.run(spec, ("127.0.0.1",), trace))
    assert reason is LOCAL


async def test_websocket_no_socket_to_the_proxy_is_not_an_unreachable_proxy(tcp_listener: int,
                                                                            trace: Trace) -> None:
    spec = WebSocketSpec(f"wss://{NAME}/", NAME, proxy=Proxy("http", "127.0.0.1", tcp_listener))
    with descriptors_exhausted():
        reason = await failure(websocket.run(spec, (), trace))
    assert reason is LOCAL  # it was proxy.unreachable
    assert trace.facts["proxy_errno"] == "EMFILE"
