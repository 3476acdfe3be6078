"""Node-local requirements, read on the node without sending a packet: an inbound port has a
listener (I-01 44224, I-04 22), no local netfilter rule drops that port or Azure's platform
address (Azure DNS, given by the planner: I-05), the node runs Ubuntu (attached VMs, HDInsight), and Docker's
default bridge does not overlap the VNet (failure mode 19). The NSG, UDRs and Azure Firewall are
invisible from here; these checks cover what only the node can see.

One phase, "inspect". Pass: return with facts. Unmet: `ProbeError(LOCAL_CHECK_FAILED)` whose
detail names the problem and the local fix. Cannot tell (no privilege, `nft` missing, a file
unreadable, or the outcome hangs on a rule this module cannot evaluate):
`ProbeError(LOCAL_INCONCLUSIVE)`. `addresses` is unused: a local check has no peer.

The firewall checks read the nftables ruleset (`nft -j list ruleset`: iptables-nft, and so ufw
and Docker, included) through probes._nftables, whose docstring says what that reading
understands and what it does not. An outcome that hangs on a rule it cannot evaluate ends
inconclusive, never pass; so do loaded legacy iptables tables (nft cannot see their rules) under
an otherwise clean reading."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]  # stubs are optional

from probes import _nftables
from probes._nftables import INBOUND, OPEN, OUTBOUND, Finding, Traffic
from probes._trace import Fact, ProbeError, Trace
from probes.reasons import Reason
from probes.specs import LocalSpec as Spec

# What the node itself sends to the platform address: DNS, the WireServer (VM agent) on 80 and
# 32526, and 443 (WIRE); health probes come the other way.
PLATFORM_SERVICES: tuple[tuple[str, int], ...] = (
    ("udp", 53), ("tcp", 53), ("tcp", 80), ("tcp", 443), ("tcp", 32526))
DOCKER_DEFAULT_BRIDGE = ipaddress.IPv4Network("172.17.0.0/16")

# Injectable for tests: read at call time.
NFT: tuple[str, ...] = ("nft",)  # argv prefix; a test runs it inside its own network namespace
OS_RELEASE = Path("/etc/os-release")
DOCKER_DAEMON_JSON = Path("/etc/docker/daemon.json")
DOCKER_BRIDGE = "docker0"
# Files a container runtime leaves inside its containers: Docker's, podman's, systemd's (nspawn and
# others write the container type there at boot).
CONTAINER_MARKERS: tuple[Path, ...] = (Path("/.dockerenv"), Path("/run/.containerenv"), Path("/run/systemd/container"))
LEGACY_IPTABLES = Path("/proc/net/ip_tables_names")  # tables of the legacy backend, per netns


async def run(spec: Spec, addresses: tuple[str, ...], trace: Trace) -> None:
    with trace.phase("inspect"):
        _validate(spec)
        await _CHECKS[spec.check](spec, trace)


def _validate(spec: Spec) -> None:
    """A malformed spec is the planner's bug: a ValueError, which the engine reports as
    probe.internal for this check alone (the engine builds specs outside its error boundary, so
    the dataclass itself does not refuse them)."""
    if spec.check not in _CHECKS:
        raise ValueError(f"unknown local check {spec.check!r}; known: {', '.join(_CHECKS)}")
    if spec.protocol not in ("tcp", "udp"):
        raise ValueError(f"protocol must be tcp or udp, not {spec.protocol!r}")
    if spec.check in ("listening", "firewall-inbound") and not 0 < (spec.port or 0) < 65536:
        raise ValueError(f"the {spec.check} check needs a port in 1..65535, not {spec.port!r}")
    if spec.address is not None:
        ipaddress.IPv4Address(spec.address)  # the firewall reading models IPv4 only
    for subnet in spec.subnets:
        ipaddress.ip_network(subnet, strict=False)


def _failed(detail: str) -> ProbeError:
    return ProbeError(Reason.LOCAL_CHECK_FAILED, detail)


def _inconclusive(detail: str) -> ProbeError:
    return ProbeError(Reason.LOCAL_INCONCLUSIVE, detail)


# --- listening ---------------------------------------------------------------------------------


async def _listening(spec: Spec, trace: Trace) -> None:
    """Pass when a socket on the port is bound to a wildcard or non-loopback address: a
    loopback-only listener is unreachable from the VNet, so it fails with the bind fix."""
    target = f"{spec.protocol}/{spec.port}"
    try:  # walks /proc/*/fd for the owning pids: off the event loop
        connections = await asyncio.to_thread(psutil.net_connections, "inet")
    except (psutil.Error, OSError) as exc:
        raise _inconclusive(f"cannot list this node's sockets: {exc}") from exc
    kind = socket.SOCK_STREAM if spec.protocol == "tcp" else socket.SOCK_DGRAM
    sockets = dict.fromkeys(
        (c.laddr.ip, c.pid) for c in connections
        if c.type == kind and c.laddr and c.laddr.port == spec.port
        and (c.status == psutil.CONN_LISTEN if kind == socket.SOCK_STREAM else not c.raddr))
    listeners: list[Fact] = [
        {"address": ip, "port": spec.port, "pid": pid, "process": _process(pid)}
        for ip, pid in sockets]
    trace.note(listeners=listeners)
    if any(not ipaddress.ip_address(ip.partition("%")[0]).is_loopback for ip, _ in sockets):
        return
    if not sockets:
        raise _failed(f"nothing listens on {target}: start (or fix the configuration of) the "
                      "service that should serve it")
    bound = ", ".join(sorted({ip for ip, _ in sockets}))
    raise _failed(f"{target} listens only on loopback ({bound}), unreachable from the VNet: make "
                  "the service bind 0.0.0.0 or the node's address")


def _process(pid: int | None) -> str | None:
    """The owning process's name; None when the pid is hidden (not root) or already gone."""
    if pid is None:
        return None
    try:
        return str(psutil.Process(pid).name())
    except psutil.Error:
        return None


# --- os ----------------------------------------------------------------------------------------


async def _os(spec: Spec, trace: Trace) -> None:
    """Azure ML attaches only Ubuntu VMs (and HDInsight runs Ubuntu): ID=ubuntu passes."""
    path = OS_RELEASE
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise _inconclusive(f"cannot read {path}: {exc.strerror or exc}") from exc
    release: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.startswith("#"):
            release[name.strip()] = value.strip().strip("\"'")
    os_id = release.get("ID", "").lower()
    trace.note(id=os_id or None, version_id=release.get("VERSION_ID"),
               pretty_name=release.get("PRETTY_NAME"))
    if os_id == "ubuntu":
        return
    name = release.get("PRETTY_NAME") or os_id or "an unidentified OS"
    raise _failed(f"the node runs {name} (ID={os_id or 'unset'}), not Ubuntu: Azure ML supports "
                  "only Ubuntu for attached VMs and HDInsight; use an Ubuntu image")


# --- docker-bridge -----------------------------------------------------------------------------


async def _docker_bridge(spec: Spec, trace: Trace) -> None:
    """Containers on Docker's bridge cannot reach VNet addresses inside the bridge's range: it
    must overlap none of the given subnets (or, given none, the node's own networks)."""
    interfaces = _interface_networks()
    if spec.vantage and DOCKER_BRIDGE not in interfaces:
        raise _inconclusive(f"diagnosed from {spec.vantage}: the Docker bridge that matters is the host's, which "
                            "cannot be seen from here; run the check on the host")
    bridge, bridge_source = _bridge(interfaces.pop(DOCKER_BRIDGE, []))
    if spec.subnets:
        subnets = [ipaddress.ip_network(s, strict=False) for s in spec.subnets]
        subnets_source = "spec"
    else:
        subnets = [n for networks in interfaces.values() for n in networks]
        subnets_source = "interfaces"
    overlapping = [str(n) for n in subnets if n.version == 4 and n.overlaps(bridge)]
    trace.note(bridge=str(bridge), bridge_source=bridge_source, subnets=[str(n) for n in subnets],
               subnets_source=subnets_source, overlapping=[*overlapping])
    if overlapping:
        raise _failed(f"Docker's bridge {bridge} ({bridge_source}) overlaps "
                      f"{', '.join(overlapping)}: containers cannot reach those addresses; set "
                      f"\"bip\" in {DOCKER_DAEMON_JSON} to an unused range (then restart docker), "
                      "or use another address space")


def _bridge(docker0: list[ipaddress.IPv4Network]) -> tuple[ipaddress.IPv4Network, str]:
    """The bridge's network and where it came from: the live docker0 interface, else daemon.json's
    "bip", else Docker's default. Inside a container there is no default to assume: the bridge
    that matters is the host's, out of sight, and the container's own network is usually on it
    (172.17.0.0/16 on Docker's default bridge), which is no overlap with the VNet."""
    if docker0:
        return docker0[0], DOCKER_BRIDGE
    path = DOCKER_DAEMON_JSON
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return _default_bridge()
    except (OSError, ValueError) as exc:
        raise _inconclusive(f"cannot read {path}: {exc}") from exc
    bip = config.get("bip") if isinstance(config, dict) else None
    if bip is None:
        return _default_bridge()
    try:
        return ipaddress.IPv4Interface(bip).network, f"{path} bip"
    except ValueError as exc:
        raise _inconclusive(f"{path}: bip {bip!r} is not an IPv4 address/prefix") from exc


def _default_bridge() -> tuple[ipaddress.IPv4Network, str]:
    marker = next((path for path in CONTAINER_MARKERS if path.exists()), None)
    if marker is not None:
        raise _inconclusive(f"this runs inside a container ({marker} exists): the Docker bridge that "
                            "matters is the host's, which cannot be seen from here; run the check on the host")
    return DOCKER_DEFAULT_BRIDGE, "default"


def _interface_networks() -> dict[str, list[ipaddress.IPv4Network]]:
    """IPv4 networks per interface, without loopback and link-local ones."""
    networks: dict[str, list[ipaddress.IPv4Network]] = {}
    for name, entries in psutil.net_if_addrs().items():
        for entry in entries:
            if entry.family == socket.AF_INET and entry.netmask:
                interface = ipaddress.IPv4Interface(f"{entry.address}/{entry.netmask}")
                if not (interface.is_loopback or interface.is_link_local):
                    networks.setdefault(name, []).append(interface.network)
    return networks


# --- firewall: the checks ----------------------------------------------------------------------


async def _firewall_inbound(spec: Spec, trace: Trace) -> None:
    """No local rule drops or rejects new inbound spec.protocol/spec.port from the VNet."""
    assert spec.port is not None  # Spec refuses the check without one
    traffic = Traffic(f"{spec.protocol}/{spec.port} inbound", INBOUND, "dport",
                      protocol=spec.protocol, dport=spec.port)
    await _firewall(trace, [traffic],
                    f"accept {spec.protocol}/{spec.port} inbound before it (e.g. `ufw allow "
                    f"{spec.port}/{spec.protocol}`)")


async def _firewall_platform(spec: Spec, trace: Trace) -> None:
    """No local rule drops or rejects the node's own traffic to the platform address (DNS,
    WireServer) nor any inbound traffic from it (health probes): WIRE says blocking it breaks
    DNS, DHCP, the VM agent and health probes."""
    address = ipaddress.IPv4Address(spec.address)
    traffic = [Traffic(f"{protocol}/{port} to {address}", OUTBOUND, "daddr", protocol=protocol,
                       dport=port, daddr=address) for protocol, port in PLATFORM_SERVICES]
    traffic.append(Traffic(f"inbound traffic from {address}", INBOUND, "saddr", protocol=OPEN,
                           sport=OPEN, dport=OPEN, saddr=address, policy_counts=False))
    await _firewall(trace, traffic, f"allow {address} in both directions: it is Azure's platform "
                                    "address (DNS, DHCP, VM agent, health probes)")


async def _firewall(trace: Trace, traffic: list[Traffic], fix: str) -> None:
    trace.note(firewall="nftables")
    ruleset = await _nftables.read(NFT)
    trace.note(chains=[f"{c.family} {c.table} {c.name} (hook {c.hook}, policy {c.policy})"
                       for hooks in (INBOUND, OUTBOUND) for c in ruleset.base_chains(hooks)])
    blocking, uncertain = await _nftables.walk(ruleset, traffic)
    trace.note(blocking=_facts(blocking), uncertain=_facts(uncertain))
    if blocking:
        first = blocking[0]
        more = len(blocking) - 1
        raise _failed(f"nftables {'rejects' if first.verdict == 'reject' else 'drops'} "
                      f"{_labels(first.traffic)}: {_describe(first)}"
                      f"{f' (+{more} more rule(s), see facts)' if more else ''}; "
                      f"{'remove it or ' if first.handle is not None else ''}{fix}")
    if uncertain:
        first = uncertain[0]
        raise _inconclusive(f"cannot tell whether {_labels(first.traffic)} is allowed: it depends "
                            f"on {_describe(first)}, a condition this check cannot evaluate on "
                            "the node (facts.uncertain lists every rule involved)")
    legacy = _nftables.legacy_tables(LEGACY_IPTABLES)
    if legacy:
        trace.note(legacy_iptables=[*legacy])
        raise _inconclusive(f"nftables does not block {_labels([t.label for t in traffic])}, "
                            f"but legacy iptables tables ({', '.join(legacy)}) are loaded and nft "
                            "cannot see their rules: inspect them with `iptables-legacy -S`")


def _labels(labels: Sequence[str]) -> str:
    return labels[0] + (f" (and {len(labels) - 1} more)" if len(labels) > 1 else "")


def _describe(finding: Finding) -> str:
    where = f"{finding.family} {finding.table} {finding.chain}"
    if finding.handle is None:
        return f"the policy {finding.verdict} of chain {where}, with no rule accepting it first"
    return (f"chain {where} rule handle {finding.handle}"
            + (f" `{finding.text}`" if finding.text else ""))


def _facts(findings: list[Finding]) -> list[Fact]:
    return [{"family": f.family, "table": f.table, "chain": f.chain, "handle": f.handle,
             "verdict": f.verdict, "traffic": list(f.traffic),
             "rule": f"policy {f.verdict}" if f.handle is None else f.text}
            for f in findings]


_CHECKS: dict[str, Callable[[Spec, Trace], Awaitable[None]]] = {
    "listening": _listening,
    "firewall-inbound": _firewall_inbound,
    "firewall-platform": _firewall_platform,
    "os": _os,
    "docker-bridge": _docker_bridge,
}
