"""The network changes a context needs: NSG rules, Azure Firewall rules, routes, private DNS zones
and conditional forwarders, or in a workspace's managed virtual network its outbound rules. A pure
function of the catalog and the context, like the planner, and
fed by the same `planner.applicable` rows, so `plan` and `rules` can never disagree; every rule
names the requirement ids it comes from."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agent.catalog import Catalog, Requirement, Zone
from agent.inputs import context as ctx
from agent.planner import applicable
from agent.platform import AZURE_DNS
from probes.specs import is_ip

SCHEMA = "aml-netcheck.rules/1"
VNET = "VirtualNetwork"
FIRST_PRIORITY, PRIORITY_STEP = 100, 10
LINK_NAME = "aml-compute-vnet"
# Where a DNS Private Resolver setup forwards: its inbound endpoint (Azure DNS answers it inside the
# resolver's VNet, from the zones linked there); the node cannot know its address
RESOLVER_INBOUND = "<resolver-inbound-endpoint-ip>"
INTERNET = "Internet"  # a route's next hop type
BATCH_TAG = "BatchNodeManagement"
_WEB_PROTOCOLS = {80: "Http", 443: "Https"}  # FQDNs on these ports are application rules
_NAME_INVALID = re.compile(r"[^A-Za-z0-9_.-]+")
_NAME_MAX = 80
# A managed network's outbound rule name: ^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$ (the REST API's pattern)
_OUTBOUND_NAME_INVALID = re.compile(r"[^A-Za-z0-9_-]+")
_OUTBOUND_NAME_MAX = 33
# The service tags a managed virtual network allows by itself, in either isolation mode (its list of
# required rules): a flow to one that fails is a network not provisioned or a rule not Active, never
# a rule to add
MANAGED_REQUIRED_TAGS = frozenset({"AzureMachineLearning", "AzureActiveDirectory", "BatchNodeManagement",
                                   "AzureResourceManager", "AzureFrontDoor.FirstParty", "MicrosoftContainerRegistry",
                                   "AzureMonitor", "VirtualNetwork"})
# The workspace's associated resources, reached through private endpoint rules Azure ML creates itself
# (allow only approved outbound: always; allow internet outbound: where public access is disabled).
# An FQDN rule cannot reach a storage account in allow-only-approved mode: a private endpoint must.
_ASSOCIATED = {
    "Storage": ("Microsoft.Storage/storageAccounts/{storage_account}", r"\.(blob|file|queue|table|dfs)\."),
    "AzureKeyVault": ("Microsoft.KeyVault/vaults/{key_vault}", None),
    "AzureContainerRegistry": ("Microsoft.ContainerRegistry/registries/{container_registry}", None),
}
_SUBRESOURCE = {"AzureKeyVault": "vault", "AzureContainerRegistry": "registry"}


@dataclass(frozen=True, slots=True)
class NsgRule:
    name: str
    priority: int
    direction: str  # Inbound | Outbound
    protocol: str  # Tcp | Udp | *
    source: str  # an address prefix or service tag
    destination: str
    ports: tuple[int, ...]
    requirements: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ApplicationRule:
    """An Azure Firewall application rule: one FQDN pattern over HTTP(S)."""

    collection: str
    collection_priority: int
    name: str
    fqdn: str
    protocols: tuple[str, ...]  # "Http=80", "Https=443"
    requirements: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NetworkRule:
    """An Azure Firewall network rule: an FQDN, or a service tag where the pattern is a wildcard
    (network rules take no wildcard FQDNs), on ports other than 80/443 or over UDP."""

    collection: str
    collection_priority: int
    name: str
    protocol: str  # TCP | UDP | Any
    destination: str
    destination_is_fqdn: bool
    ports: tuple[int, ...]
    requirements: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Route:
    """A user-defined route in the compute subnet's route table: a service tag (route tables take
    them as address prefixes) with next hop Internet, past a forced tunnel's appliance."""

    name: str
    address_prefix: str  # a service tag
    next_hop: str  # Internet
    requirements: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OutboundRule:
    """An outbound rule of the workspace's managed virtual network (`az ml workspace outbound-rule
    set`): an FQDN (80 and 443 only, through the Azure Firewall Azure ML deploys for it), a service
    tag, or a private endpoint to a resource. `required`: Azure ML adds it itself; if its flow fails,
    the network is not provisioned or the rule not Active: check it, do not add it."""

    name: str  # "" for a required rule: Azure ML names its own
    type: str  # fqdn | service_tag | private_endpoint
    destination: str  # the FQDN, the service tag, or the resource id
    protocol: str  # TCP | UDP | * (service_tag); TCP otherwise
    ports: tuple[int, ...]
    subresource: str  # private_endpoint: blob, file, queue, table, dfs, vault, registry; "" otherwise
    required: bool
    requirements: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PrivateZone:
    """A private DNS zone to create and link to the compute VNet."""

    zone: str
    link_name: str
    requirements: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Forwarder:
    """A conditional forwarder a custom DNS server needs (the public zone, never privatelink.*)."""

    zone: str
    target: str
    requirements: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RuleSet:
    catalog_version: str
    cloud: str
    region: str
    nsg: tuple[NsgRule, ...] = ()
    application_rules: tuple[ApplicationRule, ...] = ()
    network_rules: tuple[NetworkRule, ...] = ()
    routes: tuple[Route, ...] = ()
    private_dns_zones: tuple[PrivateZone, ...] = ()
    forwarders: tuple[Forwarder, ...] = ()
    managed_network: str = ""  # the isolation mode; "" outside a managed network
    outbound_rules: tuple[OutboundRule, ...] = ()
    dns_private_resolver: bool = False  # forwarders go to its inbound endpoint, as forwarding ruleset rules

    @property
    def requirements(self) -> frozenset[str]:
        """Every requirement id some rule comes from."""
        groups: Iterable[Sequence[Any]] = (self.nsg, self.application_rules, self.network_rules, self.routes,
                                           self.private_dns_zones, self.forwarders, self.outbound_rules)
        return frozenset(r for group in groups for rule in group for r in rule.requirements)


def rules(catalog: Catalog, context: ctx.Context, features: frozenset[str] = frozenset()) -> RuleSet:
    """The rules for the requirements `plan` would check in this context."""
    return derive(catalog, applicable(catalog, context, features), context)


def derive(catalog: Catalog, rows: Sequence[Requirement], context: ctx.Context) -> RuleSet:
    """The one place that decides which change opens a requirement: an NSG rule to its service
    tag (or its IP literal), an Azure Firewall application rule for its FQDNs on 80/443, a network
    rule otherwise, the routes a forced tunnel needs, and the DNS zones and forwarders of the names
    with a private endpoint (the workspace's, and a storage account's, key vault's or registry's own
    that the context names). In a managed virtual network Azure ML owns the NSG, the routes and the
    DNS: the rules are its outbound rules alone."""
    fill = _filler(context)
    rows = [row for row in rows if row.emit_rules]
    mode = ctx.managed_network(context)
    if mode is not None:
        return RuleSet(catalog_version=catalog.version, cloud=str(context["cloud"].value or "public"),
                       region=str(context["region"].value or ""), managed_network=mode,
                       outbound_rules=_outbound_rules(rows, fill, mode))
    zones, forwarders = _dns(catalog, rows, fill, context)
    return RuleSet(
        catalog_version=catalog.version,
        cloud=str(context["cloud"].value or "public"),
        region=str(context["region"].value or ""),
        nsg=_nsg(rows, fill),
        application_rules=_application_rules(rows, fill),
        network_rules=_network_rules(rows, fill),
        routes=_tunnel_routes(rows, fill, context),
        private_dns_zones=zones,
        forwarders=forwarders,
        dns_private_resolver=context["dns_private_resolver"].value is True,
    )


def for_flows(catalog: Catalog, context: ctx.Context, flows: Iterable[tuple[str, int | None]]) -> RuleSet:
    """The rules that open these flows, (requirement id, port) each: what a finding's remedy and
    a ticket's "needed" column name. Only the ports that failed; unknown ids are left out."""
    ports: dict[str, list[int]] = {}
    for requirement_id, port in flows:
        wanted = ports.setdefault(requirement_id, [])
        if port is not None and port not in wanted:
            wanted.append(port)
    rows = []
    for requirement_id, wanted in ports.items():
        row = catalog.requirements_by_id.get(requirement_id)
        if row is not None:
            rows.append(replace(row, ports=tuple(p for p in row.ports if p in wanted) or row.ports))
    return derive(catalog, rows, context)


def bypass_routes(ruleset: RuleSet) -> tuple[Route, ...]:
    """Routes that take these flows past a forced tunnel's appliance: next hop Internet for every
    service tag the rule set's outbound NSG rules name (the flows then leave by the subnet's own
    outbound path, a NAT gateway or the compute's public IP, no longer through the appliance)."""
    merged: dict[str, list[str]] = {}
    for rule in ruleset.nsg:
        if rule.direction == "Outbound" and rule.destination != VNET and not is_ip(rule.destination):
            ids = merged.setdefault(rule.destination, [])
            ids.extend(r for r in rule.requirements if r not in ids)
    return tuple(Route(_name("aml", tag), tag, INTERNET, tuple(ids)) for tag, ids in merged.items())


def describe_routes(routes: Sequence[Route]) -> str:
    """Routes for a sentence of a remedy."""
    return "; ".join(f"route {r.address_prefix} to next hop {r.next_hop}" for r in routes)


def describe(ruleset: RuleSet) -> str:
    """The NSG and firewall rules of a rule set (a managed network's outbound rules), one clause
    each, for a sentence of a remedy."""
    clauses = [f"outbound rule {r.name}: {_outbound_text(r)}" if r.name
               else f"Azure ML's required outbound rule: {_outbound_text(r)}" for r in ruleset.outbound_rules]
    clauses += [f"NSG {r.direction.lower()} rule: allow {_protocol(r.protocol)} {','.join(port_ranges(r.ports))} "
               f"from {r.source} to {r.destination}" for r in ruleset.nsg]
    clauses += [f"firewall application rule: {r.fqdn} ({', '.join(r.protocols)})" for r in ruleset.application_rules]
    clauses += [f"firewall network rule: {r.protocol} {','.join(port_ranges(r.ports))} to {r.destination}"
                for r in ruleset.network_rules]
    return "; ".join(clauses)


def _outbound_text(rule: OutboundRule) -> str:
    if rule.type == "fqdn":
        return f"FQDN {rule.destination}"
    if rule.type == "service_tag":
        return f"service tag {rule.destination}, {_protocol(rule.protocol)} {','.join(port_ranges(rule.ports))}"
    return f"private endpoint to {rule.destination} ({rule.subresource})"


def outbound_rule_command(rule: OutboundRule, *, resource_group: str, workspace: str) -> str:
    """The `az ml workspace outbound-rule set` command that adds one user-defined rule."""
    import shlex

    if rule.type == "fqdn":
        what: tuple[str, ...] = ("--type", "fqdn", "--destination", rule.destination)
    elif rule.type == "service_tag":
        what = ("--type", "service_tag", "--service-tag", rule.destination, "--protocol", rule.protocol,
                "--port-ranges", ",".join(port_ranges(rule.ports)))
    else:
        what = ("--type", "private_endpoint", "--service-resource-id", rule.destination,
                "--subresource-target", rule.subresource)
    return shlex.join(["az", "ml", "workspace", "outbound-rule", "set", "--resource-group", resource_group,
                       "--workspace-name", workspace, "--rule", rule.name, *what])


def fqdns(ruleset: RuleSet) -> tuple[str, ...]:
    """The FQDN patterns the firewall rules name (application rules, and network rules by FQDN)."""
    names = [r.fqdn for r in ruleset.application_rules]
    names += [r.destination for r in ruleset.network_rules if r.destination_is_fqdn]
    return tuple(dict.fromkeys(names))


def _protocol(protocol: str) -> str:
    return "any protocol on" if protocol in ("*", "Any") else protocol.upper()


# ---------------------------------------------------------------- building

Fill = Callable[[str], str]


def _filler(context: ctx.Context) -> Fill:
    """Fills {placeholders}; an unknown one stays visible as <name> for the reader to replace."""
    values = ctx.template_values(context)
    return lambda template: re.sub(
        r"\{(\w+)\}", lambda m: values.get(m.group(1), f"<{m.group(1).replace('_', '-')}>"), template)


@dataclass(slots=True)
class _Merged:
    """Ports and requirement ids gathered under one rule key, in catalog order."""

    ports: list[int] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)
    required: bool = False  # some requirement behind it is not situational
    feature: str = ""

    def add(self, row: Requirement, ports: Iterable[int]) -> None:
        self.ports.extend(p for p in ports if p not in self.ports)
        if row.id not in self.requirements:
            self.requirements.append(row.id)
        self.required |= not row.situational
        self.feature = self.feature or (row.feature or "")

    @property
    def collection(self) -> str:
        return "aml-required" if self.required else f"aml-{self.feature}"


def _merge(items: Iterable[tuple[Any, Requirement, Iterable[int]]]) -> dict[Any, _Merged]:
    merged: dict[Any, _Merged] = {}
    for key, row, ports in items:
        merged.setdefault(key, _Merged()).add(row, ports)
    return merged


def _nsg(rows: Sequence[Requirement], fill: Fill) -> tuple[NsgRule, ...]:
    def keys() -> Iterable[tuple[tuple[str, str, str, str], Requirement, Iterable[int]]]:
        for row in rows:
            protocol = "*" if row.rule_protocol == "*" else row.protocol.capitalize()
            if row.direction == "inbound":
                if row.source_tag:
                    yield ("Inbound", protocol, fill(row.source_tag), VNET), row, row.ports
                continue
            # a service tag, or else the IP literals the row probes (Azure DNS): never an FQDN
            for destination in [fill(row.service_tag)] if row.service_tag else filter(is_ip, row.hosts):
                yield ("Outbound", protocol, VNET, destination), row, row.ports

    built: list[NsgRule] = []
    for direction in ("Outbound", "Inbound"):
        merged = [(k, m) for k, m in _merge(keys()).items() if k[0] == direction]
        for index, ((_, protocol, source, destination), m) in enumerate(merged):
            ports = tuple(sorted(m.ports))
            peer = destination if direction == "Outbound" else source
            built.append(NsgRule(
                name=_name("out" if direction == "Outbound" else "in", peer,
                           "any" if protocol == "*" else protocol.lower(), *port_ranges(ports)),
                priority=FIRST_PRIORITY + PRIORITY_STEP * index, direction=direction, protocol=protocol,
                source=source, destination=destination, ports=ports, requirements=tuple(m.requirements)))
    return tuple(built)


def _firewall_rows(rows: Sequence[Requirement], fill: Fill,
                   web: bool) -> Iterable[tuple[Requirement, str]]:
    """(row, FQDN pattern) for outbound rows a firewall rule covers: web=True those that are
    application rules (TCP on 80/443 only), web=False the network rules."""
    for row in rows:
        if row.direction != "outbound" or not row.rule_fqdn:
            continue
        is_web = row.protocol == "tcp" and set(row.ports) <= _WEB_PROTOCOLS.keys()
        if is_web == web:
            for pattern in row.rule_fqdn.split(","):
                yield row, fill(pattern.strip())


def _application_rules(rows: Sequence[Requirement], fill: Fill) -> tuple[ApplicationRule, ...]:
    merged = _merge((fqdn, row, row.ports) for row, fqdn in _firewall_rows(rows, fill, web=True))
    priorities = _collection_priorities(m.collection for m in merged.values())
    built = [ApplicationRule(
        collection=m.collection, collection_priority=priorities[m.collection],
        name=_name(fqdn.replace("*", "wildcard")), fqdn=fqdn,
        protocols=tuple(f"{_WEB_PROTOCOLS[p]}={p}" for p in sorted(m.ports)),
        requirements=tuple(m.requirements)) for fqdn, m in merged.items()]
    return tuple(sorted(built, key=lambda r: r.collection_priority))


def _network_rules(rows: Sequence[Requirement], fill: Fill) -> tuple[NetworkRule, ...]:
    def keys() -> Iterable[tuple[tuple[str, bool, str], Requirement, Iterable[int]]]:
        for row, fqdn in _firewall_rows(rows, fill, web=False):
            protocol = "Any" if row.rule_protocol == "*" else row.protocol.upper()
            if "*" in fqdn and row.service_tag:
                yield (fill(row.service_tag), False, protocol), row, row.ports
            else:
                yield (fqdn, True, protocol), row, row.ports

    merged = _merge(keys())
    priorities = _collection_priorities(m.collection for m in merged.values())
    built = [NetworkRule(
        collection=m.collection, collection_priority=priorities[m.collection],
        name=_name(destination.replace("*", "wildcard"), protocol.lower(), *port_ranges(sorted(m.ports))),
        protocol=protocol, destination=destination, destination_is_fqdn=is_fqdn,
        ports=tuple(sorted(m.ports)), requirements=tuple(m.requirements))
        for (destination, is_fqdn, protocol), m in merged.items()]
    return tuple(sorted(built, key=lambda r: r.collection_priority))


def _tunnel_routes(rows: Sequence[Requirement], fill: Fill, context: ctx.Context) -> tuple[Route, ...]:
    """With forced tunnelling and a public IP on the compute, Azure ML and Batch reach the node at its
    public IP (inbound 44224); their replies must leave that way too, not through the appliance
    (asymmetric, dropped): routes with next hop Internet for AzureMachineLearning and the region's
    BatchNodeManagement, as the firewall article's public-IP scenario says."""
    if context["forced_tunnel"].value is not True or context["public_ip"].value is not True:
        return ()
    tags = [(fill(row.source_tag), row) for row in rows if row.direction == "inbound" and row.source_tag
            and row.public_ip]
    if tags:
        tags += [(fill(row.service_tag), row) for row in rows if row.service_tag.startswith(BATCH_TAG)]
    merged = _merge((tag, row, ()) for tag, row in tags)
    return tuple(Route(_name("aml", tag), tag, INTERNET, tuple(m.requirements)) for tag, m in merged.items())


def _outbound_rules(rows: Sequence[Requirement], fill: Fill, mode: str) -> tuple[OutboundRule, ...]:
    """A managed network's outbound rules for the outbound rows: the required service tags Azure ML
    allows itself, private endpoints to the workspace's storage, key vault and registry (also its
    own), and, where only approved outbound is allowed, FQDN rules for the rest on 80/443 (a service
    tag rule where the port is another one or the protocol UDP). With internet outbound allowed, an
    FQDN needs no rule. Inbound rows have no rule: Azure ML reaches its compute itself."""
    def keys() -> Iterable[tuple[tuple[str, str, str, str, bool], Requirement, Iterable[int]]]:
        for row in rows:
            if row.direction != "outbound" or not (row.service_tag or row.rule_fqdn):
                continue  # Azure DNS: the managed network resolves through it itself
            tag = fill(row.service_tag)
            base = tag.split(".")[0] if tag != "AzureFrontDoor.FirstParty" else tag
            protocol = "*" if row.rule_protocol == "*" else row.protocol.upper()
            if base in MANAGED_REQUIRED_TAGS:
                yield ("service_tag", tag, protocol, "", True), row, row.ports
            elif base in _ASSOCIATED:
                resource, subresources = _ASSOCIATED[base]
                destination = ("/subscriptions/<subscription-id>/resourceGroups/<resource-group>/providers/"
                               + fill(resource))
                for host in row.hosts:
                    match = re.search(subresources, host) if subresources else None
                    if subresources is None or match:
                        subresource = match.group(1) if match else _SUBRESOURCE[base]
                        yield ("private_endpoint", destination, "TCP", subresource, True), row, ()
            elif mode == "allow_only_approved_outbound":
                web = row.protocol == "tcp" and set(row.ports) <= _WEB_PROTOCOLS.keys()
                if web and row.rule_fqdn:
                    for pattern in row.rule_fqdn.split(","):
                        yield ("fqdn", fill(pattern.strip()), "TCP", "", False), row, row.ports
                elif tag:
                    yield ("service_tag", tag, protocol, "", False), row, row.ports

    built = []
    for (kind, destination, protocol, subresource, required), m in _merge(keys()).items():
        # Azure ML names the rules it adds itself; a user-defined one needs a name of its own
        name = "" if required else _name(
            "fqdn" if kind == "fqdn" else f"tag-{protocol.lower().replace('*', 'any')}",
            destination.replace("*", "wildcard"), invalid=_OUTBOUND_NAME_INVALID, limit=_OUTBOUND_NAME_MAX)
        built.append(OutboundRule(name=name, type=kind, destination=destination, protocol=protocol,
                                  ports=tuple(sorted(m.ports)) if kind != "private_endpoint" else (),
                                  subresource=subresource, required=required, requirements=tuple(m.requirements)))
    return tuple(sorted(built, key=lambda r: not r.required))


def _collection_priorities(collections: Iterable[str]) -> dict[str, int]:
    """The required collection first, then one per feature in name order."""
    names = sorted(set(collections), key=lambda c: (c != "aml-required", c))
    return {name: FIRST_PRIORITY + PRIORITY_STEP * i for i, name in enumerate(names)}


def _dns(catalog: Catalog, rows: Sequence[Requirement], fill: Fill,
         context: ctx.Context) -> tuple[tuple[PrivateZone, ...], tuple[Forwarder, ...]]:
    """The workspace zones (with a private-endpoint workspace), plus the zone of every name the
    context says has a private endpoint. A zone carries the requirements whose names live in it;
    a workspace zone none of them names (aznbcontent.net, inference.ml.azure.com) serves the
    workspace's rows: a partial forwarder set makes answers flip. A resource whose endpoint the
    context does not know gets no zone here (`check` reads its CNAME chain; `rules` sends nothing)."""
    private = [row for row in rows if row.dns_private and context[row.dns_private].value is True]
    if not private:
        return (), ()
    workspace = context["private_endpoint"].value is True
    in_zone: dict[Zone, list[str]] = {z: [] for z in catalog.zones if z.workspace and workspace}
    for row in private:
        for host in row.hosts:
            zone = catalog.zone_of(fill(host))
            if zone is not None and row.id not in in_zone.setdefault(zone, []):
                in_zone[zone].append(row.id)
    every = tuple(row.id for row in private if row.dns_private == "private_endpoint")
    target = RESOLVER_INBOUND if context["dns_private_resolver"].value is True else AZURE_DNS
    zones: dict[str, PrivateZone] = {}
    forwarders: dict[str, Forwarder] = {}
    for zone, ids in in_zone.items():
        requirements = tuple(ids) or every
        if zone.privatelink_zone:
            zones.setdefault(zone.privatelink_zone,
                             PrivateZone(zone.privatelink_zone, LINK_NAME, requirements))
        for forwarded in zone.forwarded:
            forwarders.setdefault(forwarded, Forwarder(forwarded, target, requirements))
    return tuple(zones.values()), tuple(forwarders.values())


def _name(*parts: str, invalid: re.Pattern[str] = _NAME_INVALID, limit: int = _NAME_MAX) -> str:
    """A valid NSG / firewall rule name: [A-Za-z0-9_.-], starts with a letter or digit, ends with
    a letter, digit or underscore, at most 80 characters (a hash keeps long names distinct); a
    managed network's outbound rule takes no dot and 33 characters."""
    joined = "-".join(parts)
    name = invalid.sub("-", joined).strip("-.")
    if len(name) > limit:
        import hashlib  # 4 ms to load (OpenSSL's digests), for the rare name over the bound

        digest = hashlib.sha256(joined.encode()).hexdigest()[:8]
        name = f"{name[:limit - 9].rstrip('-.')}-{digest}"
    return name


def port_ranges(ports: Iterable[int]) -> tuple[str, ...]:
    """Sorted ports with consecutive runs written as ranges: (443, 8704-8710)."""
    ranges: list[list[int]] = []
    for port in sorted(set(ports)):
        if ranges and port == ranges[-1][1] + 1:
            ranges[-1][1] = port
        else:
            ranges.append([port, port])
    return tuple(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


__all__ = ["ApplicationRule", "Forwarder", "NetworkRule", "NsgRule", "OutboundRule", "PrivateZone", "Route",
           "RuleSet", "bypass_routes", "derive", "describe", "describe_routes", "for_flows", "fqdns",
           "outbound_rule_command", "port_ranges", "rules"]
