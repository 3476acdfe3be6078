"""Whole-node scenarios end to end: the real CLI runs `check` inside the lab's node namespace
against the simulated Azure side, and each scenario's statuses, reasons, finding codes and exit
code are asserted on the JSON report (validated against the published schema)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from lab import SCENARIOS, Fault, Lab, scenario
from lab.addresses import IMDS, MSI_ENDPOINT, MSI_PORT
from lab.scenarios import NO_PROXY_PRIVATE
from lab.web import LAB_TOKEN
from tests.unit.contract import check_agreement

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not (os.geteuid() == 0 and shutil.which("ip") and shutil.which("nft")),
                       reason="the lab needs root, `ip` and `nft`"),
]

CTX = scenario("healthy-private").context
STORAGE_FILE = f"{CTX.storage_account}.file.core.windows.net"
WORKSPACE = f"{CTX.workspace_id}.workspace.{CTX.region}.api.azureml.ms"
INSTANCE = f"{CTX.compute_name}.{CTX.region}.instances.azureml.ms"
TIMEOUT = "3"
# a check that stays open until its timeout: a dropped port gets an early verdict (probes/_timing.py),
# a peer that accepts and never answers does not
SILENT_UNTIL_TIMEOUT = "smb-silent-middlebox"


@cache
def schema() -> dict[str, Any]:
    return json.loads(resources.files("agent").joinpath("data/report-1.schema.json").read_text())


def check_in(lab: Lab, *extra: str, fault_free_timeout: str = TIMEOUT) -> tuple[dict[str, Any], int]:
    proc = lab.run_in_node([sys.executable, "-m", "agent", "check", *lab.scenario.check_args(),
                            "--format", "json", "--timeout", fault_free_timeout, *extra], timeout=120)
    assert proc.stdout, proc.stderr
    report = json.loads(proc.stdout)
    jsonschema.validate(report, schema())
    assert "Traceback" not in proc.stderr, proc.stderr
    return report, proc.returncode


def by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in report["checks"]}


def assert_clean(report: dict[str, Any]) -> None:
    bad = [f for f in report["findings"] if f["severity"] != "info"]
    assert bad == [], bad
    failing = [(c["id"], c["reason"], c["detail"]) for c in report["checks"] if c["status"] in ("fail", "warn")]
    assert failing == []


Checked = tuple[dict[str, Any], int]


@dataclass(frozen=True)
class Rendered:
    """The other formats of a scenario: Prometheus from the JSON run itself (--textfile), markdown
    and the npd line from a second run of the same lab."""

    prometheus: str
    markdown: str
    npd: str


class Runs:
    """Each scenario checked once per module (a lab up, its runs, the lab down), remembered."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.json: dict[str, Checked] = {}
        self.rendered: dict[str, Rendered] = {}

    def get(self, name: str) -> Checked:
        if name not in self.json:
            out = self.directory / name
            out.mkdir()
            with Lab(scenario(name)) as lab:
                self.json[name] = check_in(lab, "--textfile", str(out / "report.prom"))
                npd = lab.run_in_node([sys.executable, "-m", "agent", "check", *lab.scenario.check_args(),
                                       "--timeout", TIMEOUT, "--format", "markdown", "--output", str(out / "report.md"),
                                       "--exit-codes", "npd"], timeout=120)
            assert "Traceback" not in npd.stderr, npd.stderr
            self.rendered[name] = Rendered((out / "report.prom").read_text(), (out / "report.md").read_text(),
                                           npd.stdout.strip())
        return self.json[name]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tmp_path_factory.mktemp("scenarios"))


@pytest.fixture(scope="module")
def checked(runs: Runs) -> Callable[[str], Checked]:
    return runs.get


@pytest.mark.parametrize("name", ["healthy-private", "healthy-public", "websocket-nginx"])
def test_healthy(name: str, checked: Callable[[str], Checked]) -> None:
    report, code = checked(name)
    assert (code, report["status"], report["exit_code"]) == (0, "ok", 0)
    assert_clean(report)
    checks = by_id(report)
    assert checks[f"websocket:{INSTANCE}:443"]["status"] == "pass"
    assert checks["udp:eastus.tundra.azureml.ms:5831"]["status"] == "pass"
    assert checks[f"tcp:{STORAGE_FILE}:445"]["status"] == "pass"
    smb = checks[f"smb:{STORAGE_FILE}:445"]  # the lab's 445 is a real samba
    assert (smb["status"], smb["evidence"]["dialect"]) == ("pass", "3.1.1")
    assert report["context"]["region"] == {"value": "eastus", "source": "option"}
    workspace = checks[f"dns:{WORKSPACE}"]
    if SCENARIOS[name].context.private_endpoint:
        assert workspace["addresses"] == ["10.0.1.5"]
        assert any("privatelink" in n for n in workspace["evidence"]["cname_chain"])
        assert checks[f"dns:{INSTANCE}"]["addresses"] == ["10.0.1.5"]
    else:
        assert workspace["addresses"][0].startswith("198.1")


# scenario -> (the first finding, [(check id, status, reason)])
FAULTS: dict[str, tuple[str, list[tuple[str, str, str | None]]]] = {
    "nsg-drop-445": ("smb-blocked", [(f"tcp:{STORAGE_FILE}:445", "fail", "tcp.timeout"),
                                     (f"smb:{STORAGE_FILE}:445", "skip", "skip.dependency"),
                                     (f"tcp:{STORAGE_FILE}:443", "pass", None)]),
    "smb-silent-middlebox": ("smb-blocked", [(f"tcp:{STORAGE_FILE}:445", "pass", None),
                                             (f"smb:{STORAGE_FILE}:445", "fail", "smb.no-negotiate-reply")]),
    "firewall-reset": ("egress-rejected", [("tcp:eastus.batch.azure.com:443", "fail", "tcp.refused"),
                                           ("tls:eastus.batch.azure.com:443", "skip", "skip.dependency"),
                                           ("http:eastus.batch.azure.com:443", "skip", "skip.dependency")]),
    "udp-5831-closed": ("udp-blocked", [("udp:eastus.tundra.azureml.ms:5831", "fail", "udp.closed")]),
    "nxdomain": ("dns-name-missing", [("dns:graph.windows.net", "fail", "dns.nxdomain"),
                                      ("tcp:graph.windows.net:443", "skip", "skip.dependency")]),
    "pe-resolves-public": ("private-endpoint-resolves-public", [(f"dns:{WORKSPACE}", "fail", "dns.public-answer")]),
    "tls-inspection-untrusted": ("tls-intercepted-untrusted", [
        ("tls:management.azure.com:443", "fail", "tls.untrusted"),
        ("tcp:management.azure.com:443", "pass", None),
        ("http:management.azure.com:443", "skip", "skip.dependency")]),
    "websocket-refused": ("websocket-blocked", [(f"websocket:{INSTANCE}:443", "fail", "websocket.upgrade-refused"),
                                                (f"tls:{INSTANCE}:443", "pass", None)]),
    # nginx without the Upgrade headers: TLS (nginx's) works, the handshake gets the backend's plain answer
    "websocket-no-upgrade": ("websocket-blocked", [(f"websocket:{INSTANCE}:443", "fail", "websocket.upgrade-refused"),
                                                   (f"tls:{INSTANCE}:443", "pass", None)]),
    # a stock squid: CONNECT to 443 tunnels, to 8787/18881 it answers 403
    "proxy-ssl-ports": ("proxy-denied", [(f"tcp:{INSTANCE}:8787@proxy", "fail", "proxy.denied"),
                                         (f"tcp:{INSTANCE}:18881@proxy", "fail", "proxy.denied"),
                                         (f"websocket:{INSTANCE}:443@proxy", "pass", None)]),
    # squid ssl-bump: the proxied HTTPS is presented the inspection CA's certificates
    "proxy-inspection-untrusted": ("tls-intercepted-untrusted", [
        ("http:management.azure.com:443@proxy", "fail", "tls.untrusted"),
        ("tcp:10.0.3.8:3128", "pass", None)]),
}


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_fault_scenario(name: str, checked: Callable[[str], Checked]) -> None:
    report, code = checked(name)
    first, expectations = FAULTS[name]
    assert (code, report["status"]) == (2, "critical")
    assert report["findings"][0]["code"] == first
    assert report["findings"][0]["severity"] == "critical"
    assert set(SCENARIOS[name].expected_findings) <= {f["code"] for f in report["findings"]}
    checks = by_id(report)
    for check_id, status, reason in expectations:
        assert (checks[check_id]["status"], checks[check_id]["reason"]) == (status, reason), checks[check_id]
    explained = set(report["findings"][0]["checks"])
    assert {cid for cid, status, _ in expectations if status == "fail"} <= explained
    # no finding blames a layer that works
    passing = {c["id"] for c in report["checks"] if c["status"] == "pass"}
    assert not any(set(f["checks"]) & passing for f in report["findings"] if f["code"] != "instance-name-wrong-address")


def test_tls_interception_names_the_ca_once(checked: Callable[[str], Checked]) -> None:
    report, _ = checked("tls-inspection-untrusted")
    intercepted = [f for f in report["findings"] if f["code"] == "tls-intercepted-untrusted"]
    assert len(intercepted) == 1
    assert "Contoso" in intercepted[0]["summary"]
    assert len(intercepted[0]["targets"]) >= 10
    cert = by_id(report)["tls:management.azure.com:443"]["evidence"]["cert"]
    assert "Contoso" in cert["issuer"] and len(cert["sha256"].replace(":", "")) == 64


def test_identity_calls_caught_by_the_proxy_name_the_no_proxy_line(checked: Callable[[str], Checked]) -> None:
    """NO_PROXY without IMDS behind HTTP_PROXY: the finding gives the line to set (the value as written,
    169.254.169.254 appended); the agent's own identity checks went direct and got their answers."""
    report, code = checked("identity-through-proxy")
    assert code == 1
    [finding] = [f for f in report["findings"] if f["code"] == "identity-via-proxy"]
    written = ",".join(n for n in NO_PROXY_PRIVATE if n != IMDS)
    assert f"Set NO_PROXY={written},{IMDS} (and no_proxy" in finding["remedy"]
    assert finding["targets"] == [f"{IMDS}:80/tcp"] and finding["severity"] == "warning"
    checks = by_id(report)
    assert (checks[f"http:{IMDS}:80"]["status"], checks[f"http:{IMDS}:80"]["evidence"]["status"]) == ("pass", 400)
    assert checks[f"http:{IMDS}:80"]["evidence"]["via_proxy"] is False
    msi = checks[f"http:127.0.0.1:{MSI_PORT}"]
    assert (msi["status"], msi["evidence"]["status"], msi["requirement"]) == ("pass", 401, "msi-endpoint")
    assert report["context"]["identity_endpoint"] == {"value": MSI_ENDPOINT, "source": "environment:MSI_ENDPOINT"}


def test_use_identity_tells_the_vault_firewall_from_rbac_and_never_shows_the_token(
        checked: Callable[[str], Checked], tmp_path: Path) -> None:
    """The managed identity's requests: ForbiddenByFirewall is the vault's network rules, ForbiddenByRbac
    the identity's role; ARM and the registry let it in. The lab's one token reached the resources (they
    answer 401 to any other) and appears in no format, no file and no stderr."""
    vault = "http:contoso-kv.vault.azure.net:443+identity"
    firewalled, _ = checked("identity-key-vault-firewall")
    denied, _ = checked("identity-key-vault-rbac")
    assert (by_id(firewalled)[vault]["reason"], by_id(denied)[vault]["reason"]) == (
        "http.resource-denied", "http.identity-denied")
    assert by_id(firewalled)[vault]["evidence"]["authenticated"] is True
    assert by_id(firewalled)["http:contoso-kv.vault.azure.net:443"]["status"] == "pass"  # anonymous: 401, path only
    for report in (firewalled, denied):
        assert {by_id(report)[f"http:{host}:443+identity"]["status"]
                for host in ("management.azure.com", "contosoacr.azurecr.io")} == {"pass"}
    [rbac] = [f for f in denied["findings"] if f["code"] == "identity-access-denied"]
    assert "Key Vault Secrets User" in rbac["remedy"] and "network-rule" not in rbac["remedy"]
    [network] = [f for f in firewalled["findings"] if f["code"] == "resource-firewall-denied"]
    assert "az keyvault network-rule add" in network["remedy"] and "role" not in network["remedy"]
    with Lab(scenario("identity-key-vault-rbac")) as lab:
        seen = [json.dumps(denied), json.dumps(firewalled)]
        for fmt in ("text", "json", "markdown", "prometheus"):
            out = tmp_path / f"report.{fmt}"
            proc = lab.run_in_node([sys.executable, "-m", "agent", "check", *lab.scenario.check_args(), "-v",
                                    "--timeout", TIMEOUT, "--format", fmt, "--output", str(out)], timeout=120)
            assert proc.returncode == 1, proc.stderr
            seen += [proc.stdout, proc.stderr, out.read_text()]
    assert all(LAB_TOKEN not in text and "lab-managed-identity-token" not in text for text in seen)


def test_a_stock_squid_names_its_ssl_ports(checked: Callable[[str], Checked]) -> None:
    report, _ = checked("proxy-ssl-ports")
    finding = report["findings"][0]
    assert "8787" in finding["remedy"] and "18881" in finding["remedy"] and "SSL_ports" in finding["remedy"]
    assert by_id(report)[f"tcp:{INSTANCE}:8787@proxy"]["evidence"]["proxy_status"] == 403


def test_an_inspecting_squid_is_named_on_the_proxied_path(checked: Callable[[str], Checked]) -> None:
    """squid ssl-bump mimics the server's certificate, signed by the inspection CA: trusted, the
    proxied HTTPS works and warns; the finding names the CA."""
    report, code = checked("proxy-inspection-trusted")
    assert code == 1
    check = by_id(report)["http:management.azure.com:443@proxy"]
    assert (check["status"], check["reason"]) == ("warn", "tls.unexpected-issuer")
    assert "Contoso Inspection CA" in check["evidence"]["cert"]["issuer"]
    [finding] = [f for f in report["findings"] if f["code"] == "tls-intercepted"]
    assert "Contoso" in finding["summary"]


def test_text_report_leads_with_the_problem() -> None:
    with Lab(scenario("nsg-drop-445")) as lab:
        proc = lab.run_in_node([sys.executable, "-m", "agent", "check", *lab.scenario.check_args(),
                                "--format", "text", "--timeout", TIMEOUT], timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1] == "1 problem found"
    assert "[smb-blocked]" in lines[3] and "CRITICAL" in lines[3]
    assert any("fix:" in line and "TCP 445" in line for line in lines)
    assert any("tcp.timeout in connect" in line and ":445/tcp" in line for line in lines)


def test_sigterm_gives_a_partial_unknown_report(tmp_path: Path) -> None:
    output = tmp_path / "report.json"
    with Lab(scenario(SILENT_UNTIL_TIMEOUT)) as lab:
        proc = subprocess.Popen(lab.node_command(
            [sys.executable, "-m", "agent", "check", *lab.scenario.check_args(), "--timeout", "30",
             "--format", "json", "--output", str(output)]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(4)  # long enough for every check but the silent SMB negotiate to finish
        proc.send_signal(signal.SIGTERM)
        _stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 3, stderr
    assert "Traceback" not in stderr
    report = json.loads(output.read_text())
    jsonschema.validate(report, schema())
    assert (report["status"], report["exit_code"]) == ("unknown", 3)
    assert report["interrupted"] == "stopped by SIGTERM"
    smb = by_id(report)[f"smb:{STORAGE_FILE}:445"]
    assert (smb["status"], smb["reason"], smb["phase"]) == ("inconclusive", "probe.cancelled", None)
    assert by_id(report)["tcp:management.azure.com:443"]["status"] == "pass"
    assert not list(tmp_path.glob(".report.json.*"))  # no temporary file left behind


def test_a_stopped_text_report_says_so_before_its_verdict() -> None:
    """It began "no problems found" when the stop came before a problem was seen."""
    with Lab(scenario(SILENT_UNTIL_TIMEOUT)) as lab:
        proc = subprocess.Popen(lab.node_command(
            [sys.executable, "-m", "agent", "check", *lab.scenario.check_args(), "--timeout", "30"]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(4)  # long enough for every check but the silent SMB negotiate to finish
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 3, stderr
    lines = stdout.splitlines()
    assert lines[0].startswith("aml-netcheck on ") and lines[1] == "run incomplete: stopped by SIGTERM"
    assert lines[2].endswith(" found in the checks that finished")


def test_run_deadline_ends_the_run_as_unknown() -> None:
    with Lab(scenario(SILENT_UNTIL_TIMEOUT)) as lab:
        report, code = check_in(lab, "--deadline", "2", fault_free_timeout="30")
    assert (code, report["status"]) == (3, "unknown")
    assert report["interrupted"] == "run deadline of 2s reached"
    # cancelled by the deadline: the 30 s check timeout would have said smb.no-negotiate-reply
    assert by_id(report)[f"smb:{STORAGE_FILE}:445"]["reason"] == "probe.cancelled"


def test_opening_a_port_mid_lab_changes_the_verdict() -> None:
    drop = Fault("drop", "tcp", 445)
    with Lab(scenario("nsg-drop-445")) as lab:
        _first, code_before = check_in(lab)
        lab.clear(drop)
        second, code_after = check_in(lab)
    assert (code_before, code_after) == (2, 0)
    assert by_id(second)[f"tcp:{STORAGE_FILE}:445"]["status"] == "pass"


def test_context_is_detected_with_no_options() -> None:
    """No context options at all: IMDS gives region, cloud and public IP; CI_* give the compute;
    the workspace share mount gives the storage account; the report says where each came from."""
    with Lab(scenario("healthy-public")) as lab:
        proc = lab.run_in_node([sys.executable, "-m", "agent", "check", "--format", "json", "--timeout", TIMEOUT],
                               timeout=120)
    report = json.loads(proc.stdout)
    jsonschema.validate(report, schema())
    sources = {k: (v["value"], v["source"]) for k, v in report["context"].items()}
    assert sources["region"] == ("eastus", "imds:compute.location")
    assert sources["cloud"] == ("public", "imds:compute.azEnvironment")
    assert sources["public_ip"] == (True, "imds:network.publicIpAddress")
    assert sources["compute_name"] == (CTX.compute_name, "environment:CI_NAME")
    assert sources["compute"] == ("instance", "environment:CI_NAME")
    assert sources["storage_account"][0] == CTX.storage_account
    assert sources["storage_account"][1].startswith("mounts:")
    # what could not be detected is skipped with a hint, never a failure
    skipped = [c for c in report["checks"] if c["reason"] == "skip.missing-context"]
    hints = ("--workspace-id", "--workspace-name", "--key-vault", "--container-registry")
    assert skipped and all(any(hint in c["detail"] for hint in hints) for c in skipped)
    assert (proc.returncode, report["status"]) == (0, "ok")


def test_no_detect_uses_only_options() -> None:
    with Lab(scenario("healthy-public")) as lab:
        proc = lab.run_in_node([sys.executable, "-m", "agent", "check", "--format", "json", "--timeout", TIMEOUT,
                                "--no-detect", "--region", "eastus"], timeout=120)
    report = json.loads(proc.stdout)
    assert report["context"]["compute_name"] == {"value": None, "source": "unknown"}
    assert report["context"]["public_ip"] == {"value": False, "source": "default"}
    assert "detection" not in report["node"]


def test_markdown_summary_for_the_network_team() -> None:
    with Lab(scenario("nsg-drop-445")) as lab:
        proc = lab.run_in_node([sys.executable, "-m", "agent", "check", *lab.scenario.check_args(),
                                "--format", "markdown", "--timeout", TIMEOUT], timeout=120)
    assert proc.returncode == 2, proc.stderr
    text = proc.stdout
    assert text.startswith("# Azure ML network check: CRITICAL on ")
    assert "### 1. CRITICAL `smb-blocked`" in text
    assert "NSG outbound rule: allow TCP 445 from VirtualNetwork to Storage.eastus" in text  # the rule `rules` derives
    flow = next(line for line in text.splitlines() if line.startswith("| 10.0.0.4 | ") and "TCP 445" in line)
    assert STORAGE_FILE in flow and "tcp.timeout" in flow and "Storage.eastus" in flow


def test_wait_returns_once_the_blocked_port_opens(tmp_path: Path) -> None:
    output = tmp_path / "hook.json"
    with Lab(scenario("nsg-drop-445")) as lab:
        proc = subprocess.Popen(lab.node_command(
            [sys.executable, "-m", "agent", "check", *lab.scenario.check_args(), "--wait", "20",
             "--timeout", "2", "--format", "json", "--output", str(output)]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(4)
        lab.clear(Fault("drop", "tcp", 445))
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    rounds = [line for line in stderr.splitlines() if " failing (" in line]
    assert rounds and rounds[0].startswith("aml-netcheck: round 1: 1 failing (tcp:")
    # it stopped as soon as it was healthy: no round ever reports the node without failures
    assert all(f"tcp:{STORAGE_FILE}:445" in line for line in rounds)
    report = json.loads(output.read_text())
    assert report["status"] == "ok" and by_id(report)[f"tcp:{STORAGE_FILE}:445"]["status"] == "pass"


def test_wait_gives_up_at_its_deadline() -> None:
    with Lab(scenario("nsg-drop-445")) as lab:
        proc = lab.run_in_node([sys.executable, "-m", "agent", "check", *lab.scenario.check_args(),
                                "--wait", "8", "--timeout", "2", "--format", "json"], timeout=60)
    assert proc.returncode == 2, proc.stderr
    report = json.loads(proc.stdout)
    assert report["findings"][0]["code"] == "smb-blocked"
    # the last round's real result is kept, not a cancellation at the end of the wait
    assert by_id(report)[f"tcp:{STORAGE_FILE}:445"]["reason"] == "tcp.timeout"
    assert report["interrupted"] is None


def test_wait_stops_at_an_earlier_run_deadline() -> None:
    """`check --wait 4 --deadline 1` ran 3.8 s: the rounds never got the deadline. Now the first
    round is cut at the deadline (the 2 s negotiate cannot finish: cancelled, never a timeout
    verdict) and no second round starts."""
    with Lab(scenario(SILENT_UNTIL_TIMEOUT)) as lab:
        proc = lab.run_in_node([sys.executable, "-m", "agent", "check", *lab.scenario.check_args(),
                                "--wait", "4", "--deadline", "1", "--timeout", "2", "--format", "json"], timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert " failing (" not in proc.stderr  # no round ended with a retry announced
    report = json.loads(proc.stdout)
    assert by_id(report)[f"smb:{STORAGE_FILE}:445"]["reason"] == "probe.cancelled"
    assert report["interrupted"] == "run deadline of 1s reached"


def test_exit_code_profiles_and_textfile(tmp_path: Path) -> None:
    metrics = tmp_path / "aml.prom"
    with Lab(scenario("nsg-drop-445")) as lab:
        npd = lab.run_in_node([sys.executable, "-m", "agent", "check", *lab.scenario.check_args(), "--timeout",
                               TIMEOUT, "--exit-codes", "npd", "--textfile", str(metrics)], timeout=120)
        simple = lab.run_in_node([sys.executable, "-m", "agent", "check", *lab.scenario.check_args(), "--timeout",
                                  TIMEOUT, "--exit-codes", "simple", "--format", "json"], timeout=120)
    assert npd.returncode == 1 and simple.returncode == 1
    assert npd.stdout.startswith("CRITICAL smb-blocked ") and len(npd.stdout.strip()) <= 80
    text = metrics.read_text()
    assert 'aml_netcheck_status{status="critical"} 1' in text
    assert 'aml_netcheck_finding{code="smb-blocked",severity="critical"} 1' in text
    assert f'aml_netcheck_check_failure_info{{check="tcp:{STORAGE_FILE}:445",reason="tcp.timeout"}} 1' in text


def test_a_slow_path_warns_once_and_nothing_fails(checked: Callable[[str], Checked]) -> None:
    """slow-path: every answer of the public services comes 400 ms late. Their TCP connects (the
    kernel's handshake round trip) are over the 300 ms threshold: warn, latency.slow, with the figure
    and the threshold; one latency-degraded finding for that path; the private endpoints, DNS and
    IMDS stay fast, the layers above run on the slow connections, nothing fails."""
    report, code = checked("slow-path")
    assert (code, report["status"]) == (1, "warning")
    [finding] = [f for f in report["findings"] if f["severity"] != "info"]
    assert finding["code"] == "latency-degraded" and "to public endpoints" in finding["summary"]
    checks = by_id(report)
    slow = [c for c in report["checks"] if c["reason"] == "latency.slow"]
    assert slow and {c["id"] for c in slow} == set(finding["checks"])
    for check in slow:
        assert (check["layer"], check["status"]) == ("tcp", "warn")
        assert all(a.startswith("198.1") for a in check["addresses"])
        latency = check["evidence"]["latency"]
        assert latency["measure"] == "connect-rtt" and latency["ms"] > latency["threshold_ms"] == 300
    assert not [c["id"] for c in report["checks"] if c["status"] == "fail"]
    assert checks["tcp:mcr.microsoft.com:443"]["status"] == "warn"
    assert checks["http:mcr.microsoft.com:443"]["status"] == "pass"  # the layers above ran on it
    assert checks[f"tcp:{WORKSPACE}:443"]["status"] == "pass"  # the private endpoint's path is fast


# Findings about what a check that passed saw: a name resolved, but to the wrong address, from a
# hosts-file line, or differently by server; a valid answer's Date header far off.
ANSWER_FINDINGS = ("instance-name-wrong-address", "clock-skew", "hosts-file-override", "dns-resolvers-disagree")


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_names_its_injected_cause_first(name: str, checked: Callable[[str], Checked]) -> None:
    """The scenario's own expectations, for every scenario: the exit code, the first finding is
    the injected cause, no finding blames a layer that passes, and healthy means clean."""
    report, code = checked(name)
    expected = SCENARIOS[name]
    assert code == expected.expected_exit, [f["code"] for f in report["findings"]]
    significant = [f for f in report["findings"] if f["severity"] != "info"]
    if not expected.expected_findings:
        assert significant == []
        return
    assert significant[0]["code"] == expected.expected_findings[0]
    assert len({f["code"] for f in significant}) == len(significant)  # one finding per cause
    if "latency-degraded" not in expected.expected_findings:  # a healthy path in the lab is never slow
        assert "latency-degraded" not in {f["code"] for f in significant}, significant
    passing = {c["id"] for c in report["checks"] if c["status"] == "pass"}
    for finding in significant:
        if finding["code"] not in ANSWER_FINDINGS:
            assert not set(finding["checks"]) & passing, finding


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_report_agrees_in_every_format(name: str, runs: Runs) -> None:
    """The contract of the outputs on real reports: JSON and Prometheus of one run agree on every
    check and on the verdict; markdown and the npd line of a second run call nothing failing that
    the JSON calls healthy or unneeded (and the reverse)."""
    report, _ = runs.get(name)
    rendered = runs.rendered[name]
    check_agreement(report, prometheus_text=rendered.prometheus)
    check_agreement(report, markdown_text=rendered.markdown, npd_line=rendered.npd, verdict=False)
