"""The lab's topology: two network namespaces joined by one veth pair, and nftables faults; in
scenarios with a network virtual appliance (forced tunnelling) a third one between them, a Linux
router that forwards, answers ICMP time exceeded as any router does, and drops what its own faults say.

Nothing here touches the host namespace: the veth pair is created inside the node namespace
with its peer placed straight into the az namespace, and no route, NAT or link leads out.
A scenario with a container adds one more behind a bridge in the node, as Docker's default
network is. Namespace names carry the owning pid (`amlnc-<pid>-<n>-node|az|nva|ctr`), so namespaces left behind by
a dead owner are recognised and removed by the next lab.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lab import addresses
from lab.scenarios import Fault

PREFIX = "amlnc"
NETNS_ETC = Path("/etc/netns")
NODE_IF = "eth0"
AZ_IF = "vnet0"
NVA_NODE_IF, NVA_AZ_IF = "lan0", "wan0"  # the appliance's ends: toward the node, toward Azure
_NAME = re.compile(rf"^{PREFIX}-(?P<pid>\d+)-(?P<n>\d+)(?:-node|-az|-nva|-ctr)?$")
CONTAINER_IF, BRIDGE_IF, BRIDGE_PORT_IF = "eth0", "docker0", "veth0"  # the container's end, the node's
INTERNET_NODE_IF, INTERNET_AZ_IF = "inet0", "inet1"  # next hop Internet, around the appliance
_INTERNET_TABLE = "100"  # the az namespace's replies from routed-around addresses go back that way
_AZ_SYSCTLS = (
    "net.ipv4.icmp_ratelimit=0",
    "net.ipv4.icmp_msgs_per_sec=100000",
    "net.ipv4.icmp_msgs_burst=100000",
)
_VERDICTS = {
    "drop": "drop",
    "reset": "reject with tcp reset",
    "reject-port": "reject with icmp type port-unreachable",
    "reject-admin": "reject with icmp type admin-prohibited",
}


class LabUnavailable(RuntimeError):
    """The lab cannot be built on this machine (not root, tools missing, no namespaces)."""


class CommandFailed(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Namespaces:
    node: str
    az: str
    nva: str  # created only for a scenario with an appliance
    ctr: str  # created only for a scenario with a container behind the node's Docker bridge

    @classmethod
    def for_instance(cls, pid: int, n: int) -> Namespaces:
        base = f"{PREFIX}-{pid}-{n}"
        return cls(f"{base}-node", f"{base}-az", f"{base}-nva", f"{base}-ctr")


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise LabUnavailable("the lab needs root (network namespaces, veth, nftables)")
    for tool in ("ip", "nft", "sysctl"):
        if shutil.which(tool) is None:
            raise LabUnavailable(f"the lab needs the `{tool}` command, which is not on PATH")


def run(argv: Sequence[str], *, stdin: str | None = None) -> str:
    result = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise CommandFailed(f"{' '.join(argv)}: {detail[-1] if detail else result.returncode}")
    return result.stdout


def in_ns(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def build(names: Namespaces, *, resolvers: Sequence[str], hosts: str, appliance: bool = False,
          node_mtu: int | None = None, container_mtu: int | None = None) -> None:
    """Create the namespaces and wire them (faults come later, from set_faults); the caller
    destroys them if this raises. `ip netns exec` bind-mounts the node's resolv.conf and hosts
    over /etc's, so the agent reads them where a node's processes do. With `appliance` the node's
    link ends in the appliance, which holds the gateway address and routes on to the az namespace."""
    try:
        run(["ip", "netns", "add", names.node])
    except CommandFailed as error:
        raise LabUnavailable(f"cannot create network namespaces: {error}") from None
    run(["ip", "netns", "add", names.az])
    etc = NETNS_ETC / names.node
    try:
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("".join(f"nameserver {r}\n" for r in resolvers))
        (etc / "hosts").write_text(hosts)
    except OSError as error:
        raise LabUnavailable(f"cannot write the node's resolver configuration: {error}") from None

    if appliance:
        _build_appliance(names)
    else:
        veth = f"link add {NODE_IF} address {addresses.NODE_MAC} type veth peer name {AZ_IF}"
        run(["ip", "-n", names.node, *veth.split(), "netns", names.az])
    _batch(
        names.node,
        [
            "link set lo up",
            f"link set {NODE_IF} up",
            f"addr add {addresses.NODE}/24 dev {NODE_IF}",
            f"route add default via {addresses.GATEWAY} dev {NODE_IF}",
            *([f"link set {NODE_IF} mtu {node_mtu}"] if node_mtu is not None else []),
        ],
    )
    if container_mtu is not None:
        _build_container(names, container_mtu, resolvers=resolvers, hosts=hosts)
    _batch(
        names.az,
        [
            "link set lo up",
            f"link set {AZ_IF} up",
            *([f"addr add {addresses.NVA_UPLINK_AZ}/30 dev {AZ_IF}",
               f"route add {addresses.NODE_SUBNET} via {addresses.NVA_UPLINK}"] if appliance
              else [f"addr add {addresses.GATEWAY}/24 dev {AZ_IF}"]),
            *(f"route add local {prefix} dev lo" for prefix in addresses.LOCAL_PREFIXES),
        ],
    )
    # ICMP errors are the evidence of reject faults: never let the kernel rate-limit them away
    run(in_ns(names.az, ["sysctl", "-q", "-w", *_AZ_SYSCTLS]))


def _build_appliance(names: Namespaces) -> None:
    """node eth0 -- lan0 appliance wan0 -- vnet0 az: the appliance is the node's gateway and
    forwards everything (its faults are set apart, set_appliance_faults)."""
    run(["ip", "netns", "add", names.nva])
    node_link = f"link add {NODE_IF} address {addresses.NODE_MAC} type veth peer name {NVA_NODE_IF}"
    run(["ip", "-n", names.node, *node_link.split(), "netns", names.nva])
    run(["ip", "-n", names.nva, *f"link add {NVA_AZ_IF} type veth peer name {AZ_IF}".split(), "netns", names.az])
    _batch(names.nva, [
        "link set lo up", f"link set {NVA_NODE_IF} up", f"link set {NVA_AZ_IF} up",
        f"addr add {addresses.GATEWAY}/24 dev {NVA_NODE_IF}",
        f"addr add {addresses.NVA_UPLINK}/30 dev {NVA_AZ_IF}",
        f"route add default via {addresses.NVA_UPLINK_AZ}",
    ])
    run(in_ns(names.nva, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1", *_AZ_SYSCTLS]))
    set_appliance_faults(names.nva, [])


def _build_container(names: Namespaces, mtu: int, *, resolvers: Sequence[str], hosts: str) -> None:
    """node docker0 (a bridge) -- veth0 .. eth0 container: Docker's default bridge network, every
    link at `mtu` (Docker's is 1500 whatever the host's uplink), the node forwarding and
    masquerading the container's traffic out of its own uplink."""
    run(["ip", "netns", "add", names.ctr])
    etc = NETNS_ETC / names.ctr
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "resolv.conf").write_text("".join(f"nameserver {r}\n" for r in resolvers))
    (etc / "hosts").write_text(hosts)
    run(["ip", "-n", names.node, *f"link add {BRIDGE_PORT_IF} type veth peer name {CONTAINER_IF}".split(),
         "netns", names.ctr])
    bridge = f"{addresses.DOCKER_BRIDGE_ADDRESS}/{addresses.DOCKER_PREFIX}"
    _batch(names.node, [
        f"link add {BRIDGE_IF} type bridge", f"link set {BRIDGE_IF} mtu {mtu}", f"addr add {bridge} dev {BRIDGE_IF}",
        f"link set {BRIDGE_PORT_IF} mtu {mtu}", f"link set {BRIDGE_PORT_IF} master {BRIDGE_IF}",
        f"link set {BRIDGE_PORT_IF} up", f"link set {BRIDGE_IF} up",
    ])
    _batch(names.ctr, [
        "link set lo up", f"link set {CONTAINER_IF} mtu {mtu}", f"link set {CONTAINER_IF} up",
        f"addr add {addresses.CONTAINER}/{addresses.DOCKER_PREFIX} dev {CONTAINER_IF}",
        f"route add default via {addresses.DOCKER_BRIDGE_ADDRESS}",
    ])
    run(in_ns(names.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))
    bridged = f"{addresses.DOCKER_BRIDGE_ADDRESS}/{addresses.DOCKER_PREFIX}"
    masquerade = ["table ip docker {",
                  "  chain postrouting { type nat hook postrouting priority srcnat; policy accept;",
                  f"    ip saddr {bridged} oifname {NODE_IF} masquerade", "  }", "}"]
    run(in_ns(names.node, ["nft", "-f", "-"]), stdin="".join(f"{line}\n" for line in masquerade))


def route_around(names: Namespaces, destinations: Sequence[str]) -> None:
    """Routes with next hop Internet in the compute subnet's route table, as a forced tunnel's fix
    adds them for Azure ML's service tags: these destinations leave the node by a link of their own
    straight to Azure, never through the appliance, and Azure answers them the same way."""
    run(["ip", "-n", names.node, *f"link add {INTERNET_NODE_IF} type veth peer name {INTERNET_AZ_IF}".split(),
         "netns", names.az])
    _batch(names.node, [f"addr add {addresses.INTERNET_NODE}/30 dev {INTERNET_NODE_IF}",
                        f"link set {INTERNET_NODE_IF} up",
                        *(f"route add {d}/32 via {addresses.INTERNET_AZ} dev {INTERNET_NODE_IF}"
                          for d in destinations)])
    _batch(names.az, [f"addr add {addresses.INTERNET_AZ}/30 dev {INTERNET_AZ_IF}", f"link set {INTERNET_AZ_IF} up",
                      f"route add {addresses.NODE_SUBNET} via {addresses.INTERNET_NODE} table {_INTERNET_TABLE}",
                      *(f"rule add from {d}/32 table {_INTERNET_TABLE}" for d in destinations)])


def set_appliance_faults(nva: str, faults: Iterable[tuple[Fault, str | None]]) -> None:
    """Replace the appliance's forwarding rules, atomically: what it drops or rejects on the way
    from the node to Azure (a firewall NVA without the rule for a flow)."""
    rules = [f"add rule inet nva forward iifname {NVA_NODE_IF}" + _match(f, address) + f" counter {_VERDICTS[f.action]}"
             for f, address in faults]
    table = ["table inet nva {", "  chain forward { type filter hook forward priority filter; policy accept; }", "}",
             "flush chain inet nva forward"]
    run(in_ns(nva, ["nft", "-f", "-"]), stdin="".join(f"{line}\n" for line in [*table, *rules]))


def _match(fault: Fault, address: str | None) -> str:
    return ((f" ip daddr {address}" if address else "")
            + (f" {fault.protocol} dport {fault.port}" if fault.port else f" meta l4proto {fault.protocol}"))


def _batch(ns: str, commands: Sequence[str]) -> None:
    run(["ip", "-n", ns, "-batch", "-"], stdin="".join(f"{c}\n" for c in commands))


def set_faults(
    az: str, faults: Iterable[tuple[Fault, str | None]], *, path_mtu: int | None = None,
    unrouted: tuple[str, str] | None = None,
) -> None:
    """Replace the az namespace's fault rules, atomically, by (fault, destination address or
    network). path_mtu: a black hole for TCP 443 packets toward the node larger than that, with
    ICMP fragmentation-needed filtered both ways, so nobody learns of it. unrouted: (user,
    network): that user's connections to the network fail with network-unreachable, as from a
    host without a route there (the proxy in a hub without a route to the private endpoints)."""
    rules = [f"add rule inet lab input iifname {AZ_IF}" + _match(f, address) + f" counter {_VERDICTS[f.action]}"
             for f, address in faults]
    if path_mtu is not None:
        frag_needed = "icmp type destination-unreachable icmp code frag-needed counter drop"
        rules += [
            f"add rule inet lab output oifname {AZ_IF} tcp sport 443 meta length > {path_mtu} drop",
            f"add rule inet lab output oifname {AZ_IF} {frag_needed}",
            f"add rule inet lab input iifname {AZ_IF} {frag_needed}",
        ]
    if unrouted is not None:
        user, network = unrouted
        rules.append(f"add rule inet lab output meta skuid {user} ip daddr {network}"
                     " counter reject with icmp type net-unreachable")
    table = [
        "table inet lab {",
        "  chain input { type filter hook input priority filter; policy accept; }",
        "  chain output { type filter hook output priority filter; policy accept; }",
        "}",
        "flush chain inet lab input",
        "flush chain inet lab output",
    ]
    run(in_ns(az, ["nft", "-f", "-"]), stdin="".join(f"{line}\n" for line in [*table, *rules]))


def destroy(names: Namespaces) -> None:
    """Kill what still runs inside, delete the namespaces and their /etc/netns entries.
    Best effort and idempotent: teardown must get as far as it can."""
    for ns in (names.node, names.az, names.nva, names.ctr):
        _remove(ns)


def _remove(ns: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
    for pid in pids.stdout.split():  # only processes inside this lab namespace
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
    shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)


def is_lab_name(name: str) -> bool:
    """Whether name is a lab resource name: `amlnc-<pid>-<n>`, optionally `-node` or `-az`."""
    return _NAME.match(name) is not None


def owner_of(name: str) -> int:
    """The owning pid encoded in a lab resource name."""
    match = _NAME.match(name)
    if match is None:
        raise ValueError(f"not a lab resource name: {name!r}")
    return int(match["pid"])


def owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lab_namespaces() -> list[str]:
    """Names of every lab namespace on this machine, whoever owns it."""
    result = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    names = (line.split()[0] for line in result.stdout.splitlines() if line.strip())
    return [name for name in names if is_lab_name(name)]


def remove_stale() -> list[str]:
    """Remove lab namespaces (and /etc/netns entries) whose owning process is gone."""
    candidates = set(lab_namespaces())
    if NETNS_ETC.is_dir():
        candidates |= {p.name for p in NETNS_ETC.iterdir() if is_lab_name(p.name)}
    stale = sorted(ns for ns in candidates if not owner_alive(owner_of(ns)))
    for ns in stale:
        _remove(ns)
    return stale
