"""local probe against the real thing: sockets this test binds, nftables rules loaded into a
network namespace the test creates and deletes, os-release and daemon.json files in tmp_path."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest

import probes
from probes import local
from probes._trace import ProbeError, Trace
from probes.reasons import Reason, Status, classify
from probes.specs import SpecError

pytest_plugins = ["probe_peers"]

FAILED, INCONCLUSIVE = Reason.LOCAL_CHECK_FAILED, Reason.LOCAL_INCONCLUSIVE
_namespaces = itertools.count()

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None,
    reason="needs root, `ip` and `nft`: the firewall tests load rules into a network namespace")


def rules_in(trace: Trace, name: str) -> list[dict[str, Any]]:
    """facts.blocking or facts.uncertain: one dict per rule."""
    return cast("list[dict[str, Any]]", trace.facts[name])


async def outcome(spec: local.Spec, trace: Trace) -> ProbeError | None:
    """Run the probe; the ProbeError it raised, or None when it passed. Either way the one
    phase is "inspect", left open on an error."""
    try:
        await local.run(spec, (), trace)
    except ProbeError as exc:
        assert trace.current == "inspect"
        return exc
    assert [p.name for p in trace.phases] == ["inspect"] and trace.current is None
    return None


# --- contract ----------------------------------------------------------------------------------


def test_registered() -> None:
    assert probes.PROBES["local"] == (local.Spec, local.run)
    assert Reason.LOCAL_INCONCLUSIVE.status is Status.INCONCLUSIVE
    assert Reason.LOCAL_CHECK_FAILED.status is Status.FAIL


@pytest.mark.parametrize("kwargs", [
    {"check": "selinux"},
    {"check": "listening"},  # no port
    {"check": "firewall-inbound", "port": 70000},
    {"check": "listening", "port": 22, "protocol": "sctp"},
    {"check": "firewall-platform", "address": "fd00::1"},  # the firewall reading is IPv4 only
    {"check": "docker-bridge", "subnets": ("10.0.0.0/33",)},
], ids=lambda kwargs: "-".join(str(v) for v in kwargs.values()))
async def test_malformed_spec_is_a_probe_bug(kwargs: dict[str, object], trace: Trace) -> None:
    """Refused where the Spec is built (the planner), or by the probe: never a network verdict."""
    with pytest.raises(ValueError) as info:  # noqa: PT011 (each spec has its own message; classify() is the assertion)
        await local.run(local.Spec(**kwargs), (), trace)  # type: ignore[arg-type]
    assert classify(info.value) is Reason.PROBE_INTERNAL
    assert isinstance(info.value, SpecError) or trace.current == "inspect"


# --- listening ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "host", "reachable"), [
    ("tcp", "127.0.0.1", False),  # loopback-only: unreachable from the VNet, so it fails
    ("tcp", "0.0.0.0", True),
    ("udp", "0.0.0.0", True),
])
async def test_listening(protocol: str, host: str, reachable: bool, trace: Trace) -> None:
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as server:
        server.bind((host, 0))
        if protocol == "tcp":
            server.listen()
        port = server.getsockname()[1]
        error = await outcome(local.Spec("listening", port=port, protocol=protocol), trace)
    assert trace.facts["listeners"] == [{"address": host, "port": port, "pid": os.getpid(),
                                         "process": psutil.Process().name()}]
    if reachable:
        assert error is None
    else:
        assert error is not None and error.reason is FAILED
        assert f"tcp/{port} listens only on loopback (127.0.0.1)" in error.detail
        assert "bind 0.0.0.0" in error.detail


async def test_nothing_listening(refused_port: int, trace: Trace) -> None:
    error = await outcome(local.Spec("listening", port=refused_port), trace)
    assert error is not None and error.reason is FAILED
    assert error.detail.startswith(f"nothing listens on tcp/{refused_port}")
    assert trace.facts["listeners"] == []


async def test_a_tcp_listener_is_not_udp(tcp_listener: int, trace: Trace) -> None:
    error = await outcome(local.Spec("listening", port=tcp_listener, protocol="udp"), trace)
    assert error is not None and error.reason is FAILED and trace.facts["listeners"] == []


# --- os ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("release", "reason", "facts"), [
    ('NAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\nPRETTY_NAME="Ubuntu 22.04.4 LTS"\n',
     None, {"id": "ubuntu", "version_id": "22.04", "pretty_name": "Ubuntu 22.04.4 LTS"}),
    ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\nID=debian\n',
     FAILED, {"id": "debian", "version_id": "12", "pretty_name": "Debian GNU/Linux 12 (bookworm)"}),
    (None, INCONCLUSIVE, {}),
], ids=["ubuntu", "debian", "missing"])
async def test_os(release: str | None, reason: Reason | None, facts: dict[str, str], tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch, trace: Trace) -> None:
    path = tmp_path / "os-release"
    if release is not None:
        path.write_text(release)
    monkeypatch.setattr(local, "OS_RELEASE", path)
    error = await outcome(local.Spec("os"), trace)
    assert (error and error.reason) == reason
    assert trace.facts == facts
    if reason is FAILED:
        assert error is not None
        assert "Debian GNU/Linux 12 (bookworm) (ID=debian), not Ubuntu" in error.detail


# --- docker-bridge -----------------------------------------------------------------------------


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No docker0 interface, and a daemon.json path in tmp_path (absent until a test writes it); not
    in a container (whatever runs the suite), until a test creates tmp_path/.dockerenv."""
    monkeypatch.setattr(local, "DOCKER_BRIDGE", "amlnc-no-such-if")
    monkeypatch.setattr(local, "DOCKER_DAEMON_JSON", tmp_path / "daemon.json")
    monkeypatch.setattr(local, "CONTAINER_MARKERS", (tmp_path / ".dockerenv",))
    return tmp_path / "daemon.json"


@pytest.mark.parametrize(("bip", "subnets", "bridge", "overlapping"), [
    (None, ("10.0.0.0/16", "172.17.0.0/24"), "172.17.0.0/16", ["172.17.0.0/24"]),
    (None, ("10.0.0.0/16", "172.16.0.0/16", "fd00::/64"), "172.17.0.0/16", []),
    ("192.168.5.1/24", ("192.168.0.0/16",), "192.168.5.0/24", ["192.168.0.0/16"]),
    ("192.168.5.1/24", ("172.17.0.0/16",), "192.168.5.0/24", []),
], ids=["default-overlaps", "default-clear", "bip-overlaps", "bip-moves-it-away"])
async def test_docker_bridge(bip: str | None, subnets: tuple[str, ...], bridge: str,
                             overlapping: list[str], docker: Path, trace: Trace) -> None:
    if bip is not None:
        docker.write_text(json.dumps({"bip": bip, "log-driver": "json-file"}))
    error = await outcome(local.Spec("docker-bridge", subnets=subnets), trace)
    assert trace.facts["bridge"] == bridge and trace.facts["overlapping"] == overlapping
    assert trace.facts["bridge_source"] == ("default" if bip is None else f"{docker} bip")
    assert trace.facts["subnets_source"] == "spec"
    if overlapping:
        assert error is not None and error.reason is FAILED
        assert f"Docker's bridge {bridge}" in error.detail and '"bip"' in error.detail
    else:
        assert error is None


async def test_inside_a_container_no_default_bridge_is_assumed(docker: Path, trace: Trace) -> None:
    """A container on Docker's default bridge has 172.17.0.x itself: comparing it with an assumed
    default bridge was a false warning (exit 1 on a healthy container). A daemon.json the container
    has (Docker in Docker) still counts."""
    (docker.parent / ".dockerenv").touch()
    error = await outcome(local.Spec("docker-bridge", subnets=("172.17.0.0/16",)), trace)
    assert error is not None and error.reason is INCONCLUSIVE
    assert "inside a container" in error.detail and str(docker.parent / ".dockerenv") in error.detail
    docker.write_text(json.dumps({"bip": "172.17.0.1/16"}))
    error = await outcome(local.Spec("docker-bridge", subnets=("172.17.0.0/16",)), trace)
    assert error is not None and error.reason is FAILED


async def test_docker_bridge_unreadable_config(docker: Path, trace: Trace) -> None:
    docker.write_text('{"bip": ')
    error = await outcome(local.Spec("docker-bridge", subnets=("10.0.0.0/16",)), trace)
    assert error is not None and error.reason is INCONCLUSIVE


async def test_docker_bridge_live_interface_and_own_networks(
        docker: Path, trace: Trace, monkeypatch: pytest.MonkeyPatch) -> None:
    """The live bridge interface wins over daemon.json; given no subnets, the node's other
    interface networks are the ones compared (loopback never)."""
    live = [(name, e) for name, entries in sorted(psutil.net_if_addrs().items()) for e in entries
            if e.family == socket.AF_INET and not e.address.startswith(("127.", "169.254."))]
    if not live:
        pytest.skip("no interface with a non-loopback IPv4 address to play docker0")
    name, entry = live[0]
    monkeypatch.setattr(local, "DOCKER_BRIDGE", name)
    docker.write_text(json.dumps({"bip": "192.168.5.1/24"}))
    error = await outcome(local.Spec("docker-bridge"), trace)
    assert trace.facts["bridge_source"] == name and trace.facts["subnets_source"] == "interfaces"
    network = ipaddress.IPv4Interface(f"{entry.address}/{entry.netmask}").network
    assert trace.facts["bridge"] == str(network)
    assert trace.facts["bridge"] not in trace.facts["subnets"]  # type: ignore[operator]
    assert not any(s.startswith("127.") for s in trace.facts["subnets"])  # type: ignore[union-attr]
    assert (error is not None) == bool(trace.facts["overlapping"])


# --- firewall ----------------------------------------------------------------------------------


Load = Callable[..., None]


@pytest.fixture
def nft_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Load]:
    """A network namespace of this test's own (deleted whatever happens) whose nftables the probe
    reads; `nft_rules(text)` loads a ruleset there (`nft_rules(text, "iptables-nft-restore")`
    through another loader). No legacy iptables tables unless a test writes the
    (monkeypatched) names file."""
    name = f"amlnc-test-{os.getpid()}-{next(_namespaces)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        monkeypatch.setattr(local, "NFT", ("ip", "netns", "exec", name, "nft"))
        monkeypatch.setattr(local, "LEGACY_IPTABLES", tmp_path / "ip_tables_names")

        def load(rules: str, *loader: str) -> None:
            loaded = subprocess.run(["ip", "netns", "exec", name, *(loader or ("nft", "-f", "-"))],
                                    input=rules, text=True, capture_output=True, check=False)
            assert loaded.returncode == 0, loaded.stderr

        yield load
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


def table(family: str, *chains: str) -> str:
    return f"table {family} t {{\n" + "\n".join(chains) + "\n}\n"


def chain(name: str, hook: str | None, *rules: str, policy: str = "accept") -> str:
    head = f"type filter hook {hook} priority 0; policy {policy};\n" if hook else ""
    return f"chain {name} {{\n{head}" + "".join(f"{r}\n" for r in rules) + "}"


DEFAULT_DENY = ("ct state vmap { established : accept, related : accept, invalid : drop }",
                'iifname "lo" accept', "tcp dport 22 accept")
NAMED_SET = "set aml { type inet_service; flags interval; elements = { 29876-29877, 44224 }; }"
PLATFORM = "168.63.129.16"  # the address the planner gives the firewall-platform check
ALL_PLATFORM_SERVICES = [f"{p}/{n} to {PLATFORM}" for p, n in local.PLATFORM_SERVICES]


def inet(*chains: str) -> str:
    return table("inet", *chains)


@needs_netns
@pytest.mark.parametrize(("rules", "reason", "first"), [
    pytest.param(inet(chain("input", "input", "tcp dport 44224 counter drop")), FAILED,
                 ("drop", "input", "tcp dport 44224 counter packets 0 bytes 0 drop"), id="drop"),
    pytest.param(inet(chain("input", "input", "tcp dport { 22, 44224 } reject with tcp reset")),
                 FAILED, ("reject", "input", "tcp dport { 22, 44224 } reject with tcp reset"),
                 id="reject-in-set"),
    pytest.param(inet(chain("ufw-user-input", None, "tcp dport 44000-45000 drop"),
                      chain("input", "input", "jump ufw-user-input")),
                 FAILED, ("drop", "ufw-user-input", "tcp dport 44000-45000 drop"),
                 id="range-in-jumped-chain"),
    pytest.param(inet(chain("sub", None, "tcp dport 44224 return", "drop"),
                      chain("input", "input", "jump sub")), None, None,
                 id="return-before-drop-in-jumped-chain"),
    pytest.param(table("ip", chain("pre", "prerouting", "th dport 44224 drop")), FAILED,
                 ("drop", "pre", "th dport 44224 drop"), id="prerouting-ip-family"),
    pytest.param(inet(chain("input", "input", "tcp dport 22 drop", "udp dport 44224 drop",
                            "ip6 nexthdr tcp drop")), None, None, id="other-port-protocol-family"),
    pytest.param(inet(chain("input", "input", *DEFAULT_DENY, policy="drop")), FAILED,
                 ("drop", "input", "policy drop"), id="policy-drop-without-accept"),
    pytest.param(inet(NAMED_SET, chain("input", "input", *DEFAULT_DENY, "tcp dport @aml accept",
                                       policy="drop")),
                 None, None, id="policy-drop-with-accept-in-named-set"),
    pytest.param(inet(chain("input", "input", *DEFAULT_DENY,
                            "ip saddr 10.0.0.0/8 tcp dport 44224 accept", policy="drop")),
                 INCONCLUSIVE, ("accept", "input", "ip saddr 10.0.0.0/8 tcp dport 44224 accept"),
                 id="accepted-from-some-sources"),
    pytest.param(inet(chain("a", "input", "tcp dport 44224 accept"),
                      chain("b", "input", "tcp dport vmap { 44224 : drop, 22 : accept }")),
                 FAILED, ("drop", "b", "tcp dport vmap { 22 : accept, 44224 : drop }"),
                 id="accept-in-one-base-chain-drop-in-another"),
])
async def test_firewall_inbound(rules: str, reason: Reason | None,
                                first: tuple[str, str, str] | None,
                                nft_rules: Load, trace: Trace) -> None:
    nft_rules(rules)
    error = await outcome(local.Spec("firewall-inbound", port=44224), trace)
    assert (error and error.reason) == reason
    if first is None:
        assert trace.facts["blocking"] == trace.facts["uncertain"] == []
        return
    assert error is not None and "tcp/44224 inbound" in error.detail
    verdict, chain_name, text = first
    ref = rules_in(trace, "blocking" if reason is FAILED else "uncertain")[0]
    assert (ref["verdict"], ref["chain"], ref["rule"]) == (verdict, chain_name, text)
    assert ref["traffic"] == ["tcp/44224 inbound"]
    assert isinstance(ref["handle"], int) or text == "policy drop"
    if reason is FAILED:
        assert ("rejects" if verdict == "reject" else "drops") in error.detail
        assert "ufw allow 44224/tcp" in error.detail


@needs_netns
@pytest.mark.parametrize(("rules", "reason", "text", "traffic"), [
    pytest.param(inet(chain("output", "output", "ip daddr 168.63.129.16 drop")), FAILED,
                 "ip daddr 168.63.129.16 drop", ALL_PLATFORM_SERVICES, id="drop-to-platform"),
    pytest.param(table("ip", chain("out", "output",
                                   "ip daddr { 10.0.0.0/8, 168.63.128.0/23 } reject")),
                 FAILED, "ip daddr { 10.0.0.0/8, 168.63.128.0/23 } reject", ALL_PLATFORM_SERVICES,
                 id="reject-to-prefix-in-set"),
    pytest.param(inet(chain("output", "output", "tcp dport 32526 drop")), FAILED,
                 "tcp dport 32526 drop", ["tcp/32526 to 168.63.129.16"],
                 id="drop-wireserver-port-to-anyone"),
    pytest.param(inet(chain("input", "input", "ip saddr 168.63.129.16 tcp dport 80 drop")), FAILED,
                 "ip saddr 168.63.129.16 tcp dport 80 drop", ["inbound traffic from 168.63.129.16"],
                 id="drop-some-traffic-from-platform"),
    pytest.param(inet(chain("input", "input", *DEFAULT_DENY, policy="drop"),
                      chain("output", "output", "ip daddr 10.0.0.0/8 drop",
                            "ip daddr != 168.63.129.16 tcp dport 25 drop")),
                 None, None, [], id="default-deny-inbound-is-fine"),
])
async def test_firewall_platform(rules: str, reason: Reason | None, text: str | None,
                                 traffic: list[str], nft_rules: Load,
                                 trace: Trace) -> None:
    nft_rules(rules)
    error = await outcome(local.Spec("firewall-platform", address=PLATFORM), trace)
    assert (error and error.reason) == reason
    if reason is None:
        assert trace.facts["blocking"] == [] and len(rules_in(trace, "chains")) == 2
        return
    [ref] = rules_in(trace, "blocking")
    assert (ref["rule"], ref["traffic"]) == (text, traffic)
    assert error is not None and "allow 168.63.129.16 in both directions" in error.detail


UFW_ON_IPTABLES_NFT = """*filter
:INPUT DROP [0:0]
:OUTPUT ACCEPT [0:0]
:ufw-before-input - [0:0]
:ufw-user-input - [0:0]
-A INPUT -j ufw-before-input
-A ufw-before-input -i lo -j ACCEPT
-A ufw-before-input -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A ufw-before-input -m conntrack --ctstate INVALID -j DROP
-A ufw-before-input -j ufw-user-input
-A ufw-user-input -p tcp --dport 22 -j ACCEPT
-A ufw-user-input -p tcp -m multiport --dports 8000:9000 -j ACCEPT
-A ufw-user-input -m state --state NEW -p tcp --dport 5000 -j ACCEPT
-A ufw-user-input -p tcp --dport 44224 -j DROP
-A OUTPUT -d 168.63.129.16/32 -j REJECT
COMMIT
"""


@needs_netns
@pytest.mark.skipif(shutil.which("iptables-nft-restore") is None, reason="needs iptables-nft")
@pytest.mark.parametrize(("spec", "reason", "rule"), [
    (local.Spec("firewall-inbound", port=22), None, None),
    (local.Spec("firewall-inbound", port=8787), None, None),  # multiport 8000:9000
    (local.Spec("firewall-inbound", port=5000), None, None),  # --state NEW
    (local.Spec("firewall-inbound", port=44224), FAILED,
     "tcp dport 44224 counter packets 0 bytes 0 drop"),
    (local.Spec("firewall-inbound", port=1234), FAILED, "policy drop"),
    (local.Spec("firewall-platform", address=PLATFORM), FAILED,
     "ip daddr 168.63.129.16 counter packets 0 bytes 0 reject"),
], ids=["22", "multiport", "state-new", "dropped", "default-deny", "platform-reject"])
async def test_firewall_iptables_nft(spec: local.Spec, reason: Reason | None, rule: str | None,
                                     nft_rules: Load, trace: Trace) -> None:
    """iptables-nft rules as ufw writes them: conntrack, state and multiport are `xt` blobs in
    nft's JSON, read through nft's translation in the rule text; -j REJECT is an xt target."""
    nft_rules(UFW_ON_IPTABLES_NFT, "iptables-nft-restore")
    error = await outcome(spec, trace)
    assert (error and error.reason) == reason
    assert [r["rule"] for r in rules_in(trace, "blocking")] == ([rule] if rule else [])
    assert rules_in(trace, "uncertain") == []


@needs_netns
async def test_firewall_empty_ruleset_passes(nft_rules: Load,
                                             trace: Trace) -> None:
    assert await outcome(local.Spec("firewall-inbound", port=22), trace) is None
    assert trace.facts["chains"] == [] and trace.facts["firewall"] == "nftables"


@needs_netns
async def test_firewall_legacy_iptables_is_inconclusive(nft_rules: Load,
                                                        trace: Trace) -> None:
    """nft cannot see rules in the legacy backend: a clean nft reading proves nothing then."""
    local.LEGACY_IPTABLES.write_text("filter\nnat\n")
    error = await outcome(local.Spec("firewall-inbound", port=22), trace)
    assert error is not None and error.reason is INCONCLUSIVE and "iptables-legacy" in error.detail
    assert trace.facts["legacy_iptables"] == ["filter", "nat"]


@needs_netns
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop root")
async def test_firewall_not_root_is_inconclusive(nft_rules: Load, trace: Trace,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    drop_root = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all")
    monkeypatch.setattr(local, "NFT", (*drop_root, *local.NFT))
    error = await outcome(local.Spec("firewall-inbound", port=22), trace)
    assert error is not None and error.reason is INCONCLUSIVE and "needs root" in error.detail


async def test_firewall_without_nft_is_inconclusive(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    trace: Trace) -> None:
    monkeypatch.setattr(local, "NFT", (str(tmp_path / "nft"),))
    error = await outcome(local.Spec("firewall-platform", address=PLATFORM), trace)
    assert error is not None and error.reason is INCONCLUSIVE
    assert error.detail.startswith(f"cannot run {tmp_path / 'nft'}")


async def test_firewall_deadline_leaves_no_nft_behind(monkeypatch: pytest.MonkeyPatch, trace: Trace,
                                                      unit: float) -> None:
    """No timer of its own: the engine's scope cuts a hung nft off, and the child is killed."""
    monkeypatch.setattr(local, "NFT", ("sh", "-c", "exec sleep 30", "nft"))
    children = set(psutil.Process().children())
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(6 * unit):
            await local.run(local.Spec("firewall-inbound", port=22), (), trace)
    assert trace.current == "inspect"
    assert set(psutil.Process().children()) == children
