"""The architecture as tests: data flows one way (outputs read only the report; probes know
nothing of agent/), and facts are written once (platform addresses in agent/platform.py, layer
names in probes.specs.Layer, which the JSON schema's list follows)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest

from agent import platform
from probes.specs import Layer

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("literal", [platform.AZURE_DNS, platform.IMDS_ADDRESS])
def test_platform_addresses_are_written_once(literal: str) -> None:
    sources = [p for d in ("agent", "probes", "lab") for p in (ROOT / d).rglob("*.py")]
    written = [str(p.relative_to(ROOT)) for p in sources if literal in p.read_text("utf-8")]
    assert written == ["agent/platform.py"]


def test_the_schema_names_the_layers_the_probes_have() -> None:
    schema = json.loads(resources.files("agent").joinpath("data/report-1.schema.json").read_text("utf-8"))
    check = schema["$defs"]["check"]["properties"]
    assert check["layer"]["enum"] == [layer.value for layer in Layer]
    assert check["id"]["pattern"] == f"^({'|'.join(layer.value for layer in Layer)}):"


def _imported_by(module: str) -> set[str]:
    """Every module importing `module` pulls in, in a fresh interpreter."""
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


OUTPUTS = sorted(f"agent.output.{p.stem}" for p in (ROOT / "agent" / "output").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("module", OUTPUTS)
def test_outputs_import_neither_diagnosis_nor_the_engine(module: str) -> None:
    loaded = _imported_by(module)
    assert not {m for m in loaded if m.startswith(("agent.diagnose", "agent.engine", "agent.runner"))}


def test_probes_know_nothing_of_the_agent() -> None:
    loaded = _imported_by("probes, probes.dns, probes.tcp, probes.udp, probes.tls, probes.http, probes.websocket, "
                          "probes.local, probes.specs")
    assert not {m for m in loaded if m == "agent" or m.startswith("agent.")}


def _loaded_by_process(*argv: str, inside: Callable[[list[str]], list[str]] = list) -> set[str]:
    """Every module the real process (`python -m agent ARGV`) imports, from -X importtime; `inside`
    wraps the command (the lab's node namespace, for `check`)."""
    proc = subprocess.run(inside([sys.executable, "-X", "importtime", "-m", "agent", *argv]), cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]  # 1: warnings (a lab has none in healthy-private)
    return {line.rpartition("|")[2].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


def _packages(modules: set[str], *names: str) -> set[str]:
    return {m for m in modules if m.partition(".")[0] in names}


def test_version_is_answered_before_the_cli_loads() -> None:
    assert not _packages(_loaded_by_process("--version"), "typer", "click", "rich", "asyncio", "pydantic") | (
        _loaded_by_process("--version") & {"agent.cli", "agent.catalog"})


# the libraries only `check` (aiohttp, websockets, dnspython, and below them asyncio and OpenSSL; psutil
# for the node's interfaces and listeners), a failed verification (cryptography) or a terminal
# (rich: colour and width; a pipe's text and tables are drawn without it) need
_NOT_FOR_PLANNING = ("aiohttp", "websockets", "dns", "cryptography", "rich", "asyncio", "ssl", "psutil")


@pytest.mark.parametrize("argv", [
    ("plan", "--format", "json", "--no-detect", "--region", "eastus"),
    ("rules", "--format", "json", "--no-detect", "--region", "eastus"),
    ("rules", "--format", "az", "--no-detect", "--region", "eastus"),
    ("plan", "--no-detect", "--region", "eastus"),  # tables, to a pipe
    ("rules", "--region", "eastus"),  # with local detection, as on a node
])
def test_plan_and_rules_load_no_probing_library(argv: tuple[str, ...]) -> None:
    assert not _packages(_loaded_by_process(*argv), *_NOT_FOR_PLANNING)


@pytest.mark.lab
@pytest.mark.skipif(not (os.geteuid() == 0 and shutil.which("ip") and shutil.which("nft")),
                    reason="`check` runs only in the lab, which needs root, `ip` and `nft`")
def test_a_healthy_check_loads_neither_aiohttp_nor_cryptography() -> None:
    """The probes speak HTTP with h11 and WebSocket with websockets' sans-I/O client on their own
    connections (aiohttp: ~190 ms of import, building SSL contexts); cryptography (~60 ms) describes
    only what a failed verification presented. A healthy run verifies every certificate."""
    from lab import Lab, scenario

    with Lab(scenario("healthy-private")) as lab:
        loaded = _loaded_by_process("check", *lab.scenario.check_args(), "--format", "json",
                                    inside=lab.node_command)
    assert "probes.http" in loaded and "agent.engine" in loaded  # it did probe
    assert not _packages(loaded, "aiohttp", "cryptography")


def test_the_text_report_off_a_terminal_is_drawn_without_rich() -> None:
    """`check --format text | less` and `--output report.txt`: plain text, rich never loaded."""
    code = ("import sys; from tests.unit.synthetic import SCENARIOS, build; from agent.output import Format, render; "
            "assert all(render(build(s), Format.TEXT, verbose=True) for s in SCENARIOS); "
            "print(sorted(m for m in sys.modules if m.partition('.')[0] == 'rich'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _typer_vendors_click() -> bool:
    from importlib.metadata import version

    return tuple(int(part) for part in version("typer").split(".")[:2]) >= (0, 20)


@pytest.mark.skipif(_typer_vendors_click(), reason="typer >= 0.20 (pyproject pins < 0.20) parses every option "
                                                   "with a pydantic TypeAdapter")
@pytest.mark.parametrize("argv", [("plan", "--no-detect", "--region", "eastus"),
                                  ("rules", "--no-detect", "--region", "eastus")])
def test_no_pydantic_at_run_time(argv: tuple[str, ...]) -> None:
    assert not _packages(_loaded_by_process(*argv), "pydantic", "pydantic_core")
