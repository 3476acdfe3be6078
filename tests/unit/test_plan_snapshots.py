"""Plan snapshots: the exact checks per scenario and cloud, so any change to the catalog or the
planner shows up as a reviewed diff. After an intended change, regenerate with
`UPDATE_SNAPSHOTS=1 ./dev test tests/unit/test_plan_snapshots.py` and review `git diff`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent import catalog, planner
from agent.inputs import context
from probes.specs import DnsSpec

from .helpers import GUID

SNAPSHOTS = Path(__file__).parent / "snapshots"
SCENARIOS = [
    (compute, public_ip, private_endpoint, cloud)
    for cloud in ("public", "usgov", "china")
    for compute, public_ip, private_endpoint in (
        ("instance", False, True), ("instance", True, False), ("cluster", False, True),
        ("cluster", True, False), ("serverless", False, True), ("vm", False, False))
]


def render(compute: str, public_ip: bool, private_endpoint: bool, cloud: str) -> str:
    values = context.build([("option", {
        "region": "eastus", "cloud": cloud, "compute": compute, "public_ip": public_ip,
        "private_endpoint": private_endpoint, "workspace_id": GUID, "workspace_name": "contoso-ml",
        "storage_account": "contosomlsa", "container_registry": "contosoacr", "key_vault": "contoso-kv",
        "compute_name": "ci-alice"})])
    checks = planner.plan(catalog.load(cloud), values)
    lines = [f"{c.id}  [{', '.join(c.requirements)}]" + (f"  expect={c.spec.expect}"
                                                          if isinstance(c.spec, DnsSpec) else "") for c in checks]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("compute", "public_ip", "private_endpoint", "cloud"), SCENARIOS,
                         ids=[f"{c}-{'pip' if p else 'npip'}-{'pe' if e else 'public'}-{cl}"
                              for c, p, e, cl in SCENARIOS])
def test_plan_snapshot(compute: str, public_ip: bool, private_endpoint: bool, cloud: str) -> None:
    name = f"plan-{compute}-{'pip' if public_ip else 'npip'}-{'pe' if private_endpoint else 'public'}-{cloud}.txt"
    path = SNAPSHOTS / name
    current = render(compute, public_ip, private_endpoint, cloud)
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.write_text(current)
    assert path.exists(), f"no snapshot {name}: run with UPDATE_SNAPSHOTS=1 and review it"
    assert current == path.read_text(), f"the plan for {name} changed: review, then UPDATE_SNAPSHOTS=1"
