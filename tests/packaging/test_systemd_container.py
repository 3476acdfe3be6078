"""The .deb under a real systemd: Debian booted with systemd as PID 1 in a container, the package
installed there with its maintainer scripts, the units used as an administrator uses them, and
Debian's own prometheus-node-exporter reading the metrics.

How, and why this way:
- The root file system is a minimal Debian (`debootstrap --variant=minbase`, the suite of this
  machine's dpkg) with systemd, python3, the package's other dependencies and
  prometheus-node-exporter. It is made once and cached in $AML_NETCHECK_ROOTFS_CACHE (default
  /var/cache/aml-netcheck-tests/), one directory per suite and package list; the first run
  downloads it from Debian's mirror (about 2 minutes, ~320 MB), later runs copy the cached tree
  (about a second). Delete the directory to refresh it. $AML_NETCHECK_DEBIAN_MIRROR picks
  another mirror.
- `systemd-nspawn --boot --private-network --register=no --keep-unit`: the container's only
  network is its own loopback (the agent's checks fail there, which is expected: the tests look
  at the plumbing, never at a healthy verdict), and nspawn needs neither systemd-machined nor
  D-Bus on the host (this machine has neither; CI neither).
- Commands run inside through `nsenter --all` into the namespaces of the container's PID 1
  (found as systemd-nspawn's child): each is an ordinary process whose exit code and output come
  back to pytest, so every check below is an assertion with its own message. `systemctl` inside
  talks to the container's systemd over its private socket.
- One boot for the whole module (about 70 s in all on this 2-core machine, most of it the
  watchdog and timer waits below): the fixture installs the package, the tests run in file order
  on that one machine, and the last one purges the package.
Needs root, systemd-nspawn (systemd-container), debootstrap and nsenter; ./dev installs them."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging_support import needs, run

pytestmark = pytest.mark.packaging

CACHE = Path(os.environ.get("AML_NETCHECK_ROOTFS_CACHE", "/var/cache/aml-netcheck-tests"))
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "iproute2", "nftables", "procps",
            "prometheus-node-exporter")
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
UNITS = ("aml-netcheck.service", "aml-netcheck-check.service", "aml-netcheck-check.timer",
         "aml-netcheck-wait-online.service")
TEXTFILE = "/run/aml-netcheck/aml_netcheck.prom"
NODE_EXPORTER_DIR = "/var/lib/prometheus/node-exporter"
# Bounds every run inside: the daemon's round, the one-shot check and the wait-online gate (the
# config's deadline ends --wait too). A real config key, so the units run as shipped.
CONFIG = 'timeout = 2\ndeadline = 8\n'
MESSAGE_ID_NAMESPACE = uuid.UUID("6c0c3a5e-2f43-4b5e-9a61-8d7b2e1f0a93")  # agent/modes/systemd.py


def suite() -> str:
    """This machine's Debian suite: the .deb is built for its python3."""
    fields = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    return fields.get("VERSION_CODENAME", "").strip('"') or "bookworm"


def rootfs() -> Path:
    """The cached minimal Debian, made on first use (into a temporary directory renamed into
    place, so an interrupted debootstrap never leaves a tree that looks complete)."""
    name = suite()
    key = hashlib.sha256(" ".join((name, *PACKAGES)).encode()).hexdigest()[:12]
    root = CACHE / f"{name}-{key}"
    if (root / "usr/bin/prometheus-node-exporter").exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = CACHE / f".partial-{root.name}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    mirror = os.environ.get("AML_NETCHECK_DEBIAN_MIRROR")
    made = run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", name, str(partial),
                *([mirror] if mirror else [])], timeout=1200)
    assert made.returncode == 0, f"debootstrap:\n{made.stdout[-3000:]}\n{made.stderr[-3000:]}"
    partial.rename(root)
    return root


@dataclass
class Machine:
    """A booted container: `sh(...)` runs a shell command inside, as root, in all its namespaces."""

    nspawn: subprocess.Popen[bytes]
    pid: int
    root: Path

    def sh(self, script: str, *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run(["nsenter", f"--target={self.pid}", "--all", "env", "-i", f"PATH={PATH}", "LANG=C.UTF-8",
                    "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "sh", "-c", script], timeout=timeout)

    def ok(self, script: str, *, timeout: float = 120) -> str:
        result = self.sh(script, timeout=timeout)
        assert result.returncode == 0, f"{script}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.ok(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for(self, what: str, script: str, *, timeout: float = 90) -> str:
        """Polls `script` until it exits 0 (no fixed sleeps: the machine shares two cores)."""
        end = time.monotonic() + timeout
        while True:
            result = self.sh(script)
            if result.returncode == 0:
                return result.stdout
            if time.monotonic() > end:
                journal = self.sh("journalctl -b --no-pager -n 30 | cut -c1-200").stdout
                raise AssertionError(f"timed out waiting for {what}: {result.stdout[-2000:]}{result.stderr[-2000:]}\n"
                                     f"the journal's last lines:\n{journal}")
            time.sleep(0.5)


def container_init(nspawn: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """The container's PID 1 as the host sees it: the child of systemd-nspawn running systemd."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert nspawn.poll() is None, "systemd-nspawn exited before the container booted"
        children = Path(f"/proc/{nspawn.pid}/task/{nspawn.pid}/children").read_text().split()
        for child in children:
            try:
                argv0 = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if argv0.endswith((b"/systemd", b"/init")):
                return int(child)
        time.sleep(0.1)
    raise AssertionError("no systemd in the container")


@pytest.fixture(scope="module")
def machine(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    if os.geteuid() != 0:
        pytest.skip("booting a container needs root (CI runs as root)")
    needs("systemd-nspawn", "debootstrap", "nsenter")
    work = tmp_path_factory.mktemp("container")
    root = work / "root"
    copied = run(["cp", "-a", "--reflink=auto", str(rootfs()), str(root)], timeout=600)
    assert copied.returncode == 0, copied.stderr
    shutil.copy2(deb, root / "var/tmp/aml-netcheck.deb")
    (root / "etc/hostname").write_text("aml-netcheck-test\n")
    console = (work / "console.log").open("wb")
    nspawn = subprocess.Popen(
        ["systemd-nspawn", "--quiet", "--boot", "--private-network", "--register=no", "--keep-unit",
         "--console=passive", f"--machine=aml-netcheck-test-{os.getpid()}", "-D", str(root)],
        stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
    try:
        box = Machine(nspawn, container_init(nspawn), root)
        box.wait_for("systemd's socket", "test -S /run/systemd/private", timeout=60)
        state = box.sh("systemctl is-system-running --wait", timeout=180)
        assert state.stdout.strip() == "running", box.sh("systemctl --failed --no-legend").stdout
        box.ok(f"printf '{CONFIG}' > /tmp/config.toml")
        installed = box.sh("dpkg -i /var/tmp/aml-netcheck.deb && cp /tmp/config.toml /etc/aml-netcheck/config.toml",
                           timeout=300)
        assert installed.returncode == 0, installed.stdout + installed.stderr
        yield box
    finally:
        nspawn.send_signal(signal.SIGTERM)  # nspawn powers the container off cleanly
        try:
            nspawn.wait(timeout=60)
        except subprocess.TimeoutExpired:
            nspawn.kill()
            nspawn.wait()
        console.close()
        shutil.rmtree(root, ignore_errors=True)


# -- installation ----------------------------------------------------------------------------------

def test_install_creates_the_system_user_and_directories(machine: Machine) -> None:
    # sysusers.d made the static user; tmpfiles.d the runtime directory node_exporter can enter.
    passwd = machine.ok("getent passwd aml-netcheck").strip().split(":")
    assert int(passwd[2]) < 1000 and passwd[6] == "/usr/sbin/nologin", passwd
    assert machine.ok("stat -c '%U %a' /run/aml-netcheck").split() == ["aml-netcheck", "755"]
    # Nothing enabled, nothing started on installation.
    for unit in UNITS:
        expected = "static" if unit == "aml-netcheck-check.service" else "disabled"  # the timer's, no [Install]
        assert machine.sh(f"systemctl is-enabled {unit}").stdout.strip() == expected, unit
        assert machine.sh(f"systemctl is-active {unit}").stdout.strip() == "inactive", unit


# -- the daemon ----------------------------------------------------------------------------------

def test_daemon_reaches_ready(machine: Machine) -> None:
    # Type=notify: `systemctl start` returns once the first round sent READY=1.
    machine.ok("systemctl start aml-netcheck.service", timeout=240)
    shown = machine.show("aml-netcheck.service", "ActiveState", "SubState", "StatusText", "WatchdogUSec", "User",
                         "DynamicUser")
    assert (shown["ActiveState"], shown["SubState"]) == ("active", "running"), shown
    assert shown["StatusText"], shown  # STATUS=: the one-line summary
    assert (shown["User"], shown["DynamicUser"], shown["WatchdogUSec"]) == ("aml-netcheck", "no", "1min"), shown


def test_daemon_journal_fields_and_catalog(machine: Machine) -> None:
    """A finding appears (the container has no network) as a structured entry whose MESSAGE_ID
    the shipped catalog explains in `journalctl -x`."""
    out = machine.wait_for("a finding in the journal",
                           "journalctl -u aml-netcheck.service -o json AML_NETCHECK_STATE=appeared | grep .")
    entry = json.loads(out.splitlines()[0])
    code = entry["AML_NETCHECK_CODE"]
    assert entry["MESSAGE_ID"] == uuid.uuid5(MESSAGE_ID_NAMESPACE, code).hex
    assert entry["AML_NETCHECK_SEVERITY"] in ("critical", "warning", "info")
    assert entry["PRIORITY"] == {"critical": "3", "warning": "4", "info": "6"}[entry["AML_NETCHECK_SEVERITY"]]
    assert entry["SYSLOG_IDENTIFIER"] == "aml-netcheck" and "AML_NETCHECK_TARGETS" in entry
    explained = machine.ok(f"journalctl -x --no-pager -o short MESSAGE_ID={entry['MESSAGE_ID']}")
    assert f"Subject: aml-netcheck finding {code}" in explained, explained
    assert "Defined-By: aml-netcheck" in explained, explained
    listed = machine.ok("journalctl --list-catalog")
    assert listed.count("aml-netcheck finding ") >= 30, listed


def test_reload_fails_on_a_bad_config_and_succeeds_on_a_good_one(machine: Machine) -> None:
    pid = machine.show("aml-netcheck.service", "MainPID")["MainPID"]
    machine.ok("echo 'no_such_key = 1' >> /etc/aml-netcheck/config.toml")
    try:
        refused = machine.sh("systemctl reload aml-netcheck.service")
        assert refused.returncode != 0, "systemctl reload returned 0 for a config the agent refuses"
        journal = machine.ok("journalctl -u aml-netcheck.service --no-pager -n 20")
        assert "unknown key 'no_such_key'" in journal, journal
        shown = machine.show("aml-netcheck.service", "ActiveState", "MainPID")
        assert shown == {"ActiveState": "active", "MainPID": pid}, shown  # the daemon runs on, old config
    finally:
        machine.ok("cp /tmp/config.toml /etc/aml-netcheck/config.toml")
    machine.ok("systemctl reload aml-netcheck.service")
    machine.wait_for("the reload", "journalctl -u aml-netcheck.service --no-pager | grep -F 'config reloaded'")
    assert machine.show("aml-netcheck.service", "MainPID")["MainPID"] == pid


def prometheus_samples(text: str) -> dict[str, float]:
    """`name{labels} value` lines of the aml_netcheck_ family, by series."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("aml_netcheck_"):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    return samples


def test_node_exporter_scrapes_the_metrics(machine: Machine) -> None:
    """Debian's prometheus-node-exporter, as its own user, through the README's symlink."""
    machine.ok(f"ln -sfn {TEXTFILE} {NODE_EXPORTER_DIR}/aml_netcheck.prom")
    machine.wait_for("the textfile", f"test -s {TEXTFILE}")
    assert machine.ok("systemctl is-active prometheus-node-exporter").strip() == "active"
    assert machine.ok("ps -o user= -C prometheus-node-exporter").split() == ["prometheus"]
    scrape = ("python3 -c 'import urllib.request; "
              "print(urllib.request.urlopen(\"http://127.0.0.1:9100/metrics\", timeout=10).read().decode())'")
    page = machine.wait_for("node_exporter", scrape)
    assert re.search(r"^node_textfile_scrape_error 0$", page, re.MULTILINE), \
        [line for line in page.splitlines() if "textfile" in line]
    written = prometheus_samples(machine.ok(f"cat {TEXTFILE}"))
    scraped = prometheus_samples(page)
    assert written and len(written) >= 5, written
    assert scraped == written  # every series, with its value


# -- watchdog -------------------------------------------------------------------------------------

def test_watchdog_keeps_a_live_daemon_and_restarts_a_frozen_one(machine: Machine) -> None:
    # A 6 s watchdog (drop-in) instead of 60 s, to see it within the test: pings from the event
    # loop keep the daemon up across several periods; a stopped process is killed and restarted.
    machine.ok("mkdir -p /run/systemd/system/aml-netcheck.service.d && printf '[Service]\\nWatchdogSec=6\\n"
               "RestartSec=1\\n' > /run/systemd/system/aml-netcheck.service.d/test.conf && systemctl daemon-reload"
               " && systemctl restart aml-netcheck.service", timeout=240)
    pid = machine.show("aml-netcheck.service", "MainPID")["MainPID"]
    machine.ok("sleep 12")  # two periods
    shown = machine.show("aml-netcheck.service", "ActiveState", "MainPID", "NRestarts")
    assert shown == {"ActiveState": "active", "MainPID": pid, "NRestarts": "0"}, shown
    machine.ok(f"kill -STOP {pid}")
    machine.wait_for("the watchdog restart", "systemctl show -p NRestarts aml-netcheck.service | grep -Fx NRestarts=1")
    journal = machine.ok("journalctl -u aml-netcheck.service --no-pager")
    assert "Watchdog timeout" in journal, journal
    machine.wait_for("the restarted daemon", "systemctl is-active aml-netcheck.service", timeout=120)
    assert machine.show("aml-netcheck.service", "MainPID")["MainPID"] != pid
    machine.ok("rm -r /run/systemd/system/aml-netcheck.service.d && systemctl daemon-reload"
               " && systemctl stop aml-netcheck.service")


# -- the timer and its one-shot check --------------------------------------------------------------

def test_check_unit_failure_is_not_reported_as_an_invalid_argument(machine: Machine) -> None:
    """The one-shot's not-healthy verdict (critical or unknown here: no network) fails the unit
    with 1/FAILURE, never with systemd's LSB names for 2 and 3 (INVALIDARGUMENT, NOTIMPLEMENTED)."""
    started = machine.sh("systemctl start aml-netcheck-check.service", timeout=120)
    assert started.returncode != 0
    shown = machine.show("aml-netcheck-check.service", "Result", "ExecMainStatus", "ActiveState")
    assert shown == {"Result": "exit-code", "ExecMainStatus": "1", "ActiveState": "failed"}, shown
    journal = machine.ok("journalctl -u aml-netcheck-check.service --no-pager")
    assert "status=1/FAILURE" in journal and "INVALIDARGUMENT" not in journal, journal
    assert re.search(r"aml-netcheck: (critical|unknown) \(exit 1\); report written to", journal), journal
    assert machine.ok("stat -c '%U %a' /var/lib/aml-netcheck").split() == ["aml-netcheck", "750"]
    assert machine.ok("stat -c '%U' /var/lib/aml-netcheck/report.json").strip() == "aml-netcheck"


def test_timer_fires_repeatedly(machine: Machine) -> None:
    # The shipped schedule (2 min after boot, then every 15) shortened by a drop-in.
    machine.ok("systemctl enable --now aml-netcheck-check.timer")
    assert machine.show("aml-netcheck-check.timer", "ActiveState")["ActiveState"] == "active"
    assert "aml-netcheck-check.timer" in machine.ok("systemctl list-timers --all --no-legend")
    since = machine.ok("date '+%Y-%m-%d %H:%M:%S'").strip()
    machine.ok("mkdir -p /run/systemd/system/aml-netcheck-check.timer.d && printf '[Timer]\\nOnActiveSec=1s\\n"
               "OnUnitActiveSec=3s\\nRandomizedDelaySec=0\\nAccuracySec=1s\\n' > "
               "/run/systemd/system/aml-netcheck-check.timer.d/test.conf && systemctl daemon-reload"
               " && systemctl restart aml-netcheck-check.timer")
    machine.wait_for("two runs of the timer's check", f"test $(journalctl -u aml-netcheck-check.service --since "
                     f"'{since}' --no-pager | grep -c 'report written to') -ge 2", timeout=120)
    machine.ok("systemctl disable --now aml-netcheck-check.timer"
               " && rm -r /run/systemd/system/aml-netcheck-check.timer.d"
               " && systemctl daemon-reload")


# -- wait-online -----------------------------------------------------------------------------------

def test_wait_online_gates_its_dependents(machine: Machine) -> None:
    machine.ok("printf '[Unit]\\nRequires=aml-netcheck-wait-online.service\\nAfter=aml-netcheck-wait-online.service\\n"
               "[Service]\\nType=oneshot\\nExecStart=/bin/touch /tmp/needs-online-ran\\n' > "
               "/run/systemd/system/needs-online.service && systemctl daemon-reload")
    started = machine.sh("systemctl start needs-online.service", timeout=120)
    assert started.returncode != 0  # the gate failed: the dependent was not started
    assert machine.sh("test -e /tmp/needs-online-ran").returncode != 0
    shown = machine.show("aml-netcheck-wait-online.service", "Result", "ExecMainStatus")
    assert shown == {"Result": "exit-code", "ExecMainStatus": "1"}, shown
    journal = machine.ok("journalctl -u aml-netcheck-wait-online.service --no-pager")
    # --exit-codes simple: the summary line names the code the process exits with
    assert re.search(r"aml-netcheck: (critical|unknown) \(exit 1\); report written to /run/aml-netcheck/"
                     r"wait-online\.json", journal), journal


# -- removal -----------------------------------------------------------------------------------------

def test_purge_leaves_nothing(machine: Machine) -> None:
    machine.ok("systemctl enable --now aml-netcheck.service", timeout=240)
    machine.ok("dpkg -P aml-netcheck", timeout=300)
    assert machine.sh("systemctl is-active aml-netcheck.service").stdout.strip() != "active"
    left = machine.ok("ls -d /etc/aml-netcheck /usr/lib/aml-netcheck /var/lib/aml-netcheck /run/aml-netcheck "
                      "/etc/systemd/system/multi-user.target.wants/aml-netcheck.service 2>/dev/null || true")
    assert left.split() == []
