"""The lab itself: topology, isolation, DNS, TLS, IMDS, WebSocket, faults and teardown.

Every packet is sent from inside the node namespace by a child process (`run_in_node`); the test
process only builds labs and reads their results.
"""

from __future__ import annotations

import dataclasses
import glob
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lab import SCENARIOS, Fault, Lab, LabUnavailable, addresses, netns, scenario, squid
from lab.names import private_names
from lab.scenarios import PrivateZones
from lab.zones import zones_of

F = TypeVar("F", bound=Callable[..., Any])
CAN_BUILD = os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("nft") is not None
HEALTHY = scenario("healthy-private")
CTX = HEALTHY.context
WORKSPACE = f"{CTX.workspace_id}.workspace.{CTX.region}.api.azureml.ms"
WORKSPACE_LINK = f"{CTX.workspace_id}.workspace.{CTX.region}.privatelink.api.azureml.ms"
NOTEBOOKS = (
    f"ml-{CTX.workspace_name}-{CTX.region}-{CTX.workspace_id}.{CTX.region}.notebooks.azure.net"
)
INSTANCE = f"{CTX.compute_name}.{CTX.region}.instances.azureml.ms"
LOCAL = addresses.LOCAL_PREFIXES


def needs_lab(test: F) -> F:
    skip = pytest.mark.skipif(not CAN_BUILD, reason="the lab needs root, `ip` and `nft`")
    return pytest.mark.lab(skip(test))  # type: ignore[no-any-return]


def in_node(lab: Lab, code: str, timeout: float = 30) -> Any:
    """Run a Python snippet in the node namespace; it prints one JSON value, which we return."""
    result = lab.run_in_node([sys.executable, "-c", textwrap.dedent(code)], timeout=timeout)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip() for line in out.splitlines()}


def lab_namespaces() -> set[str]:
    return set(netns.lab_namespaces())


@pytest.fixture(scope="module")
def healthy() -> Iterator[Lab]:
    """One healthy private-endpoint lab shared by the read-only tests; one name is TLS-inspected."""
    if not CAN_BUILD:
        pytest.skip("the lab needs root, `ip` and `nft`")
    with Lab(dataclasses.replace(HEALTHY, tls_intercept=("management.azure.com",))) as lab:
        yield lab


# -- scenarios as data (no namespaces needed) ---------------------------------------------------


def test_scenarios_are_consistent() -> None:
    for s in SCENARIOS.values():
        assert s.summary and s.description
        assert (s.expected_exit == 0) == (not s.expected_findings), s.name
        assert s == type(s).from_dict(json.loads(json.dumps(s.to_dict())))
        zones = zones_of(s, addresses.AZURE_DNS)
        for fault in s.faults:  # every fault host is, or resolves to, an address the az side has
            if fault.host is not None:
                try:
                    target = ipaddress.IPv4Network(fault.host)
                except ValueError:
                    target = ipaddress.IPv4Network(zones.address_of(fault.host))
                assert any(target.subnet_of(ipaddress.IPv4Network(p)) for p in LOCAL), fault


def test_check_args_carry_the_context() -> None:
    assert HEALTHY.check_args() == [
        "--region",
        "eastus",
        "--workspace-id",
        CTX.workspace_id,
        "--workspace-name",
        CTX.workspace_name,
        "--storage-account",
        CTX.storage_account,
        "--compute-name",
        CTX.compute_name,
        "--compute",
        "instance",
        "--no-public-ip",
        "--private-endpoint",
    ]
    assert scenario("healthy-public").check_args()[-2:] == ["--public-ip", "--no-private-endpoint"]
    told = scenario("storage-pe-custom-dns-no-forward")
    assert told.check_args()[-3:] == ["--public-ip", "--no-private-endpoint", "--storage-private-endpoint"]
    assert scenario("storage-pe-detected-from-cname").check_args()[-1] == "--no-private-endpoint"  # nothing said
    storage_only = private_names(told.context)  # the account's own endpoints, without the workspace's
    assert set(storage_only) == {f"{CTX.storage_account}.blob.core.windows.net",
                                 f"{CTX.storage_account}.file.core.windows.net"}


def test_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="healthy-private"):
        scenario("no-such-scenario")


def test_names_under_a_batch_front_end_share_its_address() -> None:
    zones = zones_of(scenario("firewall-reset"), addresses.AZURE_DNS)
    assert zones.address_of("abc.eastus.batch.azure.com") == zones.address_of(
        "eastus.batch.azure.com"
    )
    assert zones.address_of("management.azure.com") != zones.address_of("eastus.batch.azure.com")


def test_notebooks_label_is_truncated_to_63() -> None:
    long = dataclasses.replace(CTX, workspace_name="w" * 60)
    label = next(n for n in private_names(long) if "notebooks" in n).split(".")[0]
    assert len(label) == 63


def test_refuses_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(LabUnavailable, match="root"):
        Lab(HEALTHY).__enter__()


def test_refuses_without_nft(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(
        shutil, "which", lambda tool: None if tool == "nft" else "/usr/sbin/" + tool
    )
    with pytest.raises(LabUnavailable, match="nft"):
        Lab(HEALTHY).__enter__()


# -- topology and lifecycle ---------------------------------------------------------------------


@needs_lab
def test_comes_up_isolated_and_tears_down_completely() -> None:
    links_before = host_links()
    with Lab(HEALTHY) as lab:
        print(f"lab bring-up: {lab.bringup_seconds:.2f}s")  # a sanity print; timings live in bench/
        assert {lab.node_ns, lab.az_ns} <= lab_namespaces()
        assert host_links() == links_before  # nothing was added to the host namespace
        routes = lab.run_in_node(["ip", "-4", "route"]).stdout.splitlines()
        assert sorted(r.split(" proto")[0].strip() for r in routes) == [
            "10.0.0.0/24 dev eth0",
            "default via 10.0.0.1 dev eth0",
        ]
        links = lab.run_in_node(["ip", "-o", "link"]).stdout
        assert [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()] == [
            "lo",
            "eth0",
        ]
        az_routes = subprocess.run(
            netns.in_ns(lab.az_ns, ["ip", "-4", "route"]),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "default" not in az_routes  # the az side has no way out either
        assert lab.run_in_node(["cat", "/etc/resolv.conf"]).stdout.startswith(
            "nameserver 168.63.129.16"
        )
        server = lab._server
        assert server is not None and server.poll() is None
        workdir = lab.workdir
    assert server.poll() is not None
    assert not {lab.node_ns, lab.az_ns} & lab_namespaces()
    assert not (netns.NETNS_ETC / lab.node_ns).exists()
    assert not workdir.exists()
    assert host_links() == links_before


@needs_lab
def test_tears_down_after_an_exception() -> None:
    with pytest.raises(ZeroDivisionError), Lab(HEALTHY) as lab:
        raise ZeroDivisionError
    assert not {lab.node_ns, lab.az_ns} & lab_namespaces()
    assert not lab.workdir.exists()


HOLDER = """
import sys, time
from lab import Lab, scenario
with Lab(scenario("healthy-private")) as lab:
    print(lab.node_ns, lab.az_ns, lab.workdir, lab._server.pid, flush=True)
    time.sleep(60)
"""


@contextmanager
def lab_holder() -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """Another process holding a lab: (process, [node_ns, az_ns, workdir, server pid])."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdout is not None
        fields = holder.stdout.readline().split()
        assert len(fields) == 4, "the lab holder did not come up"
        try:
            yield holder, fields
        finally:
            holder.kill()


def _wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not netns.owner_alive(pid):
            return True
        time.sleep(0.05)
    return False


@needs_lab
def test_tears_down_after_sigterm_to_the_holder() -> None:
    with lab_holder() as (holder, (node_ns, az_ns, workdir, server_pid)):
        holder.send_signal(signal.SIGTERM)
        assert holder.wait(10) == 128 + signal.SIGTERM
    assert not {node_ns, az_ns} & lab_namespaces()
    assert not Path(workdir).exists()
    assert _wait_gone(int(server_pid))


@needs_lab
def test_a_killed_holder_leaves_nothing_running_and_the_next_lab_cleans_up() -> None:
    with lab_holder() as (holder, (node_ns, az_ns, workdir, server_pid)):
        holder.kill()
        holder.wait(10)
    assert _wait_gone(int(server_pid))  # the servers notice their owner is gone
    # a SIGKILL leaves the namespaces behind (unless a parallel test's lab already took them)
    with Lab(HEALTHY):
        assert not {node_ns, az_ns} & lab_namespaces()
        assert not (netns.NETNS_ETC / node_ns).exists()
        assert not Path(workdir).exists()


# -- DNS ----------------------------------------------------------------------------------------

DNS_QUERY = """
import json, dns.message, dns.query, dns.rdatatype
out = {}
for server, name, rdtype in %s:
    reply = dns.query.udp(dns.message.make_query(name, rdtype), server, timeout=3)
    out[f"{server} {name} {rdtype}"] = [dns.rcode.to_text(reply.rcode()),
        [(r.name.to_text(True), dns.rdatatype.to_text(r.rdtype), r[0].to_text().rstrip("."))
         for r in reply.answer]]
print(json.dumps(out))
"""


def query(lab: Lab, *questions: tuple[str, str, str]) -> dict[tuple[str, str, str], Any]:
    """(server, name, type) -> [rcode, [(name, type, value), ...]], asked from the node."""
    out = in_node(lab, DNS_QUERY % (list(questions),))
    return {q: out[" ".join(q)] for q in questions}


AZ, CUSTOM = addresses.AZURE_DNS, addresses.CUSTOM_DNS


@needs_lab
def test_dns_linked_zones_answer_private_endpoints(healthy: Lab) -> None:
    public = addresses.public_address("management.azure.com")
    answers = query(
        healthy,
        (AZ, "management.azure.com", "A"),
        (AZ, WORKSPACE, "A"),
        (AZ, NOTEBOOKS, "A"),
        (AZ, INSTANCE, "A"),
        (AZ, f"{CTX.storage_account}.file.core.windows.net", "A"),
        (AZ, WORKSPACE, "AAAA"),
        (AZ, "management.azure.com", "AAAA"),
    )
    assert answers[(AZ, "management.azure.com", "A")] == [
        "NOERROR",
        [["management.azure.com", "A", public]],
    ]
    assert answers[(AZ, WORKSPACE, "A")] == [
        "NOERROR",
        [[WORKSPACE, "CNAME", WORKSPACE_LINK], [WORKSPACE_LINK, "A", "10.0.1.5"]],
    ]
    assert answers[(AZ, NOTEBOOKS, "A")][1][-1][2] == "10.0.1.6"
    assert answers[(AZ, INSTANCE, "A")] == ["NOERROR", [[INSTANCE, "A", "10.0.1.5"]]]
    assert (
        answers[(AZ, f"{CTX.storage_account}.file.core.windows.net", "A")][1][-1][2] == "10.0.1.7"
    )
    assert answers[(AZ, WORKSPACE, "AAAA")] == ["NOERROR", [[WORKSPACE, "CNAME", WORKSPACE_LINK]]]
    assert answers[(AZ, "management.azure.com", "AAAA")] == ["NOERROR", []]
    assert healthy.address_of(WORKSPACE) == "10.0.1.5"
    assert healthy.address_of("management.azure.com") == public


@needs_lab
@pytest.mark.parametrize("mode", ["unlinked", "missing"])
def test_dns_broken_private_zones(mode: PrivateZones) -> None:
    broken = dataclasses.replace(
        HEALTHY,
        private_zones=mode,
        nxdomain=("graph.windows.net",),
        servfail=("*.vault.azure.net",),
        resolver="custom",
        custom_dns_forwards=False,
    )
    with Lab(broken) as lab:
        answers = query(
            lab,
            (AZ, WORKSPACE, "A"),
            (AZ, INSTANCE, "A"),
            (AZ, "graph.windows.net", "A"),
            (AZ, "kv1.vault.azure.net", "A"),
            (CUSTOM, WORKSPACE, "A"),
            (CUSTOM, INSTANCE, "A"),
        )
        resolv = lab.run_in_node(["cat", "/etc/resolv.conf"]).stdout
    workspace = answers[(AZ, WORKSPACE, "A")]
    if mode == "unlinked":
        assert workspace == [
            "NOERROR",
            [
                [WORKSPACE, "CNAME", WORKSPACE_LINK],
                [WORKSPACE_LINK, "A", addresses.public_address(WORKSPACE_LINK)],
            ],
        ]
    else:
        assert workspace == ["NXDOMAIN", [[WORKSPACE, "CNAME", WORKSPACE_LINK]]]
    # the instance names are not in a privatelink zone: only the workspace zones are broken
    assert answers[(AZ, INSTANCE, "A")] == ["NOERROR", [[INSTANCE, "A", "10.0.1.5"]]]
    assert answers[(AZ, "graph.windows.net", "A")] == ["NXDOMAIN", []]
    assert answers[(AZ, "kv1.vault.azure.net", "A")] == ["SERVFAIL", []]
    # the custom server does not forward the private zones: it resolves them publicly
    assert answers[(CUSTOM, WORKSPACE, "A")][1][-1][2].startswith("198.1")
    assert answers[(CUSTOM, INSTANCE, "A")][1][-1][2].startswith("198.1")
    assert resolv.startswith("nameserver 10.0.2.4")


@needs_lab
def test_node_resolver_and_dns_over_tcp(healthy: Lab) -> None:
    """The node's own resolver configuration (as the agent uses it) reaches the lab DNS."""
    out = in_node(
        healthy,
        f"""
        import json, socket, dns.message, dns.query
        tcp = dns.query.tcp(dns.message.make_query("{WORKSPACE}", "A"), "{AZ}", timeout=3)
        print(json.dumps([socket.gethostbyname("{WORKSPACE}"), tcp.answer[-1][0].to_text()]))
    """,
    )
    assert out == ["10.0.1.5", "10.0.1.5"]


# -- TLS, HTTP, WebSocket, IMDS -----------------------------------------------------------------

TLS_PROBE = """
import json, socket, ssl
out = {}
for name in %r:
    try:
        with socket.create_connection((name, 443), timeout=3) as raw:
            with ssl.create_default_context().wrap_socket(raw, server_hostname=name) as tls:
                issuer = dict(x[0] for x in tls.getpeercert()["issuer"])
                tls.sendall(f"GET / HTTP/1.1\\r\\nHost: {name}\\r\\n\\r\\n".encode())
                head = tls.recv(4096).decode().split("\\r\\n\\r\\n")[0].split("\\r\\n")
        out[name] = {"issuer": issuer, "status": head[0],
                     "headers": sorted(h.split(":")[0] for h in head[1:])}
    except ssl.SSLCertVerificationError as error:
        out[name] = {"verify": error.verify_message}
print(json.dumps(out))
"""


@needs_lab
def test_tls_verifies_with_the_lab_ca_and_fails_when_inspected(healthy: Lab) -> None:
    out = in_node(
        healthy, TLS_PROBE % ([WORKSPACE, "login.microsoftonline.com", "management.azure.com"],)
    )
    for name in (WORKSPACE, "login.microsoftonline.com"):
        assert out[name]["issuer"]["organizationName"] == "Microsoft Corporation"
        assert out[name]["issuer"]["commonName"] == "Lab Azure TLS Issuing CA"
        assert out[name]["status"].startswith("HTTP/1.1 404")
        assert {"Date", "Server"} <= set(out[name]["headers"])
    assert out["management.azure.com"] == {"verify": "unable to get local issuer certificate"}


@needs_lab
def test_inspected_leaf_comes_from_the_contoso_ca(healthy: Lab) -> None:
    out = in_node(
        healthy,
        """
        import json, socket, ssl
        from cryptography import x509
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with ctx.wrap_socket(socket.create_connection(("management.azure.com", 443), timeout=3),
                             server_hostname="management.azure.com") as tls:
            cert = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
        print(json.dumps(cert.issuer.rfc4514_string()))
    """,
    )
    assert out == "CN=Contoso Inspection CA,O=Contoso Firewall,C=US"


WEBSOCKET_PROBE = f"""
import json
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
try:
    with connect("wss://{INSTANCE}/api/kernels/ws", open_timeout=3) as ws:
        ws.send("ping")
        print(json.dumps(ws.recv(timeout=3)))
except InvalidStatus as error:
    print(json.dumps(error.response.status_code))
"""


@needs_lab
def test_websocket_echoes(healthy: Lab) -> None:
    assert in_node(healthy, WEBSOCKET_PROBE) == "ping"


@needs_lab
def test_websocket_refused_scenario_answers_403() -> None:
    with Lab(scenario("websocket-refused")) as lab:
        assert in_node(lab, WEBSOCKET_PROBE) == 403


IMDS_PROBE = """
import json, urllib.request, urllib.error
def get(path, headers):
    request = urllib.request.Request("http://169.254.169.254" + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return [response.status, json.loads(response.read())]
    except urllib.error.HTTPError as error:
        return [error.code, json.loads(error.read())]
print(json.dumps([
    get("/metadata/instance?api-version=2021-02-01", {"Metadata": "true"}),
    get("/metadata/instance?api-version=2021-02-01", {}),
    get("/metadata/instance", {"Metadata": "true"}),
    get("/metadata/loadbalancer?api-version=2021-02-01", {"Metadata": "true"}),
]))
"""


@needs_lab
def test_imds_answers_only_with_the_metadata_header(healthy: Lab) -> None:
    instance, no_header, no_version, loadbalancer = in_node(healthy, IMDS_PROBE)
    assert instance[0] == 200
    assert instance[1]["compute"]["location"] == "eastus"
    assert instance[1]["compute"]["azEnvironment"] == "AzurePublicCloud"
    assert instance[1]["compute"]["name"] == CTX.compute_name
    ip = instance[1]["network"]["interface"][0]["ipv4"]
    assert ip["ipAddress"][0] == {"privateIpAddress": "10.0.0.4", "publicIpAddress": ""}
    assert ip["subnet"][0] == {"address": "10.0.0.0", "prefix": "24"}
    assert no_header[0] == 400 and "metadata header" in no_header[1]["error"]
    assert no_version[0] == 400
    assert loadbalancer == [
        200,
        {"loadbalancer": {"publicIpAddresses": [], "inboundRules": [], "outboundRules": []}},
    ]


# -- faults -------------------------------------------------------------------------------------

CONNECT_PROBE = """
import errno, json, socket
out = []
for proto, host, port in %r:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect((host, port))
            if proto == "udp":
                sock.send(b"ping")
                sock.recv(64)
            out.append("ok")
        except socket.timeout:
            out.append("timeout")
        except OSError as error:
            out.append(errno.errorcode[error.errno])
print(json.dumps(out))
"""


def outcomes(lab: Lab, *targets: tuple[str, str, int]) -> list[str]:
    return in_node(lab, CONNECT_PROBE % (list(targets),))  # type: ignore[no-any-return]


@needs_lab
def test_faults_apply_and_clear_on_a_running_lab() -> None:
    storage = f"{CTX.storage_account}.file.core.windows.net"
    batch = "abc.eastus.batch.azure.com"
    targets = [
        ("tcp", storage, 445),
        ("udp", "eastus.tundra.azureml.ms", 5831),
        ("tcp", batch, 443),
        ("tcp", "management.azure.com", 443),
        ("tcp", INSTANCE, 8787),
        ("tcp", INSTANCE, 18881),
    ]
    faults = [
        Fault("drop", "tcp", 445),
        Fault("reject-port", "udp", 5831),
        Fault("reset", "tcp", 443, "eastus.batch.azure.com"),
        Fault("reject-admin", "tcp", 8787, INSTANCE),
    ]
    with Lab(HEALTHY) as lab:
        assert outcomes(lab, *targets) == ["ok"] * 6
        for fault in faults:
            lab.apply(fault)
        assert outcomes(lab, *targets) == [
            "timeout",
            "ECONNREFUSED",
            "ECONNREFUSED",
            "ok",
            "EHOSTUNREACH",
            "ok",
        ]
        lab.clear(faults[0])
        lab.clear(faults[1])
        assert outcomes(lab, *targets[:2]) == ["ok", "ok"]
        assert lab.faults == tuple(faults[2:])


@needs_lab
def test_scenario_faults_are_installed_at_start() -> None:
    with Lab(scenario("udp-5831-closed")) as lab:
        assert outcomes(lab, ("udp", "westus.tundra.azureml.ms", 5831), ("tcp", INSTANCE, 445)) == [
            "ECONNREFUSED",
            "ok",
        ]


@needs_lab
def test_silent_udp_times_out() -> None:
    with Lab(dataclasses.replace(HEALTHY, udp_silent=True)) as lab:
        assert outcomes(lab, ("udp", "eastus.tundra.azureml.ms", 5831)) == ["timeout"]


# -- scenarios for every finding code (each checked from inside the node) -----------------------


def test_a_trusted_inspection_ca_is_a_warning() -> None:
    """Which codes have a scenario: tests/unit/test_findings.py (with the waivers)."""
    assert scenario("tls-inspection-trusted").expected_exit == 1  # a warning, not critical


def test_fault_port_and_host_may_be_wide() -> None:
    assert Fault("drop", "udp", None, addresses.PUBLIC_NET).port is None
    with pytest.raises(ValueError, match="port"):
        Fault("drop", "tcp", 0)


PROXY_PROBE = """
import base64, errno, json, os, socket, ssl, urllib.parse
proxy = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
def through_proxy(request, credentials, tls_name):  # credentials None: the URL's, as clients do
    if credentials is None and proxy.username:
        credentials = f"{proxy.username}:{proxy.password}"
    try:
        sock = socket.create_connection((proxy.hostname, proxy.port), timeout=3)
    except OSError as error:
        return [errno.errorcode[error.errno]]
    with sock:
        auth = "" if not credentials else (
            "Proxy-Authorization: Basic " + base64.b64encode(credentials.encode()).decode() + "\\r\\n")
        sock.sendall((request + auth + "\\r\\n").encode())
        head = sock.recv(65536).decode().split("\\r\\n\\r\\n")[0].split("\\r\\n")
        status = int(head[0].split(" ")[1])
        challenge = [h.split(": ", 1)[1] for h in head[1:] if h.startswith("Proxy-Authenticate:")]
        if status != 200 or not tls_name:
            return [status, *challenge]
        with ssl.create_default_context().wrap_socket(sock, server_hostname=tls_name) as tls:
            tls.sendall(f"GET / HTTP/1.1\\r\\nHost: {tls_name}\\r\\nConnection: close\\r\\n\\r\\n".encode())
            return [status, tls.recv(4096).decode().split("\\r\\n")[0]]
out = {"env": {k: os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                                             "http_proxy", "NO_PROXY", "no_proxy")}}
out["CONNECT"] = [
    through_proxy(f"CONNECT {name}:443 HTTP/1.1\\r\\nHost: {name}:443\\r\\n", credentials, name)
    for name, credentials in %r
]
get = "GET http://login.microsoftonline.com/x HTTP/1.1\\r\\nHost: login.microsoftonline.com\\r\\n"
out["GET"] = through_proxy(get, None, None)
print(json.dumps(out))
"""
OK_TUNNEL = [200, "HTTP/1.1 404 Not Found"]
CREDENTIALS = ":".join(squid.CREDENTIALS)
# scenario -> ((name, credentials) -> what CONNECT gives), what a plain GET through it gives
PROXIED: dict[str, tuple[dict[tuple[str, str | None], list[Any]], list[Any]]] = {
    "proxy-ok": ({("management.azure.com", None): OK_TUNNEL, (WORKSPACE, None): OK_TUNNEL}, [404]),
    "proxy-auth-required": (
        {("management.azure.com", None): [407, 'Basic realm="contoso"'],
         ("management.azure.com", CREDENTIALS): OK_TUNNEL,
         ("management.azure.com", "aml-node:wrong"): [407, 'Basic realm="contoso"']},
        [407, 'Basic realm="contoso"'],
    ),
    "proxy-auth-ok": ({("management.azure.com", None): OK_TUNNEL}, [404]),
    "proxy-denied": (
        {("eastus.api.azureml.ms", None): [403], (WORKSPACE, None): [403],
         ("management.azure.com", None): OK_TUNNEL},
        [404],
    ),
    "proxy-unreachable": ({("management.azure.com", None): ["ECONNREFUSED"]}, ["ECONNREFUSED"]),
    "proxy-missing-no-proxy": (
        {(WORKSPACE, None): [503], (INSTANCE, None): [503], ("management.azure.com", None): OK_TUNNEL},
        [404],
    ),
}


@needs_lab
@pytest.mark.parametrize("name", sorted(PROXIED))
def test_proxy_scenarios(name: str) -> None:
    """Through the proxy as the scenario has it; direct only to the private endpoints."""
    connects, plain_get = PROXIED[name]
    s = scenario(name)
    with Lab(s) as lab:
        out = in_node(lab, PROXY_PROBE % ([list(k) for k in connects],))
        direct = outcomes(lab, ("tcp", "management.azure.com", 443), ("tcp", WORKSPACE, 443),
                          ("udp", "eastus.tundra.azureml.ms", 5831))
    user = f"{CREDENTIALS}@" if name == "proxy-auth-ok" else ""
    url = f"http://{user}{addresses.PROXY}:{addresses.PROXY_PORT}"
    env = out["env"]
    assert env["HTTPS_PROXY"] == env["https_proxy"] == env["HTTP_PROXY"] == env["http_proxy"] == url
    assert env["NO_PROXY"] == env["no_proxy"] == ",".join(s.no_proxy)
    assert "169.254.169.254" in env["NO_PROXY"].split(",")
    assert (WORKSPACE in env["NO_PROXY"].split(",")) == (name != "proxy-missing-no-proxy")
    assert out["GET"] == plain_get
    assert dict(zip(connects, out["CONNECT"], strict=True)) == connects
    assert direct == ["timeout", "ok", "ok"]  # egress only through the proxy; PE and UDP direct


ANSWER_PROBE = """
import json, socket, ssl
def head(sock):
    data = b""
    while b"\\r\\n\\r\\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    status, *fields = data.split(b"\\r\\n\\r\\n")[0].decode("latin-1").split("\\r\\n")
    headers = dict(f.split(": ", 1) for f in fields)
    return [int(status.split()[1]), headers.get("Server"), headers.get("X-Squid-Error", "").split(" ")[0] or None]
out = []
for kind, name, port in %r:
    if kind == "connect":  # straight to the proxy, as the node's clients send CONNECT
        with socket.create_connection(("10.0.3.8", 3128), timeout=5) as sock:
            sock.sendall(f"CONNECT {name}:{port} HTTP/1.1\\r\\nHost: {name}:{port}\\r\\n\\r\\n".encode())
            out.append(head(sock))
    else:  # a WebSocket handshake, direct
        with ssl.create_default_context().wrap_socket(socket.create_connection((name, port), timeout=5),
                                                      server_hostname=name) as tls:
            tls.sendall((f"GET / HTTP/1.1\\r\\nHost: {name}\\r\\nUpgrade: websocket\\r\\n"
                         "Connection: Upgrade\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n"
                         "Sec-WebSocket-Version: 13\\r\\n\\r\\n").encode())
            out.append(head(tls))
print(json.dumps(out))
"""
SQUID = "squid/5"  # Debian 12's squid: the version in its Server header


@needs_lab
def test_the_proxy_is_a_real_squid() -> None:
    """squid's own answers: 403 ERR_ACCESS_DENIED for CONNECT outside SSL_ports (the stock
    squid.conf), 200 to 443; and 503 ERR_CONNECT_FAIL where it has no route to the target."""
    with Lab(scenario("proxy-ssl-ports")) as lab:
        stock = in_node(lab, ANSWER_PROBE % ([("connect", INSTANCE, 8787), ("connect", INSTANCE, 443)],))
        segments = squid.leftovers(lab.workdir / "squid")  # its shared memory, in the host's /dev/shm
        assert glob.glob(segments)
    assert not glob.glob(segments)  # removed with the lab, though squid is killed
    with Lab(scenario("proxy-missing-no-proxy")) as lab:
        [unrouted] = in_node(lab, ANSWER_PROBE % ([("connect", WORKSPACE, 443)],))
    (denied, server, error), tunnel = stock
    assert (denied, error) == (403, "ERR_ACCESS_DENIED") and server.startswith(SQUID)
    assert tunnel[0] == 200
    assert (unrouted[0], unrouted[2]) == (503, "ERR_CONNECT_FAIL") and unrouted[1].startswith(SQUID)


@needs_lab
@pytest.mark.parametrize(("name", "status"), [("websocket-nginx", 101), ("websocket-no-upgrade", 404)])
def test_nginx_fronts_the_instance(name: str, status: int) -> None:
    """nginx answers at the workspace private endpoint (the instance and workspace names), the
    lab's own front end everywhere else; without the Upgrade headers nginx forwards a plain GET."""
    public = f"{CTX.compute_name}.{CTX.region}.instances.azureml.net"
    with Lab(scenario(name)) as lab:
        answers = in_node(lab, ANSWER_PROBE % ([("ws", INSTANCE, 443), ("ws", WORKSPACE, 443), ("ws", public, 443)],))
    assert [a[:2] for a in answers] == [[status, "nginx"], [404, "nginx"], [101, "Lab-Azure-FrontEnd/1.0"]]


@needs_lab
def test_no_proxy_variables_without_a_proxy(healthy: Lab) -> None:
    env = healthy.node_env()
    assert not {k for k in env if k.lower().endswith("_proxy")}


HANDSHAKE_PROBE = """
import errno, json, socket, ssl
out = {}
for name in %r:
    sock = socket.create_connection((name, 443), timeout=%r)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=name)
    received = 0
    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                received += len(data)
                incoming.write(data)
        out[name] = ["handshake", received, tls.cipher()[1]]
    except socket.timeout:
        out[name] = ["connected, handshake timed out", received]
    except ssl.SSLCertVerificationError as error:
        out[name] = ["verify", error.verify_message]
    finally:
        sock.close()
print(json.dumps(out))
"""


def handshakes(lab: Lab, *names: str, timeout: float = 3) -> dict[str, list[Any]]:
    return in_node(lab, HANDSHAKE_PROBE % (list(names), timeout))  # type: ignore[no-any-return]


@needs_lab
def test_server_flight_carries_an_rsa_leaf_and_the_issuing_ca(healthy: Lab) -> None:
    """Big enough for the MTU black hole: well over 1200 bytes before the handshake completes."""
    out = handshakes(healthy, WORKSPACE)
    assert out[WORKSPACE][0] == "handshake" and out[WORKSPACE][1] > 1800
    if shutil.which("openssl") is None:
        return  # what the flight holds is openssl's to show
    shown = healthy.run_in_node(
        ["openssl", "s_client", "-connect", f"{WORKSPACE}:443", "-servername", WORKSPACE],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    ).stdout.split("Certificate chain\n")[1].split("---")[0]
    chain = [line.strip() for line in shown.splitlines() if "NotBefore" not in line]
    issuing = "C = US, O = Microsoft Corporation, CN = Lab Azure TLS Issuing CA"
    assert chain == [
        f"0 s:CN = {WORKSPACE[:64]}",
        f"i:{issuing}",
        "a:PKEY: rsaEncryption, 2048 (bit); sigalg: ecdsa-with-SHA256",
        f"1 s:{issuing}",
        "i:C = US, O = DigiCert Inc, CN = Lab DigiCert Global Root G2",
        "a:PKEY: id-ecPublicKey, 256 (bit); sigalg: ecdsa-with-SHA256",
    ]


@needs_lab
def test_mtu_blackhole_stalls_tls_while_tcp_connects() -> None:
    with Lab(scenario("mtu-blackhole")) as lab:
        stalled = handshakes(lab, WORKSPACE, "management.azure.com", timeout=2)
        small = in_node(lab, """
            import json, socket
            with socket.create_connection(("management.azure.com", 80), timeout=3) as sock:
                sock.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
                print(json.dumps(sock.recv(4096).decode().split("\\r\\n")[0]))
        """)
    for name in (WORKSPACE, "management.azure.com"):
        assert stalled[name] == ["connected, handshake timed out", 0]
    assert small == "HTTP/1.1 404 Not Found"


RESOLVE = """
import json, socket
print(json.dumps({n: socket.gethostbyname(n) for n in %r}))
"""


@needs_lab
def test_custom_dns_without_forwarder_answers_public() -> None:
    with Lab(scenario("custom-dns-no-forwarder")) as lab:
        resolv = lab.run_in_node(["cat", "/etc/resolv.conf"]).stdout
        resolved = in_node(lab, RESOLVE % ([WORKSPACE, NOTEBOOKS, INSTANCE],))
        azure = query(lab, (AZ, WORKSPACE, "A"))[(AZ, WORKSPACE, "A")]
    assert resolv == f"nameserver {CUSTOM}\n"
    assert resolved == {
        WORKSPACE: addresses.public_address(WORKSPACE_LINK),
        NOTEBOOKS: addresses.public_address(NOTEBOOKS.replace(".notebooks.", ".privatelink.notebooks.")),
        INSTANCE: addresses.public_address(INSTANCE),
    }
    assert azure[1][-1][2] == "10.0.1.5"  # Azure DNS itself still has the private answer


@needs_lab
def test_the_nodes_hosts_lines_and_second_resolver() -> None:
    """A scenario's hosts lines are what getaddrinfo answers in the node (ip netns exec puts its
    hosts file over /etc/hosts); its further resolvers follow the first in resolv.conf."""
    blob = f"{CTX.storage_account}.blob.core.windows.net"
    with Lab(scenario("hosts-file-stale")) as lab:
        pinned = in_node(lab, RESOLVE % ([blob],))
        azure = query(lab, (AZ, blob, "A"))[(AZ, blob, "A")]
    assert pinned == {blob: "10.0.1.99"} and azure[1][-1][2] == addresses.PE_BLOB
    with Lab(scenario("resolvers-disagree")) as lab:
        resolv = lab.run_in_node(["cat", "/etc/resolv.conf"]).stdout
        resolved = in_node(lab, RESOLVE % ([WORKSPACE],))
    assert resolv == f"nameserver {AZ}\nnameserver {CUSTOM}\n"
    assert resolved == {WORKSPACE: addresses.PE_WORKSPACE}  # the first server answers


DNS_TIMEOUTS = """
import json, dns.exception, dns.message, dns.query
out = []
for send in (dns.query.udp, dns.query.tcp):
    try:
        reply = send(dns.message.make_query("management.azure.com", "A"), "%s", timeout=1)
        out.append(dns.rcode.to_text(reply.rcode()))
    except dns.exception.Timeout:
        out.append("timeout")
print(json.dumps(out))
"""


@needs_lab
def test_dns_dead_times_out_while_addresses_work() -> None:
    with Lab(scenario("dns-dead")) as lab:
        azure = in_node(lab, DNS_TIMEOUTS % AZ)
        custom = in_node(lab, DNS_TIMEOUTS % CUSTOM)  # not the node's resolver: unaffected
        reachable = outcomes(lab, ("tcp", addresses.IMDS, 80), ("tcp", "10.0.1.5", 443))
    assert azure == ["timeout", "timeout"]
    assert custom == ["NOERROR", "NOERROR"]
    assert reachable == ["ok", "ok"]


@needs_lab
def test_dns_servfail_for_every_name() -> None:
    with Lab(scenario("dns-servfail")) as lab:
        answers = query(lab, (AZ, "management.azure.com", "A"), (AZ, WORKSPACE, "A"),
                        (AZ, "login.microsoftonline.com", "AAAA"))
    assert set(map(tuple, (a[0] for a in answers.values()))) == {tuple("SERVFAIL")}


SKEW_PROBE = f"""
import json, socket, ssl, time, urllib.request
from email.utils import parsedate_to_datetime
from websockets.sync.client import connect
def skew(date):
    return round(parsedate_to_datetime(date).timestamp() - time.time())
insecure = ssl.create_default_context()
insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
out = {{}}
try:
    socket.create_connection(("{WORKSPACE}", 443), timeout=3).close()
    ssl.create_default_context().wrap_socket(
        socket.create_connection(("{WORKSPACE}", 443), timeout=3), server_hostname="{WORKSPACE}")
except ssl.SSLCertVerificationError as error:
    out["verify"] = error.verify_message
request = urllib.request.Request("http://169.254.169.254/metadata/versions", headers={{"Metadata": "true"}})
with urllib.request.urlopen(request, timeout=3) as response:
    out["imds"] = skew(response.headers["Date"])
try:
    urllib.request.urlopen("https://management.azure.com/", timeout=3, context=insecure)
except urllib.error.HTTPError as error:
    out["https"] = skew(error.headers["Date"])
with connect("wss://{INSTANCE}/ws", open_timeout=3, ssl=insecure) as ws:
    out["websocket"] = skew(ws.response.headers["Date"])
print(json.dumps(out))
"""


@needs_lab
def test_clock_skew_shows_in_dates_and_certificates() -> None:
    with Lab(scenario("clock-skew")) as lab:
        out = in_node(lab, SKEW_PROBE)
    assert out.pop("verify") == "certificate is not yet valid"
    offset = scenario("clock-skew").server_clock_offset
    assert offset == 2 * 86400
    assert all(abs(v - offset) < 30 for v in out.values()), out
    assert set(out) == {"imds", "https", "websocket"}


@needs_lab
def test_healthy_dates_are_current(healthy: Lab) -> None:
    out = in_node(healthy, SKEW_PROBE)
    assert "verify" not in out and all(abs(v) < 30 for v in out.values()), out


@needs_lab
def test_no_egress_drops_every_public_port_but_keeps_dns_and_private_endpoints() -> None:
    with Lab(scenario("no-egress")) as lab:
        result = outcomes(
            lab,
            ("tcp", "management.azure.com", 443),
            ("tcp", "login.microsoftonline.com", 80),
            ("udp", "eastus.tundra.azureml.ms", 5831),
            ("tcp", WORKSPACE, 443),
            ("tcp", f"{CTX.storage_account}.file.core.windows.net", 445),
            ("tcp", addresses.IMDS, 80),
        )
        dns_answer = query(lab, (AZ, "management.azure.com", "A"))[(AZ, "management.azure.com", "A")]
    assert result == ["timeout", "timeout", "timeout", "ok", "ok", "ok"]
    assert dns_answer[0] == "NOERROR"


@needs_lab
def test_private_record_missing_and_instance_name_wrong_address() -> None:
    with Lab(scenario("private-record-missing")) as lab:
        missing = query(lab, (AZ, WORKSPACE, "A"), (AZ, NOTEBOOKS, "A"), (AZ, INSTANCE, "A"))
    assert missing[(AZ, WORKSPACE, "A")] == ["NXDOMAIN", [[WORKSPACE, "CNAME", WORKSPACE_LINK]]]
    assert missing[(AZ, NOTEBOOKS, "A")][0] == "NXDOMAIN"
    assert missing[(AZ, INSTANCE, "A")] == ["NOERROR", [[INSTANCE, "A", "10.0.1.5"]]]
    ml_instance = INSTANCE.replace(".instances.azureml.ms", ".instances.ml.azure.ms")
    with Lab(scenario("instance-name-wrong-address")) as lab:
        resolved = in_node(lab, RESOLVE % ([INSTANCE, ml_instance, WORKSPACE],))
        assert lab.address_of(INSTANCE) == addresses.NODE
    assert resolved == {INSTANCE: addresses.NODE, ml_instance: addresses.NODE, WORKSPACE: "10.0.1.5"}


@needs_lab
def test_tls_inspection_trusted_verifies_with_the_contoso_ca() -> None:
    with Lab(scenario("tls-inspection-trusted")) as lab:
        out = in_node(lab, TLS_PROBE % (["management.azure.com", WORKSPACE],))
    for name in ("management.azure.com", WORKSPACE):
        assert out[name]["issuer"] == {
            "countryName": "US", "organizationName": "Contoso Firewall",
            "commonName": "Contoso Inspection CA"}
        assert out[name]["status"].startswith("HTTP/1.1 404")


HTTP_PROBE = """
import json, socket
out = {}
for name in %r:
    with socket.create_connection((name, 80), timeout=3) as sock:
        sock.sendall(f"GET / HTTP/1.1\\r\\nHost: {name}\\r\\nConnection: close\\r\\n\\r\\n".encode())
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    head, _, body = data.decode().partition("\\r\\n\\r\\n")
    out[name] = [head.split("\\r\\n")[0], body]
print(json.dumps(out))
"""


@needs_lab
def test_azure_firewall_answers_470_for_plain_http() -> None:
    with Lab(scenario("azure-firewall-deny")) as lab:
        plain = in_node(lab, HTTP_PROBE % (["login.microsoftonline.com", "management.azure.com"],))
        tls = in_node(lab, TLS_PROBE % (["login.microsoftonline.com"],))
    assert plain["login.microsoftonline.com"] == [
        "HTTP/1.1 470 status code 470",
        "Action: Deny. Reason: No rule matched. Proceeding with default action.",
    ]
    assert plain["management.azure.com"][0] == "HTTP/1.1 404 Not Found"
    assert tls["login.microsoftonline.com"]["status"].startswith("HTTP/1.1 404")


@needs_lab
def test_firewall_drop_and_imds_blocked() -> None:
    with Lab(scenario("firewall-drop")) as lab:
        batch = outcomes(lab, ("tcp", "abc.eastus.batch.azure.com", 443),
                         ("tcp", "eastus.service.batch.azure.com", 443),
                         ("tcp", "management.azure.com", 443))
    assert batch == ["timeout", "timeout", "ok"]
    blocked = scenario("imds-blocked")
    assert blocked.check_args() == []  # the agent has to detect the context
    with Lab(blocked) as lab:
        imds = outcomes(lab, ("tcp", addresses.IMDS, 80), ("tcp", "management.azure.com", 443))
        assert lab.node_env()["CI_NAME"] == CTX.compute_name
    assert imds == ["timeout", "ok"]
