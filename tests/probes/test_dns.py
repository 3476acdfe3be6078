"""dns probe against a loopback nameserver whose handler plays each fault. Direct-path tests use
system=False (the system path would ask the machine's resolver); the system path is tested on
"localhost", which /etc/hosts answers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from probe_loopback import DnsHandler, dns_reply
from probes import dns as dns_probe
from probes import node
from probes._net import is_private
from probes._trace import ProbeError, Trace
from probes.reasons import Reason

pytest_plugins = ["probe_peers"]

Server = Callable[..., Awaitable[str]]
NAME = "ws.api.azureml.test"
CNAME = f"{NAME}. 60 IN CNAME ws.privatelink.api.azureml.test."


def answering(*records: str, rcode: int = dns.rcode.NOERROR) -> DnsHandler:
    return lambda query: dns_reply(query, *records, rcode=rcode)


def spec(*servers: str, unit: float, **options: object) -> dns_probe.Spec:
    return dns_probe.Spec(NAME, resolvers=servers, system=False, query_timeout=2 * unit, **options)  # type: ignore[arg-type]


async def test_answer(dns_server: Server, trace: Trace, unit: float) -> None:
    server = await dns_server(answering(f"{NAME}. 60 IN A 10.0.0.5", f"{NAME}. 60 IN AAAA fd00::5"))
    await dns_probe.run(spec(server, unit=unit), (), trace)
    assert trace.facts["addresses_ok"] == ["10.0.0.5"]  # IPv4 when there is any
    [answer] = trace.facts["servers"]  # type: ignore[misc]
    assert answer == {"server": server, "rcode": "NOERROR", "error": None, "answers": ["10.0.0.5", "fd00::5"],
                      "cname_chain": [], "rtt_ms": answer["rtt_ms"]}  # type: ignore[index]
    assert trace.facts["private_addresses"] == ["10.0.0.5", "fd00::5"]
    assert trace.facts["public_addresses"] == [] and trace.facts["inconsistent"] is False
    assert [p.name for p in trace.phases] == ["direct"] and trace.current is None


async def test_a_resolver_s_answer_time_is_the_kernel_s_not_a_busy_loop_s(dns_server: Server, trace: Trace,
                                                                          unit: float) -> None:
    """The server answers, then the event loop is held BUSY seconds before the probe can read it (once:
    the probe's second ask is not held): the answer's `rtt_ms` (what the dns latency threshold reads) is
    its arrival as the kernel stamped it (SIOCGSTAMP), at most what the probe took less the hold."""
    asked: list[dns.message.Message] = []

    def answer_then_hold(query: dns.message.Message) -> dns.message.Message | None:
        asked.append(query)
        if len(asked) == 2:  # A and AAAA answered: the hold comes after both replies are sent, before they are read
            asyncio.get_running_loop().call_soon(time.sleep, BUSY)
        return dns_reply(query, f"{NAME}. 60 IN A 10.0.0.5")

    server = await dns_server(answer_then_hold)
    started = time.monotonic()
    await dns_probe.run(spec(server, unit=max(unit, 2 * BUSY)), (), trace)
    took_ms = (time.monotonic() - started) * 1000
    [answer] = trace.facts["servers"]  # type: ignore[misc]
    assert answer["rtt_ms"] <= took_ms - BUSY * 1000, (answer, took_ms)  # type: ignore[index]


BUSY = 0.5  # seconds the event loop is held after the answer reached the node's socket


async def test_cname_chain(dns_server: Server, trace: Trace, unit: float) -> None:
    server = await dns_server(answering(
        CNAME, "ws.privatelink.api.azureml.test. 60 IN CNAME edge.test.", "edge.test. 60 IN A 20.1.2.3"))
    await dns_probe.run(spec(server, unit=unit), (), trace)
    assert trace.facts["cname_chain"] == ["ws.privatelink.api.azureml.test", "edge.test"]
    assert trace.facts["public_addresses"] == ["20.1.2.3"]
    assert trace.facts["addresses_ok"] == ["20.1.2.3"]


async def test_truncated_answer_retries_over_tcp(dns_server: Server, trace: Trace, unit: float) -> None:
    server = await dns_server(answering(f"{NAME}. 60 IN A 10.0.0.5"), truncate_udp=True)
    await dns_probe.run(spec(server, unit=unit), (), trace)
    assert trace.facts["addresses_ok"] == ["10.0.0.5"]


async def test_nxdomain_keeps_the_cname_chain(dns_server: Server, trace: Trace, unit: float) -> None:
    """A privatelink CNAME into a zone without the record: NXDOMAIN, and the chain shows where."""
    server = await dns_server(answering(CNAME, rcode=dns.rcode.NXDOMAIN))
    with pytest.raises(ProbeError) as info:
        await dns_probe.run(spec(server, unit=unit), (), trace)
    assert info.value.reason is Reason.DNS_NXDOMAIN
    assert trace.current == "direct"
    assert trace.facts["cname_chain"] == ["ws.privatelink.api.azureml.test"]
    assert trace.facts["servers"][0]["rcode"] == "NXDOMAIN"  # type: ignore[index]


def silent(query: dns.message.Message) -> None:
    return None


@pytest.mark.parametrize(("handler", "reason", "rcode", "error"), [
    (answering(), Reason.DNS_NODATA, "NOERROR", None),
    (answering(rcode=dns.rcode.SERVFAIL), Reason.DNS_SERVFAIL, "SERVFAIL", None),
    (answering(rcode=dns.rcode.REFUSED), Reason.DNS_REFUSED, "REFUSED", None),
    (silent, Reason.DNS_TIMEOUT, None, "timeout"),
], ids=["nodata", "servfail", "refused", "silent"])
async def test_failures(handler: DnsHandler, reason: Reason, rcode: str | None, error: str | None,
                        dns_server: Server, trace: Trace, unit: float) -> None:
    server = await dns_server(handler)
    with pytest.raises(ProbeError) as info:
        await dns_probe.run(spec(server, unit=unit), (), trace)
    assert info.value.reason is reason
    assert trace.current == "direct"
    [answer] = trace.facts["servers"]  # type: ignore[misc]
    assert (answer["rcode"], answer["error"], answer["answers"]) == (rcode, error, [])  # type: ignore[index]
    assert trace.facts["addresses_ok"] == []


async def test_server_unreachable(closed_udp_port: int, trace: Trace, unit: float) -> None:
    server = f"127.0.0.1:{closed_udp_port}"
    with pytest.raises(ProbeError) as info:
        await dns_probe.run(spec(server, unit=unit), (), trace)
    assert info.value.reason is Reason.DNS_SERVER_UNREACHABLE
    assert trace.facts["servers"][0]["error"] == "unreachable: ECONNREFUSED"  # type: ignore[index]


async def test_precedence_across_servers(dns_server: Server, trace: Trace, unit: float) -> None:
    """NXDOMAIN from one resolver outranks SERVFAIL from another: it names the missing record."""
    servfail = await dns_server(answering(rcode=dns.rcode.SERVFAIL))
    nxdomain = await dns_server(answering(rcode=dns.rcode.NXDOMAIN))
    with pytest.raises(ProbeError) as info:
        await dns_probe.run(spec(servfail, nxdomain, unit=unit), (), trace)
    assert info.value.reason is Reason.DNS_NXDOMAIN


async def test_split_answers_pass_and_say_so(dns_server: Server, trace: Trace, unit: float) -> None:
    """A SERVFAIL is no answer for the name (a stub asks the next server): no disagreement."""
    good = await dns_server(answering(f"{NAME}. 60 IN A 10.0.0.5"))
    broken = await dns_server(answering(rcode=dns.rcode.SERVFAIL))
    await dns_probe.run(spec(good, broken, unit=unit), (), trace)
    assert trace.facts["addresses_ok"] == ["10.0.0.5"] and trace.facts["inconsistent"] is True
    assert "disagreement" not in trace.facts


@pytest.mark.parametrize(("options", "reason"), [
    ({"expect": "private"}, Reason.DNS_PUBLIC_ANSWER),
    ({"expect": "public"}, Reason.DNS_WRONG_ADDRESS),
    ({"expect_addresses": ("10.0.0.6",)}, Reason.DNS_WRONG_ADDRESS),
], ids=["public-where-private", "private-where-public", "wrong-address"])
async def test_unmet_expectations(options: dict[str, object], reason: Reason, dns_server: Server,
                                  trace: Trace, unit: float) -> None:
    answer = "20.1.2.3" if options.get("expect") == "private" else "10.0.0.5"
    server = await dns_server(answering(f"{NAME}. 60 IN A {answer}"))
    with pytest.raises(ProbeError) as info:
        await dns_probe.run(spec(server, unit=unit, **options), (), trace)
    assert info.value.reason is reason
    assert trace.current == "direct"
    assert trace.facts["addresses_ok"] == []


async def test_expected_address(dns_server: Server, trace: Trace, unit: float) -> None:
    server = await dns_server(answering(f"{NAME}. 60 IN A 10.0.0.5"))
    await dns_probe.run(spec(server, unit=unit, expect="private", expect_addresses=("10.0.0.5",)), (), trace)
    assert trace.facts["addresses_ok"] == ["10.0.0.5"]


async def test_no_resolver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trace: Trace, unit: float) -> None:
    (tmp_path / "resolv.conf").write_text("search example.internal\n")
    monkeypatch.setattr(node, "RESOLV_CONF", tmp_path / "resolv.conf")
    with pytest.raises(ProbeError) as info:
        await dns_probe.run(spec(unit=unit), (), trace)
    assert info.value.reason is Reason.DNS_NO_RESOLVER
    assert trace.facts["servers"] == []


async def test_resolver_entries_are_addresses(trace: Trace, unit: float) -> None:
    """A name in the resolver list is refused, not resolved (that would be DNS to find DNS)."""
    with pytest.raises(ProbeError) as info:
        await dns_probe.run(spec("dns.corp.test", unit=unit), (), trace)
    assert info.value.reason is Reason.DNS_NO_RESOLVER
    assert trace.facts["servers"][0]["error"] == "invalid: not an IP address"  # type: ignore[index]


async def test_system_path_wins_over_direct(dns_server: Server, trace: Trace, unit: float) -> None:
    """What applications see decides; a resolver that disagrees is evidence, not a failure. A
    hosts-file name DNS does not know is no override: there is no DNS answer it hides."""
    server = await dns_server(answering(rcode=dns.rcode.NXDOMAIN))
    await dns_probe.run(dns_probe.Spec("localhost", resolvers=(server,), query_timeout=2 * unit), (), trace)
    assert "127.0.0.1" in trace.facts["addresses"]  # type: ignore[operator]
    assert trace.facts["addresses_ok"] == ["127.0.0.1"]
    assert trace.facts["inconsistent"] is True and "hosts_override" not in trace.facts
    assert {p.name for p in trace.phases} == {"system", "direct"} and trace.current is None


async def test_system_path_expectation(dns_server: Server, trace: Trace, unit: float) -> None:
    server = await dns_server(answering("localhost. 60 IN A 127.0.0.1"))
    with pytest.raises(ProbeError) as info:
        await dns_probe.run(dns_probe.Spec("localhost", resolvers=(server,), expect="private",
                                           query_timeout=2 * unit), (), trace)
    assert info.value.reason is Reason.DNS_PUBLIC_ANSWER
    assert trace.current == "system"
    assert trace.facts["servers"][0]["answers"] == ["127.0.0.1"]  # type: ignore[index]


@pytest.mark.parametrize(("address", "private"), [
    ("10.1.2.3", True), ("172.31.255.1", True), ("192.168.0.1", True), ("100.64.0.1", True),
    ("fd00::1", True), ("172.32.0.1", False), ("20.1.2.3", False), ("2603:1030::1", False),
    ("127.0.0.1", False),
])
def test_is_private(address: str, private: bool) -> None:
    assert is_private(address) is private


# -- resolvers that disagree, with each other or with themselves ----------------------------------

def said(trace: Trace) -> dict[str, list[str]]:
    """server -> what it said, from the disagreement fact."""
    return {str(d["server"]): [f"{v['answer']} ({v['class']})" for v in d["said"]]  # type: ignore[index,union-attr]
            for d in trace.facts["disagreement"]}  # type: ignore[union-attr]


async def test_a_resolver_without_the_private_zone_disagrees(dns_server: Server, trace: Trace, unit: float) -> None:
    """One resolver gives the private endpoint, another NXDOMAIN, a third a public address: the
    name passes (an answer exists) and each server is named with what it said."""
    private = await dns_server(answering(f"{NAME}. 60 IN A 10.0.0.5"))
    missing = await dns_server(answering(rcode=dns.rcode.NXDOMAIN))
    public = await dns_server(answering(f"{NAME}. 60 IN A 20.1.2.3"))
    await dns_probe.run(spec(private, missing, public, unit=unit), (), trace)
    assert said(trace) == {private: ["10.0.0.5 (private)"], missing: ["NXDOMAIN (none)"],
                           public: ["20.1.2.3 (public)"]}


def rotating(*answers: tuple[str, ...]) -> DnsHandler:
    """A server whose A answer moves to the next record set on every A question (AAAA: none)."""
    asked = [0]

    def handler(query: dns.message.Message) -> dns.message.Message:
        if query.question[0].rdtype != dns.rdatatype.A:
            return dns_reply(query)
        records = answers[asked[0] % len(answers)]
        asked[0] += 1
        return dns_reply(query, *(f"{NAME}. 60 IN A {a}" for a in records))
    return handler


async def test_a_server_that_flaps_between_answers(dns_server: Server, trace: Trace, unit: float) -> None:
    """Asked twice, the same server gives the private endpoint, then a public address (a load
    balancer in front of two differently configured servers): named with both answers."""
    flapping = await dns_server(rotating(("10.0.0.5",), ("20.1.2.3",)))
    await dns_probe.run(spec(flapping, unit=unit), (), trace)
    assert said(trace) == {flapping: ["10.0.0.5 (private)", "20.1.2.3 (public)"]}
    assert trace.facts["addresses_ok"] == ["10.0.0.5"]  # the first answer is the server's answer


@pytest.mark.parametrize(("first", "second", "options"), [
    (("20.1.2.3", "20.1.2.4"), ("20.1.2.9",), {}),  # a CDN: another subset of its public addresses
    (("10.0.0.5", "10.0.0.6"), ("10.0.0.6", "10.0.0.5"), {"expect": "private"}),  # round robin
], ids=["cdn-public-addresses", "round-robin-order"])
async def test_answers_of_one_class_are_no_disagreement(first: tuple[str, ...], second: tuple[str, ...],
                                                        options: dict[str, object], dns_server: Server,
                                                        trace: Trace, unit: float) -> None:
    one = await dns_server(rotating(first, second))
    other = await dns_server(rotating(second, first))
    await dns_probe.run(spec(one, other, unit=unit, **options), (), trace)
    assert "disagreement" not in trace.facts and trace.facts["addresses_ok"]


async def test_a_name_that_must_be_private_compares_the_exact_addresses(dns_server: Server, trace: Trace,
                                                                        unit: float) -> None:
    """Two private answers that differ (a stale record on one server) are a disagreement for a
    private-endpoint name; for any other name they are one class."""
    current = await dns_server(answering(f"{NAME}. 60 IN A 10.0.0.5"))
    stale = await dns_server(answering(f"{NAME}. 60 IN A 10.0.0.99"))
    await dns_probe.run(spec(current, stale, unit=unit), (), Trace())
    await dns_probe.run(spec(current, stale, unit=unit, expect="private"), (), trace)
    assert said(trace) == {current: ["10.0.0.5 (private)"], stale: ["10.0.0.99 (private)"]}


async def test_the_re_ask_is_left_out_for_a_truncated_answer(dns_server: Server, trace: Trace, unit: float) -> None:
    """A server whose answers need TCP is asked once: the re-ask takes one UDP window only."""
    asked: list[int] = []

    def counting(query: dns.message.Message) -> dns.message.Message:
        asked.append(query.question[0].rdtype)
        return dns_reply(query, f"{NAME}. 60 IN A 10.0.0.5")
    server = await dns_server(counting, truncate_udp=True)
    await dns_probe.run(spec(server, unit=unit), (), trace)
    assert trace.facts["addresses_ok"] == ["10.0.0.5"]
    assert len(asked) == 4  # A and AAAA, each over UDP then TCP; no second round


# -- the hosts file ----------------------------------------------------------------------------------

def test_hosts_file_lines_are_parsed_as_glibc_reads_them(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("# 10.9.9.1 store.blob.test (commented out)\n"
                     "127.0.0.1 localhost\n"
                     "10.9.9.2   other.test  STORE.Blob.test   alias # the old endpoint\n"
                     "10.9.9.3 store.blob.test.\n"  # a trailing dot answers only `store.blob.test.`
                     "not-an-address store.blob.test\n"
                     "fd00::9 store.blob.test\n")
    pins = dns_probe._pins(hosts, "store.blob.test")
    assert [(p.line, p.address) for p in pins] == [(3, "10.9.9.2"), (6, "fd00::9")]
    assert pins[0].text == "10.9.9.2   other.test  STORE.Blob.test   alias # the old endpoint"
    assert dns_probe._pins(tmp_path / "missing", "store.blob.test") == []


def pinning_localhost(tmp_path: Path) -> Path:
    """A hosts file pinning `localhost` to exactly what the system path answers for it (read from
    getaddrinfo itself), on line 3 and after: as the node's file does for a pinned name."""
    system = dict.fromkeys(info[4][0] for info in socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM))
    hosts = tmp_path / "hosts"
    hosts.write_text("# pinned by hand\n10.9.9.9 unrelated.test\n"
                     + "".join(f"{address} LocalHost  # old\n" for address in system))
    return hosts


async def test_a_hosts_file_line_that_disagrees_with_dns(tmp_path: Path, dns_server: Server, trace: Trace,
                                                         unit: float) -> None:
    """The system path answers from the file, DNS says otherwise: the override names the file,
    the line and its text, and what DNS answers."""
    hosts = pinning_localhost(tmp_path)
    server = await dns_server(answering("localhost. 60 IN A 10.0.0.5"))
    await dns_probe.run(dns_probe.Spec("localhost", resolvers=(server,), query_timeout=2 * unit,
                                       hosts_file=str(hosts)), (), trace)
    override = trace.facts["hosts_override"]
    assert isinstance(override, dict) and override["file"] == str(hosts) and override["dns"] == ["10.0.0.5"]
    first = override["lines"][0]  # type: ignore[index]
    assert first["line"] == 3 and first["text"].endswith("LocalHost  # old")  # type: ignore[index,union-attr]
    assert trace.facts["addresses_ok"] == ["127.0.0.1"]  # the check still passes: the finding judges it


async def test_a_hosts_file_line_dns_agrees_with_is_no_override(tmp_path: Path, dns_server: Server, trace: Trace,
                                                                unit: float) -> None:
    hosts = pinning_localhost(tmp_path)
    server = await dns_server(answering("localhost. 60 IN A 127.0.0.1", "localhost. 60 IN AAAA ::1"))
    await dns_probe.run(dns_probe.Spec("localhost", resolvers=(server,), query_timeout=2 * unit,
                                       hosts_file=str(hosts)), (), trace)
    assert "hosts_override" not in trace.facts


async def test_a_hosts_override_is_noted_when_the_pinned_answer_fails(tmp_path: Path, dns_server: Server,
                                                                      trace: Trace, unit: float) -> None:
    """A private-endpoint name pinned to a non-private address fails, and says why."""
    server = await dns_server(answering("localhost. 60 IN A 10.0.0.5"))
    with pytest.raises(ProbeError) as info:
        await dns_probe.run(dns_probe.Spec("localhost", resolvers=(server,), expect="private", query_timeout=2 * unit,
                                           hosts_file=str(pinning_localhost(tmp_path))), (), trace)
    assert info.value.reason is Reason.DNS_PUBLIC_ANSWER
    assert trace.facts["hosts_override"]["dns"] == ["10.0.0.5"]  # type: ignore[index]


async def test_a_local_stub_serving_the_hosts_file_is_not_dns(tmp_path: Path, dns_server: Server, trace: Trace,
                                                              unit: float) -> None:
    """systemd-resolved's stub (and dnsmasq) answer from /etc/hosts too: a server that gives
    exactly the pinned addresses is the file again, not DNS's word, so the override still shows
    and the stub does not disagree with the upstream."""
    hosts = pinning_localhost(tmp_path)
    stub = await dns_server(answering(*(f"localhost. 60 IN {'AAAA' if ':' in p.address else 'A'} {p.address}"
                                        for p in dns_probe._pins(hosts, "localhost"))))
    upstream = await dns_server(answering("localhost. 60 IN A 10.0.0.5"))
    await dns_probe.run(dns_probe.Spec("localhost", resolvers=(stub, upstream), query_timeout=2 * unit,
                                       hosts_file=str(hosts)), (), trace)
    assert trace.facts["hosts_override"]["dns"] == ["10.0.0.5"]  # type: ignore[index]
    assert "disagreement" not in trace.facts


LINKED = (CNAME, "ws.privatelink.api.azureml.test. 60 IN CNAME edge.test.")


@pytest.mark.parametrize(("records", "fails"), [
    ((*LINKED, "edge.test. 60 IN A 20.1.2.3"), True),  # a private endpoint, and the public answer wins
    ((CNAME, "ws.privatelink.api.azureml.test. 60 IN A 10.0.0.5"), False),  # the private zone answers
    ((f"{NAME}. 60 IN CNAME edge.test.", "edge.test. 60 IN A 20.1.2.3"), False),  # no private endpoint
], ids=["linked-public", "linked-private", "public-resource"])
async def test_a_cname_into_a_private_link_zone_requires_a_private_answer(
        records: tuple[str, ...], fails: bool, dns_server: Server, trace: Trace, unit: float) -> None:
    """Public DNS CNAMEs a resource's name into privatelink.<zone> exactly when it has a private
    endpoint: unknown to the context, that chain says so, and a public answer is then the fault."""
    server = await dns_server(answering(*records))
    run = dns_probe.run(spec(server, unit=unit, private_link_label="privatelink"), (), trace)
    if not fails:
        await run
        assert trace.facts["addresses_ok"]
        return
    with pytest.raises(ProbeError) as info:
        await run
    assert info.value.reason is Reason.DNS_PUBLIC_ANSWER and trace.current == "direct"
    assert "ws.privatelink.api.azureml.test" in info.value.detail and "CNAME chain" in info.value.detail
    assert trace.facts["addresses_ok"] == [] and trace.facts["private_link"] == "ws.privatelink.api.azureml.test"


async def test_a_private_answer_required_where_public_dns_shows_no_private_endpoint(
        dns_server: Server, trace: Trace, unit: float) -> None:
    """Told the name has a private endpoint, but its chain shows none: said in the detail."""
    server = await dns_server(answering(f"{NAME}. 60 IN A 20.1.2.3"))
    with pytest.raises(ProbeError) as info:
        await dns_probe.run(spec(server, unit=unit, expect="private", private_link_label="privatelink"), (), trace)
    assert info.value.reason is Reason.DNS_PUBLIC_ANSWER and "no CNAME into a privatelink zone" in info.value.detail
    assert trace.facts["private_link"] is None


async def test_the_system_path_answer_is_judged_by_the_cname_chain(dns_server: Server, trace: Trace,
                                                                   unit: float) -> None:
    """The system path's public address with the resolver's chain into a privatelink zone."""
    server = await dns_server(answering("localhost. 60 IN CNAME localhost.privatelink.test.",
                                        "localhost.privatelink.test. 60 IN A 127.0.0.1"))
    with pytest.raises(ProbeError) as info:
        await dns_probe.run(dns_probe.Spec("localhost", resolvers=(server,), private_link_label="privatelink",
                                           query_timeout=2 * unit), (), trace)
    assert info.value.reason is Reason.DNS_PUBLIC_ANSWER and "localhost.privatelink.test" in info.value.detail
    assert trace.current == "system" and trace.facts["addresses_ok"] == []
