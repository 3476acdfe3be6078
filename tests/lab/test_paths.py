"""Where a dropped flow dies, end to end in the lab: an NSG-like drop in the Azure namespace answers at
no hop (the first hop: the NSGs), a forced tunnel's appliance drop is past the appliance's hop, and
a healthy path through the appliance raises nothing and traces nothing."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

from lab import Lab, addresses, scenario

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not (os.geteuid() == 0 and shutil.which("ip") and shutil.which("nft")),
                       reason="the lab needs root, `ip` and `nft`"),
]


def check(name: str, **changes: object) -> dict[str, object]:
    chosen = dataclasses.replace(scenario(name), **changes) if changes else scenario(name)
    with Lab(chosen) as lab:
        argv = [sys.executable, "-m", "agent", "check", *chosen.check_args(), "--format", "json", "--timeout", "3"]
        done = subprocess.run(lab.node_command(argv), capture_output=True, text=True, check=False)
    assert done.returncode == chosen.expected_exit, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_a_drop_behind_the_appliance_is_placed_past_its_hop() -> None:
    report = check("appliance-drop")
    finding = next(f for f in report["findings"] if f["code"] == "egress-blocked")  # type: ignore[union-attr]
    assert f"past {addresses.GATEWAY} (hop 1)" in finding["summary"]
    assert "forced tunnelling" in finding["cause"] and "next hop Internet" in finding["remedy"]
    traced = [c["evidence"]["path"] for c in report["checks"] if "path" in c["evidence"]]  # type: ignore[union-attr]
    assert traced and all(p["hops"][:1] == [{"ttl": 1, "answer": "time-exceeded", "address": addresses.GATEWAY,
                                             "rtt_ms": p["hops"][0]["rtt_ms"]}] for p in traced)


def test_a_drop_in_azure_answers_at_no_hop() -> None:
    report = check("nsg-drop-445")
    finding = report["findings"][0]  # type: ignore[index]
    assert finding["code"] == "smb-blocked" and "at the first hop" in finding["summary"]
    assert "Start with the NSGs" in finding["remedy"]


def test_a_healthy_path_through_the_appliance_raises_nothing_and_traces_nothing() -> None:
    report = check("healthy-private", appliance=True)
    assert report["status"] == "ok"
    assert not [c["id"] for c in report["checks"] if "path" in c["evidence"]]  # type: ignore[union-attr]


def test_a_managed_network_s_drop_is_fixed_by_an_outbound_rule() -> None:
    report = check("managed-vnet")
    finding = next(f for f in report["findings"] if f["code"] == "egress-blocked")  # type: ignore[union-attr]
    assert ("az ml workspace outbound-rule set --resource-group '<workspace-resource-group>' --workspace-name "
            "contoso-ml --rule fqdn-ml-azure-com --type fqdn --destination ml.azure.com") in finding["remedy"]
    assert "Start with the NSGs" not in finding["remedy"] and "NSG outbound rule" not in finding["remedy"]
    assert finding["confirm"][0].startswith("az ml workspace outbound-rule list")
    assert not any("network watcher" in c for c in finding["confirm"])


def test_a_forced_tunnel_s_routes_take_the_flow_around_the_appliance() -> None:
    """Without the routes a public-IP compute behind a forced tunnel needs, the appliance drops Azure
    Batch and the finding names the routes (TCP 44224's replies too); with them in the route table the
    same appliance never sees the flow and the node is healthy."""
    missing = check("forced-tunnel-public-ip")
    finding = next(f for f in missing["findings"] if f["code"] == "egress-blocked")  # type: ignore[union-attr]
    assert f"past {addresses.GATEWAY} (hop 1)" in finding["summary"]
    assert "route BatchNodeManagement.eastus to next hop Internet" in finding["remedy"]
    assert "TCP 44224" in finding["remedy"]
    routed = check("forced-tunnel-routed")
    assert routed["status"] == "ok" and routed["findings"] == []
