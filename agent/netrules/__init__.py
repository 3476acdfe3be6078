"""The network changes a context needs: NSG rules, Azure Firewall rules, private DNS zones and
conditional forwarders. A pure function of the catalog and the context, like the planner, and
fed by the same `planner.applicable` rows, so `plan` and `rules` can never disagree; every rule
names the requirement ids it comes from."""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from rich.console import Group
from rich.table import Table

from agent.catalog import Catalog, Requirement, Zone
from agent.inputs import context as ctx
from agent.planner import applicable
from probes._net import is_ip

SCHEMA = "aml-netcheck.rules/1"
AZURE_DNS = "168.63.129.16"
VNET = "VirtualNetwork"
FIRST_PRIORITY, PRIORITY_STEP = 100, 10
LINK_NAME = "aml-compute-vnet"
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
    private_dns_zones: tuple[PrivateZone, ...] = ()
    forwarders: tuple[Forwarder, ...] = ()

    @property
    def requirements(self) -> frozenset[str]:
        """Every requirement id some rule comes from."""
        groups: Iterable[Sequence[Any]] = (self.nsg, self.application_rules, self.network_rules,
                                           self.private_dns_zones, self.forwarders)
        return frozenset(r for group in groups for rule in group for r in rule.requirements)


def rules(catalog: Catalog, context: ctx.Context, features: frozenset[str] = frozenset()) -> RuleSet:
    """The rules for the requirements `plan` would check in this context."""
    rows = applicable(catalog, context, features)
    fill = _filler(context)
    private_endpoint = bool(context["private_endpoint"].value)
    zones, forwarders = _dns(catalog, rows, fill) if private_endpoint else ((), ())
    return RuleSet(
        catalog_version=catalog.version,
        cloud=str(context["cloud"].value or "public"),
        region=str(context["region"].value or ""),
        nsg=_nsg(rows, fill),
        application_rules=_application_rules(rows, fill),
        network_rules=_network_rules(rows, fill),
        private_dns_zones=zones,
        forwarders=forwarders,
    )


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


def _collection_priorities(collections: Iterable[str]) -> dict[str, int]:
    """The required collection first, then one per feature in name order."""
    names = sorted(set(collections), key=lambda c: (c != "aml-required", c))
    return {name: FIRST_PRIORITY + PRIORITY_STEP * i for i, name in enumerate(names)}


def _dns(catalog: Catalog, rows: Sequence[Requirement],
         fill: Fill) -> tuple[tuple[PrivateZone, ...], tuple[Forwarder, ...]]:
    """The workspace zones, plus the zone of any other name a row needs resolved privately. A zone
    carries the requirements whose names live in it; one none of them names (aznbcontent.net,
    inference.ml.azure.com) serves them all: a partial forwarder set makes answers flip."""
    private = [row for row in rows if row.dns_private]
    if not private:
        return (), ()
    in_zone: dict[Zone, list[str]] = {z: [] for z in catalog.zones if z.workspace}
    for row in private:
        for host in row.hosts:
            zone = catalog.zone_of(fill(host))
            if zone is not None and row.id not in in_zone.setdefault(zone, []):
                in_zone[zone].append(row.id)
    every = tuple(row.id for row in private)
    zones: dict[str, PrivateZone] = {}
    forwarders: dict[str, Forwarder] = {}
    for zone, ids in in_zone.items():
        requirements = tuple(ids) or every
        if zone.privatelink_zone:
            zones.setdefault(zone.privatelink_zone,
                             PrivateZone(zone.privatelink_zone, LINK_NAME, requirements))
        forwarders.setdefault(zone.forward_zone, Forwarder(zone.forward_zone, AZURE_DNS, requirements))
    return tuple(zones.values()), tuple(forwarders.values())


def _name(*parts: str) -> str:
    """A valid NSG / firewall rule name: [A-Za-z0-9_.-], starts with a letter or digit, ends with
    a letter, digit or underscore, at most 80 characters (a hash keeps long names distinct)."""
    joined = "-".join(parts)
    name = _NAME_INVALID.sub("-", joined).strip("-.")
    if len(name) > _NAME_MAX:
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


# ---------------------------------------------------------------- rendering


def _where(ruleset: RuleSet) -> str:
    return f"{ruleset.cloud} cloud, {ruleset.region or '<region>'}, catalog {ruleset.catalog_version}"


def render_table(ruleset: RuleSet) -> Group:
    """The rule set as rich tables, one per kind of change, empty kinds left out."""
    tables: list[Table] = []

    def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
        body = [list(r) for r in rows]
        if body:
            t = Table(*columns, title=title, title_justify="left", box=None)
            for cells in body:
                t.add_row(*cells)
            tables.append(t)

    ids = ", ".join
    table(f"NSG rules ({_where(ruleset)})", ("priority", "direction", "name", "protocol", "source", "destination",
                                   "ports", "requirements"),
          ((str(r.priority), r.direction, r.name, r.protocol, r.source, r.destination,
            ",".join(port_ranges(r.ports)), ids(r.requirements)) for r in ruleset.nsg))
    table("Azure Firewall application rules (source: the compute subnet)",
          ("collection", "priority", "name", "protocols", "target FQDN", "requirements"),
          ((r.collection, str(r.collection_priority), r.name, " ".join(r.protocols), r.fqdn, ids(r.requirements))
           for r in ruleset.application_rules))
    table("Azure Firewall network rules (source: the compute subnet)",
          ("collection", "priority", "name", "protocol", "destination", "ports", "requirements"),
          ((r.collection, str(r.collection_priority), r.name, r.protocol, r.destination,
            ",".join(port_ranges(r.ports)), ids(r.requirements)) for r in ruleset.network_rules))
    table("Private DNS zones (link each to the VNet that resolves them)", ("zone", "VNet link", "requirements"),
          ((z.zone, z.link_name, ids(z.requirements)) for z in ruleset.private_dns_zones))
    table(f"Conditional forwarders (only on a custom DNS server; forward to {AZURE_DNS})",
          ("zone", "forward to", "requirements"),
          ((f.zone, f.target, ids(f.requirements)) for f in ruleset.forwarders))
    return Group(*tables)


def render_az(ruleset: RuleSet, *, resource_group: str = "<resource-group>", nsg: str = "<nsg-name>",
              firewall: str = "<firewall-name>", vnet: str = "<vnet-id>",
              subnet_prefix: str = "<compute-subnet-prefix>") -> str:
    """Azure CLI commands, one per line, each preceded by the requirements it serves. Conditional
    forwarders are comments: a customer's DNS server has no az command."""
    lines = [f"# aml-netcheck rules: {_where(ruleset)}"]

    def command(requirements: Sequence[str], *argv: str) -> None:
        lines.extend((f"# {', '.join(requirements)}", shlex.join(argv)))

    group = ("--resource-group", resource_group)
    if ruleset.nsg:
        lines.append("\n# NSG rules on the compute subnet's network security group")
    for r in ruleset.nsg:
        command(r.requirements, "az", "network", "nsg", "rule", "create", *group, "--nsg-name", nsg,
                "--name", r.name, "--priority", str(r.priority), "--direction", r.direction,
                "--access", "Allow", "--protocol", r.protocol, "--source-address-prefixes", r.source,
                "--source-port-ranges", "*", "--destination-address-prefixes", r.destination,
                "--destination-port-ranges", *port_ranges(r.ports))
    fw = (*group, "--firewall-name", firewall)
    if ruleset.application_rules or ruleset.network_rules:
        lines.append("\n# Azure Firewall (classic rules; `az extension add --name azure-firewall`). "
                     "FQDNs in network rules need the firewall's DNS proxy.")
    started: set[tuple[str, str]] = set()

    def first_in_collection(kind: str, collection: str, priority: int) -> tuple[str, ...]:
        if (kind, collection) in started:
            return ()
        started.add((kind, collection))
        return ("--priority", str(priority), "--action", "Allow")

    for a in ruleset.application_rules:
        command(a.requirements, "az", "network", "firewall", "application-rule", "create", *fw,
                "--collection-name", a.collection, "--name", a.name, "--protocols", *a.protocols,
                "--source-addresses", subnet_prefix, "--target-fqdns", a.fqdn,
                *first_in_collection("application", a.collection, a.collection_priority))
    for n in ruleset.network_rules:
        target = "--destination-fqdns" if n.destination_is_fqdn else "--destination-addresses"
        command(n.requirements, "az", "network", "firewall", "network-rule", "create", *fw,
                "--collection-name", n.collection, "--name", n.name, "--protocols", n.protocol,
                "--source-addresses", subnet_prefix, "--destination-ports", *port_ranges(n.ports),
                target, n.destination, *first_in_collection("network", n.collection, n.collection_priority))
    if ruleset.private_dns_zones:
        lines.append("\n# Private DNS zones for the workspace private endpoint, linked to the VNet")
    for z in ruleset.private_dns_zones:
        command(z.requirements, "az", "network", "private-dns", "zone", "create", *group, "--name", z.zone)
        command(z.requirements, "az", "network", "private-dns", "link", "vnet", "create", *group,
                "--zone-name", z.zone, "--name", z.link_name, "--virtual-network", vnet,
                "--registration-enabled", "false")
    if ruleset.forwarders:
        lines.append(f"\n# Only with a custom DNS server: conditional forwarders to {AZURE_DNS} "
                     "(the public zone names, not privatelink.*)")
    lines.extend(f"#   {f.zone} -> {f.target}    ({', '.join(f.requirements)})" for f in ruleset.forwarders)
    return "\n".join(lines) + "\n"


def to_dict(ruleset: RuleSet) -> dict[str, Any]:
    """The rule set as JSON-ready values; ports also as the ranges the rules name."""
    def plain(item: Any) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for f in fields(item):
            value = getattr(item, f.name)
            values[f.name] = list(value) if isinstance(value, tuple) else value
        if "ports" in values:
            values["port_ranges"] = list(port_ranges(values["ports"]))
        return values

    return {
        "schema": SCHEMA,
        "catalog_version": ruleset.catalog_version,
        "cloud": ruleset.cloud,
        "region": ruleset.region or None,
        "nsg_rules": [plain(r) for r in ruleset.nsg],
        "firewall_application_rules": [plain(r) for r in ruleset.application_rules],
        "firewall_network_rules": [plain(r) for r in ruleset.network_rules],
        "private_dns_zones": [plain(z) for z in ruleset.private_dns_zones],
        "conditional_forwarders": [plain(f) for f in ruleset.forwarders],
    }


__all__ = ["ApplicationRule", "Forwarder", "NetworkRule", "NsgRule", "PrivateZone", "RuleSet",
           "port_ranges", "render_az", "render_table", "rules", "to_dict"]
