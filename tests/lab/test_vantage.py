"""Entering another vantage: a child process started in one namespace of the test's own enters
another (as `check --netns` does) and sees that namespace's interfaces and `ip netns`'s resolver
files for it, while the host's /etc/resolv.conf stays as it was. Nothing is sent anywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.inputs import vantage
from lab.netns import NETNS_ETC, PREFIX, remove_stale

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not (os.geteuid() == 0 and shutil.which("ip")), reason="needs root and `ip`"),
]
SHOW = textwrap.dedent("""
    import json, socket, sys
    from agent.inputs import vantage
    try:
        vantage.enter(vantage.of_netns(sys.argv[1]))
    except vantage.VantageError as exc:
        print(json.dumps({"error": str(exc)}))
        raise SystemExit(0)
    with open("/etc/resolv.conf") as r, open("/etc/hosts") as h:
        print(json.dumps({"interfaces": sorted(n for _, n in socket.if_nameindex()),
                          "resolv": r.read(), "hosts": h.read()}))
""")


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    remove_stale()
    outer, inner = (f"{PREFIX}-{os.getpid()}-{950 + i}" for i in range(2))
    try:
        for name in (outer, inner):
            subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", inner, "link", "add", "job0", "type", "veth", "peer", "name", "job1"], check=True)
        (NETNS_ETC / inner).mkdir(parents=True, exist_ok=True)
        (NETNS_ETC / inner / "resolv.conf").write_text("nameserver 10.98.0.53\n")
        (NETNS_ETC / inner / "hosts").write_text("10.98.0.7 job-only.example\n")
        yield outer, inner
    finally:
        for name in (outer, inner):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
            shutil.rmtree(NETNS_ETC / name, ignore_errors=True)


def show(outer: str, target: str) -> dict[str, object]:
    """Run from inside `outer` with its own (empty) /etc/netns entry absent: what the host has."""
    result = subprocess.run(["ip", "netns", "exec", outer, sys.executable, "-c", SHOW, target], cwd=REPO,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_entering_a_named_namespace_brings_its_interfaces_and_resolver_files(namespaces: tuple[str, str]) -> None:
    outer, inner = namespaces
    before = Path("/etc/resolv.conf").read_text()
    seen = show(outer, f"/run/netns/{inner}")
    assert seen["interfaces"] == ["job0", "job1", "lo"]
    assert seen["resolv"] == "nameserver 10.98.0.53\n"
    assert seen["hosts"] == "10.98.0.7 job-only.example\n"
    assert Path("/etc/resolv.conf").read_text() == before  # the child's mounts were its own


def test_a_file_that_is_no_network_namespace_is_one_line(namespaces: tuple[str, str], tmp_path: Path) -> None:
    outer, _ = namespaces
    plain = tmp_path / "not-a-namespace"
    plain.write_text("")
    assert show(outer, str(plain)) == {
        "error": f"--netns {plain}: cannot enter its network namespace: Invalid argument "
                 "(not a network namespace, or the process has threads)"}


def test_a_missing_namespace_is_refused_before_anything_is_entered(tmp_path: Path) -> None:
    with pytest.raises(vantage.VantageError, match="no such file"):
        vantage.of_netns(str(tmp_path / "gone"))


def test_check_from_another_namespace_diagnoses_the_vantage_it_enters(namespaces: tuple[str, str]) -> None:
    """`check --netns` started in a namespace of the test's own with nothing but loopback: the
    diagnosis is the lab node's (healthy, its resolvers, its interfaces), the report names the
    vantage; started there without it, nothing is reachable at all."""
    from lab import Lab, scenario

    outer, _ = namespaces
    with Lab(scenario("healthy-private")) as lab:
        env = [f"{k}={v}" for k, v in lab.node_env().items()]
        argv = [sys.executable, "-m", "agent", "check", *lab.scenario.check_args(), "--format", "json",
                "--timeout", "2"]

        def from_outer(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["ip", "netns", "exec", outer, "env", "-i", *env, *argv, *extra], cwd=REPO,
                                  capture_output=True, text=True, check=False)

        resolv_conf = (NETNS_ETC / lab.node_ns / "resolv.conf").read_text()
        node_resolvers = [line.split()[1] for line in resolv_conf.splitlines()]
        entered = from_outer("--netns", f"/run/netns/{lab.node_ns}")
        stayed = from_outer()
    assert entered.returncode == 0, entered.stderr
    report = json.loads(entered.stdout)
    assert report["status"] == "ok"
    vantage_seen = report["node"]["vantage"]
    assert (vantage_seen["kind"], vantage_seen["name"]) == ("netns", f"/run/netns/{lab.node_ns}")
    from probes import node

    assert vantage_seen["host"]["resolvers"] == list(node.resolvers())  # the host's, where the run started
    assert report["node"]["resolvers"] == node_resolvers  # the lab node's resolv.conf, bound over /etc
    assert stayed.returncode == 2 and "vantage" not in json.loads(stayed.stdout)["node"]


def test_two_vantages_at_once_are_refused_in_one_line(namespaces: tuple[str, str]) -> None:
    outer, inner = namespaces
    done = subprocess.run(["ip", "netns", "exec", outer, sys.executable, "-m", "agent", "check", "--netns",
                           f"/run/netns/{inner}", "--container", "job"], cwd=REPO, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [
        "aml-netcheck: error: --netns and --container: give one vantage, not both"]


def test_a_container_mtu_above_the_host_s_is_found_from_the_container_alone() -> None:
    """The lab's container-mtu scenario: the node's uplink fits the path (MTU 1200), its Docker
    bridge does not (1500). From the node the run is healthy; `check --netns` into the container,
    started on the node, stalls on every TLS handshake and says why: the container's MTU is above
    the host's, one finding holding the stalled handshakes, never the generic MTU black hole."""
    from lab import Lab, scenario

    with Lab(scenario("container-mtu")) as lab:
        assert lab.container_netns is not None
        argv = [sys.executable, "-m", "agent", "check", *lab.scenario.check_args(), "--format", "json",
                "--timeout", "3"]
        host = lab.run_in_node(argv, timeout=120)
        seen = lab.run_in_node([*argv, "--netns", lab.container_netns], timeout=120)
    assert host.returncode == 0, host.stdout[-2000:] + host.stderr
    assert json.loads(host.stdout)["status"] == "ok"
    assert seen.returncode == 2, seen.stderr
    report = json.loads(seen.stdout)
    import jsonschema

    schema = json.loads((REPO / "agent/data/report-1.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(report)  # node.vantage with the host's view
    assert report["node"]["vantage"]["host"]["interfaces"]
    codes = [f["code"] for f in report["findings"]]
    assert codes[0] == "vantage-mtu-above-host" and "tls-handshake-stalled" not in codes, codes
    finding = report["findings"][0]
    assert "MTU 1500 on eth0, above the host's 1200 on eth0" in finding["summary"], finding["summary"]
    assert '"mtu": 1200 in /etc/docker/daemon.json' in finding["remedy"]
    assert "docker-bridge-overlap" not in codes  # the container's own 172.17.0.2 is no overlap
    bridge = next(c for c in report["checks"] if c["id"] == "local:docker-bridge")
    assert bridge["status"] == "inconclusive" and "the host's" in bridge["detail"]
