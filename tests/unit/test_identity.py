"""The identity path: the checks of the token endpoints (IMDS's, and a compute instance's local one
named by MSI_ENDPOINT), and the NO_PROXY finding, as tables (diagnosis is pure)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path

import pytest

from agent import catalog, planner, platform
from agent.diagnose import Facts, diagnose
from agent.inputs import config, detect, proxy
from agent.model import Finding, Severity
from agent.output import plan as plan_output
from probes._trace import Fact
from probes.reasons import Reason
from probes.specs import HttpSpec, Proxy

from .helpers import Outcome, make_context, make_plan, simulate
from .test_diagnose import PE_ADDRESSES

MSI = "http://127.0.0.1:46808/MSI/auth"
NODE: dict[str, Fact] = {"hostname": "n", "resolvers": ["168.63.129.16"]}
IMDS_TOKEN = "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01"


def test_the_imds_check_asks_the_token_endpoint_without_a_resource() -> None:
    """Any answer proves the path; without `resource` IMDS answers 400 and mints no token."""
    http = {c.id: c for c in make_plan()}["http:169.254.169.254:80"]
    assert isinstance(http.spec, HttpSpec) and http.spec.proxy is None
    assert (http.spec.url, http.spec.headers) == (IMDS_TOKEN, (("Metadata", "true"),))
    assert "resource=" not in http.spec.url


def test_the_local_identity_endpoint_comes_from_the_environment_through_the_context() -> None:
    found = detect.local({"MSI_ENDPOINT": MSI, "IDENTITY_ENDPOINT": "http://127.0.0.1:1/other"})
    assert (found.values["identity_endpoint"], found.sources["identity_endpoint"]) == (MSI, "environment:MSI_ENDPOINT")
    assert detect.local({"IDENTITY_ENDPOINT": MSI}).sources["identity_endpoint"] == "environment:IDENTITY_ENDPOINT"
    bad = detect.local({"MSI_ENDPOINT": "http://user:pw@127.0.0.1:99999/MSI/auth"})
    assert "identity_endpoint" not in bad.values and bad.notes["ignored"]
    checks = {c.id: c for c in make_plan(identity_endpoint=MSI)}
    assert "tcp:127.0.0.1:46808" in checks and not any(c.startswith("dns:127.0.0.1") for c in checks)
    http = checks["http:127.0.0.1:46808"]
    assert isinstance(http.spec, HttpSpec) and http.spec.proxy is None and http.spec.headers == ()
    assert http.spec.url == f"{MSI}?api-version=2017-09-01"  # no resource, no secret header
    assert http.needs == "tcp:127.0.0.1:46808" and http.requirements == ("msi-endpoint",)


def test_without_the_endpoint_a_compute_instance_says_what_to_give() -> None:
    skipped = {c.id: c for c in make_plan()}["dns:<identity-endpoint>"]
    assert skipped.skip is not None and "MSI_ENDPOINT" in skipped.skip_detail
    assert not any("msi-endpoint" in c.requirements for c in make_plan(compute="cluster"))


def _node(environment: Mapping[str, str], etc: Mapping[str, str] | None = None) -> dict[str, Fact]:
    return {"hostname": "n", "resolvers": ["168.63.129.16"],
            "proxy": {"environment": dict(environment), "etc_environment": dict(etc or {})}}


def findings(node: Mapping[str, Fact], **context: object) -> tuple[Finding, ...]:
    checks = make_plan(**context)
    results = simulate(checks, {}, PE_ADDRESSES)
    return diagnose(results, Facts(catalog.load(), make_context(**context), node)).findings  # type: ignore[arg-type]


PROXY = "http://proxy.contoso.net:3128"
CASES: list[tuple[str, dict[str, str], dict[str, object], str | None]] = [
    # (name, the node's environment, context, the NO_PROXY line the remedy names; None: no finding)
    ("no proxy", {"NO_PROXY": "localhost"}, {}, None),
    ("HTTPS_PROXY alone: requests sends http:// URLs direct", {"HTTPS_PROXY": PROXY}, {}, None),
    ("no NO_PROXY, a cluster: IMDS only", {"HTTP_PROXY": PROXY}, {"compute": "cluster"}, "NO_PROXY=169.254.169.254"),
    ("no NO_PROXY, an instance: IMDS and loopback", {"http_proxy": PROXY}, {},
     "NO_PROXY=169.254.169.254,127.0.0.1"),
    ("loopback listed, IMDS missing", {"HTTP_PROXY": PROXY, "NO_PROXY": "localhost,127.0.0.1,10.0.1.5"}, {},
     "NO_PROXY=localhost,127.0.0.1,10.0.1.5,169.254.169.254"),
    ("lower case wins, as in requests", {"http_proxy": PROXY, "no_proxy": "127.0.0.1", "NO_PROXY": "169.254.169.254"},
     {}, "NO_PROXY=127.0.0.1,169.254.169.254"),
    ("a trailing comma is not doubled", {"HTTP_PROXY": PROXY, "NO_PROXY": "localhost,"}, {"compute": "cluster"},
     "NO_PROXY=localhost,169.254.169.254"),
    ("the instance's endpoint from MSI_ENDPOINT", {"HTTP_PROXY": PROXY, "NO_PROXY": "169.254.169.254"},
     {"identity_endpoint": "http://localhost:46808/MSI/auth"}, "NO_PROXY=169.254.169.254,localhost"),
    ("both covered", {"HTTP_PROXY": PROXY, "NO_PROXY": "169.254.169.254,127.0.0.1"}, {}, None),
    ("covered by blocks", {"HTTP_PROXY": PROXY, "NO_PROXY": "169.254.0.0/16,127.0.0.0/8"}, {}, None),
    ("a leading dot still matches (urllib)", {"HTTP_PROXY": PROXY, "NO_PROXY": ".169.254.169.254,.127.0.0.1"}, {},
     None),
    ("everything bypassed", {"HTTP_PROXY": PROXY, "NO_PROXY": "*"}, {}, None),
    ("`*` among others matches nothing", {"HTTP_PROXY": PROXY, "NO_PROXY": "*,127.0.0.1"}, {},
     "NO_PROXY='*,127.0.0.1,169.254.169.254'"),  # quoted for the shell
]


@pytest.mark.parametrize(("name", "environment", "context", "line"), CASES, ids=[c[0] for c in CASES])
def test_identity_calls_caught_by_the_proxy(name: str, environment: dict[str, str], context: dict[str, object],
                                            line: str | None) -> None:
    found = [f for f in findings(_node(environment), **context) if f.code == "identity-via-proxy"]
    if line is None:
        assert found == []
        return
    [finding] = found
    assert finding.severity is Severity.WARNING and finding.checks == ()
    assert f"Set {line} (and no_proxy" in finding.remedy
    entries = shlex.split(line.partition("=")[2])[0].split(",")
    appended = [target.partition(":")[0] for target in finding.targets]  # each missing host, once, at the end
    assert entries[-len(appended):] == appended
    fixed = proxy.settings({"HTTP_PROXY": PROXY, "NO_PROXY": ",".join(entries)}, {})
    assert all(proxy.bypassed(host, None, fixed.no_proxy) for host in appended)  # the line is the fix


def test_the_finding_names_etc_environment_and_hides_the_proxy_credentials() -> None:
    node = _node({}, {"HTTP_PROXY": "http://***@proxy.contoso.net:3128", "NO_PROXY": "localhost"})
    [finding] = [f for f in findings(node, identity_endpoint=MSI) if f.code == "identity-via-proxy"]
    assert finding.targets == ("169.254.169.254:80/tcp", "127.0.0.1:46808/tcp")
    assert "in /etc/environment" in finding.remedy and "NO_PROXY=localhost,169.254.169.254,127.0.0.1" in finding.remedy
    assert "http://***@proxy.contoso.net:3128 (from /etc/environment)" in finding.cause


IDENTITY = planner.PlanOptions(use_identity=True)
NAMED = {"container_registry": "contosoacr", "key_vault": "contoso-kv"}
KV, ACR, ARM = ("http:contoso-kv.vault.azure.net:443+identity", "http:contosoacr.azurecr.io:443+identity",
                "http:management.azure.com:443+identity")


def test_use_identity_plans_one_authenticated_request_per_resource() -> None:
    assert not any(c.id.endswith("+identity") for c in make_plan(**NAMED))  # opt-in
    checks = {c.id: c for c in make_plan(options=IDENTITY, **NAMED)}
    expected = {KV: ("https://contoso-kv.vault.azure.net/secrets?api-version=7.4&maxresults=1", "https://vault.azure.net",
                     False),
                ACR: ("https://contosoacr.azurecr.io/oauth2/exchange", "https://management.azure.com/", True),
                ARM: ("https://management.azure.com/subscriptions?api-version=2022-12-01",
                      "https://management.azure.com/", False)}
    for check_id, (url, resource, exchange) in expected.items():
        spec = checks[check_id].spec
        assert isinstance(spec, HttpSpec) and spec.identity is not None and spec.proxy is None
        assert (spec.url, spec.identity.resource, spec.identity.exchange) == (url, resource, exchange)
        assert spec.identity.token_url.startswith("http://169.254.169.254/metadata/identity/oauth2/token?")
        assert checks[check_id].needs == f"tls:{spec.host}:443"
    usgov = {c.id: c.spec for c in planner.plan(catalog.load("usgov"), make_context(cloud="usgov", **NAMED), IDENTITY)}
    vault = usgov["http:contoso-kv.vault.usgovcloudapi.net:443+identity"]
    assert isinstance(vault, HttpSpec) and vault.identity is not None
    assert vault.identity.resource == "https://vault.usgovcloudapi.net"


def test_use_identity_is_not_planned_through_a_proxy() -> None:
    """Through a proxy the answer could be the proxy's own: the authenticated request is left out."""
    via = planner.PlanOptions(use_identity=True, proxy=Proxy.parse("http://proxy.contoso.net:3128"),
                              no_proxy=("contoso-kv.vault.azure.net",))
    ids = {c.id for c in make_plan(options=via, **NAMED)}
    assert KV in ids and ACR not in ids and ARM not in ids


DENIALS = [
    # (the authenticated check, its outcome, the finding, severity, words its remedy names, words it must not)
    (KV, Reason.HTTP_RESOURCE_DENIED, "resource-firewall-denied", Severity.CRITICAL,
     ["az keyvault network-rule add --name contoso-kv", "private endpoint"], ["role"]),
    (KV, Reason.HTTP_IDENTITY_DENIED, "identity-access-denied", Severity.WARNING,
     ["Key Vault Secrets User", "--secret-permissions get list"], ["network-rule"]),
    (ACR, Reason.HTTP_RESOURCE_DENIED, "resource-firewall-denied", Severity.CRITICAL, ["az acr network-rule add"],
     ["Key Vault"]),
    (ACR, Reason.HTTP_IDENTITY_DENIED, "identity-access-denied", Severity.WARNING, ["AcrPull"], ["Key Vault"]),
    (ARM, Reason.HTTP_IDENTITY_DENIED, "identity-access-denied", Severity.WARNING, ["Reader"], ["AcrPull"]),
    (KV, Reason.HTTP_NO_TOKEN, None, None, [], []),  # inconclusive: nothing to say of the vault
]


@pytest.mark.parametrize(("check_id", "reason", "code", "severity", "words", "absent"), DENIALS)
def test_an_authenticated_denial_is_the_network_rule_or_the_role(
        check_id: str, reason: Reason, code: str | None, severity: Severity | None, words: list[str],
        absent: list[str]) -> None:
    checks = make_plan(options=IDENTITY, **NAMED)
    results = simulate(checks, {check_id: Outcome(reason, detail="HTTP 403 ForbiddenByRbac: Caller is not authorized")},
                       PE_ADDRESSES)
    found = diagnose(results, Facts(catalog.load(), make_context(**NAMED), NODE)).findings
    if code is None:
        assert found == ()
        return
    [finding] = found
    assert (finding.code, finding.severity, finding.checks) == (code, severity, (check_id,))
    assert all(w in finding.remedy for w in words) and not any(w in finding.remedy for w in absent), finding.remedy


def test_use_identity_is_a_config_key_too(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("use-identity = true\n")
    assert config.load(path).settings.use_identity is True
    path.write_text("use_identity = 1\n")
    with pytest.raises(config.ConfigError, match="use_identity: expected true or false"):
        config.load(path)


@pytest.mark.parametrize("reason", [Reason.TCP_REFUSED, Reason.TCP_TIMEOUT, Reason.HTTP_TIMEOUT])
def test_a_silent_local_identity_endpoint(reason: Reason) -> None:
    """On the instance itself: its own finding and a local fix, never an NSG rule or egress-blocked."""
    checks = make_plan(identity_endpoint=MSI)
    failing = "http:127.0.0.1:46808" if reason is Reason.HTTP_TIMEOUT else "tcp:127.0.0.1:46808"
    results = simulate(checks, {failing: Outcome(reason)}, PE_ADDRESSES)
    [finding] = diagnose(results, Facts(catalog.load(), make_context(identity_endpoint=MSI), NODE)).findings
    assert (finding.code, finding.severity) == ("identity-endpoint-unavailable", Severity.WARNING)
    assert MSI in finding.summary and "loopback port 46808" in finding.remedy and "NSG rule" not in finding.remedy


def test_plan_json_shows_the_authenticated_requests() -> None:
    """`plan` names each one's audience and how the token is presented (there is no token at plan time)."""
    checks = make_plan(options=IDENTITY, **NAMED)
    document = json.loads(json.dumps(plan_output.to_dict(catalog.load(), make_context(**NAMED), checks)))
    [vault] = [c for c in document["checks"] if c["id"] == KV]
    assert vault["params"]["identity"] == {"resource": "https://vault.azure.net", "exchange": False,
                                           "token_url": platform.IMDS_TOKEN_URL, "client_id": ""}
    [imds] = [c for c in document["checks"] if c["id"] == "http:169.254.169.254:80"]
    assert imds["params"]["headers"] == [["Metadata", "true"]] and imds["params"]["identity"] is None


def test_a_user_assigned_identity_is_asked_for_by_its_client_id() -> None:
    client = "0b4f3c2a-1d9e-4f7a-8b6c-5d4e3f2a1b0c"
    found = detect.local({"DEFAULT_IDENTITY_CLIENT_ID": client})
    assert found.sources["identity_client_id"] == "environment:DEFAULT_IDENTITY_CLIENT_ID"
    spec = {c.id: c for c in make_plan(options=IDENTITY, identity_client_id=client, **NAMED)}[KV].spec
    assert isinstance(spec, HttpSpec) and spec.identity is not None and spec.identity.client_id == client
    unnamed = {c.id: c for c in make_plan(options=IDENTITY, **NAMED)}[KV].spec
    assert isinstance(unnamed, HttpSpec) and unnamed.identity is not None and unnamed.identity.client_id == ""
