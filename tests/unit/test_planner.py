"""The planner is pure: catalog + context in, checks out."""

from __future__ import annotations

import fnmatch

import pytest

from agent import catalog, planner
from agent.inputs import context
from probes import PROBES
from probes.reasons import Reason
from probes.specs import DnsSpec, Layer, Proxy

from .helpers import GUID, make_context, make_plan


def ids(checks: object) -> set[str]:
    return {c.id for c in checks}  # type: ignore[attr-defined]


def test_every_dependency_exists_and_comes_first() -> None:
    checks = make_plan()
    seen: set[str] = set()
    for check in checks:
        assert check.needs is None or check.needs in seen, check.id
        seen.add(check.id)
    assert len(seen) == len(checks)


def test_each_name_is_resolved_by_one_shared_dns_check() -> None:
    checks = make_plan()
    dns = [c for c in checks if c.layer is Layer.DNS]
    assert len(dns) == len({c.host for c in dns})
    storage_file = next(c for c in dns if c.host == "contosomlsa.file.core.windows.net")
    assert set(storage_file.requirements) == {"storage-file", "storage-file-smb"}
    assert {"tcp:contosomlsa.file.core.windows.net:443", "tcp:contosomlsa.file.core.windows.net:445"} <= ids(checks)


@pytest.mark.parametrize("host", [
    f"{GUID}.workspace.eastus.api.azureml.ms",
    f"{GUID}.workspace.eastus.cert.api.azureml.ms",
    f"ml-contoso-ml-eastus-{GUID}.eastus.notebooks.azure.net",
    "ci-alice.eastus.instances.azureml.ms",
    "ci-alice.eastus.instances.ml.azure.ms",
])
def test_private_endpoint_names_must_resolve_privately(host: str) -> None:
    by_id = {c.id: c for c in make_plan()}
    assert by_id[f"dns:{host}"].spec.expect == "private"
    no_pe = {c.id: c for c in make_plan(private_endpoint=False)}
    assert no_pe[f"dns:{host}"].spec.expect == "any"


def test_public_names_accept_any_address() -> None:
    by_id = {c.id: c for c in make_plan()}
    assert by_id["dns:graph.windows.net"].spec.expect == "any"
    assert by_id["dns:ci-alice.eastus.instances.azureml.net"].spec.expect == "any"


def test_layer_chains_follow_the_probe_kind() -> None:
    by_id = {c.id: c for c in make_plan()}
    assert by_id["http:eastus.batch.azure.com:443"].needs == "tls:eastus.batch.azure.com:443"
    assert by_id["tls:eastus.batch.azure.com:443"].needs == "tcp:eastus.batch.azure.com:443"
    assert by_id["tcp:eastus.batch.azure.com:443"].needs == "dns:eastus.batch.azure.com"
    ws = by_id["websocket:ci-alice.eastus.instances.azureml.ms:443"]
    assert ws.spec.url == "wss://ci-alice.eastus.instances.azureml.ms/"
    assert by_id["udp:eastus.tundra.azureml.ms:5831"].protocol == "udp"
    assert "tls:contosomlsa.file.core.windows.net:445" not in by_id


def test_missing_context_skips_with_a_hint() -> None:
    checks = make_plan(storage_account=None, container_registry="contosoacr", key_vault="contoso-kv",
                       identity_endpoint="http://127.0.0.1:46808/MSI/auth")
    skipped = [c for c in checks if c.skip is Reason.SKIP_MISSING_CONTEXT]
    assert {c.host for c in skipped} == {f"<storage-account>.{kind}.core.windows.net"
                                         for kind in ("blob", "queue", "table", "file")}
    assert all("--storage-account" in c.skip_detail for c in skipped)
    assert not any("contosomlsa" in c.id for c in checks)


def test_nothing_known_still_plans() -> None:
    values = context.build([])
    checks = planner.plan(catalog.load(), values)
    assert any(c.id == "dns:login.microsoftonline.com" for c in checks)
    assert any(c.skip is Reason.SKIP_MISSING_CONTEXT and "--region" in c.skip_detail for c in checks)


def test_cluster_drops_instance_only_requirements() -> None:
    cluster = make_plan(compute="cluster")
    assert not any(".instances." in c.host for c in cluster)
    assert not any("notebooks" in r for c in cluster for r in c.requirements)
    assert any(c.id == "tcp:contosomlsa.file.core.windows.net:445" for c in cluster)
    serverless = make_plan(compute="serverless")
    assert not any(c.port == 445 for c in serverless)


def test_situational_requirements_only_when_selected() -> None:
    assert "http:ghcr.io:443" not in ids(make_plan())
    assert "http:ghcr.io:443" in ids(make_plan(features=["rstudio"]))


def test_the_seed_tables_are_the_floor_on_a_compute_instance() -> None:
    """The seed article lists *.instances.azureml.ms on 443, 8787 and 18881: all three are probed
    by default (8787 used to need --with rstudio); IMDS has a check of its own, never proxied."""
    planned = ids(make_plan(options=planner.PlanOptions(proxy=Proxy.parse("http://proxy.contoso.net"),
                                                        http_proxy=Proxy.parse("http://proxy.contoso.net"))))
    for port in (443, 8787, 18881):
        layer = "websocket" if port == 443 else "tcp"
        assert f"{layer}:ci-alice.eastus.instances.azureml.ms:{port}" in planned
    assert {"tcp:169.254.169.254:80", "http:169.254.169.254:80"} <= planned
    assert not any(c.startswith("http:169.254.169.254") and c.endswith("@proxy") for c in planned)


def test_notebooks_label_stays_within_63_octets() -> None:
    label = context.notebooks_label("x" * 40, "southeastasia", GUID)
    assert len(label) <= 63 and label.startswith("ml-xxx") and label.endswith(GUID)
    assert context.notebooks_label("Contoso-ML", "eastus", GUID) == f"ml-contoso-ml-eastus-{GUID}"


def test_expected_issuers_reach_the_tls_checks() -> None:
    checks = planner.plan(catalog.load(), make_context(),
                          planner.PlanOptions(expected_issuers=("Contoso CA",)))
    tls = [c for c in checks if c.layer is Layer.TLS]
    assert tls and all(c.spec.expected_issuers == ("Contoso CA",) for c in tls)


@pytest.mark.parametrize(("row", "message"), [
    ({"id": "x"}, "missing field"),
    ({"id": "x", "purpose": "p", "hosts": ["a"], "rule_fqdn": "a", "protocol": "sctp", "ports": [1],
      "probe": "tcp", "required_for": "use", "compute": ["instance"]}, "protocol"),
    ({"id": "x", "purpose": "p", "hosts": ["a"], "rule_fqdn": "a", "protocol": "tcp", "ports": [1],
      "probe": "ftp", "required_for": "use", "compute": ["instance"]}, "probe"),
])
def test_malformed_catalog_rows_are_rejected(row: dict[str, object], message: str) -> None:
    with pytest.raises(catalog.CatalogError, match=message):
        catalog.parse({"version": "t", "requirement": [row]})


def test_shipped_catalog_is_consistent() -> None:
    cat = catalog.load()
    for requirement in cat.requirements:
        assert requirement.docs, requirement.id
        assert all(d.startswith("https://learn.microsoft.com/") for d in requirement.docs)
        if requirement.pe_address:
            cat.by_id(requirement.pe_address)
        if requirement.dns_private:
            assert all(cat.zone_of(h.split("}", 1)[-1].lstrip(".")) for h in requirement.hosts), requirement.id


def test_policy_blocked_endpoints_are_skipped_with_the_reason() -> None:
    options = planner.PlanOptions(blocked=("graph.windows.net", "*.tundra.azureml.ms:5831"),
                                  blocked_reason="Contoso policy")
    checks = {c.id: c for c in planner.plan(catalog.load(), make_context(), options)}
    for check_id in ("dns:graph.windows.net", "tcp:graph.windows.net:443", "http:graph.windows.net:443",
                     "udp:eastus.tundra.azureml.ms:5831"):
        assert checks[check_id].skip is Reason.SKIP_POLICY, check_id
        assert checks[check_id].skip_detail.startswith("Contoso policy")
    assert checks["dns:eastus.tundra.azureml.ms"].skip is None  # only the port is blocked


@pytest.mark.parametrize(("host", "port", "named"), [
    ("mirror.pypi.contoso.net", 443, "*.contoso.net:443"),  # the first entry that matches is named
    ("mirror.pypi.contoso.net", 8443, "*.pypi.contoso.net"),  # a port entry matches its port only
    ("pypi.contoso.net", 8443, "pypi.contoso.net"),  # a wildcard needs a label before its suffix
    ("a.b.mirror.pypi.contoso.net", 8443, "*.pypi.contoso.net"),  # the suffix after any dot
    ("xpypi.contoso.net", 8443, None),  # after a dot, not inside a label
    ("contoso.net", 443, None),
])
def test_a_blocked_entry_matches_as_the_config_file_says(host: str, port: int, named: str | None) -> None:
    """Blocked entries are looked up by name and suffix (planning 5,000 endpoints against 256
    entries was their product): the same matches as fnmatch's, the config's first entry named."""
    blocked = ("*.contoso.net:443", "pypi.contoso.net", "*.pypi.contoso.net", "*.pypi.contoso.net:8443")
    cat = planner.with_endpoints(catalog.load(), [(host, port, "tcp", "", True)])
    options = planner.PlanOptions(blocked=blocked, blocked_reason="policy")
    check = {c.id: c for c in planner.plan(cat, make_context(), options)}[f"tcp:{host}:{port}"]
    assert check.skip_detail == (f"policy ({named})" if named else "")
    assert [e for e in blocked if fnmatch.fnmatchcase(host, e.partition(":")[0])
            and e.partition(":")[2] in ("", str(port))][:1] == ([named] if named else [])


def test_extra_endpoints_become_requirements() -> None:
    cat = planner.with_endpoints(catalog.load(), [("pypi.contoso.net", 443, "https", "mirror", True),
                                                 ("10.20.0.5", 5000, "tcp", "", False)])
    checks = {c.id: c for c in planner.plan(cat, make_context())}
    assert checks["http:pypi.contoso.net:443"].requirements == ("custom:pypi.contoso.net:443",)
    assert checks["tcp:10.20.0.5:5000"].needs is None and "dns:10.20.0.5" not in checks
    assert cat.by_id("custom:10.20.0.5:5000").situational


def test_a_peered_cluster_also_needs_the_workspace_key_vault() -> None:
    """Every job-running compute reaches the workspace vault; a peered cluster's check also carries
    the peering row (its zone links and rule)."""
    vault = "http:contoso-kv.vault.azure.net:443"
    peered = {c.id: c for c in make_plan(compute="cluster", peered=True, key_vault="contoso-kv")}
    same_vnet = {c.id: c for c in make_plan(compute="cluster", key_vault="contoso-kv")}
    assert "workspace-key-vault-peered" in peered[vault].requirements
    assert same_vnet[vault].requirements == ("workspace-key-vault",)
    assert vault in {c.id for c in make_plan(compute="instance", key_vault="contoso-kv")}


@pytest.mark.parametrize("cloud", ["public", "usgov", "china"])
@pytest.mark.parametrize("compute", context.COMPUTE_KINDS)
@pytest.mark.parametrize("public_ip", [False, True])
def test_every_planned_check_carries_the_spec_its_probe_runs(cloud: str, compute: str, public_ip: bool) -> None:
    """The planner builds each Spec (validated when built), so a bad one fails here, at planning,
    never inside a run; and each is the type the engine's registry runs for its layer."""
    features = frozenset(r.feature for r in catalog.load(cloud).requirements if r.feature)
    cat = planner.with_endpoints(catalog.load(cloud), [("pypi.contoso.net", 443, "https", "mirror", True),
                                                       ("10.20.0.5", 5000, "udp", "", False)])
    options = planner.PlanOptions(features=features, proxy=Proxy.parse("http://proxy.contoso.net"),
                                  blocked=("*.anaconda.com",))
    values = make_context(cloud=cloud, compute=compute, public_ip=public_ip, container_registry="contosoacr",
                          key_vault="contoso-kv")
    checks = planner.plan(cat, values, options)
    assert checks
    for check in checks:
        spec_type, _ = PROBES[check.layer]
        assert type(check.spec) is spec_type, check.id
        assert check.spec.within(0.5).layer is check.layer


def test_the_registry_data_endpoint_only_when_the_registry_has_one() -> None:
    """<registry>.<region>.data.azurecr.io exists only with dedicated data endpoints (Premium):
    probed unconditionally it was a false dns-name-missing on a healthy Basic or Standard registry."""
    data = "dns:contosoacr.eastus.data.azurecr.io"
    assert data not in ids(make_plan(container_registry="contosoacr"))
    assert data in ids(make_plan(container_registry="contosoacr", registry_data_endpoint=True))
    assert "dns:contosoacr.azurecr.io" in ids(make_plan(container_registry="contosoacr"))  # instances too


RESOURCE_NAMES = {  # a resource's names, and the context key saying it has its own private endpoint
    "storage_private_endpoint": ["contosomlsa.blob.core.windows.net", "contosomlsa.file.core.windows.net"],
    "key_vault_private_endpoint": ["contoso-kv.vault.azure.net"],
    "registry_private_endpoint": ["contosoacr.azurecr.io", "contosoacr.eastus.data.azurecr.io"],
}
RESOURCES: dict[str, object] = {"container_registry": "contosoacr", "key_vault": "contoso-kv",
                                "registry_data_endpoint": True}


@pytest.mark.parametrize("key", sorted(RESOURCE_NAMES))
@pytest.mark.parametrize(("has_endpoint", "expect", "label"), [
    (True, "private", "privatelink"),  # the context says so: a private answer is required
    (None, "any", "privatelink"),  # unknown: a CNAME into a privatelink zone requires one (the probe reads it)
    (False, "any", ""),  # the context says it has none: any answer, the chain unread
])
def test_a_dependent_resource_with_its_own_private_endpoint_resolves_privately(
        key: str, has_endpoint: bool | None, expect: str, label: str) -> None:
    """The storage name passed on a public answer from a custom DNS server that forwards nothing,
    although the account had its own private endpoint: the agent had no way to know."""
    checks = {c.id: c for c in make_plan(**RESOURCES, **{key: has_endpoint})}
    for host in RESOURCE_NAMES[key]:
        spec = checks[f"dns:{host}"].spec
        assert isinstance(spec, DnsSpec) and (spec.expect, spec.private_link_label) == (expect, label), host
    workspace = checks[f"dns:{GUID}.workspace.eastus.api.azureml.ms"].spec
    assert isinstance(workspace, DnsSpec) and workspace.expect == "private"  # the workspace's own key decides
    queue = checks["dns:contosomlsa.queue.core.windows.net"].spec  # its private endpoint is optional, and
    assert isinstance(queue, DnsSpec) and (queue.expect, queue.private_link_label) == ("any", "")  # Batch's path


def test_the_workspace_names_follow_the_workspace_key_alone() -> None:
    spec = {c.id: c for c in make_plan(private_endpoint=False)}[f"dns:{GUID}.workspace.eastus.api.azureml.ms"].spec
    assert isinstance(spec, DnsSpec) and (spec.expect, spec.private_link_label) == ("any", "")
    instance = {c.id: c for c in make_plan()}["dns:ci-alice.eastus.instances.azureml.ms"].spec
    assert isinstance(instance, DnsSpec) and (instance.expect, instance.private_link_label) == ("private", "")
