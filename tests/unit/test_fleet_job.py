"""packaging/fleet/job.yml as Azure ML reads it: loaded and validated by the Azure ML SDK v2's own
YAML loader and schema (`azure.ai.ml.load_job`, what `az ml job create --file` uses), with no
workspace and no network. The SDK is imported inside the tests, where the suite's guard
(tests/conftest.py) is armed: neither the import nor the load may reach for the network (the SDK's
telemetry belongs to MLClient, which is never created here)."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import typer

from agent.cli import app

# The SDK's schemas (azure.ai.ml._schema) use marshmallow 3 APIs that marshmallow deprecates for
# its version 4; the SDK pins marshmallow below 4. Its warnings are not this project's to fix.
pytestmark = pytest.mark.filterwarnings("ignore::marshmallow.warnings.Marshmallow4Warning")

FLEET = Path(__file__).resolve().parents[2] / "packaging" / "fleet"
OUTPUT_BINDING = "${{outputs.reports}}"


def load(path: Path, overrides: list[dict[str, Any]] | None = None) -> Any:
    """The job entity, validated as `az ml job create` would before it submits: schema errors are
    raised by load_job, the entity's own checks (paths, bindings) come back from _validate()."""
    from azure.ai.ml import load_job

    job = load_job(path, params_override=overrides or [])
    result = job._validate()
    assert result.passed, result.error_messages
    return job


def test_the_fleet_job_validates_with_the_azure_ml_sdk() -> None:
    from azure.ai.ml import MpiDistribution

    job = load(FLEET / "job.yml")
    assert job.type == "command" and job.compute == "cpu-cluster"  # the README's --set compute= replaces it
    # one process on each of instance_count nodes: every node runs the check once
    assert isinstance(job.distribution, MpiDistribution) and job.distribution.process_count_per_instance == 1
    assert job.resources.instance_count >= 2
    reports = job.outputs["reports"]
    assert (reports.type, reports.mode) == ("uri_folder", "rw_mount")  # every node writes into one folder
    assert (Path(job.base_path) / job.code).resolve() == FLEET  # `code: .`: the folder the README puts the zipapp in
    # Azure ML launches an MPI job with mpirun, so the image needs an MPI library: Azure ML's OpenMPI
    # base images have one (and Miniconda's Python 3.10, which the zipapp runs on)
    assert job.environment.image.startswith("mcr.microsoft.com/azureml/openmpi"), job.environment.image


def test_the_readme_overrides_apply() -> None:
    """What the README's `az ml job create --set ...` changes, through the SDK's own override path."""
    job = load(FLEET / "job.yml", [{"compute": "azureml:gpu-nodes"}, {"resources.instance_count": 8}])
    assert (job.compute, job.resources.instance_count) == ("gpu-nodes", 8)


def test_the_job_command_is_one_check_accepts(tmp_path: Path) -> None:
    """The command line, as the node's shell gets it, parses as `aml-netcheck check` options; each
    node writes a JSON report of its own into the output and always exits 0."""
    job = load(FLEET / "job.yml")
    command: str = job.command
    assert command.endswith(" || true") and command.count(OUTPUT_BINDING) == 1
    argv = shlex.split(command.removesuffix(" || true").replace(OUTPUT_BINDING, str(tmp_path)))
    assert argv[:3] == ["python", "aml-netcheck.pyz", "check"]
    check = typer.main.get_command(app).commands["check"]
    params = check.make_context("check", argv[3:]).params
    assert params["output_format"] == "json" and params["exit_codes"] == "simple"
    assert Path(params["output"]) == tmp_path / "$(hostname)-${AZ_BATCH_NODE_ID:-node}.json"  # one file per node


@pytest.mark.parametrize(("change", "message"), [
    (("instance_count: 2", "instance_count: two"), "Not a valid integer"),
    (("process_count_per_instance", "process_count_per_node"), "process_count_per_node"),
    (("mode: rw_mount", "mode: ro_mount"), "ro_mount"),
    (("compute:", "computer:"), "Unknown field"),
])
def test_the_loader_refuses_a_broken_job(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    """The SDK's schema is strict, so the test above would fail on a job Azure ML would refuse."""
    from marshmallow.exceptions import ValidationError

    shutil.copy(FLEET / "README.md", tmp_path)
    text = (FLEET / "job.yml").read_text("utf-8")
    assert change[0] in text
    (tmp_path / "job.yml").write_text(text.replace(change[0], change[1], 1), "utf-8")
    with pytest.raises(ValidationError, match=message):
        load(tmp_path / "job.yml")
