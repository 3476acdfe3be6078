"""Where a run looks from: this node's own network namespace, or another one (a container's,
where the training job really runs). The process enters it before anything is probed, as
`ip netns exec` and `nsenter` do: the network namespace (setns), and, in a private mount namespace
of its own, the resolver files of that vantage bound over /etc/resolv.conf and /etc/hosts, so the
system resolver (getaddrinfo) and the dns probe read what the job's resolver reads. Nothing else
of the process changes: its modules, config and output files stay the host's.

Entering needs CAP_SYS_ADMIN and a process with one thread (unshare(CLONE_NEWNS) refuses more), so
it happens first in `check`, before the engine starts any thread or opens any socket."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from probes._trace import Fact

CLONE_NEWNS = 0x00020000  # <sched.h>; os.setns and os.unshare are Python 3.12's
CLONE_NEWNET = 0x40000000
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18  # <sys/mount.h>
RESOLVER_FILES = ("resolv.conf", "hosts")  # bound over /etc/<name> when the vantage has its own
NETNS_ETC = Path("/etc/netns")  # `ip netns`'s per-namespace resolver files
DOCKER_TIMEOUT = 10.0  # seconds for `docker inspect`: a wedged daemon must not hang a check


class VantageError(ValueError):
    """The vantage asked for cannot be entered: one line for the user."""


class Kind(StrEnum):
    HOST = "host"
    NETNS = "netns"
    CONTAINER = "container"


@dataclass(frozen=True, slots=True)
class Vantage:
    kind: Kind
    name: str  # as given: a namespace path, a container name or id
    netns: Path | None = None  # the network namespace file to enter
    resolver_files: Path | None = None  # the directory holding that vantage's resolv.conf and hosts
    # the host's own network view (probes.node.network_view), read just before entering: what the
    # vantage's findings are compared with (an MTU above the host's uplink, other resolvers)
    host: Mapping[str, Fact] | None = None

    def describe(self) -> str:
        return "this node" if self.kind is Kind.HOST else f"{self.kind.value} {self.name}"


HOST = Vantage(Kind.HOST, "")


def of_netns(path: str) -> Vantage:
    """A network namespace file (/run/netns/NAME, /proc/PID/ns/net); a named one brings `ip netns`'s
    /etc/netns/NAME files, as `ip netns exec` does."""
    target = Path(path)
    if not target.exists():
        raise VantageError(f"--netns {path}: no such file")
    named = target.parent == Path("/run/netns") and (NETNS_ETC / target.name).is_dir()
    return Vantage(Kind.NETNS, path, target, NETNS_ETC / target.name if named else None)


def of_container(ident: str) -> Vantage:
    """A running Docker container by name or id: its init process's namespace and filesystem."""
    docker = shutil.which("docker")
    if docker is None:
        raise VantageError(f"--container {ident}: the docker command is not on PATH")
    try:
        result = subprocess.run([docker, "inspect", "--format", "{{.State.Pid}}", "--", ident],
                                capture_output=True, text=True, timeout=DOCKER_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise VantageError(f"--container {ident}: docker inspect did not answer in {DOCKER_TIMEOUT:g}s") from None
    pid = result.stdout.strip()
    if result.returncode != 0 or not pid.isdigit():
        why = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        raise VantageError(f"--container {ident}: {why}")
    if pid == "0":
        raise VantageError(f"--container {ident}: the container is not running")
    return Vantage(Kind.CONTAINER, ident, Path(f"/proc/{pid}/ns/net"), Path(f"/proc/{pid}/root/etc"))


def enter(vantage: Vantage) -> Vantage:
    """Move this process into the vantage (for HOST nothing) and return it with the host's network
    view, read first. Raises VantageError on any refusal (not root, more than one thread, a file
    that is no network namespace)."""
    if vantage.netns is None:
        return vantage
    from probes import node

    seen = replace(vantage, host=node.network_view())
    libc = ctypes.CDLL(None, use_errno=True)
    what = f"--{vantage.kind.value} {vantage.name}"
    try:
        handle = os.open(vantage.netns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise VantageError(f"{what}: {exc.strerror}") from None
    try:
        if vantage.resolver_files is not None:
            _call(libc.unshare(CLONE_NEWNS), what, "a mount namespace of its own")
            _call(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), what, "a private mount of /")
            for name in RESOLVER_FILES:
                source = vantage.resolver_files / name
                if source.is_file():
                    _call(libc.mount(os.fsencode(source), os.fsencode(Path("/etc") / name), None, MS_BIND, None),
                          what, f"its {name}")
        _call(libc.setns(handle, CLONE_NEWNET), what, "its network namespace")
    finally:
        os.close(handle)
    return seen


def _call(code: int, what: str, step: str) -> None:
    if code != 0:
        err = ctypes.get_errno()
        hint = {errno.EPERM: " (needs root)", errno.EINVAL: " (not a network namespace, or the process has threads)"}
        raise VantageError(f"{what}: cannot enter {step}: {os.strerror(err)}{hint.get(err, '')}")
