"""Finding codes, each declared once: its severity, what it means (the README's row), its own
documentation and the builder that writes its summary, cause and remedy from the results it
explains. Codes are stable API (JSON, metrics labels, journald fields): never rename one."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from agent import netrules
from agent.diagnose.facts import Facts
from agent.inputs import proxy
from agent.model import CheckPath, Finding, Owner, PathStep, Result, Severity, StepState
from agent.platform import AZURE_DNS, IMDS_ADDRESS, IMDS_TARGET
from probes._compat import StrEnum
from probes._hops import Answer, Dies, PathSummary, from_facts
from probes._net import is_private
from probes._trace import Fact
from probes.reasons import Reason, Status
from probes.specs import DnsSpec


class Code(StrEnum):
    NO_OUTBOUND_CONNECTIVITY = "no-outbound-connectivity"
    EGRESS_BLOCKED = "egress-blocked"
    EGRESS_REJECTED = "egress-rejected"
    UDP_BLOCKED = "udp-blocked"
    SMB_BLOCKED = "smb-blocked"
    SMB_DIALECT_OLD = "smb-dialect-old"
    DNS_UNAVAILABLE = "dns-unavailable"
    DNS_SERVFAIL = "dns-servfail"
    DNS_NAME_MISSING = "dns-name-missing"
    DNS_NO_IPV4_ADDRESS = "dns-no-ipv4-address"
    PRIVATE_ENDPOINT_RESOLVES_PUBLIC = "private-endpoint-resolves-public"
    CUSTOM_DNS_NOT_FORWARDING = "custom-dns-not-forwarding"
    PRIVATE_DNS_RECORD_MISSING = "private-dns-record-missing"
    INSTANCE_NAME_WRONG_ADDRESS = "instance-name-wrong-address"
    HOSTS_FILE_OVERRIDE = "hosts-file-override"
    DNS_RESOLVERS_DISAGREE = "dns-resolvers-disagree"
    TLS_INTERCEPTED_UNTRUSTED = "tls-intercepted-untrusted"
    TLS_INTERCEPTED = "tls-intercepted"
    TLS_HANDSHAKE_STALLED = "tls-handshake-stalled"
    TLS_CERTIFICATE_INVALID = "tls-certificate-invalid"
    WEBSOCKET_BLOCKED = "websocket-blocked"
    RESOURCE_FIREWALL_DENIED = "resource-firewall-denied"
    PROXY_AUTH_REQUIRED = "proxy-auth-required"
    PROXY_DENIED = "proxy-denied"
    PROXY_UNREACHABLE = "proxy-unreachable"
    PROXY_BYPASS_REQUIRED = "proxy-bypass-required"
    CLOCK_SKEW = "clock-skew"
    IMDS_UNAVAILABLE = "imds-unavailable"
    LOCAL_FIREWALL_BLOCKS = "local-firewall-blocks"
    INBOUND_PORT_CLOSED = "inbound-port-closed"
    UNSUPPORTED_OS = "unsupported-os"
    DOCKER_BRIDGE_OVERLAP = "docker-bridge-overlap"
    VANTAGE_MTU_ABOVE_HOST = "vantage-mtu-above-host"
    ENDPOINT_UNREACHABLE = "endpoint-unreachable"
    IDENTITY_VIA_PROXY = "identity-via-proxy"
    IDENTITY_ACCESS_DENIED = "identity-access-denied"
    IDENTITY_ENDPOINT_UNAVAILABLE = "identity-endpoint-unavailable"
    LATENCY_DEGRADED = "latency-degraded"


@dataclass(frozen=True, slots=True)
class Draft:
    """What a builder writes; `severity` only where the evidence changes the declared one."""

    summary: str
    cause: str
    remedy: str
    severity: Severity | None = None
    targets: tuple[str, ...] = ()  # where there are no results to name them (node findings)
    path: str = ""  # the traced path of a dropped flow, one line
    trace: tuple[PathStep, ...] = ()  # the same path step by step, with who owns each step


Builder = Callable[[Sequence[Result], Facts], Draft]


@dataclass(frozen=True, slots=True)
class Declaration:
    severity: Severity  # a failing situational requirement lowers critical to warning
    title: str  # what the code means: the README's findings table says exactly this
    docs: tuple[str, ...]  # keys of facts.DOCS: the finding's own articles, before the requirements' ones
    build: Builder
    handoff: bool = False  # a failed flow: the finding names it and the commands that check it in Azure


def make(code: Code, results: Sequence[Result], facts: Facts) -> Finding:
    """The finding of `code` for the results it explains: the builder's text, the declared
    severity (lowered to warning when only situational requirements fail), targets and docs."""
    declared = DECLARATIONS[code]
    draft = declared.build(results, facts)
    severity = draft.severity if draft.severity is not None else declared.severity
    if severity is Severity.CRITICAL and facts.situational_only(results):
        severity = Severity.WARNING
    flow, confirm = _handoff(results, facts) if declared.handoff else ("", ())
    docs = (("managed-network",) if declared.handoff and facts.managed_network else ()) + declared.docs
    return Finding(code=code.value, severity=severity, summary=draft.summary, cause=draft.cause,
                   remedy=draft.remedy, targets=draft.targets or _targets(results),
                   checks=tuple(r.check.id for r in results), docs=facts.docs(results, docs),
                   path=draft.path, flow=flow, confirm=confirm, trace=draft.trace)


# Compute whose VMs Azure ML (through Azure Batch) runs in a subscription of its own: the customer
# cannot point Network Watcher at them, only at a VM of theirs in the same subnet.
_MANAGED_VMS = frozenset({"instance", "cluster", "serverless"})


def _handoff(results: Sequence[Result], facts: Facts) -> tuple[str, tuple[str, ...]]:
    """The first failed flow as the control plane names it (source address and port, destination,
    protocol) and the Azure CLI commands that check it there: IP flow verify, next hop, and the
    effective NSG rules and routes of the VM's NIC. What the node cannot know stays a <placeholder>."""
    flows = [r for r in results if r.check.port is not None and r.attempted]
    if not flows:
        return "", ()
    first = flows[0]
    check = first.check
    destination = first.attempted[0]
    source = facts.node_address or "<node-ip>"
    flow = f"{source}:* → {destination}:{check.port}/{check.protocol}"
    if facts.managed_network:  # its VNet, NSG and routes are Azure ML's: only the workspace shows them
        group, workspace = _workspace_names(facts)
        return flow, (
            shlex.join(["az", "ml", "workspace", "outbound-rule", "list", "--resource-group", group,
                        "--workspace-name", workspace, "--output", "table"]),
            shlex.join(["az", "ml", "workspace", "show", "--resource-group", group, "--name", workspace,
                        "--query", "managed_network"]),
        )
    imds = facts.imds
    managed = facts.context["compute"].value in _MANAGED_VMS
    vm = "<a-vm-in-the-compute-subnet>" if managed else str(imds.get("vm_name") or "<vm-name>")
    group = "<its-resource-group>" if managed else str(imds.get("resource_group") or "<resource-group>")
    where = ("--vm", vm, "--resource-group", group)
    nic = (f"$(az vm show --resource-group {shlex.quote(group)} --name {shlex.quote(vm)} --query "
           "'networkProfile.networkInterfaces[0].id' --output tsv)")
    protocol = "TCP" if check.protocol == "tcp" else "UDP"
    return (flow, (
        shlex.join(["az", "network", "watcher", "test-ip-flow", "--direction", "Outbound", "--protocol", protocol,
                    "--local", f"{source}:*", "--remote", f"{destination}:{check.port}", *where]),
        shlex.join(["az", "network", "watcher", "show-next-hop", "--source-ip", source, "--dest-ip", destination,
                    *where]),
        f'az network nic list-effective-nsg --ids "{nic}"',
        f'az network nic show-effective-route-table --ids "{nic}"',
    ))


SHOWN_HOSTS = 6  # a summary names this many; `targets` always lists them all


def _targets(results: Sequence[Result]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r.check.target for r in results))


def _hosts(results: Sequence[Result]) -> str:
    hosts = list(dict.fromkeys(r.check.host for r in results))
    if len(hosts) <= SHOWN_HOSTS:
        return ", ".join(hosts)
    others = len(hosts) - SHOWN_HOSTS  # said as what it counts: "(+1 more)" read like one more name
    return ", ".join(hosts[:SHOWN_HOSTS]) + f" and {others} other host{'s' if others != 1 else ''}"


def _observed(results: Sequence[Result], *, addresses: bool = False, limit: int = 5) -> str:
    """What the failing checks saw, one clause each: the evidence line of a finding's cause."""
    clauses = [f"{r.check.target}" + (f" ({', '.join(r.attempted) or '?'})" if addresses else "")
               + f": {r.detail or r.reason}" for r in results[:limit]]
    return "; ".join(clauses) + (f"; and {len(results) - limit} more" if len(results) > limit else "")


def _dicts(value: Fact) -> list[dict[str, Fact]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _strings(value: Fact) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


_CLOCK_TLS = {Reason.TLS_NOT_YET_VALID, Reason.TLS_EXPIRED}


def _egress(how: str, why: str) -> Builder:
    def build(results: Sequence[Result], facts: Facts) -> Draft:
        first = results[0]
        proto, port = first.check.protocol.upper(), first.check.port
        tag = facts.tag(first)
        destination = f"service tag {tag}" if tag else "the endpoints"
        detail = _observed(results, addresses=True)
        path = _path_story(results, facts)
        return Draft(
            summary=f"Outbound {proto} {port} to {destination} is {how} ({len(results)} endpoint(s)){path.summary}",
            cause=f"{why} {detail}" + (f".{path.cause}" if path.cause else ""),
            remedy=path.remedy or _open(results, facts), path=path.line, trace=path.trace)
    return build


def _open(results: Sequence[Result], facts: Facts, where: str = "in Azure Firewall or your NVA") -> str:
    """The remedy of a blocked flow: the rules `aml-netcheck rules` derives for exactly these flows
    (in a managed network, its outbound rules: no NSG or firewall of the customer's is in the way)."""
    if facts.managed_network:
        return _open_managed(results, facts)
    rules = netrules.describe(facts.rules(results))
    if not rules:
        return f"Allow {', '.join(_targets(results))} from the compute subnet and check the service answers."
    return (f"Allow these flows from the compute subnet, above any deny rule, in its network security group "
            f"and {where}: {rules}.")


def _workspace_names(facts: Facts) -> tuple[str, str]:
    """The workspace's resource group and name for the az ml commands (the group the node cannot know)."""
    return "<workspace-resource-group>", str(facts.context["workspace_name"].value or "<workspace-name>")


def _open_managed(results: Sequence[Result], facts: Facts) -> str:
    """A managed network's remedy: the user-defined outbound rules to add (`az ml workspace
    outbound-rule set`), and for the rules Azure ML adds itself the checks that they exist and are
    Active (a network not yet provisioned has none)."""
    mode = facts.managed_network
    ruleset = facts.rules(results)
    rules = ruleset.outbound_rules
    group, workspace = _workspace_names(facts)
    added = [r for r in rules if not r.required]
    text = (f"The compute is in the workspace's managed virtual network ({mode}): Azure ML owns its NSG, "
            "routes and firewall, so no NSG or route table of yours is in the way; its outbound rules are.")
    if added:
        text += (" Add these outbound rules: "
                 + "; ".join(netrules.outbound_rule_command(r, resource_group=group, workspace=workspace)
                             for r in added)
                 + ". FQDN rules take ports 80 and 443 only, and add an Azure Firewall to the managed network "
                 "(billed).")
    required = [r for r in rules if r.required]
    if required:
        text += (f" {netrules.describe(replace(ruleset, outbound_rules=tuple(required)))}: Azure ML "
                 "adds these itself; if the flow fails, the managed network is not provisioned yet or the rule is "
                 "not Active: `"
                 + shlex.join(["az", "ml", "workspace", "outbound-rule", "list", "--resource-group", group,
                               "--workspace-name", workspace])
                 + "`, and provision it with `"
                 + shlex.join(["az", "ml", "workspace", "provision-network", "--resource-group", group,
                               "--name", workspace])
                 + "`; a private endpoint rule to a resource outside the workspace's own must also be approved on "
                 "that resource.")
    if not rules:
        text += (" Nothing in a managed network with internet outbound allowed drops this flow to the internet: "
                 "look at the destination (its own firewall) and at the workspace's outbound rules."
                 if mode == "allow_internet_outbound" else
                 f" Add an outbound rule for {', '.join(_targets(results))}: az ml workspace outbound-rule set.")
    return text


def path_of(result: Result) -> tuple[PathSummary, str] | None:
    """Where the result's flow died, from the path its probe traced (probes/_hops.py), if it did."""
    return from_facts(result.evidence.get("path"))


@dataclass(frozen=True, slots=True)
class _Story:
    summary: str = ""  # appended to the summary
    cause: str = ""  # appended to the cause
    remedy: str = ""  # the remedy in its place; "" keeps the generic one
    line: str = ""  # the path, one line (Finding.path)
    trace: tuple[PathStep, ...] = ()  # the path step by step (Finding.trace)


def _path_story(results: Sequence[Result], facts: Facts) -> _Story:
    """What the traced path says of a dropped flow and who fixes it: no hop answered (the first hop:
    the NSG or the platform), or hops answered and the flow died past them (an appliance, a gateway,
    on-premises: forced tunnelling), with both fixes then. The first traced result speaks for the
    group (one service tag and port: one route); a run traces only a few paths at once."""
    traced = next(((r, p) for r in results if (p := path_of(r)) is not None), None)
    if traced is None:
        return _Story()
    result, (summary, destination) = traced
    story = _told(summary, destination, results, facts)
    return replace(story, line=summary.line(destination), trace=_steps(summary, destination, result.check.host, facts))


def _steps(summary: PathSummary, destination: str, name: str, facts: Facts) -> tuple[PathStep, ...]:
    """The path as steps with their owners: the node; the first hop, Azure's fabric (which answers
    no hop limit: silent and the place of death when nothing answered, else passed); each hop that
    answered (an appliance, a gateway, on-premises), the last before the silence marked as where the
    flow died (at or behind it), the first silent one after it; the destination."""
    hostname = facts.node.get("hostname")
    steps = [PathStep(Owner.NODE, StepState.PASSED, facts.node_address,
                      name=hostname if isinstance(hostname, str) else "")]
    if summary.dies is Dies.FIRST_HOP:
        steps.append(PathStep(Owner.FABRIC, StepState.DIED, None, hop=1))
    else:
        steps.append(PathStep(Owner.FABRIC, StepState.PASSED, None))
        died = summary.last_answered.ttl if summary.dies is Dies.BEYOND_FIRST_HOP and summary.last_answered else None
        for hop in summary.hops:
            if hop.answer in (Answer.REACHED, Answer.REFUSED):
                break
            state = (StepState.SILENT if hop.answer is Answer.SILENT else StepState.DIED
                     if hop.ttl == died or hop.answer is Answer.UNREACHABLE else StepState.PASSED)
            steps.append(PathStep(Owner.APPLIANCE, state, hop.address, hop=hop.ttl))
            if hop.answer in (Answer.SILENT, Answer.UNREACHABLE):
                break
    reached = StepState.REACHED if summary.dies is Dies.REACHED else StepState.NOT_REACHED
    return (*steps, PathStep(Owner.SERVICE, reached, destination, name=name))


def _told(summary: PathSummary, destination: str, results: Sequence[Result], facts: Facts) -> _Story:
    """The traced path's words in the finding: summary, cause and remedy."""
    line = summary.line(destination)
    traced = f" Traced with copies of the flow at every hop limit up to {len(summary.hops)}: {line}."
    last = summary.last_answered
    if facts.managed_network:  # one owner whatever the hop: the managed network's rules
        where = ("at the first hop" if summary.dies is Dies.FIRST_HOP else
                 f"past {last.address or 'an unnamed hop'} (hop {last.ttl})" if last is not None else "")
        return _Story(summary=f" {where}" if where else "",
                      cause=traced + " In a managed virtual network every hop is Azure ML's: its outbound rules "
                      "(the NSG at the first hop, the Azure Firewall it deploys for FQDN rules beyond it) decide.",
                      remedy=_open_managed(results, facts))
    if summary.dies is Dies.FIRST_HOP:
        return _Story(
            summary=" at the first hop",
            cause=traced + " No hop answered, so the packets die at the first hop, in Azure's fabric: a network "
            "security group (the NIC's or the subnet's) or the platform drops them (an appliance or router on the way "
            "would answer time exceeded for the lower hop limits, unless it is one that never does).",
            remedy=_open(results, facts, where="in Azure Firewall or your NVA if the subnet's routes lead through one")
            + " Start with the NSGs: the drop is at the first hop.")
    if summary.dies is not Dies.BEYOND_FIRST_HOP or last is None:
        return _Story(cause=traced)
    via = last.address or "an unnamed hop"
    rules = facts.rules(results)
    routes = netrules.bypass_routes(rules)
    around = (f" Or route the flow around it: in the compute subnet's route table, {netrules.describe_routes(routes)} "
              "(`aml-netcheck rules --forced-tunnel` and the route table's own rules decide what else must "
              "bypass it)." if routes else "")
    public_ip = facts.context.get("public_ip")
    asymmetric = (" With a public IP on the compute, AzureMachineLearning and BatchNodeManagement need routes with "
                  "next hop Internet in any case, or the replies to the inbound management traffic (TCP 44224) leave "
                  "through the appliance and are dropped: `aml-netcheck rules --forced-tunnel --public-ip` lists them."
                  if public_ip is not None and public_ip.value is True else "")
    return _Story(
        summary=f" past {via} (hop {last.ttl}): a route sends it through an appliance",
        cause=traced + f" The packets pass {via} (hop {last.ttl}) and die after it: a virtual appliance or firewall at "
        "or behind that hop, a VPN or ExpressRoute gateway, or on-premises drops them. The compute subnet's routes "
        "send this flow through it (forced tunnelling: 0.0.0.0/0 to an appliance or to on-premises); an NSG would "
        "have dropped it at the first hop.",
        remedy=(f"Allow these flows in the appliance or firewall at or behind {via}: "
                f"{netrules.describe(replace(rules, nsg=())) or ', '.join(_targets(results))}."
                + around + asymmetric))


# What an SMB2 NEGOTIATE that failed after TCP connected says of the path (the smb probe's reasons).
_SMB_WHY = {
    Reason.SMB_NO_NEGOTIATE_REPLY: "TCP 445 is accepted but nothing answers SMB: a firewall/proxy that terminates "
                                   "or inspects 445 holds the connection and never passes the NEGOTIATE on.",
    Reason.SMB_CLOSED: "TCP 445 is accepted but nothing answers SMB: a firewall/proxy that terminates or inspects "
                       "445 closes the connection as soon as SMB is spoken.",
    Reason.SMB_NOT_SMB: "Something other than Azure Files answers on 445 (an HTTP or TLS reply, or garbage): a proxy "
                        "or firewall that intercepts the port, or a name that resolves to another server.",
    Reason.SMB_SMB1_ONLY: "An SMB1-only server answers, and Azure Files speaks SMB 2.1 and 3.x only: the name "
                          "resolves to another server, or a middlebox answers on its behalf.",
    Reason.SMB_INVALID_REPLY: "The SMB2 reply is truncated or malformed: a middlebox rewrites or cuts the SMB traffic.",
    Reason.SMB_ERROR_STATUS: "The SMB server refused the NEGOTIATE (the NT status above): it is not Azure Files, or "
                             "a middlebox answers for it with its own SMB policy.",
}


def _smb(results: Sequence[Result], facts: Facts) -> Draft:
    """The share cannot mount: 445 blocked (no TCP), or accepted by something that does not speak
    SMB as Azure Files does (the smb probe's reasons)."""
    observed = (_observed(results, addresses=True)
                + ". The workspace file share (notebooks, the compute instance's files) cannot be mounted.")
    why = list(dict.fromkeys(_SMB_WHY[r.reason] for r in results if r.reason in _SMB_WHY))
    where = ("in any firewall between the compute and the storage account (with a storage private endpoint, to "
             "its address)")
    if not why:
        path = _path_story(results, facts)
        return Draft(summary=f"SMB (TCP 445) to the workspace storage is blocked{path.summary}: {_hosts(results)}",
                     cause=observed + path.cause, remedy=path.remedy or _open(results, facts, where), path=path.line,
                     trace=path.trace)
    return Draft(
        summary=f"TCP 445 to the workspace storage is accepted, but SMB does not get through: {_hosts(results)}",
        cause=f"{observed} {' '.join(why)}",
        remedy=(f"Let SMB to {facts.rule_fqdns(results)} through unmodified: exempt TCP 445 from SMB proxying, "
                "inspection and IPS policies in the firewall or NVA on the path, and check that the name resolves "
                f"to the storage account (or its private endpoint). {_open(results, facts, where)}"))


def _smb_dialect(results: Sequence[Result], facts: Facts) -> Draft:
    dialects = sorted({str(r.evidence.get("dialect")) for r in results})
    return Draft(
        summary=f"SMB to {_hosts(results)} negotiates only SMB {', '.join(dialects)}",
        cause=(_observed(results) + ". Azure Files needs SMB 3.0 or later for encryption in transit (which storage "
               "accounts require by default) and for any mount from outside the storage account's region: the server "
               "or a middlebox on 445 caps the dialect."),
        remedy=("Mount with SMB 3.x: if a firewall or NVA proxies SMB, exempt the storage account from it or let it "
                "negotiate 3.0 and later; check that the name resolves to the storage account; on the node use a "
                "kernel whose cifs client offers SMB 3 (vers=3.1.1 in the mount options)."))


def _udp(results: Sequence[Result], facts: Facts) -> Draft:
    first = results[0]
    return Draft(
        summary=f"UDP {first.check.port} to {_hosts(results)} is rejected",
        cause=_observed(results)
        + ". An ICMP unreachable/prohibited answer came back: a firewall or NSG rejects the datagrams.",
        remedy=_open(results, facts) + " Compute instances are created, updated and deleted over it.")


def _resolver_text(facts: Facts) -> str:
    """The resolvers the failing lookups asked; from another vantage, also the host's where they
    differ (a container with a resolver of its own fails where the host does not)."""
    text = ", ".join(facts.resolvers) or "no resolver"
    host = facts.vantage_host
    listed = host.get("resolvers") if host is not None else None
    on_host = [str(r) for r in listed] if isinstance(listed, list) else []
    if host is not None and on_host != list(facts.resolvers):
        text += f" (the vantage's own; the host uses {', '.join(on_host) or 'no resolver'})"
    return text


def _vantage_mtu(results: Sequence[Result], facts: Facts) -> Draft:
    excess = facts.vantage_mtu_excess
    interface, mtu, host_interface, host_mtu = excess or ("?", 0, "?", 0)
    vantage = facts.node.get("vantage")
    where = f"{vantage.get('kind')} {vantage.get('name')}" if isinstance(vantage, dict) else "the vantage"
    stalled = (f" TLS handshakes stall from {where} alone: {_observed(results)}; the host's own connections "
               f"advertise an MSS that fits {host_mtu}." if results else
               " Nothing failed on this run's paths yet, but any answer larger than the host's path can carry is lost.")
    return Draft(
        severity=None if results else Severity.WARNING,
        targets=() if results else (f"{where}:{interface}",),
        summary=f"{where} sends with MTU {mtu} on {interface}, above the host's {host_mtu} on {host_interface}"
        + (f": TLS stalls there ({len(results)} endpoint(s))" if results else ""),
        cause=(f"The vantage's interface {interface} has MTU {mtu}, the host's uplink {host_interface} {host_mtu}: "
               f"TCP in the vantage advertises an MSS of {mtu - 40}, servers send segments that size, and the "
               f"host's path drops what exceeds {host_mtu} (with ICMP 'fragmentation needed' filtered on the way, "
               "nobody learns of it)." + stalled),
        remedy=(f"Give the container network the host's MTU: \"mtu\": {host_mtu} in /etc/docker/daemon.json "
                "(then restart Docker) for the default bridge, or docker network create -o "
                f"com.docker.network.driver.mtu={host_mtu} for a network of your own; or clamp the MSS on the host "
                "for forwarded connections (nft add rule inet filter forward tcp flags syn tcp option maxseg size "
                "set rt mtu)."))


def _dns_missing(results: Sequence[Result], facts: Facts) -> Draft:
    return Draft(
        summary=f"Required names do not resolve (NXDOMAIN): {_hosts(results)}",
        cause=(f"The node's resolver ({_resolver_text(facts)}) says these names do not exist. A DNS server "
               "or a private DNS zone that shadows the public zone answers for them without the record."),
        remedy=("Make the resolver answer these names: on a custom DNS server forward their zones to "
                f"{AZURE_DNS}; look for a private DNS zone linked to the VNet whose name is a parent of "
                "these names and remove it or add the records."))


def _no_ipv4(results: Sequence[Result], facts: Facts) -> Draft:
    names = [r for r in results if r.check.layer.value == "dns"]
    got = "; ".join(f"{r.check.host} -> {', '.join(r.addresses)}" for r in names[:4])
    return Draft(
        summary=f"Required names have no IPv4 address (AAAA records only): {_hosts(names or results)}",
        cause=(f"{got}. This node has no IPv6 route, so nothing can connect to these names whatever the "
               "NSG or firewall allows."),
        remedy=("Give these names A records where they are defined (a private DNS zone, a custom DNS server or "
                "/etc/hosts: Azure endpoints are reached over IPv4), or make the VNet and the node dual-stack."))


def _dns_servfail(results: Sequence[Result], facts: Facts) -> Draft:
    return Draft(
        summary=f"The resolver fails (SERVFAIL) for required names: {_hosts(results)}",
        cause=f"{_resolver_text(facts)} answered SERVFAIL: it cannot get an answer from its upstream.",
        remedy=(f"Check the DNS server's forwarders: it must reach {AZURE_DNS} (Azure DNS) over UDP and TCP 53, "
                "and conditional forwarders must point at a reachable server."))


def _dns_unavailable(results: Sequence[Result], facts: Facts) -> Draft:
    asked = sorted({str(s.get("server")) for r in results for s in _dicts(r.evidence.get("servers"))})
    return Draft(
        summary=f"DNS servers do not answer: {', '.join(asked) or _resolver_text(facts)}",
        cause="; ".join(f"{r.check.host}: {r.detail or r.reason}" for r in results[:5]),
        remedy=(f"Check /etc/resolv.conf and the VNet's DNS servers setting, and allow UDP and TCP 53 to "
                f"{_resolver_text(facts)} in the NSG and local firewall; {AZURE_DNS} must never be blocked."))


def _zones_text(results: Sequence[Result], facts: Facts, attribute: str) -> str:
    """The zones of the results' names: their `privatelink_zone`, or the zones `forwarded` for them."""
    zones: list[str] = []
    for r in results:
        if (zone := facts.catalog.zone_of(r.check.host)) is not None:
            value = getattr(zone, attribute)
            zones += value if isinstance(value, tuple) else [value]
    return ", ".join(dict.fromkeys(z for z in zones if z))


def _chain(result: Result) -> str:
    chain = _strings(result.evidence.get("cname_chain"))
    return " -> ".join([result.check.host, *chain, *(_strings(result.evidence.get("addresses")) or ["?"])])


def _endpoint_known(results: Sequence[Result], facts: Facts) -> str:
    """Where the fact "this name has a private endpoint" came from, where the context did not say
    it (the CNAME chain into a privatelink zone), or where the chain contradicts the context."""
    detected: list[str] = []
    unseen: list[str] = []
    options: list[str] = []
    for r in results:
        spec = r.check.spec
        if not isinstance(spec, DnsSpec) or not spec.private_link_label:
            continue
        link = r.evidence.get("private_link")
        keys = [row.dns_private for rid in r.check.requirements
                if (row := facts.catalog.requirements_by_id.get(rid)) is not None and row.dns_private]
        options += [f"--{key.replace('_', '-')}" for key in keys]
        if spec.expect != "private" and link:
            detected.append(f"{r.check.host} (into {link})")
        elif spec.expect == "private" and not link:
            unseen.append(r.check.host)
    flags = "; ".join(f"{o} or --no-{o[2:]}" for o in dict.fromkeys(options))
    text = ""
    if detected:
        text += (f" These names have a private endpoint, detected from their CNAME chain: {', '.join(detected)} "
                 f"({flags} settles it).")
    if unseen:
        text += (f" Public DNS shows no private endpoint for {', '.join(unseen)} (no CNAME into a privatelink "
                 f"zone): if it has none, say so ({flags}).")
    return text


def _private_resolver(results: Sequence[Result], facts: Facts, classic: str) -> str:
    """The DNS remedy where the VNet's DNS is (or may be) an Azure DNS Private Resolver, beside or
    in place of the classic one: the resolver answers from the zones linked to its own VNet, and a
    forwarding ruleset linked to the VNet decides where a zone goes, so a rule there for the zone
    (or a parent: windows.net., a catch-all .) sends it elsewhere."""
    said = facts.context["dns_private_resolver"].value
    if said is False:
        return classic
    private = _zones_text(results, facts, "privatelink_zone") or "<privatelink-zone>"
    forwarded = _zones_text(results, facts, "forwarded") or private
    first = forwarded.split(", ")[0]
    resolver = (f"link the private DNS zone(s) {private} to the resolver's VNet (az network private-dns link vnet "
                "create --resource-group <zone-rg> --zone-name <zone> --name <resolver-vnet>-link --virtual-network "
                "<resolver-vnet-id> --registration-enabled false); in a DNS forwarding ruleset linked to the compute "
                f"VNet, a rule for {forwarded} or a parent of it (windows.net., a catch-all .) sends them elsewhere: "
                "list them (az dns-resolver forwarding-rule list --resource-group <rg> --ruleset-name <ruleset>) and "
                "remove it, or point it at the resolver's inbound endpoint (az dns-resolver forwarding-rule create "
                f"--resource-group <rg> --ruleset-name <ruleset> --name <rule> --domain-name {first}. "
                "--forwarding-rule-state Enabled --target-dns-servers ip-address=<inbound-endpoint-ip> port=53)")
    if said is True:
        return f"With the DNS Private Resolver: {resolver}."
    return f"{classic} If the DNS is an Azure DNS Private Resolver (--dns-private-resolver): {resolver}."


def _pe_public(results: Sequence[Result], facts: Facts) -> Draft:
    zone = _zones_text(results, facts, "privatelink_zone") or _zones_text(results, facts, "forwarded")
    return Draft(
        summary=f"Private-endpoint names resolve to public addresses: {_hosts(results)}",
        cause=("; ".join(_chain(r) for r in results[:4]) + f". The node asks {_resolver_text(facts)}; the "
               f"private DNS zone {zone} is not linked to this VNet, or the private endpoint has no DNS "
               "zone group, so the public answer wins." + _endpoint_known(results, facts)),
        remedy=_private_resolver(results, facts,
            f"Link the private DNS zone(s) {zone} to the compute VNet: az network private-dns link vnet "
            f"create --resource-group <zone-rg> --zone-name <zone> --name <vnet>-link --virtual-network "
            "<vnet-id> --registration-enabled false; and make sure each private endpoint has a DNS zone "
            "group for them."))


def _custom_dns(results: Sequence[Result], facts: Facts) -> Draft:
    zones = _zones_text(results, facts, "forwarded")
    servers = ", ".join(facts.custom_dns)
    return Draft(
        summary=f"Custom DNS server {servers} does not forward {zones} to Azure DNS",
        cause=("; ".join(_chain(r) for r in results[:4]) + f". The node uses custom DNS {servers}, which "
               "answers these names from the public zone instead of the private endpoint's records."
               + _endpoint_known(results, facts)),
        remedy=_private_resolver(results, facts,
            f"On {servers} add conditional forwarders for {zones} (the public zone names, not the "
            f"privatelink. ones) to {AZURE_DNS}; the private DNS zones must be linked to the VNet the "
            "DNS server is in."))


def _record_missing(results: Sequence[Result], facts: Facts) -> Draft:
    zone = _zones_text(results, facts, "privatelink_zone")
    return Draft(
        summary=f"The private DNS zone {zone} has no record for {_hosts(results)}",
        cause=("; ".join(_chain(r) + " (NXDOMAIN)" for r in results[:4]) + ". The zone is linked, so it "
               "answers authoritatively, but the private endpoint's A record is missing."),
        remedy=(f"Add the missing A record(s) in {zone} pointing at the workspace private endpoint's "
                "addresses, or recreate the private endpoint's DNS zone group so Azure writes them."))


def _instance_wrong(results: Sequence[Result], facts: Facts) -> Draft:
    names = _hosts(results)
    got = "; ".join(f"{r.check.host} -> {', '.join(_strings(r.evidence.get('addresses'))) or '?'}" for r in results)
    zones = _zones_text(results, facts, "forwarded")
    return Draft(
        summary=f"The compute instance name does not resolve to the workspace private endpoint: {names}",
        cause=(f"{got}. With a private-endpoint workspace the instance name must resolve to the workspace "
               "endpoint's address (the one the workspace API name resolves to), not to the instance's own "
               "address or a public one; Jupyter and the terminal will not open."),
        remedy=(f"Add an A record for each name in zone {zones} pointing at the workspace private endpoint's "
                f"address (or forward {zones} to {AZURE_DNS}), and remove any /etc/hosts override."))


def _hosts_override(results: Sequence[Result], facts: Facts) -> Draft:
    """Critical when the pinned address fails (a connection to it, or the name's own check: a
    private-endpoint name pinned to a public address); a warning when it works but is not what
    DNS gives: the next time the endpoint moves, the node alone keeps the old address."""
    pins = [(r, o) for r in results if isinstance(o := r.evidence.get("hosts_override"), dict)]
    connections = [r for r in results if r.check.layer.value != "dns"]
    failing = bool(connections) or any(r.status is not Status.PASS for r, _ in pins)
    pinned = "; ".join(
        " and ".join(f"line {line.get('line')} of {o.get('file')} pins {r.check.host} to {line.get('address')}"
                     for line in _dicts(o.get("lines")))
        + f", while DNS ({_resolver_text(facts)}) answers {', '.join(_strings(o.get('dns')))}" for r, o in pins)
    order = next((f" (nsswitch.conf hosts: {o['nsswitch']})" for _, o in pins if o.get("nsswitch")), "")
    if connections:
        consequence = f" Connections to the pinned address fail: {_observed(connections, addresses=True)}."
    elif failing:
        consequence = " The name's own check fails on the pinned address."
    else:
        consequence = (" The pinned address answers today, but it is not the endpoint's: when the endpoint "
                       "moves, this node alone keeps the old address.")
    return Draft(
        severity=None if failing else Severity.WARNING,
        summary=f"The hosts file overrides DNS for {_hosts([r for r, _ in pins])}"
        + (": connections to the pinned address fail" if connections else ""),
        cause=f"{pinned}. getaddrinfo reads the file before DNS{order}.{consequence}",
        remedy="; ".join(f"Remove or correct line {line.get('line')} of {o.get('file')}: `{line.get('text')}`; "
                         f"DNS answers {', '.join(_strings(o.get('dns')))}"
                         for _, o in pins for line in _dicts(o.get("lines"))) + ".")


def _said(entry: dict[str, Fact]) -> str:
    views = _dicts(entry.get("said"))
    return f"{entry.get('server')} says " + ", then ".join(f"{v.get('answer')} ({v.get('class')})" for v in views)


def _must_match(result: Result) -> bool:
    """A name whose every answer must be one exact private set (a private-endpoint name)."""
    spec = result.check.spec
    return isinstance(spec, DnsSpec) and (spec.expect == "private" or bool(spec.expect_addresses))


def _resolvers_disagree(results: Sequence[Result], facts: Facts) -> Draft:
    """Critical when some answer is one the node cannot use: none (NXDOMAIN, no address) where
    another server has the name, anything but the one private set for a private-endpoint name,
    or the check already failed on it; a warning when the answers only differ in class (private
    or public) for a name any address serves."""
    told = [(r, _dicts(r.evidence.get("disagreement"))) for r in results]
    wrong = list(dict.fromkeys(
        str(e.get("server")) for r, entries in told for e in entries
        if any(v.get("class") == "none" or (_must_match(r) and v.get("class") != "private")
               for v in _dicts(e.get("said"))) or len(_dicts(e.get("said"))) > 1))
    harmful = bool(wrong) or any(r.status is not Status.PASS for r in results)
    flapping = sorted({str(e.get("server")) for _, entries in told for e in entries if len(_dicts(e.get("said"))) > 1})
    zones = _zones_text(results, facts, "forward_zone") or "the zones of these names"
    fix = (f"Make {', '.join(wrong)} answer as the other resolvers do: add conditional forwarders for {zones} to "
           f"{AZURE_DNS}, or take {'them' if len(wrong) > 1 else 'it'} out of the VNet's DNS servers (and "
           "/etc/resolv.conf)" if wrong else
           "Decide which answer is right and make every resolver in the VNet's DNS servers (and /etc/resolv.conf) "
           f"give it: the same zones and forwarders for {zones} on each")
    if flapping:
        fix += (f". {', '.join(flapping)} changed its answer between two questions: several servers behind one "
                "address (a load balancer, an anycast pair) or a forwarder whose upstreams disagree; configure "
                "every instance and upstream alike")
    return Draft(
        severity=None if harmful else Severity.WARNING,
        summary=f"The node's resolvers give different answers for {_hosts(results)}",
        cause="; ".join(f"{r.check.host}: " + "; ".join(_said(e) for e in entries) for r, entries in told[:4])
        + (f"; and {len(told) - 4} more" if len(told) > 4 else "")
        + ". The resolver library picks among them (the next server on a timeout, `options rotate`, "
          "systemd-resolved after any failure), so the node gets one answer or the other.",
        remedy=fix + ".")


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
    def build(results: Sequence[Result], facts: Facts) -> Draft:
        issuer = _issuer(results[0])
        return Draft(
            summary=(f"TLS to {len(results)} endpoint(s) is inspected by {issuer}"
                     + ("" if trusted else ", which this node does not trust")),
            cause=(f"The certificate presented for {_hosts(results)} is issued by {issuer}, not by the "
                   "expected Microsoft or DigiCert CAs: a TLS-inspecting firewall or proxy re-signs the "
                   f"traffic (leaf SHA-256 {_leaf_fingerprints(results)})."
                   + (" This node trusts it, but Azure ML's Python clients use their own CA bundle and will not."
                      if trusted else "")),
            remedy=("Exempt the Azure ML endpoints (" + facts.rule_fqdns(results) + ") from TLS inspection in "
                    "the firewall or proxy; inspection of Azure ML traffic is not supported. If inspection "
                    "must stay, install the inspection CA in the system store (update-ca-certificates) and "
                    "in the Python certifi bundle."))
    return build


def _tls_stalled(results: Sequence[Result], facts: Facts) -> Draft:
    return Draft(
        summary=f"TCP connects but the TLS handshake stalls: {_hosts(results)}",
        cause=("The handshake got no answer after the ClientHello. Large server certificate chains that "
               "never arrive are the signature of a path-MTU black hole (a VPN, NVA or tunnel with a smaller "
               "MTU that drops ICMP 'fragmentation needed')."),
        remedy=("Clamp the TCP MSS on the VPN gateway/NVA (or lower the node's MTU, e.g. ip link set dev eth0 "
                "mtu 1400) and allow ICMP type 3 code 4 back to the compute subnet."))


def _tls_invalid(results: Sequence[Result], facts: Facts) -> Draft:
    first = results[0]
    return Draft(
        summary=f"TLS fails ({first.reason}) for {_hosts(results)}",
        cause=_observed(results),
        remedy=("A name mismatch or a plaintext reply means something else answers at that address (a "
                "captive portal, a proxy, a wrong DNS answer); an expired or not-yet-valid certificate often "
                "means the node clock is wrong (check timedatectl / chrony)."))


def _clock(results: Sequence[Result], facts: Facts) -> Draft:
    skews = sorted(float(r.evidence["clock_skew_s"]) for r in results  # type: ignore[arg-type]
                   if isinstance(r.evidence.get("clock_skew_s"), (int, float)))
    tls = [r for r in results if r.reason in _CLOCK_TLS]
    if skews:
        median = skews[len(skews) // 2]
        how = f"servers' clocks are {abs(median):.0f}s {'ahead of' if median > 0 else 'behind'} this node's"
    else:
        ahead = any(r.reason is Reason.TLS_NOT_YET_VALID for r in tls)
        how = f"certificates of {len(tls)} endpoints all look {'not yet valid' if ahead else 'expired'}"
    return Draft(
        summary=f"The node clock is wrong: {how}",
        cause=(f"{how} (Date headers and certificate validity). TLS verification"
               + (f" fails for {_hosts(tls)}" if tls else " will fail")
               + " and Microsoft Entra ID rejects tokens more than about five minutes off."),
        remedy=("Synchronise the clock: timedatectl set-ntp true, and check chrony/systemd-timesyncd "
                "(Azure VMs sync from the host through the PTP clock /dev/ptp_hyperv, or time.windows.com "
                "over UDP 123). Then run the check again."))


def _no_egress(results: Sequence[Result], facts: Facts) -> Draft:
    ports = ", ".join(sorted({f"{r.check.protocol.upper()} {r.check.port}" for r in results}))
    return Draft(
        summary=f"No outbound connectivity: every public endpoint fails ({len({r.check.host for r in results})} "
                f"hosts, {ports}) while DNS works",
        cause=("; ".join(f"{r.check.target}: {r.reason}" for r in results[:4])
               + ". Nothing outside the VNet answers: compute without a public IP has no way out unless "
                 "the subnet has a NAT gateway or a route to a firewall (Azure's default outbound access is "
                 "being retired and must not be relied on)."),
        remedy=("Give the compute subnet a way out: attach a NAT gateway to it, or add a route table with "
                "0.0.0.0/0 -> your Azure Firewall/NVA and allow the Azure ML service tags and FQDNs there "
                "(`aml-netcheck rules` lists them). Check that no NSG rule denies all outbound traffic."))


def _local(code: str, summary: str, remedy: str) -> Builder:
    """Findings about the node itself; the probe's detail names the rule, socket or network."""
    def build(results: Sequence[Result], facts: Facts) -> Draft:
        ports = sorted({r.check.port for r in results if r.check.port})
        # Nothing listening on 44224 is not proof of a problem: the docs do not say which process
        # takes Azure ML's management traffic there. SSH on an attached VM is required outright.
        level = Severity.INFO if code == "inbound-port-closed" and 22 not in ports else None
        return Draft(severity=level,
                     summary=summary + (f" (port {', '.join(map(str, ports))})" if ports else ""),
                     cause="; ".join(r.detail for r in results), remedy=remedy)
    return build


def _websocket(results: Sequence[Result], facts: Facts) -> Draft:
    return Draft(
        summary=f"HTTPS works but the WebSocket upgrade is refused: {_hosts(results)}",
        cause=_observed(results)
        + ". Jupyter, JupyterLab and the terminal will not connect.",
        remedy=("Allow WebSocket upgrades (Connection: Upgrade, Upgrade: websocket) to "
                f"{facts.rule_fqdns(results)} in the proxy, firewall or WAF, and exempt these names from TLS "
                "inspection."
                + (" An inspecting squid drops the Upgrade header of the requests it bumps unless told: "
                   "http_upgrade_request_protocols websocket allow all (squid 5 and later), or an ssl_bump "
                   "splice rule for these names." if any(r.check.path is CheckPath.PROXY for r in results) else "")))


# The key vault rows (their authenticated requests see the vault's network rules: check --use-identity)
VAULTS = frozenset({"workspace-key-vault", "key-vault", "workspace-key-vault-peered"})


def _vaults(results: Sequence[Result]) -> list[Result]:
    return [r for r in results if VAULTS & set(r.check.requirements)]


def _resource_denied(results: Sequence[Result], facts: Facts) -> Draft:
    """Storage and registries take a network rule for the subnet, a key vault too or its trusted
    services; a workspace with public network access disabled is reached only through its private
    endpoint."""
    workspace = [r for r in results if (zone := facts.catalog.zone_of(r.check.host)) and zone.workspace]
    vaults = _vaults(results)
    fixes = []
    if vaults:
        names = ", ".join(dict.fromkeys(r.check.host.partition(".")[0] for r in vaults))
        fixes.append(f"The key vault ({names}) answered the node's managed identity with ForbiddenByFirewall: "
                     "in its Networking settings allow the compute subnet (a virtual network rule with the "
                     f"subnet's Microsoft.KeyVault service endpoint: az keyvault network-rule add --name {names} "
                     "--subnet <subnet-id>), or reach it through a private endpoint whose "
                     "privatelink.vaultcore.azure.net zone is linked to the VNet; \"Allow trusted Microsoft "
                     "services\" admits Azure ML's own service, not the compute's calls.")
    if len(workspace) + len(vaults) < len(results):
        fixes.append("In the storage account's or registry's Networking settings allow the compute subnet: a "
                     "virtual network rule with the subnet's service endpoint (Microsoft.Storage or "
                     "Microsoft.ContainerRegistry), e.g. az storage account network-rule add --subnet <subnet-id> / "
                     "az acr network-rule add --subnet <subnet-id>; or reach the resource through a private "
                     "endpoint whose privatelink zone is linked to the VNet.")
    if workspace:
        zones = _zones_text(workspace, facts, "privatelink_zone")
        fixes.append(f"The workspace ({_hosts(workspace)}) has public network access disabled and this node "
                     f"reached its public endpoint: reach it through the workspace private endpoint (link {zones} "
                     f"to the compute VNet, or forward {_zones_text(workspace, facts, 'forwarded')} to "
                     f"{AZURE_DNS} on a custom DNS server, so the name resolves to the endpoint, and give "
                     "--private-endpoint), or enable public network access from selected networks."
                     + (" These requests went through the proxy, which reaches the public endpoint: list the "
                        "workspace names in NO_PROXY." if any(r.check.path is CheckPath.PROXY for r in workspace)
                        else ""))
    return Draft(
        summary=f"The resource's own firewall denies this node: {_hosts(results)}",
        cause=(_observed(results, addresses=True) + ". The network path works (the service answered), but the "
               "resource accepts only selected networks or its private endpoint, and this node's path is not "
               "among them: the share will not mount, datastores, images and the workspace will not load."),
        remedy=" ".join(fixes))


PROXY_TLS_ERRORS = frozenset({"ERR_SECURE_CONNECT_FAIL", "tls_certificate_error"})  # probes._net: proxy_error


def _proxy_denied(results: Sequence[Result], facts: Facts) -> Draft:
    """The proxy refuses: its URL policy for the names, or (a stock squid) CONNECT to ports outside
    its SSL_ports, which the node's clients need for the compute instance's 8787 and 18881."""
    ports = sorted({r.check.port for r in results if r.check.port not in (None, 80, 443)})
    fix = ("Add these FQDNs to the proxy's allow-list, or list them in NO_PROXY if the node may reach them "
           "directly (private endpoints must always be in NO_PROXY).")
    if any(r.evidence.get("proxy_error") in PROXY_TLS_ERRORS for r in results):
        fix = ("The proxy inspects TLS and cannot verify these services' certificates (it answers 503 itself): "
               "give it a CA store with the public roots Azure's certificates chain to (squid: tls_outgoing_options "
               "cafile=/etc/ssl/certs/ca-certificates.crt), or splice these names instead of bumping them (squid: "
               "an ssl_bump splice rule with a dstdomain ACL). " + fix)
    if ports:
        shown = ", ".join(map(str, ports))
        fix = (f"Let the proxy tunnel CONNECT to port(s) {shown} for these names (squid: add them to SSL_ports, "
               "e.g. acl SSL_ports port 443 " + " ".join(map(str, ports)) + ", and allow the http_access CONNECT "
               "rule for them), or list the names in NO_PROXY if the node reaches them directly. " + fix)
    return Draft(summary=f"The configured proxy refuses these destinations: {_hosts(results)}"
                 + (f" (CONNECT to port {', '.join(map(str, ports))})" if ports else ""),
                 cause=_observed(results), remedy=fix)


def _proxy(what: str, fix: str) -> Builder:
    def build(results: Sequence[Result], facts: Facts) -> Draft:
        return Draft(summary=f"The configured proxy {what}: {_hosts(results)}", cause=_observed(results),
                     remedy=fix)
    return build


def _unreachable(results: Sequence[Result], facts: Facts) -> Draft:
    first = results[0]
    return Draft(
        summary=f"{first.check.layer.value.upper()} check fails ({first.reason}) for {_hosts(results)}",
        cause=_observed(results),
        remedy=f"Allow the flows listed for {facts.rule_fqdns(results)} and check the service answers.")



# Where the slow checks of one latency-degraded finding went (latency_path, the group's key), as its summary says it.
LATENCY_WHERE = {"proxy": "through the proxy", "private": "to private addresses in the VNet",
                 "public": "to public endpoints", "resolvers": "at the resolvers"}


def latency_path(result: Result) -> str:
    """The path a slow check took, a key of LATENCY_WHERE: slow checks on one path are one cause."""
    if result.check.path is not CheckPath.DIRECT:
        return "proxy"
    if isinstance(result.check.spec, DnsSpec):
        return "resolvers"
    addresses = result.attempted or result.addresses
    return "private" if addresses and all(is_private(a) for a in addresses) else "public"


def _g(value: Fact) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _latency(results: Sequence[Result], facts: Facts) -> Draft:
    """Checks that worked, slower than their layer's threshold (agent/latency.py), on one path: the
    measured figure and the threshold of each, and which layer's figure says where the time goes."""
    measured = [(r, r.evidence.get("latency")) for r in results]
    shown = "; ".join(f"{r.check.id}: {m.get('measure')} {_g(m.get('ms'))} ms "
                      f"(threshold {_g(m.get('threshold_ms'))} ms)" for r, m in measured[:5] if isinstance(m, dict))
    more = f"; and {len(results) - 5} more" if len(results) > 5 else ""
    layers = {r.check.layer.value for r in results}
    key = latency_path(results[0])  # the group's key (classify): one path
    if "tcp" in layers:
        why = ("The TCP handshake itself is slow, as the kernel timed it: the round trip, not the service, takes "
               "the time. Past the longest terrestrial round trip (about 300 ms), distance does not explain it: a "
               "route through a far or congested appliance (forced tunnelling to on-premises, a VPN or "
               "ExpressRoute gateway at its limit), or packet loss (a SYN sent again costs a second).")
    elif layers & {"tls", "http"}:
        why = ("Connections are fast but the answers are slow: the peer, or a middlebox that terminates the "
               "connection (a TLS-inspecting firewall, a proxy), spends the time.")
    else:
        why = "The resolvers answer slowly: a custom DNS server's forwarding, or its own load."
    proxy = " through the proxy" if key == "proxy" else ""
    return Draft(
        summary=f"Working, but slow {LATENCY_WHERE[key]}: {len(results)} check(s) over their latency thresholds: "
                f"{_hosts(results)}",
        cause=f"{shown}{more}. {why} Azure ML works, slowly: jobs start late, image pulls and mounts take longer, "
              "and a slower path times out sooner under load.",
        remedy=(f"Find where the time goes on this path{proxy}: the traced route (traceroute -T -p PORT to an address "
                "above), the compute subnet's route table (0.0.0.0/0 to an appliance or on-premises: routes with "
                "next hop Internet for the service tags keep them off it), the load and SKU of the appliance, "
                "gateway or proxy on the way; Network Watcher's Connection Monitor measures the same path from "
                "Azure. If the path is slow by design (a workspace in another region), raise the thresholds: "
                "`--latency tcp=MS,tls=MS,http=MS,dns=MS` or the config file's [latency] table."))


def _imds(results: Sequence[Result], facts: Facts) -> Draft:
    """IMDS cannot be reached: a warning when its own check fails (managed identity needs it) or
    when detection's failure left the region unknown (region-specific checks were skipped); info
    when only detection failed and the context came from elsewhere."""
    detection = facts.node.get("detection")
    imds = detection.get("imds") if isinstance(detection, dict) else None
    error = imds.get("error") if isinstance(imds, dict) else None
    region_unknown = facts.context["region"].value is None
    observed = [_observed(results)] if results else []
    if error:
        observed.append(f"detection: {error}")
    return Draft(
        severity=Severity.WARNING if region_unknown or results else Severity.INFO,
        targets=() if results else (IMDS_TARGET,),
        summary=f"Instance metadata (IMDS, {IMDS_ADDRESS}) could not be read"
        + ("; the region is unknown, so region-specific checks were skipped" if region_unknown else "")
        + ("; managed identity (az login --identity, identity-based datastores) will fail" if results else ""),
        cause="; ".join(observed) + ". Region, cloud and public IP were taken from options, the config file or "
        "defaults.",
        remedy=(f"Allow the node to reach {IMDS_ADDRESS}:80 directly (never through a proxy: add it to NO_PROXY) "
                "and make sure no local firewall rule blocks it; or give --region, --cloud and "
                "--public-ip/--no-public-ip."))


# The role each authenticated request needs (by the requirement ids: check --use-identity), and how to grant it.
_ROLES = {
    "acr": ("AcrPull", "the registry", "<registry-resource-id>"),
    "arm": ("Reader", "the workspace's resource group (or what the jobs manage)", "<resource-group-id>"),
}


def _identity_denied(results: Sequence[Result], facts: Facts) -> Draft:
    """The network let the authenticated request through and the resource refused the identity:
    a role assignment (or a key vault access policy) is missing, no network rule."""
    fixes = []
    vaults = _vaults(results)
    if vaults:
        names = ", ".join(dict.fromkeys(r.check.host.partition(".")[0] for r in vaults))
        fixes.append(f"Key vault {names}: give the node's managed identity the Key Vault Secrets User role "
                     "(az role assignment create --role \"Key Vault Secrets User\" --assignee <principal-id> "
                     f"--scope <key-vault-resource-id>), or, on a vault with access policies, get and list on "
                     f"secrets (az keyvault set-policy --name {names} --object-id <principal-id> "
                     "--secret-permissions get list).")
    for rid, (role, what, scope) in _ROLES.items():
        if any(rid in r.check.requirements for r in results):
            fixes.append(f"{_hosts([r for r in results if rid in r.check.requirements])}: give the identity "
                         f"{role} on {what} (az role assignment create --role {role} --assignee <principal-id> "
                         f"--scope {scope}).")
    return Draft(
        summary=f"The node's managed identity is refused by the resource (no network rule): {_hosts(results)}",
        cause=(_observed(results) + ". The request got through the network and was authenticated, then refused "
               "for the identity (an RBAC role or an access policy is missing, or assignments have not "
               "propagated): what uses this identity (az login --identity, identity-based datastores, image "
               "pulls) fails; key-based access still works."),
        remedy=" ".join(fixes) + " The principal id is the identity's (the denial above names the caller's "
               "object id; az identity show or the compute's Identity page).")


def _identity_endpoint(results: Sequence[Result], facts: Facts) -> Draft:
    """The compute instance's own identity endpoint does not answer: a service on the instance, so the
    fix is on the instance (a local rule, the service, a stale MSI_ENDPOINT), never an NSG."""
    given = facts.context.get("identity_endpoint")
    where = f" ({given.value}, from {given.source})" if given is not None and given.value else ""
    ports = ", ".join(dict.fromkeys(str(r.check.port) for r in results if r.check.port))
    return Draft(
        summary=f"The compute instance's managed identity endpoint does not answer{where}",
        cause=(_observed(results) + ". Azure ML's credential asks it for the instance's tokens (MSI_ENDPOINT): "
               "az login --identity, identity-based datastores and the instance's identity fail; key-based access "
               "still works. It is served on the instance itself, so no NSG or firewall is in the way."),
        remedy=(f"Check that no local firewall rule drops loopback port {ports or '<port>'} (nft list ruleset), and "
                "that MSI_ENDPOINT in this environment is the instance's (a copied .bashrc or setup script can carry "
                "another's); restart the compute instance to restart Azure ML's identity service."))


def identity_proxied(facts: Facts) -> tuple[str, ...]:
    """The identity endpoints' hosts (IMDS, the instance's local endpoint) that NO_PROXY leaves to the
    proxy, matched as requests matches it (agent/inputs/proxy.py): their URLs are http://, so HTTP_PROXY
    is the one that carries them (HTTPS_PROXY alone does not)."""
    settings = facts.proxy
    if settings.http_proxy is None:
        return ()
    return tuple(dict.fromkeys(host for host, port in facts.identity_endpoints
                               if not proxy.bypassed(host, port, settings.no_proxy)))


def _identity_via_proxy(results: Sequence[Result], facts: Facts) -> Draft:
    """The NO_PROXY line to set: the value as written, with the missing hosts appended."""
    settings = facts.proxy
    missing = identity_proxied(facts)
    written = settings.no_proxy_text.strip().rstrip(",")
    line = f"NO_PROXY={shlex.quote(','.join(filter(None, (written, *missing))))}"
    via = settings.http_proxy.shown if settings.http_proxy else "the proxy"
    where = ("/etc/environment" if settings.source == "/etc/environment"
             else "the compute's environment (the setup script, ~/.bashrc, the job's environment variables)")
    ports = dict(facts.identity_endpoints)
    return Draft(
        targets=tuple(f"{host}:{ports.get(host) or 80}/tcp" for host in missing),
        summary=f"Managed identity calls go to the proxy: NO_PROXY does not cover {', '.join(missing)}",
        cause=(f"HTTP_PROXY is {via} (from {settings.source}) and NO_PROXY "
               + (f"({written})" if written else "is empty, so it")
               + f" matches none of {', '.join(missing)} as Python's requests reads it. Azure ML's credential "
               "(azure-identity's ManagedIdentityCredential and AzureMLCredential), az login --identity and MSAL "
               "send their http:// token requests there through the proxy, which cannot reach this node's own "
               "instance metadata or loopback (or answers with its own VM's identity): identity-based datastores, "
               "image pulls and key vault access fail. The agent's own checks of these endpoints go direct."),
        remedy=(f"Set {line} (and no_proxy to the same value) in {where}, wherever HTTP_PROXY is set for "
                "Azure ML; IMDS and the local identity endpoint must never go through a proxy."))


def imds_unreadable(facts: Facts) -> bool:
    detection = facts.node.get("detection")
    imds = detection.get("imds") if isinstance(detection, dict) else None
    return isinstance(imds, dict) and "error" in imds


C, W = Severity.CRITICAL, Severity.WARNING
DECLARATIONS: dict[Code, Declaration] = {
    Code.NO_OUTBOUND_CONNECTIVITY: Declaration(
        C, "every endpoint outside the VNet fails while DNS works (no NAT gateway or firewall route)",
        ("training-vnet", "firewall"), _no_egress),
    Code.EGRESS_BLOCKED: Declaration(
        C, "connections are silently dropped (NSG deny, firewall drop, route to nowhere)", ("firewall",),
        _egress("silently dropped", "Connections got no answer (an NSG deny, a firewall drop or a route to nowhere):"),
        handoff=True),
    Code.EGRESS_REJECTED: Declaration(
        C, "connections are refused, reset, ICMP-prohibited, or denied by an Azure Firewall (470)", ("firewall",),
        _egress("actively rejected", "Connections were refused, reset or ICMP-prohibited by a firewall or NSG:"),
        handoff=True),
    Code.UDP_BLOCKED: Declaration(C, "UDP 5831 is rejected (ICMP unreachable / prohibited)", ("training-vnet",), _udp,
                                  handoff=True),
    Code.SMB_BLOCKED: Declaration(
        C, "TCP 445 to the workspace storage is blocked, or accepted by something that does not answer SMB",
        ("training-vnet", "azure-files-smb"), _smb, handoff=True),
    Code.SMB_DIALECT_OLD: Declaration(
        W, "SMB to the workspace storage negotiates a dialect below 3.0 (warning: no encryption, no mount from "
           "outside the region)", ("azure-files-smb",), _smb_dialect),
    Code.DNS_UNAVAILABLE: Declaration(C, "no configured resolver answers", ("azure-dns",), _dns_unavailable),
    Code.DNS_SERVFAIL: Declaration(C, "the resolver fails (SERVFAIL) for required names", ("custom-dns",),
                                   _dns_servfail),
    Code.DNS_NAME_MISSING: Declaration(C, "a required name does not resolve (NXDOMAIN)", ("custom-dns",), _dns_missing),
    Code.DNS_NO_IPV4_ADDRESS: Declaration(
        C, "a required name resolves only to IPv6 addresses and this node has no IPv6 route", ("custom-dns",),
        _no_ipv4),
    Code.PRIVATE_ENDPOINT_RESOLVES_PUBLIC: Declaration(
        C, "a private-endpoint name resolves to a public address (private DNS zone not linked)",
        ("pe-troubleshoot", "custom-dns", "dns-private-resolver"), _pe_public),
    Code.CUSTOM_DNS_NOT_FORWARDING: Declaration(
        C, f"as above, and the node uses a custom DNS server that must forward to {AZURE_DNS}",
        ("custom-dns", "dns-private-resolver"), _custom_dns),
    Code.PRIVATE_DNS_RECORD_MISSING: Declaration(
        C, "a name CNAMEs into a privatelink zone that has no record for it", ("custom-dns", "pe-troubleshoot"),
        _record_missing),
    Code.INSTANCE_NAME_WRONG_ADDRESS: Declaration(
        C, "the compute instance name does not resolve to the workspace private endpoint address",
        ("custom-dns", "jupyter"), _instance_wrong),
    # Critical by default: the node connects to the pinned address, so when it fails that line is the
    # cause of every failure to the name; the builder lowers it to a warning when the address works.
    Code.HOSTS_FILE_OVERRIDE: Declaration(
        C, "a hosts-file line pins a name to an address DNS does not give (a warning while the address works)",
        ("custom-dns",), _hosts_override),
    # Critical by default. A node whose resolvers disagree fails at random, not never: the stub
    # asks the next server when the first is slow (glibc after 5 s), with `options rotate` in turn,
    # systemd-resolved switches servers after any failure and stays there, and containers and
    # non-glibc resolvers choose on their own. A private-endpoint name that one server answers
    # publicly (or not at all) is a mount or a job that fails on some nodes some of the time: the
    # failure that costs the most to find, so it fails the node now. Answers that differ only in
    # class for a name any address serves are a warning (the builder's).
    Code.DNS_RESOLVERS_DISAGREE: Declaration(
        C, "the node's resolvers give different answers for a name, or one changes its answer when asked again "
        "(names which server said what)", ("custom-dns", "azure-dns"), _resolvers_disagree),
    Code.TLS_INTERCEPTED_UNTRUSTED: Declaration(
        C, "a TLS-inspecting middlebox presents a certificate this node does not trust (names the CA)",
        ("firewall",), _tls_intercepted(trusted=False)),
    Code.TLS_INTERCEPTED: Declaration(
        W, "TLS is inspected by a CA the node trusts, not an expected issuer (warning)", ("firewall",),
        _tls_intercepted(trusted=True)),
    Code.TLS_HANDSHAKE_STALLED: Declaration(
        C, "TCP connects but the TLS handshake stalls (path-MTU black hole)", ("firewall",), _tls_stalled),
    Code.TLS_CERTIFICATE_INVALID: Declaration(
        C, "name mismatch, expired, not yet valid, or a non-TLS answer", ("firewall",), _tls_invalid),
    Code.WEBSOCKET_BLOCKED: Declaration(
        C, "HTTPS works but the WebSocket upgrade is refused (Jupyter will not work)", ("jupyter",), _websocket),
    Code.RESOURCE_FIREWALL_DENIED: Declaration(
        C, "the resource's own network rules deny this node (storage AuthorizationFailure, registry DENIED, "
        "a workspace with public network access disabled, with --use-identity a key vault's ForbiddenByFirewall)",
        ("firewall",), _resource_denied),
    Code.PROXY_AUTH_REQUIRED: Declaration(
        C, "the configured proxy demands credentials (HTTP 407)", ("firewall",),
        _proxy("demands authentication (HTTP 407)",
               "Give the proxy credentials in HTTPS_PROXY (http://user:pass@proxy:port) for the "
               "Azure ML processes, or allow the compute subnet without authentication.")),
    Code.PROXY_DENIED: Declaration(
        C, "the configured proxy refuses the destination, or cannot reach it", ("firewall",), _proxy_denied),
    Code.PROXY_UNREACHABLE: Declaration(
        C, "the configured proxy cannot be reached", ("firewall",),
        _proxy("cannot be reached",
               "Fix HTTPS_PROXY/HTTP_PROXY (address and port) or allow the compute subnet to reach the proxy.")),
    Code.PROXY_BYPASS_REQUIRED: Declaration(
        C, "a name fails through the proxy but works directly: it belongs in `NO_PROXY`", ("firewall",),
        _proxy("fails for names the node reaches directly",
               "Add these names to NO_PROXY (and no_proxy) wherever HTTPS_PROXY is set for "
               "Azure ML (the compute's environment, /etc/environment, the setup script): "
               "private endpoints are reached only from inside the VNet, never through the proxy.")),
    Code.CLOCK_SKEW: Declaration(
        C, "the node clock differs from the servers' (Date headers, or certificates all not yet valid)",
        ("firewall",), _clock),
    Code.IMDS_UNAVAILABLE: Declaration(
        W, "instance metadata could not be read (a warning when the region stayed unknown, info otherwise)",
        ("imds",), _imds),
    Code.LOCAL_FIREWALL_BLOCKS: Declaration(
        C, f"a firewall rule on the node blocks a required inbound port or {AZURE_DNS}", ("training-vnet",),
        _local("local-firewall-blocks", "A firewall rule on this node blocks required traffic",
               "Remove or narrow the local rule named above (nft list ruleset / ufw status): allow inbound "
               f"ports Azure ML uses and never block {AZURE_DNS} in either direction.")),
    Code.INBOUND_PORT_CLOSED: Declaration(
        W, "nothing listens on an inbound port (22: warning; 44224: info, the docs do not say what listens there)",
        ("training-vnet",),
        _local("inbound-port-closed", "Nothing on this node listens where Azure ML connects in",
               "Start the service (sshd for an attached VM: systemctl enable --now ssh) and make it listen "
               "on all addresses, not only loopback.")),
    Code.UNSUPPORTED_OS: Declaration(
        C, "an attached VM that is not Ubuntu", ("training-vnet",),
        _local("unsupported-os", "This VM does not run Ubuntu",
               "Azure ML attaches only Ubuntu VMs: use an Ubuntu image for the attached compute.")),
    Code.DOCKER_BRIDGE_OVERLAP: Declaration(
        W, "Docker's bridge network overlaps the VNet", ("training-vnet",),
        _local("docker-bridge-overlap", "Docker's bridge network overlaps the VNet",
               "Move Docker's bridge off the VNet's range: set \"bip\" in /etc/docker/daemon.json (e.g. "
               "192.168.240.1/24) and restart Docker, or avoid 172.17.0.0/16 in the VNet.")),
    Code.VANTAGE_MTU_ABOVE_HOST: Declaration(
        C, "seen from a container's namespace (--netns, --container): its MTU is above the host's uplink, so "
        "TLS stalls there alone (a warning while nothing fails)", ("training-vnet",), _vantage_mtu),
    Code.ENDPOINT_UNREACHABLE: Declaration(
        C, "any other failure of a required endpoint", ("firewall",), _unreachable),
    # A warning, as imds-unavailable: managed identity fails, key-based access still works.
    Code.IDENTITY_VIA_PROXY: Declaration(
        W, f"HTTP_PROXY is set and `NO_PROXY` does not cover {IMDS_ADDRESS} (IMDS) or the compute instance's "
        "local identity endpoint (127.0.0.1): managed identity calls go to the proxy (names the line to set)",
        ("managed-identity", "imds"), _identity_via_proxy),
    # A warning: the network path works; only what uses this identity fails (key-based access works).
    Code.IDENTITY_ACCESS_DENIED: Declaration(
        W, "check --use-identity: the key vault, registry or ARM refuses the node's managed identity for its "
        "rights (RBAC or an access policy), not a network rule (names the role to assign)",
        ("managed-identity",), _identity_denied),
    Code.IDENTITY_ENDPOINT_UNAVAILABLE: Declaration(
        W, "the compute instance's local managed identity endpoint (MSI_ENDPOINT) does not answer (a warning, as "
        "imds-unavailable)", ("managed-identity",), _identity_endpoint),
    # A warning at most: a path that works is never critical for being slow (Connection Monitor's Warning).
    Code.LATENCY_DEGRADED: Declaration(
        W, "checks work, but slower than their latency thresholds (TCP connect, TLS handshake, HTTP first byte, "
           "DNS answer): one finding per path", ("connection-monitor",), _latency),
}
