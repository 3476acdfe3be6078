"""Detection from the environment and the workspace share mount (files written by the test), and
the imds-unavailable finding. IMDS itself is detected end to end in the lab (tests/lab)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import catalog
from agent.diagnose import Facts, diagnose
from agent.inputs import context, detect
from agent.model import Severity

SHARE_MOUNT = ("//contosomlsa.file.core.windows.net/code-391ff5ac "
               "/mnt/batch/tasks/shared/LS_root/mounts/clusters/ci-alice/code cifs rw,vers=3.0 0 0")
MOUNTS = f"""\
sysfs /sys sysfs rw,nosuid 0 0
{SHARE_MOUNT}
//other.file.core.windows.net/data /mnt/data cifs rw 0 0
"""


def test_compute_instance_environment_and_share(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS)
    found = detect.local({"CI_NAME": "ci-alice", "CI_WORKSPACE": "contoso-ml",
                          "AZUREML_SERVICE_ENDPOINT": "https://westeurope.api.azureml.ms"}, mounts)
    assert found.values == {"compute_name": "ci-alice", "workspace_name": "contoso-ml", "region": "westeurope",
                            "compute": "instance", "storage_account": "contosomlsa"}
    assert found.sources["storage_account"] == "mounts:/mnt/batch/tasks/shared/LS_root/mounts/clusters/ci-alice/code"
    assert found.sources["region"] == "environment:AZUREML_SERVICE_ENDPOINT"


def test_job_environment(tmp_path: Path) -> None:
    found = detect.local({"AZUREML_WORKSPACE_ID": "9f1c2a3b-4d5e-4f60-8a7b-0c1d2e3f4a5b",
                          "AZUREML_ARM_WORKSPACE_NAME": "ws1"}, tmp_path / "no-mounts")
    assert found.values == {"workspace_id": "9f1c2a3b-4d5e-4f60-8a7b-0c1d2e3f4a5b", "workspace_name": "ws1"}


def test_invalid_detected_values_are_noted_not_fatal(tmp_path: Path) -> None:
    found = detect.local({"CI_NAME": "bad name!"}, tmp_path / "no-mounts")
    assert "compute_name" not in found.values
    assert any("environment:CI_NAME" in note for note in found.notes["ignored"])  # type: ignore[union-attr]


def test_options_and_config_beat_detection(tmp_path: Path) -> None:
    found = detect.local({"CI_NAME": "ci-alice"}, tmp_path / "no-mounts")
    values = context.build([("option", {"compute_name": "ci-bob"}), ("config", {}), (found.sources, found.values)])
    assert (values["compute_name"].value, values["compute_name"].source) == ("ci-bob", "option")
    assert (values["compute"].value, values["compute"].source) == ("instance", "environment:CI_NAME")


@pytest.mark.parametrize(("region", "severity"), [(None, Severity.WARNING), ("eastus", Severity.INFO)])
def test_imds_unavailable(region: str | None, severity: Severity) -> None:
    values = context.build([("option", {"region": region})])
    node = {"detection": {"imds": {"error": "TimeoutError"}}}
    [finding] = diagnose((), Facts(catalog.load(), values, node)).findings
    assert (finding.code, finding.severity) == ("imds-unavailable", severity)
    assert "NO_PROXY" in finding.remedy
