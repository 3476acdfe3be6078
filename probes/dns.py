"""Name resolution two ways at once: the system path (getaddrinfo: /etc/hosts, nsswitch, the stub)
is what Azure ML's processes see; direct A/AAAA queries to each resolver explain why that path
failed, since getaddrinfo cannot tell NXDOMAIN behind SERVFAIL from a timeout or a refusal.

Two comparisons are evidence of their own: a hosts-file line the system path answered from while
DNS says otherwise (`hosts_override`), and resolvers that give different answers, to each other
or to the same question asked twice (`disagreement`)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from probes import node
from probes._datagram import exchange
from probes._net import errno_name, is_private, local_shortage, ms, ordered, since_ms, split_hostport
from probes._trace import Fact, ProbeError, Trace
from probes.reasons import Reason, local_limit
from probes.specs import DnsSpec as Spec
from probes.specs import is_ip

_GAI_NAMES = {getattr(socket, n): n for n in dir(socket) if n.startswith("EAI_")}
NSSWITCH = Path("/etc/nsswitch.conf")  # its `hosts:` line says whether the hosts file comes before DNS
ANSWERED = ("NOERROR", "NXDOMAIN")  # what a stub takes as the answer; on SERVFAIL or REFUSED it asks the next server


@dataclass(frozen=True, slots=True)
class _Query:
    """One A or AAAA question to one server: its response, or why there was none."""

    response: dns.message.Message | None
    error: str | None
    rtt_ms: float
    tcp: bool = False  # the UDP answer was truncated and the question asked again over TCP


@dataclass(frozen=True, slots=True)
class _Answer:
    """What one resolver said about the name (A and AAAA together)."""

    server: str
    rcode: str | None
    error: str | None
    answers: tuple[str, ...]
    cname_chain: tuple[str, ...]
    rtt_ms: float | None
    tcp: bool = False

    def fact(self) -> dict[str, Fact]:
        return {"server": self.server, "rcode": self.rcode, "error": self.error,
                "answers": list(self.answers), "cname_chain": list(self.cname_chain),
                "rtt_ms": self.rtt_ms}

    @property
    def used(self) -> list[str]:
        """The addresses a client takes: IPv4 when there is any (as `_accept` passes them on)."""
        return [a for a in self.answers if ":" not in a] or list(self.answers)

    def view(self) -> dict[str, Fact]:
        """What this answer says, as the comparison of answers reads it: the class of the addresses
        (private, public, mixed, or none for NXDOMAIN and an empty answer) and the answer itself."""
        used = self.used
        if not used:
            return {"answer": "NXDOMAIN" if self.rcode == "NXDOMAIN" else "no address", "class": "none"}
        kinds = {is_private(a) for a in used}
        kind = "mixed" if len(kinds) > 1 else "private" if kinds == {True} else "public"
        return {"answer": ", ".join(sorted(used, key=_sort_key)), "class": kind}

    def key(self, exact: bool) -> tuple[str, frozenset[str]]:
        """Two answers agree when their classes do, and for a name that must resolve to given or
        private addresses when their address sets do: round-robin order and the changing subset of
        a CDN's public addresses are no disagreement."""
        view = self.view()
        return str(view["class"]), frozenset(_canonical(a) for a in self.used) if exact else frozenset()


@dataclass(frozen=True, slots=True)
class _Pin:
    """One hosts-file line naming the host: what getaddrinfo answers from before asking DNS."""

    line: int
    text: str
    address: str


async def run(spec: Spec, addresses: tuple[str, ...], trace: Trace) -> None:
    """Resolve spec.host; `addresses` is unused (DNS is the bottom layer)."""
    trace.note(addresses_ok=[])
    servers = spec.resolvers or node.resolvers(strict=True)  # an unreadable resolv.conf under EMFILE is no answer
    if not spec.system:
        answers = await _direct(spec, servers, trace)
        _note_consistency(trace, [bool(a.answers) for a in answers])
        return
    pins = _pins(Path(spec.hosts_file), spec.host)  # a small local file, read as resolv.conf is
    pinned = frozenset(_canonical(p.address) for p in pins)
    direct = asyncio.ensure_future(_direct(spec, servers, trace, pinned))
    result, answers = await asyncio.gather(_system(spec, trace, direct), direct)
    resolved = isinstance(result, list)
    _note_consistency(trace, [resolved] + [bool(a.answers) for a in answers])
    system = trace.facts.get("addresses")  # noted before any expectation failed
    _note_override(trace, spec.hosts_file, pins, [str(a) for a in system] if isinstance(system, list) else [],
                   _dns_word(answers, pinned))
    if isinstance(result, socket.gaierror):
        failure = _failure(answers)
        if failure is None:
            raise result
        raise failure from result
    if isinstance(result, (ProbeError, OSError)):
        raise result  # an OSError: getaddrinfo's EAI_SYSTEM, the node's own (EMFILE), classified centrally


async def _system(spec: Spec, trace: Trace,
                  direct: asyncio.Future[list[_Answer]]) -> list[str] | OSError | ProbeError:
    """The system path. Errors are raised inside the phase (so it stays marked as the failing
    one) and returned, not raised, so the direct queries still finish and leave their evidence.
    Its answer is judged by the direct answers' CNAME chains when the spec reads them."""
    loop = asyncio.get_running_loop()
    try:
        with trace.phase("system"):
            try:
                addresses = await loop.run_in_executor(None, _getaddrinfo, spec.host)
            except socket.gaierror as exc:
                trace.note(addresses=[], system_error=_GAI_NAMES.get(exc.errno or 0, str(exc.errno)))
                raise
            except OSError as exc:  # EAI_SYSTEM: Python raises its errno
                trace.note(addresses=[], system_error=errno_name(exc) or str(exc))
                raise
            found = ordered(addresses)
            trace.note(addresses=[*found])
            answers = await direct if spec.private_link_label else []
            _accept(spec, found, trace, [a.cname_chain for a in answers])
    except (OSError, ProbeError) as exc:
        return exc
    return found


def _getaddrinfo(host: str) -> list[str]:
    """getaddrinfo in the executor's thread. Out of descriptors, glibc says EAI_SYSTEM (EMFILE) or, by
    the state of its NSS modules, EAI_NONAME: a false NXDOMAIN. So a gaierror at a moment when this
    thread cannot open a socket either is the node's limit, raised as such."""
    try:
        return [str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)]
    except socket.gaierror as exc:
        if (shortage := local_shortage()) is not None:
            raise shortage from exc
        raise


async def _direct(spec: Spec, servers: tuple[str, ...], trace: Trace,
                  pinned: frozenset[str] = frozenset()) -> list[_Answer]:
    """Ask every resolver, then once more each that answered cheaply (over UDP: one small
    datagram each way), so a server that flaps between answers shows. With the system path off,
    the answers decide here, inside the phase."""
    with trace.phase("direct"):
        answers = list(await asyncio.gather(*(_ask(s, spec.host, spec.query_timeout) for s in servers)))
        chains = [a.cname_chain for a in answers if a.rcode is not None]
        trace.note(servers=[a.fact() for a in answers], cname_chain=list(chains[0]) if chains else [])
        cheap = [a for a in answers if a.rcode in ANSWERED and not a.tcp]
        again = await asyncio.gather(*(_ask(a.server, spec.host, spec.query_timeout, tcp=False) for a in cheap))
        _note_disagreement(trace, spec, _dns_word(answers, pinned),
                           {a.server: b for a, b in zip(cheap, again, strict=True)})
        if not spec.system:
            found = ordered(address for a in answers for address in a.answers)
            if not found:
                raise _failure(answers) or ProbeError(Reason.DNS_TIMEOUT, _summary(answers))
            _accept(spec, found, trace, [a.cname_chain for a in answers])
    return answers


def _note_disagreement(trace: Trace, spec: Spec, answers: list[_Answer], again: dict[str, _Answer]) -> None:
    """Note `disagreement` when the servers that answered (NOERROR or NXDOMAIN: a stub moves on
    from SERVFAIL, REFUSED and silence, so those never answer for the name) say different things,
    or one says something else when asked again: each such server with what it said (twice when
    it flapped). A stub picks among its servers (on a timeout, with `options rotate`, and
    systemd-resolved on any failure), so a different answer is one the node will sometimes get."""
    exact = spec.expect == "private" or bool(spec.expect_addresses)
    said: dict[str, list[_Answer]] = {}
    for answer in answers:
        if answer.rcode in ANSWERED:
            second = again.get(answer.server)
            flapped = second is not None and second.rcode in ANSWERED and second.key(exact) != answer.key(exact)
            said[answer.server] = [answer, second] if flapped and second is not None else [answer]
    if len({a.key(exact) for views in said.values() for a in views}) > 1:
        trace.note(disagreement=[{"server": server, "said": [a.view() for a in views]}
                                 for server, views in said.items()])


def _accept(spec: Spec, found: list[str], trace: Trace, chains: list[tuple[str, ...]]) -> None:
    """Check the answer against the spec; when it holds, pass the addresses downstream: IPv4
    when there is any (Azure endpoints are IPv4), else IPv6."""
    private: list[Fact] = [a for a in found if is_private(a)]
    public: list[Fact] = [a for a in found if not is_private(a)]
    trace.note(private_addresses=private, public_addresses=public)
    link = _private_link(spec, chains)
    if spec.private_link_label:
        trace.note(private_link=link)
    if public and (spec.expect == "private" or link):
        shown = f"{spec.host} resolves to public {', '.join(map(str, public))}"
        if spec.expect != "private":
            why = (f", but its CNAME chain enters {link}: it has a private endpoint (detected from the CNAME "
                   "chain), so a private address is required")
        elif not spec.private_link_label:
            why = ", a private address is required"
        elif link:
            why = (f", a private address is required (its CNAME chain enters {link}: the private endpoint "
                   "exists, its private answer does not reach this node)")
        else:
            why = (", a private address is required (no CNAME into a privatelink zone: public DNS shows no "
                   "private endpoint for it)")
        raise ProbeError(Reason.DNS_PUBLIC_ANSWER, shown + why)
    if spec.expect == "public" and private:
        raise ProbeError(Reason.DNS_WRONG_ADDRESS,
                         f"{spec.host} resolves to private {', '.join(map(str, private))}, "
                         "a public address is expected")
    expected = {ipaddress.ip_address(a) for a in spec.expect_addresses}
    stray = [a for a in found if expected and ipaddress.ip_address(a.partition("%")[0]) not in expected]
    if stray:
        raise ProbeError(Reason.DNS_WRONG_ADDRESS, f"{spec.host} resolves to {', '.join(stray)}, "
                         f"expected {', '.join(spec.expect_addresses)}")
    v4 = [a for a in found if ":" not in a]
    for address in v4 or found:
        trace.passed(address)


def _private_link(spec: Spec, chains: list[tuple[str, ...]]) -> str | None:
    """The first name of a CNAME chain that carries the spec's private link label."""
    label = spec.private_link_label
    return next((name for chain in chains for name in chain if label and label in name.lower().split(".")), None)


def _failure(answers: list[_Answer]) -> ProbeError | None:
    """The most specific reason the direct answers give, in a fixed order of precedence."""
    if not answers:
        return ProbeError(Reason.DNS_NO_RESOLVER, "no resolver is configured on this node")
    if all(a.error and a.error.startswith("invalid") for a in answers):
        return ProbeError(Reason.DNS_NO_RESOLVER, f"no usable resolver: {_summary(answers)}")
    summary = _summary(answers)
    rcodes = {a.rcode for a in answers}
    if "NXDOMAIN" in rcodes:
        return ProbeError(Reason.DNS_NXDOMAIN, summary)
    if any(a.rcode == "NOERROR" and not a.answers for a in answers):
        return ProbeError(Reason.DNS_NODATA, summary)
    for rcode, reason in (("SERVFAIL", Reason.DNS_SERVFAIL), ("REFUSED", Reason.DNS_REFUSED)):
        if rcode in rcodes:
            return ProbeError(reason, summary)
    if any(a.error and a.error.startswith("local") for a in answers):
        return ProbeError(Reason.LOCAL_RESOURCE_LIMIT, f"not every question could be sent from this node: {summary}")
    if all(a.error == "timeout" for a in answers):
        return ProbeError(Reason.DNS_TIMEOUT, summary)
    if all(a.error and a.error.startswith("unreachable") for a in answers):
        return ProbeError(Reason.DNS_SERVER_UNREACHABLE, summary)
    return None


def _summary(answers: list[_Answer]) -> str:
    return "; ".join(f"{a.server}: {a.rcode or a.error}" for a in answers)


def _note_consistency(trace: Trace, resolved: list[bool]) -> None:
    trace.note(inconsistent=len(set(resolved)) > 1)


def _pins(path: Path, host: str) -> list[_Pin]:
    """The hosts-file lines naming host, parsed as glibc's files module does: `#` starts a
    comment, an address then any number of names, names compared without regard to case but
    otherwise exactly (a trailing dot is significant: `name.` in the file answers only `name.`).
    An unreadable file pins nothing (the system path then reads it no better)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    wanted = host.lower()
    pins: list[_Pin] = []
    for number, line in enumerate(lines, 1):
        address, *names = line.partition("#")[0].split() or [""]
        if is_ip(address) and wanted in (n.lower() for n in names):
            pins.append(_Pin(number, line.strip(), address))
    return pins


def _dns_word(answers: list[_Answer], pinned: frozenset[str]) -> list[_Answer]:
    """The answers that are DNS's own: not those that give exactly the hosts file's addresses,
    as a local stub that serves the file does (systemd-resolved, dnsmasq), unless all do."""
    own = [a for a in answers if not pinned or {_canonical(x) for x in a.answers} != pinned]
    return own or answers


def _note_override(trace: Trace, path: str, pins: list[_Pin], system: list[str], answers: list[_Answer]) -> None:
    """Note `hosts_override` when the system path answered from the hosts file (every address it
    gave is pinned there) and DNS, which answered, gives other addresses: the line, the address
    it pins, what DNS says and the nsswitch `hosts:` order that put the file first. The system
    path's own answer decides whether the file was read first (with `hosts: dns files` it gives
    DNS's addresses), so nsswitch.conf is read only to explain it."""
    pinned = {_canonical(p.address) for p in pins}
    dns_says = ordered(address for a in answers if a.rcode == "NOERROR" for address in a.answers)
    used = {_canonical(a) for a in system}
    if not used or not used <= pinned or not dns_says or used <= {_canonical(a) for a in dns_says}:
        return
    trace.note(hosts_override={
        "file": path,
        "lines": [{"line": p.line, "text": p.text, "address": p.address} for p in pins
                  if _canonical(p.address) in used],
        "dns": [*dns_says], "nsswitch": _nsswitch_hosts()})


def _nsswitch_hosts() -> str | None:
    """The `hosts:` line of nsswitch.conf ("files dns"): read only when there is an override to explain."""
    try:
        lines = NSSWITCH.read_text(errors="replace").splitlines()
    except OSError:
        return None
    return next((" ".join(line.partition("#")[0].split()[1:]) for line in lines
                 if line.strip().startswith("hosts:")), None)


def _canonical(address: str) -> str:
    return str(ipaddress.ip_address(address.partition("%")[0]))


def _sort_key(address: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(address.partition("%")[0])
    return ip.version, int(ip)


async def _ask(server: str, host: str, timeout: float, *, tcp: bool = True) -> _Answer:
    """A and AAAA from one server; tcp=False (the re-ask) takes no second window for a truncated
    answer: it has no rcode, so it is compared with nothing."""
    address, port = split_hostport(server, 53)
    if not is_ip(address):  # a name here would make the socket resolve it, through DNS, blocking
        return _Answer(server, None, "invalid: not an IP address", (), (), None)
    a, aaaa = await asyncio.gather(*(_query(host, rdtype, address, port, timeout, tcp=tcp)
                                     for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)))
    local = next((q.error for q in (a, aaaa) if q.error and q.error.startswith("local")), None)
    responses = [q.response for q in (a, aaaa) if q.response is not None]
    if not responses:
        return _Answer(server, None, local or a.error or aaaa.error, (), (), None)
    rcodes = [dns.rcode.to_text(r.rcode()) for r in responses]
    rcode = next((c for c in ("NXDOMAIN", "NOERROR") if c in rcodes), rcodes[0])
    found = ordered(rdata.to_text() for r in responses for rrset in r.answer
                    if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) for rdata in rrset)
    chain = next((c for c in map(_cname_chain, responses) if c), ())
    if local and rcode == "NOERROR" and not found:  # the other question never left the node: not NODATA
        return _Answer(server, None, local, (), chain, None)
    rtt = max(q.rtt_ms for q in (a, aaaa) if q.response is not None)
    return _Answer(server, rcode, None, tuple(found), chain, rtt, a.tcp or aaaa.tcp)


async def _query(host: str, rdtype: dns.rdatatype.RdataType, address: str, port: int,
                 timeout: float, *, tcp: bool = True) -> _Query:
    """One question over UDP on our own connected socket (so a closed port shows as unreachable,
    not as a timeout), then over TCP if the answer was truncated (tcp=False: no answer then)."""
    query = dns.message.make_query(host, rdtype)
    start = time.monotonic()
    try:
        sent = await exchange(address, port, query.to_wire(), attempts=1, interval=timeout)
        if sent.error is not None:
            raise sent.error
        if sent.reply is None:
            return _Query(None, "timeout", since_ms(start))
        response = dns.message.from_wire(sent.reply)
        if not query.is_response(response):
            raise dns.exception.FormError(  # type: ignore[no-untyped-call]
                "the reply does not answer the query")
        if response.flags & dns.flags.TC:
            if not tcp:
                return _Query(None, "truncated", since_ms(start))
            from dns import asyncquery  # for a truncated answer only (about 20 ms of import every run otherwise)

            response = await asyncquery.tcp(query, address, timeout=timeout, port=port)
            return _Query(response, None, since_ms(start), tcp=True)
        if sent.rtt is not None:  # the reply's arrival as the kernel stamped it: the resolver's time, not the loop's
            return _Query(response, None, ms(sent.rtt))
    except dns.exception.Timeout:
        return _Query(None, "timeout", since_ms(start))
    except OSError as exc:  # a socket the node could not open or send on is not an unreachable server
        kind = "local" if local_limit(exc) else "unreachable"
        return _Query(None, f"{kind}: {errno_name(exc) or exc}", since_ms(start))
    except dns.exception.DNSException as exc:
        return _Query(None, f"bad response: {exc}", since_ms(start))
    return _Query(response, None, since_ms(start))


def _cname_chain(response: dns.message.Message) -> tuple[str, ...]:
    """The CNAMEs followed from the question name; present even in an NXDOMAIN response, which
    is how a privatelink CNAME into a zone without the record shows up."""
    chain: list[str] = []
    name = response.question[0].name
    while (rrset := next((r for r in response.answer if r.name == name
                          and r.rdtype == dns.rdatatype.CNAME), None)) is not None:
        name = rrset[0].target
        chain.append(name.to_text(omit_final_dot=True))
        if len(chain) > 16:  # a CNAME loop: the resolver would have cut it too
            break
    return tuple(chain)
