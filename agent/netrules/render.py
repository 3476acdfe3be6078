"""The rule set as `rules` prints it: tables, Azure CLI commands, or JSON. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import Any

from agent.netrules import SCHEMA, RuleSet, outbound_rule_command, port_ranges
from agent.output.draw import Table
from agent.platform import AZURE_DNS


def _where(ruleset: RuleSet) -> str:
    return f"{ruleset.cloud} cloud, {ruleset.region or '<region>'}, catalog {ruleset.catalog_version}"


def render_table(ruleset: RuleSet) -> tuple[Table, ...]:
    """The rule set as tables, one per kind of change, empty kinds left out."""
    tables: list[Table] = []

    def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
        body = tuple(tuple(r) for r in rows)
        if body:
            tables.append(Table(title, tuple(columns), body, title_left=True))

    ids = ", ".join
    table(f"Managed virtual network outbound rules ({ruleset.managed_network}; {_where(ruleset)})",
          ("name", "type", "destination", "protocol", "ports", "who adds it", "requirements"),
          ((r.name or "-", r.type, _short(r.destination) + (f" ({r.subresource})" if r.subresource else ""),
            r.protocol if r.type == "service_tag" else "-", ",".join(port_ranges(r.ports)) or "-",
            "Azure ML (required)" if r.required else "you", ids(r.requirements)) for r in ruleset.outbound_rules))
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
    table("Routes (the compute subnet's route table, past the forced tunnel)",
          ("name", "address prefix", "next hop", "requirements"),
          ((r.name, r.address_prefix, r.next_hop, ids(r.requirements)) for r in ruleset.routes))
    table("Private DNS zones (link each to the VNet that resolves them)", ("zone", "VNet link", "requirements"),
          ((z.zone, z.link_name, ids(z.requirements)) for z in ruleset.private_dns_zones))
    table(f"Conditional forwarders (only on a custom DNS server; forward to {_forward_target(ruleset)})",
          ("zone", "forward to", "requirements"),
          ((f.zone, f.target, ids(f.requirements)) for f in ruleset.forwarders))
    return tuple(tables)


def _short(destination: str) -> str:
    """A resource id as its last type and name (storageAccounts/NAME), for a table's column."""
    return "/".join(destination.split("/")[-2:]) if destination.startswith("/subscriptions/") else destination


def _forward_target(ruleset: RuleSet) -> str:
    return "the DNS Private Resolver's inbound endpoint" if ruleset.dns_private_resolver else AZURE_DNS


def render_az(ruleset: RuleSet, *, resource_group: str = "<resource-group>", nsg: str = "<nsg-name>",
              firewall: str = "<firewall-name>", vnet: str = "<vnet-id>",
              subnet_prefix: str = "<compute-subnet-prefix>", route_table: str = "<route-table>",
              workspace: str = "<workspace-name>") -> str:
    """Azure CLI commands, one per line, each preceded by the requirements it serves. Conditional
    forwarders are comments: a customer's DNS server has no az command (a DNS Private Resolver's
    forwarding ruleset has). A managed network's required rules are comments too: Azure ML adds
    them, the command lists them to check their status."""
    import shlex  # the az format alone quotes

    lines = [f"# aml-netcheck rules: {_where(ruleset)}"]

    def command(requirements: Sequence[str], *argv: str) -> None:
        lines.extend((f"# {', '.join(requirements)}", shlex.join(argv)))

    group = ("--resource-group", resource_group)
    on_workspace = ("az", "ml", "workspace", "outbound-rule")
    if ruleset.outbound_rules:
        lines.append(f"\n# The workspace's managed virtual network ({ruleset.managed_network}): Azure ML owns its "
                     "NSG, routes and DNS; its outbound rules are the only change to make")
        lines.append("# Required rules Azure ML adds itself (check that each is listed and Active)"
                     + ("; the private endpoints where the resource's public network access is disabled:"
                        if ruleset.managed_network == "allow_internet_outbound" else ":"))
        lines.extend(f"#   {r.type} {r.destination}" + (f" ({r.subresource})" if r.subresource else "")
                     + (f" {r.protocol} {','.join(port_ranges(r.ports))}" if r.ports else "")
                     + f"    ({', '.join(r.requirements)})" for r in ruleset.outbound_rules if r.required)
        lines.append(shlex.join([*on_workspace, "list", *group, "--workspace-name", workspace, "--output", "table"]))
    for rule in ruleset.outbound_rules:
        if not rule.required:
            lines.extend((f"# {', '.join(rule.requirements)}",
                          outbound_rule_command(rule, resource_group=resource_group, workspace=workspace)))
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
    if ruleset.routes:
        lines.append("\n# Routes in the compute subnet's route table (forced tunnelling), next hop Internet")
    for route in ruleset.routes:
        command(route.requirements, "az", "network", "route-table", "route", "create", *group,
                "--route-table-name", route_table, "--name", route.name, "--address-prefix", route.address_prefix,
                "--next-hop-type", route.next_hop)
    if ruleset.private_dns_zones:
        lines.append("\n# Private DNS zones for the workspace private endpoint, linked to the VNet")
    for z in ruleset.private_dns_zones:
        command(z.requirements, "az", "network", "private-dns", "zone", "create", *group, "--name", z.zone)
        command(z.requirements, "az", "network", "private-dns", "link", "vnet", "create", *group,
                "--zone-name", z.zone, "--name", z.link_name, "--virtual-network", vnet,
                "--registration-enabled", "false")
    if ruleset.forwarders and ruleset.dns_private_resolver:
        lines.append("\n# DNS Private Resolver: it answers from the zones linked to its own VNet (link them there "
                     "too). A forwarding ruleset linked to the compute VNet must send these zones to its inbound "
                     "endpoint, never elsewhere; a DNS server outside Azure forwards them there as well")
        for f in ruleset.forwarders:
            command(f.requirements, "az", "dns-resolver", "forwarding-rule", "create", *group,
                    "--ruleset-name", "<forwarding-ruleset>", "--name", _rule_label(f.zone),
                    "--domain-name", f"{f.zone}.", "--forwarding-rule-state", "Enabled",
                    "--target-dns-servers", f"ip-address={f.target}", "port=53")
    elif ruleset.forwarders:
        lines.append(f"\n# Only with a custom DNS server: conditional forwarders to {AZURE_DNS} "
                     "(the public zone names, not privatelink.*)")
        lines.extend(f"#   {f.zone} -> {f.target}    ({', '.join(f.requirements)})" for f in ruleset.forwarders)
    return "\n".join(lines) + "\n"


def _rule_label(zone: str) -> str:
    """A forwarding rule's name for a zone (letters, digits, _ and -)."""
    return "aml-" + "".join(c if c.isalnum() else "-" for c in zone)


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
        "routes": [plain(r) for r in ruleset.routes],
        "private_dns_zones": [plain(z) for z in ruleset.private_dns_zones],
        "conditional_forwarders": [plain(f) for f in ruleset.forwarders],
        "dns_private_resolver": ruleset.dns_private_resolver,
        "managed_network": ruleset.managed_network or None,
        "outbound_rules": [plain(r) for r in ruleset.outbound_rules],
    }
