"""One running lab: namespaces, CAs, the server process and the faults, and their teardown.

Teardown is complete on every way out of the with-block: normal exit, exceptions, Ctrl-C, and
SIGTERM/SIGHUP (turned into SystemExit while a lab is up, so the block unwinds). If the owner
is killed outright, the servers exit on their own (their stdin pipe closes) and the next lab
removes the namespaces and work directory it left behind.
"""

from __future__ import annotations

import atexit
import ipaddress
import itertools
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from lab import addresses, netns, nginx, pki, samba, squid
from lab.config import ServerConfig
from lab.netns import LabUnavailable, Namespaces
from lab.scenarios import Fault, Scenario
from lab.zones import node_resolver, node_resolvers, zones_of

READY_TIMEOUT = 20.0
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The lab's servers start as `python -m <_PACKAGE>.servers` with _PACKAGE_ROOT on PYTHONPATH: `lab`
# in the checkout, `aml_netcheck.lab` as installed (packaging/make_wheel_tree.py).
_PACKAGE = __name__.rpartition(".")[0]
_PACKAGE_ROOT = Path(__file__).resolve().parents[__name__.count(".")]
_counter = itertools.count()
_active: list[Lab] = []
_previous_handlers: dict[int, Any] = {}
NODE_MANAGEMENT_PORT = 44224
_EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Lab:
    """A simulated Azure VNet for one scenario; use as a context manager."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        n = next(_counter)
        names = Namespaces.for_instance(os.getpid(), n)
        self.node_ns: str = names.node
        self.az_ns: str = names.az
        # the container's network namespace, for `check --netns` (scenarios with container_mtu)
        self.container_netns: str | None = (f"/run/netns/{names.ctr}" if scenario.container_mtu is not None
                                            else None)
        self.workdir = Path(tempfile.gettempdir()) / f"{netns.PREFIX}-{os.getpid()}-{n}"
        self.ca_bundle: str = str(self.workdir / "ca-bundle.pem")  # the node's trust store
        self.bringup_seconds: float | None = None
        self._names = names
        self._zones = zones_of(scenario, node_resolver(scenario))
        self._faults: list[Fault] = []
        self._server: subprocess.Popen[str] | None = None
        self._samba: subprocess.Popen[bytes] | None = None
        self._node_agent: subprocess.Popen[str] | None = None
        self._identity: subprocess.Popen[str] | None = None  # a compute instance's MSI endpoint (lab.msi)
        self._slow: AbstractContextManager[None] | None = None  # the scenario's path delay
        self._up = False

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        netns.check_prerequisites()
        self._check_servers()
        remove_stale()
        started = time.monotonic()
        _register(self)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        self.bringup_seconds = time.monotonic() - started
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_servers(self) -> None:
        """The real servers the scenario runs are installed (./dev installs them)."""
        needed = [(samba.BINARY, samba.PACKAGE)]  # 445 is a real samba in every scenario
        if self.scenario.proxy in ("open", "auth"):
            needed.append((squid.BINARY, squid.PACKAGE))
        if self.scenario.websocket_front is not None:
            needed.append((nginx.BINARY, nginx.PACKAGE))
        for binary, package in needed:
            if not os.access(binary, os.X_OK):
                raise LabUnavailable(f"scenario {self.scenario.name} runs {binary}: install the Debian package "
                                     f"{package} (./dev does)")

    def _build(self) -> None:
        self._up = True
        # anything already named after this pid and counter is a dead owner's (pid reuse)
        netns.destroy(self._names)
        shutil.rmtree(self.workdir, ignore_errors=True)
        # others may traverse, not list: squid and nginx workers run as their own users
        self.workdir.mkdir(mode=0o711)
        (self.workdir / "share").mkdir()
        root = pki.create_ca(self.workdir, "lab-root-ca", pki.LAB_ROOT)
        lab_ca = pki.create_ca(self.workdir, "lab-ca", pki.LAB_CA, signer=root)
        inspection_ca = pki.create_ca(self.workdir, "inspection-ca", pki.INSPECTION_CA)
        trusted = [root, inspection_ca] if self.scenario.inspection_ca_trusted else [root]
        Path(self.ca_bundle).write_bytes(b"".join(ca.cert.read_bytes() for ca in trusted))
        hosts = (
            f"127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
            f"{addresses.NODE} {self.scenario.context.compute_name}\n"
            + "".join(f"{line}\n" for line in self.scenario.hosts)
        )
        netns.build(self._names, resolvers=node_resolvers(self.scenario), hosts=hosts,
                    appliance=self.scenario.appliance, node_mtu=self.scenario.node_mtu,
                    container_mtu=self.scenario.container_mtu)
        if self.scenario.internet_routes:
            netns.route_around(self._names, [self.address_of(h) for h in self.scenario.internet_routes])
        self._faults = list(dict.fromkeys(self.scenario.faults))
        self._install_faults()
        config = self.workdir / "servers.json"
        config.write_text(
            ServerConfig(self.scenario, lab_ca, inspection_ca, root.cert, self.workdir).to_json()
        )
        self._start_servers(config)
        self._start_samba()
        if self.scenario.slow_from:
            from lab import delay  # it names Lab: imported where a scenario needs it

            self._slow = delay.path_delay(self.az_ns, self.scenario.slow_ms, self.scenario.slow_from)
            self._slow.__enter__()
        if self.scenario.context.public_ip:
            self._node_agent = self._listen_in_node(NODE_MANAGEMENT_PORT)
        if self.scenario.context.compute == "instance":
            self._identity = self._ready(subprocess.Popen(netns.in_ns(self.node_ns, [
                "env", "-i", f"PYTHONPATH={_PACKAGE_ROOT}", sys.executable, "-m", f"{_PACKAGE}.msi",
                str(addresses.MSI_PORT)]),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))

    def _listen_in_node(self, port: int) -> subprocess.Popen[str]:
        """A public-IP compute node takes Azure ML's management connections on 44224 (the
        inbound rule's port); this stands in for the node agent that listens there."""
        code = ("import socket, sys\n"
                "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                f"s.bind(('0.0.0.0', {port})); s.listen(); print('ready', flush=True); sys.stdin.read()")
        return self._ready(subprocess.Popen(netns.in_ns(self.node_ns, [sys.executable, "-c", code]),
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))

    @staticmethod
    def _ready(process: subprocess.Popen[str]) -> subprocess.Popen[str]:
        """A node-side stand-in, once it says `ready` (it exits when its stdin closes)."""
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a lab process in the node namespace did not start: {process.args!r}")
        return process

    def _start_servers(self, config: Path) -> None:
        log = self.workdir / "servers.log"
        env = [
            "env",
            "-i",
            f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}",
            f"PYTHONPATH={_PACKAGE_ROOT}",
        ]
        with log.open("w") as stderr:
            self._server = subprocess.Popen(
                netns.in_ns(self.az_ns, [*env, sys.executable, "-m", f"{_PACKAGE}.servers", str(config)]),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        assert self._server.stdout is not None
        ready, _, _ = select.select([self._server.stdout], [], [], READY_TIMEOUT)
        line = self._server.stdout.readline() if ready else ""
        if line.strip() != "ready":
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError("lab servers did not start: " + (" | ".join(tail) or "no output"))

    def _start_samba(self) -> None:
        """smbd on 445 in the az namespace, its files under the work directory: every address there is
        local, so it answers for the storage names' private endpoints and public front ends alike."""
        if self.scenario.smb_silent:  # a middlebox holds 445 instead (lab.servers)
            return
        config = samba.configure(self.workdir / "samba", max_protocol=self.scenario.smb_max_protocol)
        self._samba = samba.start(config, netns.in_ns(self.az_ns, []))

    def close(self) -> None:
        """Tear everything down; idempotent, and shielded from SIGTERM/SIGHUP/SIGINT while it
        runs (a pending signal is delivered once teardown has finished)."""
        with _signals_deferred():
            if self._slow is not None:
                self._slow.__exit__(None, None, None)
                self._slow = None
            for process in (self._server, self._node_agent, self._identity):
                if process is not None:
                    _stop(process)
            self._server = self._node_agent = self._identity = None
            if self._samba is not None:
                samba.stop(self._samba)  # its connection children die with the namespace below
                self._samba = None
            if self._up:
                netns.destroy(self._names)
                shutil.rmtree(self.workdir, ignore_errors=True)
                self._up = False
            _unregister(self)

    # -- running things in the node ----------------------------------------------------------

    def node_env(self) -> dict[str, str]:
        """The agent's environment: the lab's trust store, the scenario's proxy variables (both
        cases, as setup scripts write them), and what Azure ML sets on a compute instance (CI_*),
        so detection is exercised end to end."""
        env = {
            "PATH": f"{Path(sys.executable).parent}:{_SYSTEM_PATH}",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "SSL_CERT_FILE": self.ca_bundle,
        }
        if self.scenario.proxy is not None:
            user = ":".join(squid.CREDENTIALS) + "@" if self.scenario.proxy_credentials else ""
            url = f"http://{user}{addresses.PROXY}:{addresses.PROXY_PORT}"
            no_proxy = ",".join(self.scenario.no_proxy)
            for name, value in (("https_proxy", url), ("http_proxy", url), ("no_proxy", no_proxy)):
                env[name] = env[name.upper()] = value
        c = self.scenario.context
        if c.compute == "instance":
            env.update(CI_NAME=c.compute_name, CI_WORKSPACE=c.workspace_name,
                       CI_RESOURCE_GROUP="lab-rg", CI_LOCAL_UBUNTU_USER="azureuser",
                       MSI_ENDPOINT=addresses.MSI_ENDPOINT)
        for passthrough in ("PYTHONPATH", "TERM", "COLUMNS", "NO_COLOR", "FORCE_COLOR"):
            if passthrough in os.environ:
                env[passthrough] = os.environ[passthrough]
        return env

    def node_command(self, argv: Sequence[str]) -> list[str]:
        """argv run in the node namespace with node_env() and nothing else, with the workspace
        file share mounted where a compute instance has it. The mount lives in the private mount
        namespace `ip netns exec` makes for this one command, so it never touches the host."""
        share = f"//{self.scenario.context.storage_account}.file.core.windows.net/code-{self.node_ns[-6:]}"
        mount = 'mount -t tmpfs -o size=64k "$0" "$1" && shift && exec env -i "$@"'
        return netns.in_ns(self.node_ns, [
            "sh", "-c", mount, share, str(self.workdir / "share"),
            *(f"{k}={v}" for k, v in self.node_env().items()), *argv,
        ])

    def run_in_node(
        self, argv: Sequence[str], *, timeout: float = 60, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """subprocess.run in the node namespace; captures text output unless kw says otherwise."""
        if "stdout" not in kw and "stderr" not in kw:
            kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.node_command(argv), timeout=timeout, check=False, **kw)

    # -- DNS and faults ----------------------------------------------------------------------

    def address_of(self, host: str) -> str:
        """The address host resolves to from the node in this scenario."""
        return self._zones.address_of(host)

    def apply(self, fault: Fault) -> None:
        """Add a fault to the running lab (no-op if already applied)."""
        if fault not in self._faults:
            self._faults.append(fault)
            self._install_faults()

    def clear(self, fault: Fault) -> None:
        """Remove a fault from the running lab (no-op if not applied)."""
        if fault in self._faults:
            self._faults.remove(fault)
            self._install_faults()

    @property
    def faults(self) -> tuple[Fault, ...]:
        return tuple(self._faults)

    def _install_faults(self) -> None:
        if not self._up:
            raise RuntimeError("the lab is not up")
        at_appliance = [(f, self._destination(f.host)) for f in self._faults if f.at == "appliance"]
        if at_appliance and not self.scenario.appliance:
            raise ValueError(f"scenario {self.scenario.name} has no appliance for the faults {at_appliance}")
        if self.scenario.appliance:
            netns.set_appliance_faults(self._names.nva, at_appliance)
        netns.set_faults(
            self.az_ns,
            [(f, self._destination(f.host)) for f in self._faults if f.at == "azure"],
            path_mtu=self.scenario.path_mtu,
            unrouted=None if self.scenario.proxy_reaches_private else (squid.USER, addresses.PE_SUBNET),
        )

    def _destination(self, host: str | None) -> str | None:
        """A fault's destination for nftables: a network as it is, a name as it resolves."""
        if host is None:
            return None
        try:
            return str(ipaddress.ip_network(host))
        except ValueError:
            return self.address_of(host)


def _stop(server: subprocess.Popen[str]) -> None:
    for stream in (server.stdin, server.stdout):
        if stream is not None:
            stream.close()  # closing stdin alone asks the servers to exit
    try:
        server.wait(2)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def remove_stale() -> None:
    """Remove namespaces and work directories of labs whose owning process is dead."""
    netns.remove_stale()
    for path in Path(tempfile.gettempdir()).glob(f"{netns.PREFIX}-*"):
        if netns.is_lab_name(path.name) and not netns.owner_alive(netns.owner_of(path.name)):
            shutil.rmtree(path, ignore_errors=True)


# -- signals: turn SIGTERM/SIGHUP into SystemExit while any lab is up -----------------------------


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _register(lab: Lab) -> None:
    if not _active and _in_main_thread():
        for sig in _EXIT_SIGNALS:
            if signal.getsignal(sig) == signal.SIG_DFL:
                _previous_handlers[sig] = signal.signal(sig, _exit_on_signal)
    _active.append(lab)


def _unregister(lab: Lab) -> None:
    if lab in _active:
        _active.remove(lab)
    if not _active and _in_main_thread():
        for sig, handler in _previous_handlers.items():
            signal.signal(sig, handler)
        _previous_handlers.clear()


@contextmanager
def _signals_deferred() -> Iterator[None]:
    if not _in_main_thread():
        yield
        return
    deferred = {*_EXIT_SIGNALS, signal.SIGINT}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, deferred)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@atexit.register
def _close_all() -> None:
    for lab in list(reversed(_active)):
        lab.close()


__all__ = ["Lab", "LabUnavailable", "remove_stale"]
