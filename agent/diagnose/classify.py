"""Which problem each result shows: the root-cause rules that claim results first, the mapping
of one failing result to a finding code and a group key, and the cascades that move a result to
the finding of its cause. Rules key on requirement ids and catalog fields, never on ports or
host names; results are indexed once, so diagnosis stays linear in the number of checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.catalog import IMDS, MSI, SMB_SHARE
from agent.diagnose.facts import Facts
from agent.diagnose.findings import Code, latency_path
from agent.model import CheckPath, Result, Unneeded
from agent.platform import PRIVATELINK_LABEL
from probes._net import is_private
from probes._trace import Fact
from probes.reasons import Reason, Status
from probes.specs import DnsSpec, Layer, LocalSpec

DNS_UNAVAILABLE = {Reason.DNS_TIMEOUT, Reason.DNS_SERVER_UNREACHABLE, Reason.DNS_NO_RESOLVER, Reason.DNS_REFUSED}
REJECTED = {Reason.TCP_REFUSED, Reason.TCP_HOST_UNREACHABLE, Reason.TCP_ADMIN_PROHIBITED,
            Reason.TCP_RESET, Reason.TCP_CLOSED, Reason.TLS_RESET, Reason.HTTP_FIREWALL_DENIED}
BLOCKED = {Reason.TCP_TIMEOUT, Reason.TCP_NET_UNREACHABLE}
TLS_UNTRUSTED = {Reason.TLS_UNTRUSTED, Reason.TLS_SELF_SIGNED}
TLS_INVALID = {Reason.TLS_NAME_MISMATCH, Reason.TLS_EXPIRED, Reason.TLS_NOT_YET_VALID,
               Reason.TLS_PROTOCOL_MISMATCH, Reason.TLS_HANDSHAKE}
SMB_UNANSWERED = {Reason.SMB_NO_NEGOTIATE_REPLY, Reason.SMB_CLOSED, Reason.SMB_NOT_SMB, Reason.SMB_SMB1_ONLY,
                  Reason.SMB_INVALID_REPLY, Reason.SMB_ERROR_STATUS}  # TCP 445 connected, SMB did not get through
WS_BLOCKED = {Reason.WS_UPGRADE_REFUSED, Reason.WS_UPGRADE_INVALID, Reason.WS_CLOSED_EARLY}
LOCAL_CODES = {"listening": Code.INBOUND_PORT_CLOSED, "firewall-inbound": Code.LOCAL_FIREWALL_BLOCKS,
               "firewall-platform": Code.LOCAL_FIREWALL_BLOCKS, "os": Code.UNSUPPORTED_OS,
               "docker-bridge": Code.DOCKER_BRIDGE_OVERLAP}
PROXY_CODES = {Reason.PROXY_AUTH_REQUIRED: Code.PROXY_AUTH_REQUIRED, Reason.PROXY_DENIED: Code.PROXY_DENIED,
               Reason.PROXY_UPSTREAM_FAILED: Code.PROXY_DENIED, Reason.PROXY_UNREACHABLE: Code.PROXY_UNREACHABLE}
CLOCK_TOLERANCE_S = 300.0  # Microsoft Entra ID accepts tokens about five minutes off; TLS less kindly
CLOCK_TLS = {Reason.TLS_NOT_YET_VALID, Reason.TLS_EXPIRED}


@dataclass(frozen=True, slots=True)
class Problem:
    code: Code
    key: tuple[str, ...]
    result: Result


class Index:
    """The results looked up by what the rules ask: built once per diagnosis."""

    def __init__(self, results: Sequence[Result]) -> None:
        self.results = results
        self.by_id = {r.check.id: r for r in results}
        self.passing_direct = {(r.check.layer, r.check.host, r.check.port) for r in results
                               if r.check.path is CheckPath.DIRECT and r.status is Status.PASS}
        # requirement id -> addresses its passing direct dns checks returned (the proxy's own name
        # carries every proxied requirement: its address is nobody's endpoint)
        self.resolved: dict[str, set[str]] = {}
        self.answered_public: set[str] = set()  # requirement ids whose names resolve public, not private
        for r in results:
            if r.check.layer is not Layer.DNS or r.check.path is not CheckPath.DIRECT:
                continue
            if r.status is Status.PASS:
                for rid in r.check.requirements:
                    self.resolved.setdefault(rid, set()).update(r.addresses)
            elif r.reason is Reason.DNS_PUBLIC_ANSWER:
                self.answered_public.update(r.check.requirements)

    def public_target(self, result: Result) -> bool:
        """The check's target resolved (its dns check passed) to public addresses only."""
        dns = self.by_id.get(result.check.needs) if result.check.needs else None
        if dns is None or dns.status is not Status.PASS or not dns.addresses:
            return False
        return not any(is_private(a) for a in dns.addresses)


def unneeded(results: Sequence[Result]) -> dict[str, Unneeded]:
    """Direct checks of endpoints Azure ML reaches through the configured proxy: their failures
    are not problems (a proxy-only network drops direct egress on purpose), and the proxy
    resolves those names, so their DNS does not matter either unless another port is direct."""
    proxied = {(r.check.host, r.check.port) for r in results if r.check.path is CheckPath.PROXY}
    if not proxied:
        return {}
    direct_ports = {r.check.host for r in results if r.check.path is CheckPath.DIRECT and r.check.port is not None
                    and (r.check.host, r.check.port) not in proxied}
    proxied_hosts = {host for host, _ in proxied} - direct_ports
    judged: dict[str, Unneeded] = {}
    for r in results:
        if r.check.path is not CheckPath.DIRECT:
            continue
        if (r.check.host, r.check.port) in proxied:
            judged[r.check.id] = Unneeded.PROXIED
        elif r.check.layer is Layer.DNS and r.check.host in proxied_hosts:
            judged[r.check.id] = Unneeded.PROXY_RESOLVES
    return judged


def clock_skew(results: Sequence[Result], index: Index) -> list[Problem]:
    """The node clock is wrong when servers' Date headers say so, or when certificates from many
    endpoints all look not yet valid (or all expired) at once: then those TLS failures are the
    clock's, not the endpoints'."""
    skewed = [r for r in results if isinstance(skew := r.evidence.get("clock_skew_s"), (int, float))
              and abs(skew) > CLOCK_TOLERANCE_S]
    by_reason = {reason: [r for r in results if r.reason is reason and r.status is Status.FAIL]
                 for reason in CLOCK_TLS}
    tls = max(by_reason.values(), key=len)
    if not skewed and len({r.check.host for r in tls}) < 3:
        return []
    return [Problem(Code.CLOCK_SKEW, (), r) for r in [*skewed, *tls]]


def no_outbound(results: Sequence[Result], index: Index) -> list[Problem]:
    """Every connection to a public address fails while names resolve: no route out at all
    (no-public-IP compute without a NAT gateway or a firewall route), not one missing rule."""
    public = [r for r in results if r.check.path is CheckPath.DIRECT and r.check.layer in (Layer.TCP, Layer.UDP)
              and index.public_target(r)]
    failed = [r for r in public if r.status is Status.FAIL and (
        r.reason in BLOCKED or r.reason in REJECTED or r.reason in (Reason.UDP_CLOSED, Reason.UDP_PROHIBITED))]
    if any(r.status is Status.PASS for r in public) or len({r.check.host for r in failed}) < 3:
        return []
    return [Problem(Code.NO_OUTBOUND_CONNECTIVITY, (), r) for r in failed]


ROOT_CAUSE_RULES: tuple[Callable[[Sequence[Result], Index], list[Problem]], ...] = (clock_skew, no_outbound)


# The node got one of the answers its resolvers disagree on, and connected where that one says:
# a connection's failure is not the disagreement's (it has a finding of its own).
NO_CASCADE = frozenset({Code.DNS_RESOLVERS_DISAGREE})


def with_cascades(problems: list[Problem]) -> list[Problem]:
    """A name that resolves to the wrong address (a hosts-file line, the instance's own address,
    IPv6 only) makes every connection the node makes to it fail too: those failures belong to the
    DNS finding, not to findings of their own. Through the proxy, the proxy resolves the name."""
    wrong = {p.result.check.host: p for p in problems
             if p.result.check.layer is Layer.DNS and p.result.status is Status.PASS and p.code not in NO_CASCADE}
    return [Problem(wrong[p.result.check.host].code, wrong[p.result.check.host].key, p.result)
            if p.result.check.layer is not Layer.DNS and p.result.check.path is not CheckPath.PROXY
            and p.result.check.host in wrong else p for p in problems]


def problems(result: Result, index: Index, facts: Facts) -> list[Problem]:
    """The problem(s) one result shows; cross-result rules read the index for comparisons."""
    check = result.check
    reason = result.reason
    if result.status is Status.PASS and check.layer is Layer.DNS:
        if (cause := _dns_cause(result)) is not None:
            return [Problem(cause, (), result)]
        return _ipv6_only_problem(result, facts) or _instance_address_problem(result, index, facts)
    if result.status not in (Status.FAIL, Status.WARN) or reason is None:
        return []
    if isinstance(check.spec, LocalSpec):
        return [Problem(LOCAL_CODES.get(check.spec.check, Code.ENDPOINT_UNREACHABLE), (), result)]
    if IMDS in check.requirements:  # one finding with what detection saw of it
        return [Problem(Code.IMDS_UNAVAILABLE, (), result)]
    if MSI in check.requirements:  # on the instance itself: no network rule is in the way
        return [Problem(Code.IDENTITY_ENDPOINT_UNAVAILABLE, (), result)]
    if check.path is CheckPath.TO_PROXY:
        return [Problem(Code.PROXY_UNREACHABLE, (), result)]
    if check.path is CheckPath.PROXY and result.status is Status.FAIL \
            and (check.layer, check.host, check.port) in index.passing_direct:  # a warned path still works
        return [Problem(Code.PROXY_BYPASS_REQUIRED, (), result)]
    if check.layer is Layer.DNS:
        return [_dns_problem(result, index, facts)]
    if reason in PROXY_CODES:
        return [Problem(PROXY_CODES[reason], (), result)]
    if reason is Reason.HTTP_RESOURCE_DENIED:
        return [Problem(Code.RESOURCE_FIREWALL_DENIED, (), result)]
    if reason is Reason.HTTP_IDENTITY_DENIED:
        return [Problem(Code.IDENTITY_ACCESS_DENIED, (), result)]
    if reason is Reason.SMB_DIALECT_OLD:
        return [Problem(Code.SMB_DIALECT_OLD, (), result)]
    if SMB_SHARE in check.requirements and (reason in BLOCKED or reason in REJECTED or reason in SMB_UNANSWERED):
        return [Problem(Code.SMB_BLOCKED, (), result)]
    if check.layer is Layer.UDP and reason in (Reason.UDP_CLOSED, Reason.UDP_PROHIBITED):
        return [Problem(Code.UDP_BLOCKED, (str(check.port),), result)]
    if reason in BLOCKED:
        return [Problem(Code.EGRESS_BLOCKED, (facts.tag(result), check.protocol, str(check.port)), result)]
    if reason in REJECTED:
        return [Problem(Code.EGRESS_REJECTED, (facts.tag(result), check.protocol, str(check.port)), result)]
    if reason in TLS_UNTRUSTED:
        return [Problem(Code.TLS_INTERCEPTED_UNTRUSTED, (_issuing_ca(result),), result)]
    if reason is Reason.TLS_UNEXPECTED_ISSUER:
        return [Problem(Code.TLS_INTERCEPTED, (_issuing_ca(result),), result)]
    if reason is Reason.TLS_TIMEOUT:  # the server's flight lost: the vantage's MTU, if above the host's
        return [Problem(Code.VANTAGE_MTU_ABOVE_HOST if facts.vantage_mtu_excess else Code.TLS_HANDSHAKE_STALLED,
                        (), result)]
    if reason in TLS_INVALID:
        return [Problem(Code.TLS_CERTIFICATE_INVALID, (reason.value,), result)]
    if reason in WS_BLOCKED:
        return [Problem(Code.WEBSOCKET_BLOCKED, (), result)]
    return [Problem(Code.ENDPOINT_UNREACHABLE, (reason.value,), result)]


def latency_problem(result: Result) -> Problem:
    """A check that worked, slowly (agent/latency.py): one finding per path it took."""
    return Problem(Code.LATENCY_DEGRADED, (latency_path(result),), result)


def _endpoint_of(result: Result, facts: Facts) -> str | None:
    """The requirement whose resolved addresses this name must share (the catalog's pe_address),
    when the name must resolve privately: a compute instance name and the workspace endpoint."""
    if not (isinstance(result.check.spec, DnsSpec) and result.check.spec.expect == "private"):
        return None
    rows = facts.catalog.requirements_by_id
    return next((row.pe_address for rid in result.check.requirements
                 if (row := rows.get(rid)) is not None and row.pe_address), None)


def _dns_cause(result: Result) -> Code | None:
    """The cause a DNS check's own comparisons name, whether it passed or failed: a hosts-file line
    the system path answered from while DNS says otherwise, then resolvers that disagree (the
    node resolves the name one way or the other by which server it asks). Either explains the
    answer the node got, so it comes before the rules that judge that answer."""
    if isinstance(result.evidence.get("hosts_override"), dict):
        return Code.HOSTS_FILE_OVERRIDE
    if result.evidence.get("disagreement"):
        return Code.DNS_RESOLVERS_DISAGREE
    return None


def _dns_problem(result: Result, index: Index, facts: Facts) -> Problem:
    if (cause := _dns_cause(result)) is not None:
        return Problem(cause, (), result)
    reason = result.reason
    endpoint = _endpoint_of(result, facts)
    # A name that resolves public while the endpoint it must share resolves public too is the same
    # cause (the zone is not linked, or the custom server does not forward): that finding, not this.
    if reason is Reason.DNS_WRONG_ADDRESS or (reason is Reason.DNS_PUBLIC_ANSWER and endpoint
                                              and endpoint not in index.answered_public
                                              and not facts.custom_dns):
        return Problem(Code.INSTANCE_NAME_WRONG_ADDRESS, (), result)
    # One finding per cause, not per zone: the remedy lists every zone that needs the change.
    if reason is Reason.DNS_PUBLIC_ANSWER:
        code = Code.CUSTOM_DNS_NOT_FORWARDING if facts.custom_dns else Code.PRIVATE_ENDPOINT_RESOLVES_PUBLIC
        return Problem(code, (), result)
    if reason is Reason.DNS_NXDOMAIN and _into_private_zone(result):
        return Problem(Code.PRIVATE_DNS_RECORD_MISSING, (), result)
    if reason in (Reason.DNS_NXDOMAIN, Reason.DNS_NODATA):
        return Problem(Code.DNS_NAME_MISSING, (), result)
    if reason is Reason.DNS_SERVFAIL:
        return Problem(Code.DNS_SERVFAIL, (), result)
    if reason in DNS_UNAVAILABLE:
        return Problem(Code.DNS_UNAVAILABLE, (), result)
    return Problem(Code.ENDPOINT_UNREACHABLE, (reason.value if reason else "",), result)


def _into_private_zone(result: Result) -> bool:
    """The CNAME chain enters a private link zone (every one is privatelink.<service zone>)."""
    return any(PRIVATELINK_LABEL in name.lower().split(".") for name in _strings(result.evidence.get("cname_chain")))


def _ipv6_only_problem(result: Result, facts: Facts) -> list[Problem]:
    """A name that resolves to IPv6 addresses only, on a node with no IPv6 route: nothing can
    connect to it, whatever the network allows (the connections cascade to this finding)."""
    if result.addresses and facts.ipv4_only and all(":" in a for a in result.addresses):
        return [Problem(Code.DNS_NO_IPV4_ADDRESS, (), result)]
    return []


def _instance_address_problem(result: Result, index: Index, facts: Facts) -> list[Problem]:
    """A name whose catalog row says `pe_address` must resolve to the addresses of that
    requirement's own name (a compute instance name: the workspace private endpoint)."""
    endpoint = _endpoint_of(result, facts)
    if endpoint is None:
        return []
    expected = index.resolved.get(endpoint, set())
    if not expected or set(result.addresses) & expected:
        return []
    return [Problem(Code.INSTANCE_NAME_WRONG_ADDRESS, (), result)]


def _strings(value: Fact) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _issuing_ca(result: Result) -> str:
    """Who signed the presented certificate: every leaf an inspecting proxy mints differs, the
    CA behind them is one (its key identifier where the certificate names it, else its name)."""
    cert = result.evidence.get("cert")
    if not isinstance(cert, dict):
        return ""
    return str(cert.get("issuer_key_id") or cert.get("issuer") or "")

