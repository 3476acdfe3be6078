"""`rules` is pure: catalog + context in, NSG / firewall / DNS changes out, matching the plan."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import replace

import pytest

from agent import catalog, planner
from agent import netrules as rules
from agent.netrules import render
from agent.output import draw

from .helpers import make_context

ALL_FEATURES = frozenset({"rstudio", "vscode", "conda", "pypi", "cran", "pytorch", "automl", "monitor", "hbi",
                          "huggingface", "custom-apps", "github"})
CONTEXTS = [
    {"compute": compute, "public_ip": pip, "private_endpoint": pe}
    for compute in ("instance", "cluster", "serverless") for pip in (False, True) for pe in (False, True)
] + [{"compute": "instance", "public_ip": True, "forced_tunnel": True}, {"compute": "vm"},
     {"compute": "hdinsight", "public_ip": True}, {"compute": "databricks"},
     {"cloud": "usgov"}, {"cloud": "china", "compute": "cluster"}, {"region": None, "storage_account": None}]


def ruleset(features: frozenset[str] = frozenset(), /, **overrides: object) -> rules.RuleSet:
    context = make_context(**overrides)
    return rules.rules(catalog.load(str(context["cloud"].value)), context, features)


def nsg(rs: rules.RuleSet, direction: str, peer: str, protocol: str = "Tcp") -> rules.NsgRule | None:
    return next((r for r in rs.nsg if r.direction == direction and protocol == r.protocol
                 and peer in (r.source if direction == "Inbound" else r.destination)), None)


def test_public_ip_compute_gets_inbound_44224_from_azure_machine_learning() -> None:
    rule = nsg(ruleset(public_ip=True), "Inbound", "AzureMachineLearning")
    assert rule is not None and rule.ports == (44224,) and rule.destination == "VirtualNetwork"
    assert rule.requirements == ("inbound-44224",) and rule.priority == 100
    assert not any(r.direction == "Inbound" for r in ruleset(public_ip=False).nsg)


def test_attached_vm_gets_inbound_ssh_with_protocol_any() -> None:
    rule = nsg(ruleset(compute="vm"), "Inbound", "AzureMachineLearning", "*")
    assert rule is not None and rule.ports == (22,) and rule.requirements == ("inbound-ssh",)


@pytest.mark.parametrize(("overrides", "tag", "protocol", "ports"), [
    ({}, "BatchNodeManagement.eastus", "*", (443,)),
    ({}, "Storage.eastus", "Tcp", (443, 445)),
    ({}, "AzureMachineLearning", "Udp", (5831,)),
    ({}, "AzureActiveDirectory", "Tcp", (80, 443)),
    ({}, "168.63.129.16", "*", (53,)),
    ({"compute": "serverless"}, "Storage.eastus", "Tcp", (443,)),
    ({"region": None}, "Storage.<region>", "Tcp", (443, 445)),
])
def test_outbound_nsg_rules_merge_ports_per_tag(overrides: dict[str, object], tag: str, protocol: str,
                                                ports: tuple[int, ...]) -> None:
    rule = nsg(ruleset(**overrides), "Outbound", tag, protocol)
    assert rule is not None and rule.ports == ports and rule.source == "VirtualNetwork"


def test_private_endpoint_workspace_gets_zones_links_and_forwarders() -> None:
    rs = ruleset(private_endpoint=True)
    assert [z.zone for z in rs.private_dns_zones] == ["privatelink.api.azureml.ms", "privatelink.notebooks.azure.net"]
    assert all(z.link_name for z in rs.private_dns_zones)
    assert [f.zone for f in rs.forwarders] == ["api.azureml.ms", "notebooks.azure.net", "instances.azureml.ms",
                                               "instances.ml.azure.ms", "aznbcontent.net", "inference.ml.azure.com"]
    assert {f.target for f in rs.forwarders} == {"168.63.129.16"}
    assert "workspace-api" in rs.private_dns_zones[0].requirements
    assert nsg(rs, "Outbound", "VirtualNetwork") is not None
    public = ruleset(private_endpoint=False)
    assert public.private_dns_zones == () and public.forwarders == ()
    assert nsg(public, "Outbound", "VirtualNetwork") is None


@pytest.mark.parametrize(("cloud", "zones", "forwarded"), [
    ("usgov", {"privatelink.api.ml.azure.us", "privatelink.notebooks.usgovcloudapi.net"}, "instances.ml.azure.us"),
    ("china", {"privatelink.api.ml.azure.cn", "privatelink.notebooks.chinacloudapi.cn"}, "instances.azureml.cn"),
])
def test_sovereign_private_endpoint_zones(cloud: str, zones: set[str], forwarded: str) -> None:
    rs = ruleset(cloud=cloud)
    assert {z.zone for z in rs.private_dns_zones} == zones
    assert forwarded in {f.zone for f in rs.forwarders}
    assert not any(f.zone.endswith("azure.com") for f in rs.forwarders)


def test_firewall_rules_split_web_ports_from_the_rest() -> None:
    rs = ruleset(frozenset({"rstudio"}))
    entra = next(a for a in rs.application_rules if a.fqdn == "login.microsoftonline.com")
    assert entra.protocols == ("Http=80", "Https=443") and entra.collection == "aml-required"
    assert next(a for a in rs.application_rules if a.fqdn == "*.azureml.ms").requirements[:1] == ("aml-api",)
    assert next(a for a in rs.application_rules if a.fqdn == "ghcr.io").collection == "aml-rstudio"
    by_destination = {n.destination: n for n in rs.network_rules}
    assert by_destination["eastus.tundra.azureml.ms"].protocol == "UDP"
    assert by_destination["eastus.tundra.azureml.ms"].destination_is_fqdn
    smb = by_destination["contosomlsa.file.core.windows.net"]
    assert smb.ports == (445,) and smb.protocol == "TCP"
    # a wildcard cannot be a network-rule FQDN: its service tag stands in
    assert not by_destination["AzureMachineLearning"].destination_is_fqdn
    assert not any("*" in n.destination for n in rs.network_rules)
    assert not any({80, 443} & set(n.ports) for n in rs.network_rules)


@pytest.mark.parametrize("overrides", CONTEXTS)
def test_rules_and_plan_name_the_same_requirements(overrides: dict[str, object]) -> None:
    context = make_context(**overrides)
    cat = catalog.load(str(context["cloud"].value))
    for features in (frozenset(), ALL_FEATURES):
        applicable = {r.id for r in planner.applicable(cat, context, features) if r.emit_rules}
        assert rules.rules(cat, context, features).requirements == applicable


@pytest.mark.parametrize("overrides", CONTEXTS)
def test_priorities_and_names_are_valid_and_deterministic(overrides: dict[str, object]) -> None:
    rs = ruleset(ALL_FEATURES, **overrides)
    assert rs == ruleset(ALL_FEATURES, **overrides)
    for direction in ("Inbound", "Outbound"):
        priorities = [r.priority for r in rs.nsg if r.direction == direction]
        assert priorities == list(range(100, 100 + 10 * len(priorities), 10))
    names = [*(r.name for r in rs.nsg), *(r.name for r in rs.application_rules),
             *(r.name for r in rs.network_rules)]
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,78}[A-Za-z0-9_]", n) for n in names), names
    assert len({r.name for r in rs.nsg}) == len(rs.nsg)
    assert len({(r.collection, r.name) for r in rs.application_rules}) == len(rs.application_rules)


def test_port_ranges_compress_consecutive_ports() -> None:
    assert rules.port_ranges([8710, 443, *range(8704, 8710), 445]) == ("443", "445", "8704-8710")
    inbound = nsg(ruleset(frozenset({"vscode", "custom-apps"})), "Inbound", "VirtualNetwork")
    assert inbound is not None and rules.port_ranges(inbound.ports) == ("8704-8993",)
    assert inbound.requirements == ("vscode-server", "custom-apps")


REQUIRED_ARGS = {
    ("nsg", "rule", "create"): ["--resource-group", "--nsg-name", "--name", "--priority", "--direction", "--access",
                                "--protocol", "--source-address-prefixes", "--source-port-ranges",
                                "--destination-address-prefixes", "--destination-port-ranges"],
    ("firewall", "application-rule", "create"): ["--resource-group", "--firewall-name", "--collection-name",
                                                 "--name", "--protocols", "--source-addresses", "--target-fqdns"],
    ("firewall", "network-rule", "create"): ["--resource-group", "--firewall-name", "--collection-name", "--name",
                                             "--protocols", "--source-addresses", "--destination-ports"],
    ("private-dns", "zone", "create"): ["--resource-group", "--name"],
    ("route-table", "route", "create"): ["--resource-group", "--route-table-name", "--name", "--address-prefix",
                                         "--next-hop-type"],
    ("private-dns", "link", "vnet"): ["--resource-group", "--zone-name", "--name", "--virtual-network",
                                      "--registration-enabled"],
}


@pytest.mark.parametrize("overrides", CONTEXTS)
def test_az_commands_parse_and_carry_every_required_argument(overrides: dict[str, object]) -> None:
    rs = ruleset(ALL_FEATURES, **overrides)
    text = render.render_az(rs, resource_group="rg-ml", nsg="nsg-compute", firewall="fw-hub",
                           vnet="/subscriptions/x/vnet", subnet_prefix="10.0.1.0/24")
    commands = [shlex.split(line) for line in text.splitlines() if line and not line.startswith("#")]
    seen: dict[tuple[str, ...], int] = {}
    collections: set[tuple[str, str]] = set()
    for argv in commands:
        assert argv[:2] == ["az", "network"], argv
        key = tuple(argv[2:5])
        assert key in REQUIRED_ARGS, argv
        seen[key] = seen.get(key, 0) + 1
        assert all(arg in argv for arg in REQUIRED_ARGS[key]), (argv, REQUIRED_ARGS[key])
        assert all(not argv[i + 1].startswith("--") for i, a in enumerate(argv) if a in REQUIRED_ARGS[key])
        if key[0] == "firewall":
            collection = (key[1], argv[argv.index("--collection-name") + 1])
            assert ("--priority" in argv) == (collection not in collections)  # once, on the first rule
            collections.add(collection)
            if key[1] == "network-rule":
                assert ("--destination-fqdns" in argv) != ("--destination-addresses" in argv)
    assert seen.get(("nsg", "rule", "create"), 0) == len(rs.nsg)
    assert seen.get(("route-table", "route", "create"), 0) == len(rs.routes)
    assert seen.get(("private-dns", "zone", "create"), 0) == len(rs.private_dns_zones)
    assert seen.get(("private-dns", "link", "vnet"), 0) == len(rs.private_dns_zones)
    assert all(f"#   {f.zone} -> 168.63.129.16" in text for f in rs.forwarders)


@pytest.mark.parametrize(("overrides", "routes"), [
    ({"forced_tunnel": True, "public_ip": True},
     {("AzureMachineLearning", ("inbound-44224",)),
      ("BatchNodeManagement.eastus", ("batch", "batch-node-management"))}),
    ({"forced_tunnel": True, "public_ip": False}, set()),  # its flows go through the appliance's rules
    ({"forced_tunnel": None, "public_ip": True}, set()),  # unknown: no route is asked for
    ({"forced_tunnel": False, "public_ip": True}, set()),
], ids=["forced-public-ip", "forced-no-public-ip", "unknown", "not-forced"])
def test_a_forced_tunnel_with_a_public_ip_gets_the_management_routes(
        overrides: dict[str, object], routes: set[tuple[str, tuple[str, ...]]]) -> None:
    rs = ruleset(**overrides)
    assert {(r.address_prefix, r.requirements) for r in rs.routes} == routes
    assert all(r.next_hop == "Internet" for r in rs.routes)
    if routes:
        text = render.render_az(rs, route_table="rt-compute")
        assert ("az network route-table route create --resource-group '<resource-group>' --route-table-name "
                "rt-compute --name aml-AzureMachineLearning --address-prefix AzureMachineLearning "
                "--next-hop-type Internet") in text
        assert render.to_dict(rs)["routes"][0]["address_prefix"] == "AzureMachineLearning"
        assert "Routes (the compute subnet's route table" in draw.plain_tables(render.render_table(rs))


def test_az_defaults_are_quoted_placeholders() -> None:
    text = render.render_az(ruleset())
    assert "--resource-group '<resource-group>'" in text and "--source-port-ranges '*'" in text
    assert "--virtual-network '<vnet-id>'" in text and "--source-addresses '<compute-subnet-prefix>'" in text


def test_json_is_serialisable_and_stable() -> None:
    data = render.to_dict(ruleset(ALL_FEATURES, public_ip=True))
    text = json.dumps(data, sort_keys=True)
    assert text == json.dumps(render.to_dict(ruleset(ALL_FEATURES, public_ip=True)), sort_keys=True)
    assert data["schema"] == "aml-netcheck.rules/1" and data["catalog_version"] == catalog.load().version
    first = data["nsg_rules"][0]
    assert set(first) == {"name", "priority", "direction", "protocol", "source", "destination", "ports",
                          "port_ranges", "requirements"}
    assert json.loads(text)["private_dns_zones"][0]["zone"] == "privatelink.api.azureml.ms"


def test_table_renders_every_section() -> None:
    text = draw.plain_tables(render.render_table(ruleset(frozenset({"rstudio"}), public_ip=True)))
    for heading in ("NSG rules", "application rules", "network rules", "Private DNS zones", "Conditional forwarders"):
        assert heading in text
    assert "in-AzureMachineLearning-tcp-44224" in text and "privatelink.notebooks.azure.net" in text


@pytest.mark.parametrize("compute", ["instance", "cluster", "serverless"])
def test_the_seed_table_is_the_floor_of_the_nsg_rules(compute: str) -> None:
    """The seed article's table: outbound AzureMachineLearning TCP 443, 8787 and 18881 and UDP
    5831 for compute without a public IP; a cluster's rules used to omit 8787 and 18881."""
    rs = rules.rules(catalog.load(), make_context(compute=compute, public_ip=False))
    tag = {(r.protocol, r.ports) for r in rs.nsg
           if r.direction == "Outbound" and r.destination == "AzureMachineLearning"}
    tcp = {port for protocol, ports in tag if protocol in ("Tcp", "*") for port in ports}
    udp = {port for protocol, ports in tag if protocol in ("Udp", "*") for port in ports}
    assert {443, 8787, 18881} <= tcp and 5831 in udp


def test_imds_has_no_network_rule() -> None:
    rs = rules.rules(catalog.load(), make_context())
    assert "imds" not in rs.requirements
    assert not any("169.254.169.254" in (r.destination, r.source) for r in rs.nsg)


@pytest.mark.parametrize(("cloud", "zones", "forwarded"), [
    ("public", {"privatelink.blob.core.windows.net", "privatelink.file.core.windows.net",
                "privatelink.vaultcore.azure.net", "privatelink.azurecr.io"},
     {"blob.core.windows.net", "file.core.windows.net", "vault.azure.net", "vaultcore.azure.net", "azurecr.io"}),
    ("usgov", {"privatelink.blob.core.usgovcloudapi.net", "privatelink.file.core.usgovcloudapi.net",
               "privatelink.vaultcore.usgovcloudapi.net", "privatelink.azurecr.us"},
     {"blob.core.usgovcloudapi.net", "vault.usgovcloudapi.net", "vaultcore.usgovcloudapi.net", "azurecr.us"}),
    ("china", {"privatelink.blob.core.chinacloudapi.cn", "privatelink.vaultcore.azure.cn", "privatelink.azurecr.cn"},
     {"file.core.chinacloudapi.cn", "vault.azure.cn", "vaultcore.azure.cn", "azurecr.cn"}),
])
def test_resources_with_their_own_private_endpoint_get_their_zones_and_forwarders(
        cloud: str, zones: set[str], forwarded: set[str]) -> None:
    """A storage account, key vault or registry with its own private endpoint needs its privatelink
    zone linked and (with custom DNS) its public zone forwarded, whatever the workspace has."""
    own = {"storage_private_endpoint": True, "key_vault_private_endpoint": True, "registry_private_endpoint": True,
           "container_registry": "contosoacr", "key_vault": "contoso-kv", "cloud": cloud}
    for workspace in (True, False):
        rs = ruleset(private_endpoint=workspace, **own)
        assert zones <= {z.zone for z in rs.private_dns_zones}, workspace
        assert forwarded <= {f.zone for f in rs.forwarders}, workspace
        assert ("aznbcontent.net" in {f.zone for f in rs.forwarders}) is workspace  # workspace zones only with its PE
    blob = next(z for z in ruleset(private_endpoint=False, **own).private_dns_zones
                if z.zone.startswith("privatelink.blob."))
    assert blob.requirements == ("storage-blob",)
    assert not any(".queue." in z.zone or ".table." in z.zone for z in ruleset(**own).private_dns_zones)  # optional
    workspace_only = ruleset(private_endpoint=True).forwarders  # a workspace zone's privatelink zone is inside it
    assert not any(f.zone.startswith("privatelink") or f.zone == "vaultcore.azure.net" for f in workspace_only)
    unknown = ruleset(private_endpoint=False, container_registry="contosoacr", key_vault="contoso-kv")
    assert unknown.private_dns_zones == () and unknown.forwarders == ()  # `rules` cannot read a CNAME chain


OUTBOUND_RULE_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}")  # the REST API's pattern


@pytest.mark.parametrize("mode", ["allow_only_approved_outbound", "allow_internet_outbound"])
def test_a_managed_network_s_rules_are_its_outbound_rules_alone(mode: str) -> None:
    """Azure ML owns a managed network's NSG, routes and DNS: the rule set is outbound rules, the
    required service tags and the associated resources' private endpoints marked as Azure ML's."""
    rs = ruleset(ALL_FEATURES, managed_network=mode, public_ip=True, forced_tunnel=True, key_vault="kv-contoso",
                 container_registry="acrcontoso")
    assert (rs.nsg, rs.application_rules, rs.network_rules, rs.routes, rs.private_dns_zones, rs.forwarders) == (
        (), (), (), (), (), ())
    assert rs.managed_network == mode
    required = {(r.type, r.destination, r.subresource) for r in rs.outbound_rules if r.required}
    assert {("service_tag", "AzureMachineLearning", ""), ("service_tag", "BatchNodeManagement.eastus", ""),
            ("service_tag", "AzureActiveDirectory", ""), ("service_tag", "AzureFrontDoor.FirstParty", ""),
            ("private_endpoint", ("/subscriptions/<subscription-id>/resourceGroups/<resource-group>/providers/"
             "Microsoft.Storage/storageAccounts/contosomlsa"), "file"),
            ("private_endpoint", ("/subscriptions/<subscription-id>/resourceGroups/<resource-group>/providers/"
             "Microsoft.KeyVault/vaults/kv-contoso"), "vault")} <= required
    assert all(r.name == "" for r in rs.outbound_rules if r.required)  # Azure ML names its own
    added = [r for r in rs.outbound_rules if not r.required]
    if mode == "allow_internet_outbound":
        assert added == []  # the internet is allowed: an FQDN needs no rule
        return
    assert {r.destination for r in added} >= {"pypi.org", "*.pythonhosted.org", "ml.azure.com", "ghcr.io"}
    assert all(r.type == "fqdn" and set(r.ports) <= {80, 443} for r in added if r.type == "fqdn")
    assert not any("contosomlsa" in r.destination for r in added)  # the storage account only by private endpoint
    names = [r.name for r in added]
    assert len(set(names)) == len(names) and all(OUTBOUND_RULE_NAME.fullmatch(n) for n in names), names


def test_a_managed_network_s_az_commands_add_the_user_defined_rules_and_list_the_required_ones() -> None:
    rs = ruleset(frozenset({"pypi"}), managed_network="allow_only_approved_outbound")
    text = render.render_az(rs, resource_group="rg-ml", workspace="contoso-ml")
    assert ("az ml workspace outbound-rule set --resource-group rg-ml --workspace-name contoso-ml --rule "
            "fqdn-pypi-org --type fqdn --destination pypi.org") in text
    assert "--destination '*.pythonhosted.org'" in text
    listed = "az ml workspace outbound-rule list --resource-group rg-ml --workspace-name contoso-ml --output table"
    assert listed in text
    assert "#   service_tag AzureMachineLearning UDP 5831" in text
    assert "az network nsg" not in text and "route-table" not in text
    assert all(shlex.split(line) for line in text.splitlines() if line.startswith("az "))
    data = render.to_dict(rs)
    assert data["managed_network"] == "allow_only_approved_outbound"
    assert set(data["outbound_rules"][0]) == {"name", "type", "destination", "protocol", "ports", "port_ranges",
                                              "subresource", "required", "requirements"}
    table = draw.plain_tables(render.render_table(rs))
    assert "Managed virtual network outbound rules (allow_only_approved_outbound" in table
    assert "storageAccounts/contosomlsa (blob)" in table and "Azure ML (required)" in table


def test_managed_network_rules_for_other_ports_are_service_tag_rules() -> None:
    """FQDN rules take 80 and 443 only: a flow on another port needs its service tag."""
    rows = [replace(row, service_tag="AzureCloud", hosts=("example.net",), rule_fqdn="example.net", ports=(8443,),
                    id="custom") for row in catalog.load().requirements if row.id == "pypi"]
    context = make_context(managed_network="allow_only_approved_outbound")
    rs = rules.derive(catalog.load(), rows, context)
    assert [(r.type, r.destination, r.ports, r.required) for r in rs.outbound_rules] == [
        ("service_tag", "AzureCloud", (8443,), False)]
    assert "--type service_tag --service-tag AzureCloud --protocol TCP --port-ranges 8443" in render.render_az(rs)


def test_a_dns_private_resolver_forwards_to_its_inbound_endpoint_through_a_ruleset() -> None:
    rs = ruleset(private_endpoint=True, dns_private_resolver=True)
    assert {f.target for f in rs.forwarders} == {"<resolver-inbound-endpoint-ip>"}
    text = render.render_az(rs)
    assert ("az dns-resolver forwarding-rule create --resource-group '<resource-group>' --ruleset-name "
            "'<forwarding-ruleset>' --name aml-api-azureml-ms --domain-name api.azureml.ms. "
            "--forwarding-rule-state Enabled --target-dns-servers 'ip-address=<resolver-inbound-endpoint-ip>' "
            "port=53") in text
    assert "the DNS Private Resolver's inbound endpoint" in draw.plain_tables(render.render_table(rs))
    assert {f.target for f in ruleset(private_endpoint=True).forwarders} == {"168.63.129.16"}
