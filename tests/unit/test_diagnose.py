"""Diagnosis as tables: synthetic results in, finding codes, grouping, severity and remedies out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import pytest

from agent import catalog, planner
from agent.diagnose import Facts, diagnose
from agent.model import Finding, Severity, Unneeded
from probes._trace import Fact
from probes.reasons import Reason, Status
from probes.specs import HttpSpec, Proxy

from .helpers import GUID, Outcome, make_context, make_plan, simulate

WS = f"{GUID}.workspace.eastus.api.azureml.ms"
NB = f"ml-contoso-ml-eastus-{GUID}.eastus.notebooks.azure.net"
CI = "ci-alice.eastus.instances.azureml.ms"
SMB_NEGOTIATE = "smb:contosomlsa.file.core.windows.net:445"
PE_ADDRESSES = {WS: ("10.0.1.5",), f"{GUID}.workspace.eastus.cert.api.azureml.ms": ("10.0.1.5",),
                NB: ("10.0.1.6",), CI: ("10.0.1.5",), "ci-alice.eastus.instances.ml.azure.ms": ("10.0.1.5",)}
AZURE_DNS_NODE = {"hostname": "ci-alice", "resolvers": ["168.63.129.16"]}
CERT = {"issuer": "CN=Contoso Inspection CA,O=Contoso Firewall", "issuer_org": "Contoso Firewall",
        "sha256": "ab" * 32, "issuer_key_id": "cd" * 20}


def run(outcomes: Mapping[str, Outcome], *, node: Mapping[str, object] = AZURE_DNS_NODE,
        features: tuple[str, ...] = (), **context: object) -> tuple[Finding, ...]:
    checks = make_plan(features=features, **context)
    results = simulate(checks, outcomes, PE_ADDRESSES)
    return diagnose(results, Facts(catalog.load(), make_context(**context), node)).findings  # type: ignore[arg-type]


def codes(findings: tuple[Finding, ...]) -> list[str]:
    return [f.code for f in findings]


def test_healthy_gives_no_findings_and_exit_0() -> None:
    checks = make_plan()
    results = simulate(checks, {}, PE_ADDRESSES)
    diagnosis = diagnose(results, Facts(catalog.load(), make_context(), AZURE_DNS_NODE))
    assert diagnosis.findings == ()
    assert (diagnosis.health, diagnosis.exit_code) == ("ok", 0)


BLOB = "contosomlsa.blob.core.windows.net"
STALE_LINE = f"10.0.1.99 {BLOB}  # pinned before the endpoint moved"
PINNED: dict[str, Fact] = {"hosts_override": {
    "file": "/etc/hosts", "lines": [{"line": 3, "text": STALE_LINE, "address": "10.0.1.99"}], "dns": ["10.0.1.8"],
    "nsswitch": "files dns"}}


def said(*servers: tuple[str, str, str]) -> dict[str, Fact]:
    """The dns probe's disagreement fact: (server, answer, class) per server, a server twice when it flapped."""
    entries: dict[str, list[Fact]] = {}
    for server, answer, kind in servers:
        entries.setdefault(server, []).append({"answer": answer, "class": kind})
    return {"disagreement": [{"server": server, "said": views} for server, views in entries.items()]}


UNLINKED_SECOND = said(("168.63.129.16", "10.0.1.5", "private"), ("10.0.2.4", "198.18.3.4", "public"))
TWO_RESOLVERS = {"hostname": "n", "resolvers": ["168.63.129.16", "10.0.2.4"]}



def slow(measure: str = "connect-rtt", ms: float = 640.0, threshold: float = 300.0) -> Outcome:
    """A check that worked, slower than its threshold, as agent/latency.py leaves it."""
    return Outcome(Reason.LATENCY_SLOW, evidence={"latency": {"measure": measure, "ms": ms, "threshold_ms": threshold}},
                   detail=f"worked, slowly: {measure} {ms:g} ms, over the {threshold:g} ms threshold")


CASES = [
    # (name, outcomes, expected code, severity, words the remedy must contain)
    ("slow connect", {"tcp:mcr.microsoft.com:443": slow()}, "latency-degraded", Severity.WARNING,
     ["route table", "--latency"]),
    ("hosts file pins an old address", {f"dns:{BLOB}": Outcome(addresses=("10.0.1.99",), evidence=PINNED),
                                        f"tcp:{BLOB}:443": Outcome(Reason.TCP_TIMEOUT)},
     "hosts-file-override", Severity.CRITICAL, [f"line 3 of /etc/hosts: `{STALE_LINE}`", "DNS answers 10.0.1.8"]),
    ("resolvers disagree", {f"dns:{WS}": Outcome(evidence=UNLINKED_SECOND)},
     "dns-resolvers-disagree", Severity.CRITICAL, ["10.0.2.4", "forwarders", "api.azureml.ms"]),
    ("smb dropped", {"tcp:contosomlsa.file.core.windows.net:445": Outcome(Reason.TCP_TIMEOUT)},
     "smb-blocked", Severity.CRITICAL, ["TCP 445", "Storage.eastus"]),
    ("smb rejected", {"tcp:contosomlsa.file.core.windows.net:445": Outcome(Reason.TCP_REFUSED)},
     "smb-blocked", Severity.CRITICAL, ["TCP 445"]),
    ("smb silent middlebox", {SMB_NEGOTIATE: Outcome(Reason.SMB_NO_NEGOTIATE_REPLY, phase="negotiate")},
     "smb-blocked", Severity.CRITICAL, ["445", "inspection", "Storage.eastus"]),
    ("smb answered by http", {SMB_NEGOTIATE: Outcome(Reason.SMB_NOT_SMB, detail="an HTTP response")},
     "smb-blocked", Severity.CRITICAL, ["445"]),
    ("smb dialect old", {SMB_NEGOTIATE: Outcome(Reason.SMB_DIALECT_OLD, evidence={"dialect": "2.1"})},
     "smb-dialect-old", Severity.WARNING, ["SMB 3"]),
    ("batch dropped", {"tcp:eastus.batch.azure.com:443": Outcome(Reason.TCP_TIMEOUT)},
     "egress-blocked", Severity.CRITICAL,  # the NSG rule is the one `rules` derives: any protocol on 443
     ["any protocol on 443", "BatchNodeManagement.eastus", "*.eastus.batch.azure.com"]),
    ("batch reset", {"tcp:eastus.batch.azure.com:443": Outcome(Reason.TCP_REFUSED)},
     "egress-rejected", Severity.CRITICAL, ["BatchNodeManagement.eastus"]),
    ("sni filter reset", {"tls:management.azure.com:443": Outcome(Reason.TLS_RESET)},
     "egress-rejected", Severity.CRITICAL, ["AzureResourceManager"]),
    ("tundra closed", {"udp:eastus.tundra.azureml.ms:5831": Outcome(Reason.UDP_CLOSED)},
     "udp-blocked", Severity.CRITICAL, ["UDP 5831", "AzureMachineLearning"]),
    ("name missing", {"dns:graph.windows.net": Outcome(Reason.DNS_NXDOMAIN)},
     "dns-name-missing", Severity.CRITICAL, ["168.63.129.16"]),
    ("servfail", {"dns:mcr.microsoft.com": Outcome(Reason.DNS_SERVFAIL)},
     "dns-servfail", Severity.CRITICAL, ["forwarders"]),
    ("resolver dead", {"dns:mcr.microsoft.com": Outcome(Reason.DNS_TIMEOUT)},
     "dns-unavailable", Severity.CRITICAL, ["53"]),
    ("record missing", {f"dns:{NB}": Outcome(Reason.DNS_NXDOMAIN, evidence={
        "cname_chain": [f"ml-contoso-ml-eastus-{GUID}.eastus.privatelink.notebooks.azure.net"]})},
     "private-dns-record-missing", Severity.CRITICAL, ["privatelink.notebooks.azure.net", "A record"]),
    ("pe public", {f"dns:{WS}": Outcome(Reason.DNS_PUBLIC_ANSWER, evidence={"addresses": ["198.18.3.4"]})},
     "private-endpoint-resolves-public", Severity.CRITICAL,
     ["privatelink.api.azureml.ms", "az network private-dns link vnet create"]),
    ("tls untrusted", {"tls:management.azure.com:443": Outcome(Reason.TLS_UNTRUSTED, evidence={"cert": CERT})},
     "tls-intercepted-untrusted", Severity.CRITICAL, ["TLS inspection"]),
    ("tls unexpected issuer",
     {"tls:management.azure.com:443": Outcome(Reason.TLS_UNEXPECTED_ISSUER, evidence={"cert": CERT})},
     "tls-intercepted", Severity.WARNING, ["TLS inspection"]),
    ("tls stalled", {"tls:mcr.microsoft.com:443": Outcome(Reason.TLS_TIMEOUT, phase="handshake")},
     "tls-handshake-stalled", Severity.CRITICAL, ["MSS"]),
    ("websocket refused", {f"websocket:{CI}:443": Outcome(Reason.WS_UPGRADE_REFUSED, detail="HTTP 403")},
     "websocket-blocked", Severity.CRITICAL, ["WebSocket", "*.instances.azureml.ms"]),
    ("proxy 407", {"http:mcr.microsoft.com:443": Outcome(Reason.PROXY_AUTH_REQUIRED)},
     "proxy-auth-required", Severity.CRITICAL, ["HTTPS_PROXY"]),
]


@pytest.mark.parametrize(("name", "outcomes", "code", "severity", "words"), CASES, ids=[c[0] for c in CASES])
def test_single_cause(name: str, outcomes: Mapping[str, Outcome], code: str, severity: Severity,
                      words: list[str]) -> None:
    findings = run(outcomes)
    assert codes(findings) == [code]
    finding = findings[0]
    assert finding.severity is severity
    assert set(finding.checks) == set(outcomes)
    assert finding.docs and all(d.startswith("https://") for d in finding.docs)
    for word in words:
        assert word in finding.remedy, (word, finding.remedy)


def test_custom_dns_is_blamed_when_the_node_uses_one() -> None:
    outcomes = {f"dns:{WS}": Outcome(Reason.DNS_PUBLIC_ANSWER)}
    findings = run(outcomes, node={"hostname": "n", "resolvers": ["10.0.2.4"]})
    assert codes(findings) == ["custom-dns-not-forwarding"]
    assert "10.0.2.4" in findings[0].remedy and "api.azureml.ms" in findings[0].remedy


def test_instance_name_must_resolve_to_the_workspace_endpoint() -> None:
    findings = run({f"dns:{CI}": Outcome(addresses=("10.0.0.4",))})
    assert codes(findings) == ["instance-name-wrong-address"]
    assert findings[0].checks == (f"dns:{CI}",)


def test_instance_name_resolving_public_is_the_same_finding() -> None:
    findings = run({f"dns:{CI}": Outcome(Reason.DNS_PUBLIC_ANSWER)})
    assert codes(findings) == ["instance-name-wrong-address"]


def test_instance_address_rule_needs_a_private_endpoint_workspace() -> None:
    assert run({f"dns:{CI}": Outcome(addresses=("198.18.9.9",))}, private_endpoint=False) == ()


BLOB = "contosomlsa.blob.core.windows.net"
BLOB_LINK = "contosomlsa.privatelink.blob.core.windows.net"
DETECTED = Outcome(Reason.DNS_PUBLIC_ANSWER, evidence={
    "private_link": BLOB_LINK, "cname_chain": [BLOB_LINK, "blob.bl2prdstr01a.store.core.windows.net"],
    "addresses": ["198.18.7.7"]})


@pytest.mark.parametrize(("resolvers", "code", "zone"), [
    (["168.63.129.16"], "private-endpoint-resolves-public", "privatelink.blob.core.windows.net"),
    (["10.0.2.4"], "custom-dns-not-forwarding", "blob.core.windows.net"),
])
def test_a_resource_private_endpoint_seen_in_the_cname_chain_is_the_dns_finding(
        resolvers: list[str], code: str, zone: str) -> None:
    """Nobody said the storage account has its own private endpoint, but its public name CNAMEs
    into privatelink.blob.core.windows.net: the public answer is the fault, as if the context said so."""
    findings = run({f"dns:{BLOB}": DETECTED}, node={"hostname": "n", "resolvers": resolvers})
    assert codes(findings) == [code] and zone in findings[0].remedy
    assert "detected from their CNAME chain" in findings[0].cause and BLOB_LINK in findings[0].cause
    assert "--storage-private-endpoint or --no-storage-private-endpoint" in findings[0].cause


def test_a_vault_behind_custom_dns_needs_both_of_its_forwarders() -> None:
    """A vault's name CNAMEs into privatelink.vaultcore.azure.net, outside vault.azure.net: a server
    that chases the CNAME itself must forward vaultcore.azure.net too."""
    findings = run({"dns:contoso-kv.vault.azure.net": Outcome(Reason.DNS_PUBLIC_ANSWER)},
                   node={"hostname": "n", "resolvers": ["10.0.2.4"]}, key_vault="contoso-kv",
                   key_vault_private_endpoint=True)
    assert codes(findings) == ["custom-dns-not-forwarding"]
    assert "vault.azure.net, vaultcore.azure.net" in findings[0].remedy


def test_a_private_endpoint_the_cname_chain_does_not_show_is_said_not_crashed_on() -> None:
    public = Outcome(Reason.DNS_PUBLIC_ANSWER, evidence={"private_link": None, "addresses": ["198.18.7.7"]})
    findings = run({f"dns:{BLOB}": public}, storage_private_endpoint=True)
    assert codes(findings) == ["private-endpoint-resolves-public"]
    assert f"Public DNS shows no private endpoint for {BLOB}" in findings[0].cause


def test_a_workspace_denying_its_public_endpoint_is_reached_through_its_private_endpoint() -> None:
    """A workspace with public network access disabled answers its public name with 403 UserError
    naming its private link: the fix is the private endpoint path, not a subnet network rule."""
    findings = run({f"http:{WS}:443": Outcome(Reason.HTTP_RESOURCE_DENIED)}, private_endpoint=False)
    assert codes(findings) == ["resource-firewall-denied"]
    remedy = findings[0].remedy
    assert "public network access" in remedy and "privatelink.api.azureml.ms" in remedy
    assert "network-rule add" not in remedy and "NO_PROXY" not in remedy
    storage = run({"http:contosomlsa.blob.core.windows.net:443": Outcome(Reason.HTTP_RESOURCE_DENIED)})
    assert "network-rule add" in storage[0].remedy and "public network access" not in storage[0].remedy


def test_a_workspace_denial_through_the_proxy_names_no_proxy() -> None:
    """The proxy resolves the name itself (the node's public answer is unneeded) and reaches the
    public endpoint: both the zone link and NO_PROXY are the fix."""
    findings = run_proxied({f"dns:{WS}": Outcome(Reason.DNS_PUBLIC_ANSWER),
                            f"http:{WS}:443@proxy": Outcome(Reason.HTTP_RESOURCE_DENIED)})
    assert codes(findings) == ["resource-firewall-denied"]
    assert "NO_PROXY" in findings[0].remedy and "privatelink.api.azureml.ms" in findings[0].remedy


def test_one_blocked_service_tag_is_one_finding_listing_every_target() -> None:
    findings = run({"tcp:eastus.batch.azure.com:443": Outcome(Reason.TCP_TIMEOUT),
                    "tcp:eastus.service.batch.azure.com:443": Outcome(Reason.TCP_TIMEOUT)})
    assert codes(findings) == ["egress-blocked"]
    assert set(findings[0].targets) == {"eastus.batch.azure.com:443/tcp", "eastus.service.batch.azure.com:443/tcp"}


def path(*hops: tuple[int, str, str | None], address: str = "198.18.1.1", port: int = 443) -> dict[str, Fact]:
    """The tcp probe's `path` fact (probes/_hops.py: localise), hops as (ttl, answer, address)."""
    return {"path": {"address": address, "port": port, "protocol": "tcp", "limit": 12,
                     "hops": [{"ttl": t, "answer": a, "address": who, "rtt_ms": 0.4} for t, a, who in hops]}}


PAST_APPLIANCE = path((1, "time-exceeded", "10.0.0.4"), (2, "time-exceeded", "10.9.0.1"))
AT_FIRST_HOP = path()
BATCH = ("tcp:eastus.batch.azure.com:443", "tcp:eastus.service.batch.azure.com:443")


@pytest.mark.parametrize(("evidence", "summary", "cause", "remedy", "not_in_remedy"), [
    (PAST_APPLIANCE, "past 10.9.0.1 (hop 2): a route sends it through an appliance",
     ["node → 10.0.0.4 → 10.9.0.1 → * → 198.18.1.1:443 (dies past hop 2)", "forced tunnelling"],
     ["appliance or firewall at or behind 10.9.0.1", "*.eastus.batch.azure.com",
      "route BatchNodeManagement.eastus to next hop Internet"], ["NSG outbound rule"]),
    (AT_FIRST_HOP, "at the first hop", ["node → * → 198.18.1.1:443 (no hop answered)", "network security group"],
     ["NSG outbound rule: allow any protocol on 443 from VirtualNetwork to BatchNodeManagement.eastus",
      "Start with the NSGs"], ["next hop Internet"]),
    ({}, "(2 endpoint(s))", ["Connections got no answer"], ["NSG outbound rule"], ["next hop Internet", "hop"]),
], ids=["past-an-appliance", "at-the-first-hop", "not-traced"])
def test_a_dropped_flow_s_path_says_who_fixes_it(evidence: dict[str, Fact], summary: str, cause: list[str],
                                                 remedy: list[str], not_in_remedy: list[str]) -> None:
    findings = run({check: Outcome(Reason.TCP_TIMEOUT, evidence=evidence) for check in BATCH})
    assert codes(findings) == ["egress-blocked"]
    finding = findings[0]
    assert finding.summary.endswith(summary), finding.summary
    assert all(words in finding.cause for words in cause), finding.cause
    assert all(words in finding.remedy for words in remedy), finding.remedy
    assert not any(words in finding.remedy for words in not_in_remedy), finding.remedy


@pytest.mark.parametrize(("evidence", "steps"), [
    (PAST_APPLIANCE, [("node", "passed", "10.0.0.4", None), ("azure-fabric", "passed", None, None),
                      ("appliance", "passed", "10.0.0.4", 1), ("appliance", "died", "10.9.0.1", 2),
                      ("appliance", "silent", None, 3), ("service", "not-reached", "198.18.1.1:443", None)]),
    (AT_FIRST_HOP, [("node", "passed", "10.0.0.4", None), ("azure-fabric", "died", None, 1),
                    ("service", "not-reached", "198.18.1.1:443", None)]),
    (path((1, "time-exceeded", "10.0.0.1"), (2, "unreachable", "10.9.0.1")),
     [("node", "passed", "10.0.0.4", None), ("azure-fabric", "passed", None, None),
      ("appliance", "passed", "10.0.0.1", 1), ("appliance", "died", "10.9.0.1", 2),
      ("service", "not-reached", "198.18.1.1:443", None)]),
    (path((1, "time-exceeded", "10.0.0.1"), (2, "reached", "198.18.1.1")),
     [("node", "passed", "10.0.0.4", None), ("azure-fabric", "passed", None, None),
      ("appliance", "passed", "10.0.0.1", 1), ("service", "reached", "198.18.1.1:443", None)]),
    ({}, []),
], ids=["past-an-appliance", "at-the-first-hop", "rejected-at-hop-2", "reached", "not-traced"])
def test_a_traced_path_is_given_step_by_step_with_who_owns_each_step(
        evidence: dict[str, Fact], steps: list[tuple[str, str, str | None, int | None]]) -> None:
    """The picture's data (Finding.trace): the node, Azure's fabric (silent and where the flow died
    when no hop answered), each hop up to the first silent one, the last that answered marked as where
    it died, the destination."""
    node = {**AZURE_DNS_NODE, "default_routes": [{"interface": "eth0"}],
            "interfaces": [{"name": "eth0", "addresses": ["10.0.0.4/24"]}]}
    finding = run({check: Outcome(Reason.TCP_TIMEOUT, evidence=evidence) for check in BATCH}, node=node)[0]
    assert [(s.owner.value, s.state.value, s.address, s.hop) for s in finding.trace] == steps
    assert [s.name for s in finding.trace if s.name] == (["ci-alice", "eastus.batch.azure.com"] if steps else [])


def test_one_service_s_dropped_flows_are_told_by_the_path_one_of_them_traced() -> None:
    """A run traces only a few paths at once (probes/_hops.py: TRACES_AT_ONCE): a flow to the same
    service tag and port that went untraced is the same finding, on the same route."""
    findings = run({BATCH[0]: Outcome(Reason.TCP_TIMEOUT),
                    BATCH[1]: Outcome(Reason.TCP_TIMEOUT, evidence=PAST_APPLIANCE)})
    assert codes(findings) == ["egress-blocked"]
    assert findings[0].summary.endswith(" past 10.9.0.1 (hop 2): a route sends it through an appliance")


def test_a_public_ip_compute_behind_a_forced_tunnel_is_told_of_the_management_routes() -> None:
    findings = run({check: Outcome(Reason.TCP_TIMEOUT, evidence=PAST_APPLIANCE) for check in BATCH}, public_ip=True)
    assert "TCP 44224" in findings[0].remedy and "rules --forced-tunnel --public-ip" in findings[0].remedy


IMDS_NODE = {**AZURE_DNS_NODE, "detection": {"imds": {
    "vm_name": "vm-attached-1", "resource_group": "rg-ml", "private_ip": "10.0.0.4"}}}


@pytest.mark.parametrize(("compute", "vm", "group"), [
    ("vm", "vm-attached-1", "rg-ml"),  # the customer's own VM: Network Watcher can look at it
    ("cluster", "'<a-vm-in-the-compute-subnet>'", "'<its-resource-group>'"),  # Azure ML's managed subscription
])
def test_a_failed_flow_carries_its_5_tuple_and_the_commands_that_check_it_in_azure(
        compute: str, vm: str, group: str) -> None:
    check = "tcp:management.azure.com:443"
    outcomes = {check: Outcome(Reason.TCP_TIMEOUT, evidence={"tried": ["10.0.1.7"]})}  # as the engine notes it
    finding = run(outcomes, node=IMDS_NODE, compute=compute)[0]
    assert finding.code == "egress-blocked" and finding.flow == "10.0.0.4:* → 10.0.1.7:443/tcp"
    assert finding.confirm[0] == ("az network watcher test-ip-flow --direction Outbound --protocol TCP --local "
                                  f"'10.0.0.4:*' --remote 10.0.1.7:443 --vm {vm} --resource-group {group}")
    assert finding.confirm[1] == ("az network watcher show-next-hop --source-ip 10.0.0.4 --dest-ip 10.0.1.7 "
                                  f"--vm {vm} --resource-group {group}")
    assert [c.split(" --ids")[0] for c in finding.confirm[2:]] == [
        "az network nic list-effective-nsg", "az network nic show-effective-route-table"]


def test_a_finding_that_is_no_failed_flow_has_no_commands() -> None:
    finding = run({"dns:graph.windows.net": Outcome(Reason.DNS_NXDOMAIN)}, node=IMDS_NODE)[0]
    assert (finding.flow, finding.confirm) == ("", ())


def test_one_intercepting_ca_is_one_finding() -> None:
    hosts = ["management.azure.com", "mcr.microsoft.com", "graph.windows.net"]
    minted = {h: {**CERT, "sha256": f"{i:02x}" * 32} for i, h in enumerate(hosts)}  # a new leaf per name
    findings = run({f"tls:{h}:443": Outcome(Reason.TLS_UNTRUSTED, evidence={"cert": minted[h]}) for h in hosts})
    assert codes(findings) == ["tls-intercepted-untrusted"]
    assert len(findings[0].targets) == 3
    assert "Contoso Inspection CA" in findings[0].summary and "cd" * 20 in findings[0].summary
    assert "01" * 32 in findings[0].cause


def test_layers_above_a_failure_are_not_findings() -> None:
    findings = run({"tcp:management.azure.com:443": Outcome(Reason.TCP_TIMEOUT)})
    assert codes(findings) == ["egress-blocked"]
    assert findings[0].checks == ("tcp:management.azure.com:443",)


def test_udp_silence_is_not_a_problem() -> None:
    checks = make_plan()
    results = simulate(checks, {"udp:eastus.tundra.azureml.ms:5831": Outcome(Reason.UDP_NO_REPLY)}, PE_ADDRESSES)
    assert next(r for r in results if r.check.layer.value == "udp").status is Status.INCONCLUSIVE
    diagnosis = diagnose(results, Facts(catalog.load(), make_context(), AZURE_DNS_NODE))
    assert diagnosis.findings == () and (diagnosis.health, diagnosis.exit_code) == ("ok", 0)


def test_situational_requirement_failing_is_a_warning() -> None:
    findings = run({"tcp:ci-alice.eastus.instances.azureml.ms:8787": Outcome(Reason.TCP_TIMEOUT)},
                   features=("rstudio",))
    assert codes(findings) == ["egress-blocked"] and findings[0].severity is Severity.WARNING


def test_critical_findings_rank_first_then_by_size() -> None:
    findings = run({
        "tls:management.azure.com:443": Outcome(Reason.TLS_UNEXPECTED_ISSUER, evidence={"cert": CERT}),
        "tcp:contosomlsa.file.core.windows.net:445": Outcome(Reason.TCP_TIMEOUT),
        "tcp:eastus.batch.azure.com:443": Outcome(Reason.TCP_TIMEOUT),
        "tcp:eastus.service.batch.azure.com:443": Outcome(Reason.TCP_TIMEOUT),
    })
    assert codes(findings) == ["egress-blocked", "smb-blocked", "tls-intercepted"]


@pytest.mark.parametrize(("outcomes", "signalled", "expected"), [
    ({}, True, ("unknown", 3)),
    ({"tcp:mcr.microsoft.com:443": Outcome(Reason.PROBE_CANCELLED)}, False, ("unknown", 3)),
    ({"tcp:mcr.microsoft.com:443": Outcome(Reason.PROBE_CANCELLED),
      "tcp:graph.windows.net:443": Outcome(Reason.TCP_TIMEOUT)}, False, ("critical", 2)),
    ({"tls:mcr.microsoft.com:443": Outcome(Reason.TLS_UNEXPECTED_ISSUER, evidence={"cert": CERT})}, False,
     ("warning", 1)),
])
def test_verdict(outcomes: Mapping[str, Outcome], signalled: bool, expected: tuple[str, int]) -> None:
    checks = make_plan()
    results = simulate(checks, outcomes, PE_ADDRESSES)
    diagnosis = diagnose(results, Facts(catalog.load(), make_context(), AZURE_DNS_NODE), signalled=signalled)
    assert (diagnosis.health, diagnosis.exit_code) == expected


PROXY = planner.PlanOptions(proxy=Proxy.parse("http://proxy.contoso.net:3128"),
                            no_proxy=(".privatelink.api.azureml.ms",))
PROXY_TCP = "tcp:proxy.contoso.net:3128"


def run_proxied(outcomes: Mapping[str, Outcome]) -> tuple[Finding, ...]:
    results = simulate(make_plan(options=PROXY), outcomes, PE_ADDRESSES)
    return diagnose(results, Facts(catalog.load(), make_context(), AZURE_DNS_NODE)).findings


def test_proxied_plan_shape() -> None:
    checks = {c.id: c for c in make_plan(options=PROXY)}
    through = checks["http:management.azure.com:443@proxy"]
    assert (through.path, through.needs, through.spec.proxy) == ("proxy", PROXY_TCP, PROXY.proxy)
    assert checks[PROXY_TCP].path == "to-proxy" and checks[PROXY_TCP].needs == "dns:proxy.contoso.net"
    assert f"websocket:{CI}:443@proxy" in checks
    # the instance's 8787 and 18881 are tunnelled (CONNECT) as the clients do; nothing else off 443
    assert {c.id for c in checks.values() if c.path == "proxy" and c.port != 443} == {
        f"tcp:{CI}:8787@proxy", f"tcp:{CI}:18881@proxy"}


def test_a_proxy_refusing_connect_to_the_instance_ports_is_the_finding_not_direct_egress() -> None:
    """A stock squid refuses CONNECT outside SSL_ports (443): the agent never tried 8787/18881
    through the proxy and blamed direct egress (an NSG rule the network team need not touch)."""
    outcomes = {f"tcp:{CI}:{port}": Outcome(Reason.TCP_TIMEOUT) for port in (8787, 18881)}
    outcomes |= {f"tcp:{CI}:{port}@proxy": Outcome(Reason.PROXY_DENIED,
                                                   detail=f"proxy answered CONNECT {CI}:{port} with 403")
                 for port in (8787, 18881)}
    [finding] = run_proxied(outcomes)
    assert finding.code == "proxy-denied" and set(finding.checks) == {f"tcp:{CI}:8787@proxy", f"tcp:{CI}:18881@proxy"}
    assert "8787" in finding.remedy and "18881" in finding.remedy and "SSL_ports" in finding.remedy


def test_an_inspecting_proxy_that_cannot_verify_the_services_says_so() -> None:
    """squid's own 503 ERR_SECURE_CONNECT_FAIL inside the bumped TLS: the fix is the proxy's trust
    store or a splice, not an allow-list entry."""
    outcomes = {f"http:{host}:443@proxy": Outcome(Reason.PROXY_UPSTREAM_FAILED, evidence={
        "proxy_error": "ERR_SECURE_CONNECT_FAIL"}, detail="the proxy answered 503 itself (ERR_SECURE_CONNECT_FAIL)")
        for host in ("management.azure.com", "graph.windows.net")}
    direct = {f"tcp:{host}:443": Outcome(Reason.TCP_TIMEOUT) for host in ("management.azure.com", "graph.windows.net")}
    [finding] = run_proxied(outcomes | direct)
    assert finding.code == "proxy-denied"
    assert "tls_outgoing_options" in finding.remedy and "ssl_bump splice" in finding.remedy
    [plain] = run_proxied(direct | {"http:management.azure.com:443@proxy": Outcome(Reason.PROXY_DENIED, evidence={
        "proxy_error": "ERR_ACCESS_DENIED"})})
    assert "tls_outgoing_options" not in plain.remedy


def test_a_websocket_refused_through_the_proxy_names_squid_s_upgrade_setting() -> None:
    """A bumping squid without http_upgrade_request_protocols strips Upgrade: the upgrade fails
    through the proxy only, and the remedy names the setting."""
    direct = {f"tcp:{CI}:443": Outcome(Reason.TCP_TIMEOUT)}
    [finding] = run_proxied(direct | {f"websocket:{CI}:443@proxy": Outcome(Reason.WS_UPGRADE_REFUSED)})
    assert finding.code == "websocket-blocked" and "http_upgrade_request_protocols" in finding.remedy
    results = simulate(make_plan(), {f"websocket:{CI}:443": Outcome(Reason.WS_UPGRADE_REFUSED)}, PE_ADDRESSES)
    [direct_only] = diagnose(results, Facts(catalog.load(), make_context(), AZURE_DNS_NODE)).findings
    assert direct_only.code == "websocket-blocked" and "http_upgrade_request_protocols" not in direct_only.remedy


def test_direct_egress_blocked_is_fine_when_the_proxy_works() -> None:
    assert run_proxied({"tcp:management.azure.com:443": Outcome(Reason.TCP_TIMEOUT),
                        "dns:graph.windows.net": Outcome(Reason.DNS_NXDOMAIN)}) == ()


def test_proxy_authentication_is_the_one_finding() -> None:
    findings = run_proxied({"http:management.azure.com:443@proxy": Outcome(Reason.PROXY_AUTH_REQUIRED),
                            "http:mcr.microsoft.com:443@proxy": Outcome(Reason.PROXY_AUTH_REQUIRED),
                            "tcp:management.azure.com:443": Outcome(Reason.TCP_TIMEOUT),
                            "tcp:mcr.microsoft.com:443": Outcome(Reason.TCP_TIMEOUT)})
    assert codes(findings) == ["proxy-auth-required"] and len(findings[0].targets) == 2


def test_unreachable_proxy() -> None:
    findings = run_proxied({PROXY_TCP: Outcome(Reason.TCP_REFUSED),
                            "tcp:management.azure.com:443": Outcome(Reason.TCP_TIMEOUT)})
    assert codes(findings) == ["proxy-unreachable"]
    assert findings[0].checks == (PROXY_TCP,)


def test_private_endpoint_through_the_proxy_needs_no_proxy() -> None:
    findings = run_proxied({f"http:{WS}:443@proxy": Outcome(Reason.PROXY_UPSTREAM_FAILED)})
    assert codes(findings) == ["proxy-bypass-required"]
    assert "NO_PROXY" in findings[0].remedy and WS in findings[0].summary


def test_clock_skew_from_date_headers_claims_the_tls_failures() -> None:
    findings = run({"http:management.azure.com:443": Outcome(status=Status.PASS, evidence={"clock_skew_s": 7200.0}),
                    "tls:mcr.microsoft.com:443": Outcome(Reason.TLS_NOT_YET_VALID)})
    assert codes(findings) == ["clock-skew"]
    assert "ahead of" in findings[0].summary and "mcr.microsoft.com" in findings[0].cause
    assert "timedatectl" in findings[0].remedy


def test_clock_skew_from_certificates_alone() -> None:
    hosts = ["management.azure.com", "mcr.microsoft.com", "graph.windows.net"]
    findings = run({f"tls:{h}:443": Outcome(Reason.TLS_NOT_YET_VALID) for h in hosts})
    assert codes(findings) == ["clock-skew"] and "not yet valid" in findings[0].summary


def test_small_skew_and_one_expired_certificate_are_not_clock_problems() -> None:
    findings = run({"http:management.azure.com:443": Outcome(status=Status.PASS, evidence={"clock_skew_s": 4.0}),
                    "tls:mcr.microsoft.com:443": Outcome(Reason.TLS_EXPIRED)})
    assert codes(findings) == ["tls-certificate-invalid"]


def test_no_outbound_connectivity_is_one_root_cause() -> None:
    public_tcp = [c.id for c in make_plan() if c.layer.value == "tcp" and c.needs and ".workspace." not in c.id
                  and "notebooks" not in c.id and ".instances.azureml.ms" not in c.id
                  and ".instances.ml.azure.ms" not in c.id]
    outcomes = {cid: Outcome(Reason.TCP_TIMEOUT) for cid in public_tcp}
    outcomes["udp:eastus.tundra.azureml.ms:5831"] = Outcome(Reason.UDP_NO_REPLY)
    findings = run(outcomes)
    assert codes(findings) == ["no-outbound-connectivity"]
    assert "NAT gateway" in findings[0].remedy
    assert set(findings[0].checks) == set(public_tcp)


def test_one_blocked_service_is_not_a_missing_route() -> None:
    findings = run({"tcp:eastus.batch.azure.com:443": Outcome(Reason.TCP_TIMEOUT),
                    "tcp:eastus.service.batch.azure.com:443": Outcome(Reason.TCP_TIMEOUT),
                    "tcp:graph.windows.net:443": Outcome(Reason.TCP_TIMEOUT)})
    assert "no-outbound-connectivity" not in codes(findings)


def test_connections_to_a_wrong_instance_address_belong_to_the_dns_finding() -> None:
    findings = run({f"dns:{CI}": Outcome(addresses=("10.0.0.4",)),
                    f"tcp:{CI}:443": Outcome(Reason.TCP_REFUSED), f"tcp:{CI}:18881": Outcome(Reason.TCP_REFUSED)})
    assert codes(findings) == ["instance-name-wrong-address"]
    assert set(findings[0].checks) == {f"dns:{CI}", f"tcp:{CI}:443", f"tcp:{CI}:18881"}


def test_custom_dns_not_forwarding_explains_public_instance_names_too() -> None:
    findings = run({f"dns:{WS}": Outcome(Reason.DNS_PUBLIC_ANSWER), f"dns:{CI}": Outcome(Reason.DNS_PUBLIC_ANSWER)},
                   node={"hostname": "n", "resolvers": ["10.0.2.4"]})
    assert set(codes(findings)) == {"custom-dns-not-forwarding"}
    assert "instances.azureml.ms" in " ".join(f.remedy for f in findings)


def test_a_dead_resolver_is_one_finding_with_its_port_53_check() -> None:
    outcomes = {c.id: Outcome(Reason.DNS_TIMEOUT) for c in make_plan() if c.layer.value == "dns"}
    findings = run(outcomes)
    assert codes(findings) == ["dns-unavailable"] and "dns:168.63.129.16" in findings[0].checks


@pytest.mark.parametrize(("check", "port", "code", "severity"), [
    ("firewall-inbound", 44224, "local-firewall-blocks", Severity.CRITICAL),
    ("listening", 44224, "inbound-port-closed", Severity.INFO),
    ("docker-bridge", None, "docker-bridge-overlap", Severity.WARNING),
])
def test_local_findings(check: str, port: int | None, code: str, severity: Severity) -> None:
    check_id = f"local:{check}" + (f":{port}" if port else "")
    findings = run({check_id: Outcome(Reason.LOCAL_CHECK_FAILED, detail="rule inet filter input handle 4: drop")},
                   public_ip=True)
    assert [(f.code, f.severity) for f in findings] == [(code, severity)]


def test_unsupported_os_on_an_attached_vm() -> None:
    findings = run({"local:os": Outcome(Reason.LOCAL_CHECK_FAILED, detail="ID=debian")}, compute="vm")
    assert [(f.code, f.severity) for f in findings] == [("unsupported-os", Severity.CRITICAL)]


def test_a_users_own_endpoint_on_445_is_not_the_workspace_share() -> None:
    """smb-blocked was keyed on port 445: a user's [[endpoint]] on 445 that timed out was reported
    as the workspace share with a Storage.<region> remedy. It keys on the SMB requirement now."""
    cat = planner.with_endpoints(catalog.load(), [("files.contoso.net", 445, "tcp", "our share", True)])
    results = simulate(planner.plan(cat, make_context()), {"tcp:files.contoso.net:445": Outcome(Reason.TCP_TIMEOUT)},
                       PE_ADDRESSES)
    [finding] = diagnose(results, Facts(cat, make_context(), AZURE_DNS_NODE)).findings
    assert finding.code == "egress-blocked" and finding.targets == ("files.contoso.net:445/tcp",)
    assert "Storage." not in finding.remedy and "files.contoso.net" in finding.remedy


def test_a_silent_middlebox_on_445_is_smb_blocked_saying_so() -> None:
    """TCP 445 connected (the tcp check passed) and the NEGOTIATE got no reply: the share cannot mount,
    and the finding says a middlebox holds 445 rather than that an NSG drops it."""
    [finding] = run({SMB_NEGOTIATE: Outcome(Reason.SMB_NO_NEGOTIATE_REPLY, phase="negotiate",
                                            detail="no answer within 5s during negotiate")})
    assert finding.code == "smb-blocked" and finding.checks == (SMB_NEGOTIATE,)
    assert "TCP 445 is accepted but nothing answers SMB: a firewall/proxy that terminates or inspects 445" \
        in finding.cause
    assert "accepted" in finding.summary and "no answer within 5s during negotiate" in finding.cause


def test_a_users_own_smb_endpoint_is_checked_with_smb_but_is_not_the_workspace_share() -> None:
    cat = planner.with_endpoints(catalog.load(), [("files.contoso.net", 445, "smb", "our share", True)])
    checks = {c.id: c for c in planner.plan(cat, make_context())}
    assert checks["smb:files.contoso.net:445"].needs == "tcp:files.contoso.net:445"
    results = simulate(tuple(checks.values()), {"smb:files.contoso.net:445": Outcome(Reason.SMB_NOT_SMB)},
                       PE_ADDRESSES)
    [finding] = diagnose(results, Facts(cat, make_context(), AZURE_DNS_NODE)).findings
    assert finding.code == "endpoint-unreachable" and "Storage." not in finding.remedy


def test_the_instance_address_rule_reads_the_catalogs_pe_address() -> None:
    """Which name must share which endpoint's address is the catalog's pe_address, not a host
    substring: moved to another row, the rule follows it."""
    base = catalog.load()
    moved = replace(base, requirements=tuple(
        replace(r, pe_address="workspace-api") if r.id == "notebooks"
        else replace(r, pe_address=None) if r.pe_address else r for r in base.requirements))
    outcomes = {f"dns:{NB}": Outcome(addresses=("10.0.1.99",)), f"dns:{CI}": Outcome(addresses=("10.0.0.4",))}
    results = simulate(planner.plan(moved, make_context()), outcomes, PE_ADDRESSES)
    [finding] = diagnose(results, Facts(moved, make_context(), AZURE_DNS_NODE)).findings
    assert finding.code == "instance-name-wrong-address" and finding.checks == (f"dns:{NB}",)


def test_the_proxys_unneeded_direct_paths_are_judged_once_with_their_reason() -> None:
    results = simulate(make_plan(options=PROXY), {"tcp:management.azure.com:443": Outcome(Reason.TCP_TIMEOUT)},
                       PE_ADDRESSES)
    diagnosis = diagnose(results, Facts(catalog.load(), make_context(), AZURE_DNS_NODE))
    assert diagnosis.findings == () and diagnosis.exit_code == 0
    assert diagnosis.unneeded["tcp:management.azure.com:443"] is Unneeded.PROXIED
    assert diagnosis.unneeded["dns:management.azure.com"] is Unneeded.PROXY_RESOLVES
    # UDP never goes through the proxy: its checks and the name's DNS still count
    assert {"udp:eastus.tundra.azureml.ms:5831", "dns:eastus.tundra.azureml.ms"}.isdisjoint(diagnosis.unneeded)


def test_the_proxys_own_name_is_no_endpoints_address() -> None:
    """The proxy's DNS check carries every proxied requirement; its address counted as the
    workspace endpoint's, so behind a working proxy a failing (unneeded) workspace name gave a
    false critical instance-name-wrong-address."""
    results = simulate(make_plan(options=PROXY), {f"dns:{WS}": Outcome(Reason.DNS_NXDOMAIN)}, PE_ADDRESSES)
    diagnosis = diagnose(results, Facts(catalog.load(), make_context(), AZURE_DNS_NODE))
    assert diagnosis.findings == () and diagnosis.exit_code == 0


def test_imds_unreachable_is_its_own_warning_with_what_detection_saw() -> None:
    """Managed identity needs IMDS: its own check failing is a warning, one finding with detection's reading."""
    node = {**AZURE_DNS_NODE, "detection": {"imds": {"error": "no answer within 1s"}}}
    findings = run({"tcp:169.254.169.254:80": Outcome(Reason.TCP_TIMEOUT)}, node=node)
    assert codes(findings) == ["imds-unavailable"] and findings[0].severity is Severity.WARNING
    assert findings[0].checks == ("tcp:169.254.169.254:80",) and "detection: no answer" in findings[0].cause
    assert codes(run({}, node=node)) == ["imds-unavailable"] and run({}, node=node)[0].severity is Severity.INFO


def test_instance_names_resolving_public_because_the_zone_is_unlinked_are_that_finding() -> None:
    """An unlinked privatelink.api.azureml.ms zone ranked instance-name-wrong-address first: the
    instance name resolves public *because* the workspace names do. One cause, one finding."""
    names = (WS, f"{GUID}.workspace.eastus.cert.api.azureml.ms", CI, "ci-alice.eastus.instances.ml.azure.ms")
    outcomes = {f"dns:{name}": Outcome(Reason.DNS_PUBLIC_ANSWER) for name in names}
    findings = run(outcomes)
    assert codes(findings) == ["private-endpoint-resolves-public"]
    assert {f"dns:{CI}", f"dns:{WS}"} <= set(findings[0].checks)


IPV4_NODE = {**AZURE_DNS_NODE, "default_routes": [{"family": "ipv4", "interface": "eth0", "gateway": "10.0.0.1"}]}


def test_a_name_with_only_ipv6_addresses_on_an_ipv4_node_is_a_dns_finding() -> None:
    """It was endpoint-unreachable (or egress-blocked): the connections fail because of the name."""
    outcomes = {"dns:graph.windows.net": Outcome(addresses=("2603:1030::7",)),
                "tcp:graph.windows.net:443": Outcome(Reason.TCP_NET_UNREACHABLE)}
    findings = run(outcomes, node=IPV4_NODE)
    assert codes(findings) == ["dns-no-ipv4-address"]
    assert set(findings[0].checks) == {"dns:graph.windows.net", "tcp:graph.windows.net:443"}
    assert "A record" in findings[0].remedy
    dual = {**IPV4_NODE, "default_routes": [*IPV4_NODE["default_routes"], {"family": "ipv6", "interface": "eth0"}]}
    assert codes(run(outcomes, node=dual)) == ["egress-blocked"]  # with an IPv6 route the network is to blame


def test_a_check_the_node_could_not_run_keeps_the_run_from_being_healthy() -> None:
    """local.resource-limit says nothing of the network: never a failure, but not 'ok' either."""
    checks = make_plan()
    results = simulate(checks, {"tcp:mcr.microsoft.com:443": Outcome(Reason.LOCAL_RESOURCE_LIMIT)}, PE_ADDRESSES)
    diagnosis = diagnose(results, Facts(catalog.load(), make_context(), AZURE_DNS_NODE))
    assert diagnosis.findings == () and (diagnosis.health, diagnosis.exit_code) == ("unknown", 3)


def test_an_inspecting_proxy_the_node_trusts_is_tls_intercepted() -> None:
    """The proxied HTTPS check carries the expected issuers and its warning is the same finding as
    on the direct path (one per intercepting CA)."""
    checks = {c.id: c for c in make_plan(options=PROXY)}
    through = checks["http:management.azure.com:443@proxy"].spec
    assert isinstance(through, HttpSpec) and through.expected_issuers == ("Microsoft Corporation", "DigiCert Inc")
    outcomes = {f"http:{host}:443@proxy": Outcome(Reason.TLS_UNEXPECTED_ISSUER, evidence={"cert": CERT})
                for host in ("management.azure.com", "graph.windows.net")}
    direct = {f"tcp:{host}:443": Outcome(Reason.TCP_TIMEOUT) for host in ("management.azure.com", "graph.windows.net")}
    [finding] = run_proxied(outcomes | direct)
    assert finding.code == "tls-intercepted" and finding.severity is Severity.WARNING
    assert len(finding.checks) == 2


def test_a_stale_hosts_line_is_the_cause_of_the_connections_to_its_name() -> None:
    """A stale /etc/hosts line pinning a storage name to an old address was egress-blocked: the
    connection fails because the node connects where the line says, not where DNS does."""
    findings = run({f"dns:{BLOB}": Outcome(addresses=("10.0.1.99",), evidence=PINNED),
                    f"tcp:{BLOB}:443": Outcome(Reason.TCP_TIMEOUT, detail="no answer within 5s")})
    [finding] = findings
    assert (finding.code, finding.severity) == ("hosts-file-override", Severity.CRITICAL)
    assert set(finding.checks) == {f"dns:{BLOB}", f"tcp:{BLOB}:443"}
    assert "line 3 of /etc/hosts" in finding.cause and "10.0.1.8" in finding.cause
    assert "files dns" in finding.cause and "no answer within 5s" in finding.cause
    assert finding.remedy == f"Remove or correct line 3 of /etc/hosts: `{STALE_LINE}`; DNS answers 10.0.1.8."


def test_a_hosts_line_whose_address_works_is_a_warning() -> None:
    checks = make_plan()
    results = simulate(checks, {f"dns:{BLOB}": Outcome(addresses=("10.0.1.99",), evidence=PINNED)}, PE_ADDRESSES)
    diagnosis = diagnose(results, Facts(catalog.load(), make_context(), AZURE_DNS_NODE))
    [finding] = diagnosis.findings
    assert (finding.code, finding.severity, diagnosis.exit_code) == ("hosts-file-override", Severity.WARNING, 1)
    assert finding.checks == (f"dns:{BLOB}",) and "when the endpoint moves" in finding.cause


def test_a_hosts_line_pinning_a_private_endpoint_name_public_is_that_line() -> None:
    """The system path answers from the file: not a zone to link, a line to remove."""
    pinned = {"hosts_override": {"file": "/etc/hosts", "lines": [{"line": 7, "text": f"198.18.3.4 {WS}",
                                                                  "address": "198.18.3.4"}], "dns": ["10.0.1.5"]}}
    findings = run({f"dns:{WS}": Outcome(Reason.DNS_PUBLIC_ANSWER, evidence=pinned)})
    assert [(f.code, f.severity) for f in findings] == [("hosts-file-override", Severity.CRITICAL)]
    assert findings[0].remedy.startswith("Remove or correct line 7 of /etc/hosts")


def test_resolvers_that_disagree_on_a_private_endpoint_name_are_critical_and_named() -> None:
    """The node resolves the workspace privately today (the first resolver answers), but the
    second would give the public address: each server is named with what it said."""
    findings = run({f"dns:{WS}": Outcome(evidence=UNLINKED_SECOND)}, node=TWO_RESOLVERS)
    [finding] = findings
    assert (finding.code, finding.severity) == ("dns-resolvers-disagree", Severity.CRITICAL)
    assert "168.63.129.16 says 10.0.1.5 (private)" in finding.cause
    assert "10.0.2.4 says 198.18.3.4 (public)" in finding.cause
    assert finding.remedy.startswith("Make 10.0.2.4 answer as the other resolvers do")


def test_resolvers_that_disagree_explain_the_failure_they_cause() -> None:
    """The node asked the server without the zone: its public answer failed the check. The cause
    is that server, not an unlinked zone (custom-dns-not-forwarding) the other server has."""
    findings = run({f"dns:{WS}": Outcome(Reason.DNS_PUBLIC_ANSWER, evidence=UNLINKED_SECOND)}, node=TWO_RESOLVERS)
    assert codes(findings) == ["dns-resolvers-disagree"] and findings[0].severity is Severity.CRITICAL


@pytest.mark.parametrize(("answers", "severity"), [
    ((("168.63.129.16", "10.0.1.8", "private"), ("10.0.2.4", "198.18.0.9", "public")), Severity.WARNING),
    ((("168.63.129.16", "10.0.1.8", "private"), ("10.0.2.4", "NXDOMAIN", "none")), Severity.CRITICAL),
    ((("10.0.2.4", "10.0.1.8", "private"), ("10.0.2.4", "198.18.0.9", "public")), Severity.CRITICAL),
], ids=["public-or-private", "one-says-nxdomain", "flapping"])
def test_disagreement_on_a_name_any_address_serves(answers: tuple[tuple[str, str, str], ...],
                                                   severity: Severity) -> None:
    """Private against public on a name any address serves is a warning; a resolver that says
    the name does not exist, or a server that changes its answer, fails the node now and then."""
    [finding] = run({f"dns:{BLOB}": Outcome(evidence=said(*answers))}, node=TWO_RESOLVERS)
    assert (finding.code, finding.severity) == ("dns-resolvers-disagree", severity)
    if answers[0][0] == answers[1][0]:
        assert "10.0.2.4 says 10.0.1.8 (private), then 198.18.0.9 (public)" in finding.cause
        assert "load balancer" in finding.remedy


def test_a_connection_failure_is_not_the_disagreements() -> None:
    """The node connected where its answer said: a dropped port there is its own finding."""
    findings = run({f"dns:{BLOB}": Outcome(evidence=said(("168.63.129.16", "10.0.1.8", "private"),
                                                         ("10.0.2.4", "198.18.0.9", "public"))),
                    f"tcp:{BLOB}:443": Outcome(Reason.TCP_TIMEOUT)}, node=TWO_RESOLVERS)
    assert codes(findings) == ["egress-blocked", "dns-resolvers-disagree"]


def test_a_proxied_check_is_not_the_hosts_files() -> None:
    """The proxy resolves the names it connects to: a name the node's hosts file pins (needed
    directly for SMB) that the proxy refuses on 443 is the proxy's finding, not the line's."""
    share = "contosomlsa.file.core.windows.net"
    pinned = {"hosts_override": {**PINNED["hosts_override"], "lines": [  # type: ignore[dict-item]
        {"line": 3, "text": f"10.0.1.99 {share}", "address": "10.0.1.99"}]}}
    results = simulate(make_plan(options=PROXY), {
        f"dns:{share}": Outcome(addresses=("10.0.1.99",), evidence=pinned),
        f"tcp:{share}:445": Outcome(Reason.TCP_TIMEOUT),
        f"http:{share}:443@proxy": Outcome(Reason.PROXY_DENIED, detail="HTTP 403")}, PE_ADDRESSES)
    findings = diagnose(results, Facts(catalog.load(), make_context(), AZURE_DNS_NODE)).findings
    explained = {f.code: set(f.checks) for f in findings}
    assert explained.pop("hosts-file-override") == {f"dns:{share}", f"tcp:{share}:445"}
    [(code, checks)] = explained.items()
    assert code.startswith("proxy-") and checks == {f"http:{share}:443@proxy"}


def public_tcp() -> list[str]:
    """The tcp checks of public services (test_no_outbound_connectivity_is_one_root_cause's)."""
    return [c.id for c in make_plan() if c.layer.value == "tcp" and c.needs and ".workspace." not in c.id
            and "notebooks" not in c.id and ".instances.azureml.ms" not in c.id
            and ".instances.ml.azure.ms" not in c.id]


PUBLIC_CHAIN = {"tcp:mcr.microsoft.com:443": slow(), "tls:mcr.microsoft.com:443": slow("server-hello", 1400, 1000),
                "http:mcr.microsoft.com:443": slow("first-byte", 2600, 2000),
                "tcp:management.azure.com:443": slow(ms=410)}
SMB_TCP = "tcp:contosomlsa.file.core.windows.net:445"
PATH_WORDS = {"public": "to public endpoints", "private": "in the VNet", "resolvers": "at the resolvers"}


@pytest.mark.parametrize(("outcomes", "groups"), [
    # every slow check on one path is one finding, whatever its layer
    (PUBLIC_CHAIN, [("public", set(PUBLIC_CHAIN))]),
    # private endpoints and public services are two paths: a forced tunnel slows one, not the other
    ({**PUBLIC_CHAIN, f"tcp:{WS}:443": slow(ms=350)}, [("public", set(PUBLIC_CHAIN)), ("private", {f"tcp:{WS}:443"})]),
    # slow resolvers are a path of their own
    ({"dns:mcr.microsoft.com": slow("dns-answer", 1500, 1000), "dns:graph.windows.net": slow("dns-answer", 1300, 1000)},
     [("resolvers", {"dns:mcr.microsoft.com", "dns:graph.windows.net"})]),
], ids=["one-public-path", "public-and-private", "resolvers"])
def test_slow_checks_are_one_latency_finding_per_path(outcomes: Mapping[str, Outcome],
                                                       groups: list[tuple[str, set[str]]]) -> None:
    findings = run(outcomes)
    assert codes(findings) == ["latency-degraded"] * len(groups)
    by_checks = {frozenset(f.checks): f for f in findings}
    for where, checks in groups:
        finding = by_checks[frozenset(checks)]
        assert finding.severity is Severity.WARNING
        assert PATH_WORDS[where] in finding.summary
        first = next(iter(checks))
        figure = outcomes[first].evidence["latency"]["threshold_ms"]  # type: ignore[index]
        assert f"(threshold {figure:g} ms)" in finding.cause


def test_slow_checks_through_the_proxy_are_the_proxy_s() -> None:
    checks = make_plan(options=planner.PlanOptions(proxy=Proxy.parse("http://proxy.contoso.net:3128")))
    outcomes = {"http:mcr.microsoft.com:443@proxy": slow("first-byte", 2500, 2000),
                "http:management.azure.com:443@proxy": slow("first-byte", 3100, 2000),
                "tcp:proxy.contoso.net:3128": slow(ms=800)}
    results = simulate(checks, outcomes, PE_ADDRESSES)
    findings = diagnose(results, Facts(catalog.load(), make_context(), AZURE_DNS_NODE)).findings
    assert codes(findings) == ["latency-degraded"]
    assert set(findings[0].checks) == set(outcomes) and "through the proxy" in findings[0].summary


@pytest.mark.parametrize(("outcomes", "expected"), [
    # a failure beside slow checks keeps its own finding, critical, first
    ({**PUBLIC_CHAIN, SMB_TCP: Outcome(Reason.TCP_TIMEOUT)}, ["smb-blocked", "latency-degraded"]),
    # slow public connects still work: three dropped services are not "no outbound connectivity"
    ({**{cid: slow() for cid in public_tcp()},
      **{cid: Outcome(Reason.TCP_TIMEOUT) for cid in public_tcp()[:3]}}, ["egress-blocked", "latency-degraded"]),
    # a slow answer to a name a hosts-file line pins is the hosts file's finding and the latency one
    ({f"dns:{BLOB}": Outcome(Reason.LATENCY_SLOW, addresses=("10.0.1.99",), evidence={
        **PINNED, "latency": {"measure": "dns-answer", "ms": 1200.0, "threshold_ms": 1000.0}}),
      f"tcp:{BLOB}:443": Outcome(Reason.TCP_TIMEOUT)}, ["hosts-file-override", "latency-degraded"]),
], ids=["failure-beside", "not-no-outbound", "hosts-file"])
def test_a_slow_check_never_changes_or_hides_a_failure(outcomes: Mapping[str, Outcome], expected: list[str]) -> None:
    findings = run(outcomes)
    assert list(dict.fromkeys(codes(findings))) == expected
    assert findings[0].severity is Severity.CRITICAL
    assert all(f.severity is Severity.WARNING for f in findings if f.code == "latency-degraded")


def test_latency_alone_is_a_warning_never_critical() -> None:
    checks = make_plan()
    outcomes = {c.id: slow() for c in checks if c.layer.value in ("tcp", "tls", "http") and c.skip is None}
    facts = Facts(catalog.load(), make_context(), AZURE_DNS_NODE)
    diagnosis = diagnose(simulate(checks, outcomes, PE_ADDRESSES), facts)
    assert {f.code for f in diagnosis.findings} == {"latency-degraded"}
    assert diagnosis.health.value == "warning" and diagnosis.exit_code == 1


APPROVED = {"managed_network": "allow_only_approved_outbound"}
FRONT_DOOR = "tcp:ml.azure.com:443"


@pytest.mark.parametrize(("check", "evidence", "remedy", "not_in_remedy"), [
    (FRONT_DOOR, {}, [("az ml workspace outbound-rule set --resource-group '<workspace-resource-group>' "
                      "--workspace-name contoso-ml --rule fqdn-ml-azure-com --type fqdn --destination ml.azure.com"),
                      "ports 80 and 443 only"], ["NSG outbound rule", "provision-network"]),
    (BATCH[0], {}, ["Azure ML's required outbound rule: service tag BatchNodeManagement.eastus",
                    "az ml workspace provision-network --resource-group '<workspace-resource-group>' --name contoso-ml",
                    "outbound-rule list"], ["outbound-rule set", "NSG outbound rule"]),
    (BATCH[0], AT_FIRST_HOP, ["provision-network"], ["Start with the NSGs", "NSG outbound rule"]),
    (BATCH[0], PAST_APPLIANCE, ["provision-network"], ["next hop Internet", "appliance"]),
], ids=["user-defined-fqdn", "required-tag", "first-hop", "past-a-hop"])
def test_a_managed_network_s_blocked_flow_is_fixed_by_its_outbound_rules(
        check: str, evidence: dict[str, Fact], remedy: list[str], not_in_remedy: list[str]) -> None:
    """Azure ML owns a managed network's NSG, routes and firewall: the remedy is an outbound rule
    (`az ml workspace outbound-rule set`), or for a rule Azure ML adds itself the check that the
    network is provisioned, never an NSG rule or a route (how-to-managed-network)."""
    finding = run({check: Outcome(Reason.TCP_TIMEOUT, evidence={"tried": ["10.0.1.7"], **evidence})},
                  **APPROVED)[0]
    assert finding.code == "egress-blocked"
    assert all(words in finding.remedy for words in remedy), finding.remedy
    assert not any(words in finding.remedy for words in not_in_remedy), finding.remedy
    assert finding.confirm == (
        ("az ml workspace outbound-rule list --resource-group '<workspace-resource-group>' --workspace-name "
        "contoso-ml --output table"),
        "az ml workspace show --resource-group '<workspace-resource-group>' --name contoso-ml --query managed_network")
    assert finding.docs[0] == "https://learn.microsoft.com/azure/machine-learning/how-to-managed-network"


def test_a_managed_network_with_internet_outbound_needs_no_rule_for_an_internet_name() -> None:
    finding = run({FRONT_DOOR: Outcome(Reason.TCP_TIMEOUT)}, managed_network="allow_internet_outbound")[0]
    assert "outbound-rule set" not in finding.remedy and "with internet outbound allowed" in finding.remedy


@pytest.mark.parametrize(("said", "classic", "resolver"), [
    (None, True, True), (True, False, True), (False, True, False)], ids=["unknown", "resolver", "classic"])
def test_a_dns_private_resolver_gets_its_own_remedy_beside_the_conditional_forwarder(
        said: bool | None, classic: bool, resolver: bool) -> None:
    node = {"hostname": "ci-alice", "resolvers": ["10.0.0.53"]}
    public = Outcome(Reason.DNS_PUBLIC_ANSWER, evidence={"addresses": ["20.1.2.3"], "cname_chain": []})
    finding = run({f"dns:{WS}": public}, node=node, dns_private_resolver=said)[0]
    assert finding.code == "custom-dns-not-forwarding"
    assert ("add conditional forwarders for api.azureml.ms" in finding.remedy) is classic, finding.remedy
    assert ("az dns-resolver forwarding-rule create --resource-group <rg> --ruleset-name <ruleset> --name <rule> "
            "--domain-name api.azureml.ms." in finding.remedy) is resolver, finding.remedy
    assert ("privatelink.api.azureml.ms to the resolver's VNet" in finding.remedy) is resolver
    assert "https://learn.microsoft.com/azure/dns/dns-private-resolver-overview" in finding.docs


def view(mtu: int, resolvers: list[str]) -> dict[str, Fact]:
    return {"interfaces": [{"name": "eth0", "up": True, "mtu": mtu, "addresses": []}],
            "default_routes": [{"family": "ipv4", "interface": "eth0", "gateway": "10.0.0.1", "metric": 0}],
            "resolvers": resolvers}


def from_container(mtu: int, host_mtu: int, resolvers: list[str] | None = None) -> dict[str, Fact]:
    """The node facts of a run from a container's namespace: its view, and the host's read first."""
    own = resolvers or ["168.63.129.16"]
    return {"hostname": "ci-alice", **view(mtu, own),
            "vantage": {"kind": "container", "name": "job-1", "host": view(host_mtu, ["168.63.129.16"])}}


STALLED = {f"tls:{h}:443": Outcome(Reason.TLS_TIMEOUT) for h in ("management.azure.com", "mcr.microsoft.com")}


@pytest.mark.parametrize(("node", "outcomes", "expected", "severity"), [
    (from_container(1500, 1400), STALLED, ["vantage-mtu-above-host"], Severity.CRITICAL),
    (from_container(1500, 1400), {}, ["vantage-mtu-above-host"], Severity.WARNING),
    (from_container(1400, 1400), STALLED, ["tls-handshake-stalled"], Severity.CRITICAL),
    (from_container(1400, 1500), {}, [], None),
    (AZURE_DNS_NODE, STALLED, ["tls-handshake-stalled"], Severity.CRITICAL),  # no vantage: nothing to compare
], ids=["stalls-in-the-container", "nothing-failed-yet", "same-mtu", "smaller-mtu", "on-the-host"])
def test_a_vantage_s_mtu_above_the_host_s_explains_its_stalled_handshakes(
        node: dict[str, Fact], outcomes: Mapping[str, Outcome], expected: list[str], severity: Severity | None) -> None:
    findings = run(outcomes, node=node)
    assert codes(findings) == expected
    if severity is not None:
        assert findings[0].severity is severity
    if expected == ["vantage-mtu-above-host"]:
        assert findings[0].summary.startswith("container job-1 sends with MTU 1500 on eth0, above the host's 1400")
        assert '"mtu": 1400 in /etc/docker/daemon.json' in findings[0].remedy
        assert len(findings[0].checks) == len(outcomes)


def test_a_vantage_s_own_resolver_is_named_beside_the_host_s() -> None:
    node = from_container(1400, 1400, resolvers=["10.9.9.53"])
    finding = run({"dns:graph.windows.net": Outcome(Reason.DNS_NXDOMAIN)}, node=node)[0]
    assert finding.code == "dns-name-missing"
    assert "10.9.9.53 (the vantage's own; the host uses 168.63.129.16)" in finding.cause


def test_a_summary_naming_some_hosts_counts_the_rest_as_other_hosts() -> None:
    """"(+1 more)" after a list of names read like one more name (or a third resolver); the count
    says what it counts."""
    dns = [c.id for c in make_plan() if c.id.startswith("dns:")]
    [finding] = run({check: Outcome(Reason.DNS_SERVFAIL) for check in dns})
    hidden = len({check.split(":", 1)[1] for check in finding.checks}) - 6
    assert hidden > 1 and "(+" not in finding.summary
    assert finding.summary.endswith(f" and {hidden} other hosts")
