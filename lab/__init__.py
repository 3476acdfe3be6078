"""A simulated Azure VNet in Linux network namespaces, for demos, end-to-end tests and benchmarks.

    with Lab(scenario("nsg-drop-445")) as lab:
        result = lab.run_in_node(["aml-netcheck", "check", *lab.scenario.check_args()])

The node namespace is where the agent runs (its resolver is the simulated Azure DNS); the az
namespace plays Azure. The two are never connected to the host namespace.
"""

from __future__ import annotations

from lab._lab import Lab, LabUnavailable
from lab.scenarios import DEFAULT_SCENARIO, SCENARIOS, Context, Fault, Scenario, scenario

__all__ = [
    "DEFAULT_SCENARIO",
    "SCENARIOS",
    "Context",
    "Fault",
    "Lab",
    "LabUnavailable",
    "Scenario",
    "scenario",
]
