"""Diagnosis: results, context and node facts in, findings out. Pure: no I/O, no clock.

Each failing result is mapped to a finding code and a group key; results that share a code and a
key are one problem (one NSG rule, one DNS zone, one intercepting CA) and become one finding that
lists every target it explains. Checks skipped because the layer below failed are never findings
of their own: the failure below is the finding. Findings are ranked: critical first, then the
one that explains the most checks."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from agent.catalog import Catalog
from agent.inputs.context import Context
from agent.model import Finding, Result, Severity
from probes._trace import Fact
from probes.dns import is_private
from probes.reasons import Reason, Status
from probes.specs import DnsSpec, Layer, LocalSpec

AZURE_DNS = "168.63.129.16"
MAX_DOCS = 4

_DOCS = {
    "training-vnet": "https://learn.microsoft.com/azure/machine-learning/how-to-secure-training-vnet",
    "firewall": "https://learn.microsoft.com/azure/machine-learning/how-to-access-azureml-behind-firewall",
    "custom-dns": "https://learn.microsoft.com/azure/machine-learning/how-to-custom-dns",
    "pe-troubleshoot": "https://learn.microsoft.com/azure/machine-learning/how-to-troubleshoot-secure-connection-workspace",
    "private-link": "https://learn.microsoft.com/azure/machine-learning/how-to-configure-private-link",
    "jupyter": "https://learn.microsoft.com/azure/machine-learning/how-to-run-jupyter-notebooks#troubleshooting",
    "azure-dns": "https://learn.microsoft.com/azure/virtual-network/what-is-ip-address-168-63-129-16",
}

_DNS_UNAVAILABLE = {Reason.DNS_TIMEOUT, Reason.DNS_SERVER_UNREACHABLE, Reason.DNS_NO_RESOLVER,
                    Reason.DNS_REFUSED}
_REJECTED = {Reason.TCP_REFUSED, Reason.TCP_HOST_UNREACHABLE, Reason.TCP_ADMIN_PROHIBITED,
             Reason.TCP_RESET, Reason.TCP_CLOSED, Reason.TLS_RESET, Reason.HTTP_FIREWALL_DENIED}
_BLOCKED = {Reason.TCP_TIMEOUT, Reason.TCP_NET_UNREACHABLE}
_TLS_UNTRUSTED = {Reason.TLS_UNTRUSTED, Reason.TLS_SELF_SIGNED}
_TLS_INVALID = {Reason.TLS_NAME_MISMATCH, Reason.TLS_EXPIRED, Reason.TLS_NOT_YET_VALID,
                Reason.TLS_PROTOCOL_MISMATCH, Reason.TLS_HANDSHAKE}
_WS_BLOCKED = {Reason.WS_UPGRADE_REFUSED, Reason.WS_UPGRADE_INVALID, Reason.WS_CLOSED_EARLY}
_LOCAL_CODES = {"listening": "inbound-port-closed", "firewall-inbound": "local-firewall-blocks",
                "firewall-platform": "local-firewall-blocks", "os": "unsupported-os",
                "docker-bridge": "docker-bridge-overlap"}
_PROXY = {Reason.PROXY_AUTH_REQUIRED: "proxy-auth-required", Reason.PROXY_DENIED: "proxy-denied",
          Reason.PROXY_UPSTREAM_FAILED: "proxy-denied", Reason.PROXY_UNREACHABLE: "proxy-unreachable"}


@dataclass(frozen=True, slots=True)
class Facts:
    """What the rules may read besides the results."""

    catalog: Catalog
    context: Context
    node: Mapping[str, Fact]

    @property
    def resolvers(self) -> tuple[str, ...]:
        value = self.node.get("resolvers")
        return tuple(str(v) for v in value) if isinstance(value, list) else ()

    @property
    def custom_dns(self) -> tuple[str, ...]:
        """Resolvers in use that are not Azure DNS (the systemd stub is looked through)."""
        return tuple(r for r in self.resolvers if r != AZURE_DNS and not r.startswith("127."))

    def tag(self, result: Result) -> str:
        tags = {self.catalog.by_id(r).service_tag for r in result.check.requirements}
        region = str(self.context["region"].value or "<region>")
        return ", ".join(sorted(t.replace("{region}", region) for t in tags if t))

    def rule_fqdns(self, results: Sequence[Result]) -> str:
        values = {k: str(v.value) for k, v in self.context.items() if v.value is not None}
        names: list[str] = []
        for result in results:
            for rid in result.check.requirements:
                for pattern in filter(None, (p.strip() for p in self.catalog.by_id(rid).rule_fqdn.split(","))):
                    try:
                        name = pattern.format(**values)
                    except KeyError:
                        name = pattern
                    if name not in names:
                        names.append(name)
        return ", ".join(names) or ", ".join(dict.fromkeys(r.check.host for r in results))

    def docs(self, results: Sequence[Result], *extra: str) -> tuple[str, ...]:
        """The finding's own articles first, then each requirement's main one: at most MAX_DOCS."""
        links = [_DOCS[e] for e in extra]
        for result in results:
            for rid in result.check.requirements:
                links.extend(self.catalog.by_id(rid).docs[:1])
        return tuple(dict.fromkeys(links))[:MAX_DOCS]

    def situational_only(self, results: Sequence[Result]) -> bool:
        return all(self.catalog.by_id(rid).situational for r in results for rid in r.check.requirements)


@dataclass(frozen=True, slots=True)
class _Problem:
    code: str
    key: tuple[str, ...]
    result: Result


Builder = Callable[[Sequence[Result], Facts], Finding]


def diagnose(results: Sequence[Result], facts: Facts) -> tuple[Finding, ...]:
    considered = [r for r in results if r.check.id not in unused_direct_paths(results)]
    problems: list[_Problem] = []
    for rule in _ROOT_CAUSE_RULES:  # a root cause claims the results it explains, first rule first
        claimed = rule(considered)
        problems += claimed
        taken = {p.result.check.id for p in claimed}
        considered = [r for r in considered if r.check.id not in taken]
    problems += [p for r in considered for p in _problems(r, results, facts)]
    problems = _with_cascades(problems)
    groups: dict[tuple[str, tuple[str, ...]], list[Result]] = {}
    for problem in problems:
        groups.setdefault((problem.code, problem.key), []).append(problem.result)
    findings = [_BUILDERS[code](group, facts) for (code, _), group in groups.items()]
    findings += [f for rule in _NODE_RULES if (f := rule(facts))]
    return tuple(sorted(findings, key=lambda f: (-f.severity, -len(f.checks), f.code)))


def _imds_unavailable(facts: Facts) -> Finding | None:
    """Detection could not read IMDS: a warning only when that left the region unknown (then
    region-specific checks were skipped); otherwise the context came from elsewhere."""
    detection = facts.node.get("detection")
    imds = detection.get("imds") if isinstance(detection, dict) else None
    if not isinstance(imds, dict) or "error" not in imds:
        return None
    region_unknown = facts.context["region"].value is None
    return Finding(
        code="imds-unavailable", severity=Severity.WARNING if region_unknown else Severity.INFO,
        summary="Instance metadata (IMDS, 169.254.169.254) could not be read"
        + ("; the region is unknown, so region-specific checks were skipped" if region_unknown else ""),
        cause=f"{imds['error']}. Region, cloud and public IP were taken from options, the config file or defaults.",
        remedy=("Allow the node to reach 169.254.169.254:80 directly (never through a proxy: add it to NO_PROXY) "
                "and make sure no local firewall rule blocks it; or give --region, --cloud and "
                "--public-ip/--no-public-ip."),
        targets=("169.254.169.254:80/tcp",), checks=(),
        docs=("https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service",))


_NODE_RULES: tuple[Callable[[Facts], Finding | None], ...] = (_imds_unavailable,)


CLOCK_TOLERANCE_S = 300.0  # Microsoft Entra ID accepts tokens about five minutes off; TLS less kindly
_CLOCK_TLS = {Reason.TLS_NOT_YET_VALID, Reason.TLS_EXPIRED}


def _clock_skew(results: Sequence[Result]) -> list[_Problem]:
    """The node clock is wrong when servers' Date headers say so, or when certificates from many
    endpoints all look not yet valid (or all expired) at once: then those TLS failures are the
    clock's, not the endpoints'."""
    skewed = [r for r in results if isinstance(skew := r.evidence.get("clock_skew_s"), (int, float))
              and abs(skew) > CLOCK_TOLERANCE_S]
    by_reason = {reason: [r for r in results if r.reason is reason and r.status is Status.FAIL]
                 for reason in _CLOCK_TLS}
    tls = max(by_reason.values(), key=len)
    if not skewed and len({r.check.host for r in tls}) < 3:
        return []
    return [_Problem("clock-skew", (), r) for r in [*skewed, *tls]]


def _no_outbound(results: Sequence[Result]) -> list[_Problem]:
    """Every connection to a public address fails while names resolve: no route out at all
    (no-public-IP compute without a NAT gateway or a firewall route), not one missing rule."""
    public = [r for r in results if r.check.path == "direct" and r.check.layer in (Layer.TCP, Layer.UDP)
              and _public_target(r, results)]
    failed = [r for r in public if r.status is Status.FAIL and (r.reason in _BLOCKED or r.reason in _REJECTED
                                                                or r.reason in (Reason.UDP_CLOSED, Reason.UDP_PROHIBITED))]
    if any(r.status is Status.PASS for r in public) or len({r.check.host for r in failed}) < 3:
        return []
    return [_Problem("no-outbound-connectivity", (), r) for r in failed]


def _public_target(result: Result, results: Sequence[Result]) -> bool:
    """The check's target resolved (dns passed) to public addresses only."""
    dns = next((r for r in results if r.check.id == result.check.needs), None)
    if dns is None or dns.status is not Status.PASS or not dns.addresses:
        return False
    return not any(is_private(a) for a in dns.addresses)


_ROOT_CAUSE_RULES: tuple[Callable[[Sequence[Result]], list[_Problem]], ...] = (_clock_skew, _no_outbound)


def _with_cascades(problems: list[_Problem]) -> list[_Problem]:
    """A name that resolves to the wrong address makes every connection to it fail too: those
    failures belong to the DNS finding, not to findings of their own."""
    wrong = {p.result.check.host: p for p in problems
             if p.result.check.layer is Layer.DNS and p.result.status is Status.PASS}
    return [_Problem(wrong[p.result.check.host].code, wrong[p.result.check.host].key, p.result)
            if p.result.check.layer is not Layer.DNS and p.result.check.host in wrong else p for p in problems]


def unused_direct_paths(results: Sequence[Result]) -> set[str]:
    """Direct checks of endpoints Azure ML reaches through the configured proxy: their failures
    are not problems (a proxy-only network drops direct egress on purpose), and the proxy
    resolves those names, so their DNS does not matter either unless another port is direct."""
    proxied = {(r.check.host, r.check.port) for r in results if r.check.path == "proxy"}
    direct_ports = {r.check.host for r in results if r.check.path == "direct" and r.check.port is not None
                    and (r.check.host, r.check.port) not in proxied}
    proxied_hosts = {host for host, _ in proxied}
    return {r.check.id for r in results if r.check.path == "direct" and (
        (r.check.host, r.check.port) in proxied
        or (r.check.layer is Layer.DNS and r.check.host in proxied_hosts - direct_ports))}


def _problems(result: Result, results: Sequence[Result], facts: Facts) -> list[_Problem]:
    """The problem(s) one result shows; cross-result rules read `results` for comparisons."""
    check = result.check
    reason = result.reason
    if result.status is Status.PASS and check.layer is Layer.DNS:
        return _instance_address_problem(result, results)
    if result.status not in (Status.FAIL, Status.WARN) or reason is None:
        return []
    if check.layer is Layer.LOCAL:
        local = check.spec.check if isinstance(check.spec, LocalSpec) else ""
        return [_Problem(_LOCAL_CODES.get(local, "endpoint-unreachable"), (), result)]
    if check.path == "to-proxy":
        return [_Problem("proxy-unreachable", (), result)]
    if check.path == "proxy" and _direct_counterpart_passes(result, results):
        return [_Problem("proxy-bypass-required", (), result)]
    if check.layer is Layer.DNS:
        return [_dns_problem(result, facts)]
    if reason in _PROXY:
        return [_Problem(_PROXY[reason], (), result)]
    if check.port == 445 and (reason in _BLOCKED or reason in _REJECTED):
        return [_Problem("smb-blocked", (), result)]
    if check.layer is Layer.UDP and reason in (Reason.UDP_CLOSED, Reason.UDP_PROHIBITED):
        return [_Problem("udp-blocked", (str(check.port),), result)]
    if reason in _BLOCKED:
        return [_Problem("egress-blocked", (facts.tag(result), check.protocol, str(check.port)), result)]
    if reason in _REJECTED:
        return [_Problem("egress-rejected", (facts.tag(result), check.protocol, str(check.port)), result)]
    if reason in _TLS_UNTRUSTED:
        return [_Problem("tls-intercepted-untrusted", (_issuing_ca(result),), result)]
    if reason is Reason.TLS_UNEXPECTED_ISSUER:
        return [_Problem("tls-intercepted", (_issuing_ca(result),), result)]
    if reason is Reason.TLS_TIMEOUT:
        return [_Problem("tls-handshake-stalled", (), result)]
    if reason in _TLS_INVALID:
        return [_Problem("tls-certificate-invalid", (reason.value,), result)]
    if reason in _WS_BLOCKED:
        return [_Problem("websocket-blocked", (), result)]
    return [_Problem("endpoint-unreachable", (reason.value,), result)]


def _direct_counterpart_passes(result: Result, results: Sequence[Result]) -> bool:
    return any(r.check.path == "direct" and r.check.layer is result.check.layer and r.status is Status.PASS
               and (r.check.host, r.check.port) == (result.check.host, result.check.port) for r in results)


def _is_pe_instance_name(result: Result) -> bool:
    """A compute instance name that must resolve to the workspace private endpoint."""
    return ".instances." in result.check.host and isinstance(result.check.spec, DnsSpec) \
        and result.check.spec.expect == "private"


def _dns_problem(result: Result, facts: Facts) -> _Problem:
    reason = result.reason
    if reason is Reason.DNS_WRONG_ADDRESS or (reason is Reason.DNS_PUBLIC_ANSWER and _is_pe_instance_name(result)
                                              and not facts.custom_dns):
        return _Problem("instance-name-wrong-address", (), result)
    # One finding per cause, not per zone: the remedy lists every zone that needs the change.
    if reason is Reason.DNS_PUBLIC_ANSWER:
        code = "custom-dns-not-forwarding" if facts.custom_dns else "private-endpoint-resolves-public"
        return _Problem(code, (), result)
    if reason is Reason.DNS_NXDOMAIN and any(".privatelink." in n for n in _strings(result.evidence.get("cname_chain"))):
        return _Problem("private-dns-record-missing", (), result)
    if reason in (Reason.DNS_NXDOMAIN, Reason.DNS_NODATA):
        return _Problem("dns-name-missing", (), result)
    if reason is Reason.DNS_SERVFAIL:
        return _Problem("dns-servfail", (), result)
    if reason in _DNS_UNAVAILABLE:
        return _Problem("dns-unavailable", (), result)
    return _Problem("endpoint-unreachable", (reason.value if reason else "",), result)


def _instance_address_problem(result: Result, results: Sequence[Result]) -> list[_Problem]:
    """With a private-endpoint workspace, a compute instance name must resolve to the workspace
    endpoint's address: compare with the resolved workspace API name."""
    if not _is_pe_instance_name(result):
        return []
    workspace = _workspace_addresses(results)
    if not workspace or set(result.addresses) & workspace:
        return []
    return [_Problem("instance-name-wrong-address", (), result)]


def _workspace_addresses(results: Sequence[Result]) -> set[str]:
    return {a for r in results if r.check.layer is Layer.DNS and r.status is Status.PASS
            and ".workspace." in r.check.host and ".cert." not in r.check.host for a in r.addresses}


def _dicts(value: Fact) -> list[dict[str, Fact]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _strings(value: Fact) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _issuing_ca(result: Result) -> str:
    """Who signed the presented certificate: every leaf an inspecting proxy mints differs, the
    CA behind them is one (its key identifier where the certificate names it, else its name)."""
    cert = result.evidence.get("cert")
    if not isinstance(cert, dict):
        return ""
    return str(cert.get("issuer_key_id") or cert.get("issuer") or "")


def _targets(results: Sequence[Result]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r.check.target for r in results))


SHOWN_HOSTS = 6  # a summary names this many; `targets` always lists them all


def _hosts(results: Sequence[Result]) -> str:
    hosts = list(dict.fromkeys(r.check.host for r in results))
    more = f" (+{len(hosts) - SHOWN_HOSTS} more)" if len(hosts) > SHOWN_HOSTS else ""
    return ", ".join(hosts[:SHOWN_HOSTS]) + more


def _observed(results: Sequence[Result], *, addresses: bool = False, limit: int = 5) -> str:
    """What the failing checks saw, one clause each: the evidence line of a finding's cause."""
    clauses = [f"{r.check.target}" + (f" ({_addresses(r)})" if addresses else "") + f": {r.detail or r.reason}"
               for r in results[:limit]]
    return "; ".join(clauses) + (f"; and {len(results) - limit} more" if len(results) > limit else "")


def _addresses(result: Result) -> str:
    return ", ".join(attempted(result)) or "?"


def attempted(result: Result) -> list[str]:
    """The addresses a check went to: the ones the engine handed it, else what it resolved."""
    return _strings(result.evidence.get("tried")) or _strings(result.evidence.get("addresses"))


def _severity(results: Sequence[Result], facts: Facts, base: Severity = Severity.CRITICAL) -> Severity:
    return Severity.WARNING if base is Severity.CRITICAL and facts.situational_only(results) else base


def _finding(code: str, results: Sequence[Result], facts: Facts, *, summary: str, cause: str,
             remedy: str, docs: tuple[str, ...], severity: Severity = Severity.CRITICAL) -> Finding:
    return Finding(code=code, severity=_severity(results, facts, severity), summary=summary,
                   cause=cause, remedy=remedy, targets=_targets(results),
                   checks=tuple(r.check.id for r in results), docs=docs)


def _egress(code: str, how: str, why: str) -> Builder:
    def build(results: Sequence[Result], facts: Facts) -> Finding:
        first = results[0]
        proto, port = first.check.protocol.upper(), first.check.port
        tag = facts.tag(first)
        destination = f"service tag {tag}" if tag else "the endpoints"
        rule_kind = "application rule (HTTPS)" if port in (80, 443) and proto == "TCP" else f"network rule ({proto} {port})"
        detail = _observed(results, addresses=True)
        return _finding(
            code, results, facts,
            summary=f"Outbound {proto} {port} to {destination} is {how} ({len(results)} endpoint(s))",
            cause=f"{why} {detail}",
            remedy=(f"Allow outbound {proto} {port} from the compute subnet to {destination} in its network "
                    f"security group (above any deny rule); in Azure Firewall or your NVA add a {rule_kind} "
                    f"for {facts.rule_fqdns(results)}."),
            docs=facts.docs(results, "firewall"))
    return build


def _smb(results: Sequence[Result], facts: Facts) -> Finding:
    region = facts.context["region"].value or "<region>"
    return _finding(
        "smb-blocked", results, facts,
        summary=f"SMB (TCP 445) to the workspace storage is blocked: {_hosts(results)}",
        cause=_observed(results, addresses=True)
        + ". The workspace file share (notebooks, the compute instance's files) cannot be mounted.",
        remedy=(f"Allow outbound TCP 445 from the compute subnet to service tag Storage.{region} (or to the "
                "storage private endpoint's address) in the NSG and in any firewall between the compute and "
                "the storage account."),
        docs=facts.docs(results, "training-vnet"))


def _udp(results: Sequence[Result], facts: Facts) -> Finding:
    first = results[0]
    tag = facts.tag(first) or "the endpoint"
    return _finding(
        "udp-blocked", results, facts,
        summary=f"UDP {first.check.port} to {_hosts(results)} is rejected",
        cause=_observed(results)
        + ". An ICMP unreachable/prohibited answer came back: a firewall or NSG rejects the datagrams.",
        remedy=(f"Allow outbound UDP {first.check.port} to service tag {tag} in the compute subnet's NSG and "
                f"add a firewall network rule (UDP {first.check.port}) for {facts.rule_fqdns(results)}; "
                "compute instances are created, updated and deleted over it."),
        docs=facts.docs(results, "training-vnet"))


def _resolver_text(facts: Facts) -> str:
    return ", ".join(facts.resolvers) or "no resolver"


def _dns_missing(results: Sequence[Result], facts: Facts) -> Finding:
    return _finding(
        "dns-name-missing", results, facts,
        summary=f"Required names do not resolve (NXDOMAIN): {_hosts(results)}",
        cause=(f"The node's resolver ({_resolver_text(facts)}) says these names do not exist. A DNS server "
               "or a private DNS zone that shadows the public zone answers for them without the record."),
        remedy=("Make the resolver answer these names: on a custom DNS server forward their zones to "
                f"{AZURE_DNS}; look for a private DNS zone linked to the VNet whose name is a parent of "
                "these names and remove it or add the records."),
        docs=facts.docs(results, "custom-dns"))


def _dns_servfail(results: Sequence[Result], facts: Facts) -> Finding:
    return _finding(
        "dns-servfail", results, facts,
        summary=f"The resolver fails (SERVFAIL) for required names: {_hosts(results)}",
        cause=f"{_resolver_text(facts)} answered SERVFAIL: it cannot get an answer from its upstream.",
        remedy=(f"Check the DNS server's forwarders: it must reach {AZURE_DNS} (Azure DNS) over UDP and TCP 53, "
                "and conditional forwarders must point at a reachable server."),
        docs=facts.docs(results, "custom-dns"))


def _dns_unavailable(results: Sequence[Result], facts: Facts) -> Finding:
    asked = sorted({str(s.get("server")) for r in results for s in _dicts(r.evidence.get("servers"))})
    return _finding(
        "dns-unavailable", results, facts,
        summary=f"DNS servers do not answer: {', '.join(asked) or _resolver_text(facts)}",
        cause="; ".join(f"{r.check.host}: {r.detail or r.reason}" for r in results[:5]),
        remedy=(f"Check /etc/resolv.conf and the VNet's DNS servers setting, and allow UDP and TCP 53 to "
                f"{_resolver_text(facts)} in the NSG and local firewall; {AZURE_DNS} must never be blocked."),
        docs=facts.docs(results, "azure-dns"))


def _zones_text(results: Sequence[Result], facts: Facts, attribute: str) -> str:
    zones = [getattr(z, attribute) for r in results if (z := facts.catalog.zone_of(r.check.host))]
    return ", ".join(dict.fromkeys(z for z in zones if z))


def _chain(result: Result) -> str:
    chain = _strings(result.evidence.get("cname_chain"))
    return " -> ".join([result.check.host, *chain, *(_strings(result.evidence.get("addresses")) or ["?"])])


def _pe_public(results: Sequence[Result], facts: Facts) -> Finding:
    zone = _zones_text(results, facts, "privatelink_zone") or _zones_text(results, facts, "forward_zone")
    return _finding(
        "private-endpoint-resolves-public", results, facts,
        summary=f"Private-endpoint names resolve to public addresses: {_hosts(results)}",
        cause=("; ".join(_chain(r) for r in results[:4]) + f". The node asks {_resolver_text(facts)}; the "
               f"private DNS zone {zone} is not linked to this VNet, or the private endpoint has no DNS "
               "zone group, so the public answer wins."),
        remedy=(f"Link the private DNS zone(s) {zone} to the compute VNet: az network private-dns link vnet "
                f"create --resource-group <zone-rg> --zone-name <zone> --name <vnet>-link --virtual-network "
                "<vnet-id> --registration-enabled false; and make sure the workspace private endpoint has a "
                "DNS zone group for them."),
        docs=facts.docs(results, "pe-troubleshoot", "custom-dns"))


def _custom_dns(results: Sequence[Result], facts: Facts) -> Finding:
    zones = _zones_text(results, facts, "forward_zone")
    servers = ", ".join(facts.custom_dns)
    return _finding(
        "custom-dns-not-forwarding", results, facts,
        summary=f"Custom DNS server {servers} does not forward {zones} to Azure DNS",
        cause=("; ".join(_chain(r) for r in results[:4]) + f". The node uses custom DNS {servers}, which "
               "answers these names from the public zone instead of the private endpoint's records."),
        remedy=(f"On {servers} add conditional forwarders for {zones} (the public zone names, not the "
                f"privatelink. ones) to {AZURE_DNS}; the private DNS zones must be linked to the VNet the "
                "DNS server is in."),
        docs=facts.docs(results, "custom-dns"))


def _record_missing(results: Sequence[Result], facts: Facts) -> Finding:
    zone = _zones_text(results, facts, "privatelink_zone")
    return _finding(
        "private-dns-record-missing", results, facts,
        summary=f"The private DNS zone {zone} has no record for {_hosts(results)}",
        cause=("; ".join(_chain(r) + " (NXDOMAIN)" for r in results[:4]) + ". The zone is linked, so it "
               "answers authoritatively, but the private endpoint's A record is missing."),
        remedy=(f"Add the missing A record(s) in {zone} pointing at the workspace private endpoint's "
                "addresses, or recreate the private endpoint's DNS zone group so Azure writes them."),
        docs=facts.docs(results, "custom-dns", "pe-troubleshoot"))


def _instance_wrong(results: Sequence[Result], facts: Facts) -> Finding:
    names = _hosts(results)
    got = "; ".join(f"{r.check.host} -> {', '.join(_strings(r.evidence.get('addresses'))) or '?'}" for r in results)
    zones = _zones_text(results, facts, "forward_zone")
    return _finding(
        "instance-name-wrong-address", results, facts,
        summary=f"The compute instance name does not resolve to the workspace private endpoint: {names}",
        cause=(f"{got}. With a private-endpoint workspace the instance name must resolve to the workspace "
               "endpoint's address (the one the workspace API name resolves to), not to the instance's own "
               "address or a public one; Jupyter and the terminal will not open."),
        remedy=(f"Add an A record for each name in zone {zones} pointing at the workspace private endpoint's "
                f"address (or forward {zones} to {AZURE_DNS}), and remove any /etc/hosts override."),
        docs=facts.docs(results, "custom-dns", "jupyter"))


def _issuer(result: Result) -> str:
    cert = result.evidence.get("cert")
    if not isinstance(cert, dict):
        return "an unknown issuer"
    ca = cert.get("issuer_sha256")
    key = cert.get("issuer_key_id")
    detail = f"CA certificate SHA-256 {ca}" if ca else (f"CA key id {key}" if key else "")
    return f"{cert.get('issuer', '?')}" + (f" ({detail})" if detail else "")


def _leaf_fingerprints(results: Sequence[Result]) -> str:
    prints = [f"{r.check.host}: {c.get('sha256')}" for r in results[:3]
              if isinstance(c := r.evidence.get("cert"), dict)]
    return "; ".join(prints)


def _tls_intercepted(trusted: bool) -> Builder:
    def build(results: Sequence[Result], facts: Facts) -> Finding:
        issuer = _issuer(results[0])
        return _finding(
            "tls-intercepted" if trusted else "tls-intercepted-untrusted", results, facts,
            summary=(f"TLS to {len(results)} endpoint(s) is inspected by {issuer}"
                     + ("" if trusted else ", which this node does not trust")),
            cause=(f"The certificate presented for {_hosts(results)} is issued by {issuer}, not by the "
                   "expected Microsoft or DigiCert CAs: a TLS-inspecting firewall or proxy re-signs the "
                   f"traffic (leaf SHA-256 {_leaf_fingerprints(results)})." + (" This node trusts it, but Azure ML's Python clients use their own CA "
                                 "bundle and will not." if trusted else "")),
            remedy=("Exempt the Azure ML endpoints (" + facts.rule_fqdns(results) + ") from TLS inspection in "
                    "the firewall or proxy; inspection of Azure ML traffic is not supported. If inspection "
                    "must stay, install the inspection CA in the system store (update-ca-certificates) and "
                    "in the Python certifi bundle."),
            docs=facts.docs(results, "firewall"),
            severity=Severity.WARNING if trusted else Severity.CRITICAL)
    return build


def _tls_stalled(results: Sequence[Result], facts: Facts) -> Finding:
    return _finding(
        "tls-handshake-stalled", results, facts,
        summary=f"TCP connects but the TLS handshake stalls: {_hosts(results)}",
        cause=("The handshake got no answer after the ClientHello. Large server certificate chains that "
               "never arrive are the signature of a path-MTU black hole (a VPN, NVA or tunnel with a smaller "
               "MTU that drops ICMP 'fragmentation needed')."),
        remedy=("Clamp the TCP MSS on the VPN gateway/NVA (or lower the node's MTU, e.g. ip link set dev eth0 "
                "mtu 1400) and allow ICMP type 3 code 4 back to the compute subnet."),
        docs=facts.docs(results, "firewall"))


def _tls_invalid(results: Sequence[Result], facts: Facts) -> Finding:
    first = results[0]
    return _finding(
        "tls-certificate-invalid", results, facts,
        summary=f"TLS fails ({first.reason}) for {_hosts(results)}",
        cause=_observed(results),
        remedy=("A name mismatch or a plaintext reply means something else answers at that address (a "
                "captive portal, a proxy, a wrong DNS answer); an expired or not-yet-valid certificate often "
                "means the node clock is wrong (check timedatectl / chrony)."),
        docs=facts.docs(results, "firewall"))


def _clock(results: Sequence[Result], facts: Facts) -> Finding:
    skews = sorted(float(r.evidence["clock_skew_s"]) for r in results  # type: ignore[arg-type]
                   if isinstance(r.evidence.get("clock_skew_s"), (int, float)))
    tls = [r for r in results if r.reason in _CLOCK_TLS]
    if skews:
        median = skews[len(skews) // 2]
        how = f"servers' clocks are {abs(median):.0f}s {'ahead of' if median > 0 else 'behind'} this node's"
    else:
        ahead = any(r.reason is Reason.TLS_NOT_YET_VALID for r in tls)
        how = f"certificates of {len(tls)} endpoints all look {'not yet valid' if ahead else 'expired'}"
    return _finding(
        "clock-skew", results, facts,
        summary=f"The node clock is wrong: {how}",
        cause=(f"{how} (Date headers and certificate validity). TLS verification"
               + (f" fails for {_hosts(tls)}" if tls else " will fail")
               + " and Microsoft Entra ID rejects tokens more than about five minutes off."),
        remedy=("Synchronise the clock: timedatectl set-ntp true, and check chrony/systemd-timesyncd "
                "(Azure VMs sync from the host through the PTP clock /dev/ptp_hyperv, or time.windows.com "
                "over UDP 123). Then run the check again."),
        docs=facts.docs(results, "firewall"))


def _no_egress(results: Sequence[Result], facts: Facts) -> Finding:
    ports = ", ".join(sorted({f"{r.check.protocol.upper()} {r.check.port}" for r in results}))
    return _finding(
        "no-outbound-connectivity", results, facts,
        summary=f"No outbound connectivity: every public endpoint fails ({len({r.check.host for r in results})} "
                f"hosts, {ports}) while DNS works",
        cause=("; ".join(f"{r.check.target}: {r.reason}" for r in results[:4])
               + ". Nothing outside the VNet answers: compute without a public IP has no way out unless "
                 "the subnet has a NAT gateway or a route to a firewall (Azure's default outbound access is "
                 "being retired and must not be relied on)."),
        remedy=("Give the compute subnet a way out: attach a NAT gateway to it, or add a route table with "
                "0.0.0.0/0 -> your Azure Firewall/NVA and allow the Azure ML service tags and FQDNs there "
                "(`aml-netcheck rules` lists them). Check that no NSG rule denies all outbound traffic."),
        docs=facts.docs(results, "training-vnet", "firewall"))


def _local(code: str, summary: str, severity: Severity, remedy: str) -> Builder:
    """Findings about the node itself; the probe's detail names the rule, socket or network."""
    def build(results: Sequence[Result], facts: Facts) -> Finding:
        ports = sorted({r.check.port for r in results if r.check.port})
        # Nothing listening on 44224 is not proof of a problem: the docs do not say which process
        # takes Azure ML's management traffic there. SSH on an attached VM is required outright.
        level = Severity.INFO if code == "inbound-port-closed" and 22 not in ports else severity
        return _finding(code, results, facts, severity=level,
                        summary=summary + (f" (port {', '.join(map(str, ports))})" if ports else ""),
                        cause="; ".join(r.detail for r in results), remedy=remedy,
                        docs=facts.docs(results, "training-vnet"))
    return build


def _websocket(results: Sequence[Result], facts: Facts) -> Finding:
    return _finding(
        "websocket-blocked", results, facts,
        summary=f"HTTPS works but the WebSocket upgrade is refused: {_hosts(results)}",
        cause=_observed(results)
        + ". Jupyter, JupyterLab and the terminal will not connect.",
        remedy=("Allow WebSocket upgrades (Connection: Upgrade, Upgrade: websocket) to "
                f"{facts.rule_fqdns(results)} in the proxy, firewall or WAF, and exempt these names from TLS "
                "inspection."),
        docs=facts.docs(results, "jupyter"))


def _proxy(code: str, what: str, fix: str) -> Builder:
    def build(results: Sequence[Result], facts: Facts) -> Finding:
        return _finding(
            code, results, facts, summary=f"The configured proxy {what}: {_hosts(results)}",
            cause=_observed(results),
            remedy=fix, docs=facts.docs(results, "firewall"))
    return build


def _unreachable(results: Sequence[Result], facts: Facts) -> Finding:
    first = results[0]
    return _finding(
        "endpoint-unreachable", results, facts,
        summary=f"{first.check.layer.value.upper()} check fails ({first.reason}) for {_hosts(results)}",
        cause=_observed(results),
        remedy=f"Allow the flows listed for {facts.rule_fqdns(results)} and check the service answers.",
        docs=facts.docs(results, "firewall"))


_BUILDERS: dict[str, Builder] = {
    "egress-blocked": _egress("egress-blocked", "silently dropped",
                              "Connections got no answer (an NSG deny, a firewall drop or a route to nowhere):"),
    "egress-rejected": _egress("egress-rejected", "actively rejected",
                               "Connections were refused, reset or ICMP-prohibited by a firewall or NSG:"),
    "smb-blocked": _smb,
    "udp-blocked": _udp,
    "dns-name-missing": _dns_missing,
    "dns-servfail": _dns_servfail,
    "dns-unavailable": _dns_unavailable,
    "private-endpoint-resolves-public": _pe_public,
    "custom-dns-not-forwarding": _custom_dns,
    "private-dns-record-missing": _record_missing,
    "instance-name-wrong-address": _instance_wrong,
    "tls-intercepted-untrusted": _tls_intercepted(trusted=False),
    "tls-intercepted": _tls_intercepted(trusted=True),
    "tls-handshake-stalled": _tls_stalled,
    "tls-certificate-invalid": _tls_invalid,
    "websocket-blocked": _websocket,
    "clock-skew": _clock,
    "inbound-port-closed": _local("inbound-port-closed", "Nothing on this node listens where Azure ML connects in",
                                  Severity.WARNING, "Start the service (sshd for an attached VM: systemctl enable "
                                  "--now ssh) and make it listen on all addresses, not only loopback."),
    "local-firewall-blocks": _local("local-firewall-blocks", "A firewall rule on this node blocks required traffic",
                                    Severity.CRITICAL, "Remove or narrow the local rule named above (nft list "
                                    "ruleset / ufw status): allow inbound ports Azure ML uses and never block "
                                    "168.63.129.16 in either direction."),
    "unsupported-os": _local("unsupported-os", "This VM does not run Ubuntu", Severity.CRITICAL,
                             "Azure ML attaches only Ubuntu VMs: use an Ubuntu image for the attached compute."),
    "docker-bridge-overlap": _local("docker-bridge-overlap", "Docker's bridge network overlaps the VNet",
                                    Severity.WARNING, "Move Docker's bridge off the VNet's range: set \"bip\" in "
                                    "/etc/docker/daemon.json (e.g. 192.168.240.1/24) and restart Docker, or "
                                    "avoid 172.17.0.0/16 in the VNet."),
    "no-outbound-connectivity": _no_egress,
    "proxy-auth-required": _proxy("proxy-auth-required", "demands authentication (HTTP 407)",
                                  "Give the proxy credentials in HTTPS_PROXY (http://user:pass@proxy:port) for the "
                                  "Azure ML processes, or allow the compute subnet without authentication."),
    "proxy-denied": _proxy("proxy-denied", "refuses these destinations",
                           "Add these FQDNs to the proxy's allow-list, or list them in NO_PROXY if the node "
                           "may reach them directly (private endpoints must always be in NO_PROXY)."),
    "proxy-unreachable": _proxy("proxy-unreachable", "cannot be reached",
                                "Fix HTTPS_PROXY/HTTP_PROXY (address and port) or allow the compute subnet to "
                                "reach the proxy."),
    "proxy-bypass-required": _proxy("proxy-bypass-required", "fails for names the node reaches directly",
                                    "Add these names to NO_PROXY (and no_proxy) wherever HTTPS_PROXY is set for "
                                    "Azure ML (the compute's environment, /etc/environment, the setup script): "
                                    "private endpoints are reached only from inside the VNet, never through the "
                                    "proxy."),
    "endpoint-unreachable": _unreachable,
}


def verdict(findings: Sequence[Finding], results: Sequence[Result], *, signalled: bool = False) -> tuple[str, int]:
    """(status, exit code) of the default profile. A run stopped by a signal is unknown whatever it
    found; otherwise a critical finding beats checks left unfinished at the deadline (unknown),
    which beat warnings."""
    if signalled:
        return "unknown", 3
    worst = max((f.severity for f in findings), default=Severity.INFO)
    if worst is Severity.CRITICAL:
        return "critical", 2
    if any(r.reason in (Reason.PROBE_INTERNAL, Reason.PROBE_CANCELLED) for r in results):
        return "unknown", 3
    if worst is Severity.WARNING:
        return "warning", 1
    return "ok", 0
