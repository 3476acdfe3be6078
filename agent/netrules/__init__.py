"""The network changes a context needs: NSG rules, Azure Firewall rules, routes, private DNS zones
and conditional forwarders. A pure function of the catalog and the context, like the planner, and
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
INTERNET = "Internet"  # a route's next hop type
BATCH_TAG = "BatchNodeManagement"
_WEB_PROTOCOLS = {80: "Http", 443: "Https"}  # FQDNs on these ports are application rules
_NAME_INVALID = re.compile(r"[^A-Za-z0-9_.-]+")
_NAME_MAX = 80


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

    @property
    def requirements(self) -> frozenset[str]:
        """Every requirement id some rule comes from."""
        groups: Iterable[Sequence[Any]] = (self.nsg, self.application_rules, self.network_rules, self.routes,
                                           self.private_dns_zones, self.forwarders)
        return frozenset(r for group in groups for rule in group for r in rule.requirements)


def rules(catalog: Catalog, context: ctx.Context, features: frozenset[str] = frozenset()) -> RuleSet:
    """The rules for the requirements `plan` would check in this context."""
    return derive(catalog, applicable(catalog, context, features), context)


def derive(catalog: Catalog, rows: Sequence[Requirement], context: ctx.Context) -> RuleSet:
    """The one place that decides which change opens a requirement: an NSG rule to its service
    tag (or its IP literal), an Azure Firewall application rule for its FQDNs on 80/443, a network
    rule otherwise, the routes a forced tunnel needs, and the DNS zones and forwarders of the names
    with a private endpoint (the workspace's, and a storage account's, key vault's or registry's own
    that the context names)."""
    fill = _filler(context)
    rows = [row for row in rows if row.emit_rules]
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
    """The NSG and firewall rules of a rule set, one clause each, for a sentence of a remedy."""
    clauses = [f"NSG {r.direction.lower()} rule: allow {_protocol(r.protocol)} {','.join(port_ranges(r.ports))} "
               f"from {r.source} to {r.destination}" for r in ruleset.nsg]
    clauses += [f"firewall application rule: {r.fqdn} ({', '.join(r.protocols)})" for r in ruleset.application_rules]
    clauses += [f"firewall network rule: {r.protocol} {','.join(port_ranges(r.ports))} to {r.destination}"
                for r in ruleset.network_rules]
    return "; ".join(clauses)


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
    zones: dict[str, PrivateZone] = {}
    forwarders: dict[str, Forwarder] = {}
    for zone, ids in in_zone.items():
        requirements = tuple(ids) or every
        if zone.privatelink_zone:
            zones.setdefault(zone.privatelink_zone,
                             PrivateZone(zone.privatelink_zone, LINK_NAME, requirements))
        for forwarded in zone.forwarded:
            forwarders.setdefault(forwarded, Forwarder(forwarded, AZURE_DNS, requirements))
    return tuple(zones.values()), tuple(forwarders.values())


def _name(*parts: str) -> str:
    """A valid NSG / firewall rule name: [A-Za-z0-9_.-], starts with a letter or digit, ends with
    a letter, digit or underscore, at most 80 characters (a hash keeps long names distinct)."""
    joined = "-".join(parts)
    name = _NAME_INVALID.sub("-", joined).strip("-.")
    if len(name) > _NAME_MAX:
        import hashlib  # 4 ms to load (OpenSSL's digests), for the rare name over the bound

        digest = hashlib.sha256(joined.encode()).hexdigest()[:8]
        name = f"{name[:_NAME_MAX - 9].rstrip('-.')}-{digest}"
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


__all__ = ["ApplicationRule", "Forwarder", "NetworkRule", "NsgRule", "PrivateZone", "Route", "RuleSet", "bypass_routes",
           "derive", "describe", "describe_routes", "for_flows", "fqdns", "port_ranges", "rules"]
