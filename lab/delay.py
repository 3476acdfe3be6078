"""Added delay and jitter on the lab link, inside the lab's namespaces only (never a host interface),
for the benchmark's delayed case and the lab tests of early verdicts.

`tc qdisc ... netem delay D J` on the node's end of the veth when the kernel has sch_netem. A kernel
without it (this machine's has no modules, no netem and no nft queue) gets the same from userspace,
on the az side of the link: a host route in the az namespace sends every packet toward the node into
a TUN device, and a thread here writes each one onto the az end of the veth (a packet socket, to the
node's MAC address) after its own delay, drawn uniformly from [D - J, D + J] (packets may overtake
each other, as with netem's jitter). Every round trip between the node and "Azure" is then that much
longer; the node's own routes and interfaces are untouched, so the agent sees the node as it is.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import heapq
import os
import random
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from lab import addresses
from lab.netns import AZ_IF, NODE_IF, in_ns

if TYPE_CHECKING:
    from lab._lab import Lab

TUN = "bdelay0"
_CLONE_NEWNET = 0x40000000  # os.setns and os.CLONE_NEWNET are Python 3.12's
_TUNSETIFF = 0x400454CA
_IFF_TUN, _IFF_NO_PI = 0x0001, 0x1000
_ETH_P_IP = 0x0800
_SLOW_TABLE = "177"  # the routing table (and rule priority) of a path delay's sources
_T = TypeVar("_T")


class DelayUnavailable(RuntimeError):
    """Neither netem nor a TUN device can delay the lab link here."""


@contextlib.contextmanager
def link_delay(lab: Lab, ms: float, jitter_ms: float = 0.0, seed: int | None = None) -> Iterator[str]:
    """`ms` (plus or minus up to `jitter_ms`, uniformly) of added delay on the lab link while the block
    runs; yields how ("netem" or "tun"). `seed` makes the TUN relay's draws repeatable."""
    if not 0 <= jitter_ms <= ms:
        raise ValueError(f"jitter {jitter_ms:g} ms must be within 0 and the delay {ms:g} ms")
    jitter = [f"{jitter_ms:g}ms"] if jitter_ms else []  # netem draws uniformly without a distribution table
    netem = subprocess.run(in_ns(lab.node_ns, ["tc", "qdisc", "add", "dev", NODE_IF, "root", "netem", "delay",
                                               f"{ms:g}ms", *jitter]), capture_output=True, text=True, check=False)
    if netem.returncode == 0:
        try:
            yield "netem"
        finally:
            subprocess.run(in_ns(lab.node_ns, ["tc", "qdisc", "del", "dev", NODE_IF, "root"]),
                           capture_output=True, check=False)
        return
    with _tun_delay(lab.az_ns, ms / 1000, jitter_ms / 1000, random.Random(seed)):
        yield "tun"


@contextlib.contextmanager
def path_delay(az_ns: str, ms: float, sources: tuple[str, ...]) -> Iterator[None]:
    """`ms` of added delay on one path only: what the Azure namespace sends the node from `sources`
    (addresses or networks, such as the public services' range), through the TUN relay, while every
    other answer (private endpoints, DNS, IMDS) comes at once. A scenario's slow path (`slow_from`)."""
    with _tun_delay(az_ns, ms / 1000, 0.0, random.Random(0), sources):
        yield


def _in_namespace(ns: str, make: Callable[[], _T]) -> _T:
    """make() run by a thread that has entered network namespace `ns` (setns affects only the
    calling thread), so this process stays in the host namespace; sockets and devices made there
    belong to `ns` for good."""
    made: list[_T | BaseException] = []

    def enter_and_make() -> None:
        try:
            with open(f"/run/netns/{ns}", "rb") as handle:
                if ctypes.CDLL(None, use_errno=True).setns(handle.fileno(), _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            made.append(make())
        except BaseException as error:  # handed to the caller
            made.append(error)

    thread = threading.Thread(target=enter_and_make)
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise DelayUnavailable(f"cannot set up the delay in {ns}: {made[0]}")
    return made[0]


def _open_tun() -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", TUN.encode(), _IFF_TUN | _IFF_NO_PI))
    return fd


def _ip(ns: str, *args: str) -> None:
    done = subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DelayUnavailable(f"ip {' '.join(args)}: {done.stderr.strip()}")


@contextlib.contextmanager
def _tun_delay(az: str, delay_s: float, jitter_s: float, draws: random.Random,
               sources: tuple[str, ...] = ()) -> Iterator[None]:
    """Every packet toward the node into the TUN relay, or with `sources` only theirs (policy routing:
    a rule per source into a table of its own holding the route into the TUN)."""
    tun = _in_namespace(az, _open_tun)
    link = _in_namespace(az, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0))  # sends only
    node_mac = bytes.fromhex(addresses.NODE_MAC.replace(":", ""))
    stop = threading.Event()
    pending: list[tuple[float, int, bytes]] = []  # a heap of (due, arrival number, packet)
    arrivals = 0

    def forward() -> None:
        nonlocal arrivals
        while not stop.is_set():
            wait = max(0.0, pending[0][0] - time.monotonic()) if pending else 0.05
            if select.select([tun], [], [], wait)[0]:
                with contextlib.suppress(BlockingIOError):
                    while True:
                        packet = os.read(tun, 65536)
                        due = time.monotonic() + delay_s + draws.uniform(-jitter_s, jitter_s)
                        heapq.heappush(pending, (due, arrivals, packet))
                        arrivals += 1
            now = time.monotonic()
            while pending and pending[0][0] <= now:
                with contextlib.suppress(OSError):
                    link.sendto(heapq.heappop(pending)[2], (AZ_IF, _ETH_P_IP, 0, 0, node_mac))

    thread = threading.Thread(target=forward, daemon=True)
    try:
        _ip(az, "link", "set", TUN, "up")
        # replies arrive on the veth from addresses now routed via the TUN: no reverse-path check
        subprocess.run(in_ns(az, ["sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=0",
                                  f"net.ipv4.conf.{AZ_IF}.rp_filter=0"]), capture_output=True, check=False)
        thread.start()
        for source in sources:
            _ip(az, "rule", "add", "from", source, "lookup", _SLOW_TABLE, "priority", _SLOW_TABLE)
        _ip(az, "route", "add", f"{addresses.NODE}/32", "dev", TUN, *(("table", _SLOW_TABLE) if sources else ()))
        yield
    finally:
        subprocess.run(["ip", "-n", az, "route", "del", f"{addresses.NODE}/32", "dev", TUN,
                        *(("table", _SLOW_TABLE) if sources else ())], capture_output=True, check=False)
        for source in sources:
            subprocess.run(["ip", "-n", az, "rule", "del", "from", source, "lookup", _SLOW_TABLE],
                           capture_output=True, check=False)
        stop.set()
        if thread.is_alive():
            thread.join()
        link.close()
        os.close(tun)  # a non-persistent TUN device goes with its last descriptor
