"""The catalog covers the reference: every reference row is some requirement's ref or excluded with a
reason, every row loads in every cloud, and each scenario gets its core requirements."""

from __future__ import annotations

import json
import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from agent import catalog, planner

from .helpers import make_context, tomllib

# Every row id of shared/reference/azureml-network-requirements.md and its draft .yaml.
REFERENCE_IDS = (
    "T-01", "T-02", "T-02u", "T-02r", "T-03", "T-04", "T-05", "T-06", "T-07", "T-08", "T-09", "T-10",
    "T-11", "T-12",
    "F-01", "F-02", "F-03", "F-04", "F-05", "F-06", "F-06b", "F-07", "F-08", "F-09", "F-10", "F-11",
    "F-12", "F-13", "F-14", "F-15", "F-16", "F-17", "F-18", "F-19", "F-20", "F-21", "F-22", "F-23",
    "F-24", "F-24b", "F-25", "F-26", "F-26b", "F-27", "F-27b", "F-28", "F-28b", "F-28c", "F-28d",
    "F-29", "F-29b", "F-30", "F-31", "F-31b", "F-32", "F-32b", "F-32c", "F-33", "F-34", "F-34b",
    "F-35", "F-36", "F-36b", "F-36c", "F-36d", "F-36e", "F-36f", "F-36g", "F-36h", "F-36i", "F-36j",
    "F-36k", "F-36l", "F-36m", "F-37", "F-38", "F-39",
    "D-01", "D-02", "D-03", "D-04", "D-05", "D-06", "D-07", "D-08", "D-09", "D-10", "D-11", "D-11b",
    "D-12",
    "P-80", "P-443", "P-445", "P-5831", "P-8787", "P-18881", "P-44224", "P-22", "P-8704-8710",
    "P-8704-8993", "P-29876-29877", "P-53", "P-32526", "P-IMDS",
    "I-01", "I-02", "I-03", "I-04", "I-05", "I-06",
)
FEATURES = {"rstudio", "vscode", "conda", "pypi", "cran", "pytorch", "automl", "monitor", "hbi",
            "huggingface", "custom-apps", "github"}
EXISTING_IDS = {  # ids that were API before 2026.11.2: never renamed
    "entra-id", "entra-id-http", "arm", "graph", "aml-api", "aml-tundra", "batch", "batch-node-management",
    "storage-blob", "storage-queue", "storage-table", "storage-file", "storage-file-smb", "mcr",
    "workspace-api", "workspace-cert", "notebooks", "instance-jupyter", "instance-jupyter-net",
    "instance-intellisense", "instance-rstudio",
}


@cache
def raw() -> dict[str, Any]:
    return tomllib.loads(resources.files("agent").joinpath("data/requirements.toml").read_text("utf-8"))


def test_every_reference_row_is_covered_or_excluded_with_a_reason() -> None:
    referenced = {ref for row in raw()["requirement"] for ref in row.get("refs", ())}
    excluded = {entry["id"]: entry["why"] for entry in raw()["excluded"]}
    assert all(why.strip() for why in excluded.values())
    missing = [i for i in REFERENCE_IDS if i not in referenced and i not in excluded]
    assert missing == []
    assert referenced & excluded.keys() == set()  # excluded means no row claims it
    assert (referenced | excluded.keys()) <= set(REFERENCE_IDS)  # no made-up ids


def test_the_compiled_catalog_is_the_toml() -> None:
    """The process reads requirements.json (20 ms less than tomllib at every start): it must hold
    exactly requirements.toml's rows. After editing the TOML: UPDATE_SNAPSHOTS=1 rewrites it."""
    compiled = Path(catalog.COMPILED)
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        compiled.write_text(json.dumps(raw(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    assert json.loads(compiled.read_text("utf-8")) == raw(), \
        "requirements.json is not requirements.toml: run with UPDATE_SNAPSHOTS=1 and review the diff"


@pytest.mark.parametrize("cloud", catalog.CLOUDS)
def test_every_row_loads_in_every_cloud(cloud: str) -> None:
    parsed = catalog.parse(raw(), cloud)
    assert parsed == catalog.load(cloud) and parsed.version == "2026.12.1"
    for requirement in parsed.requirements:
        assert requirement.refs and requirement.docs and "\n" not in requirement.purpose
        assert all(d.startswith("https://learn.microsoft.com/azure/") for d in requirement.docs)
        # a selected feature is situational; a row the docs disagree on may be situational without
        # one (always checked, a failure is a warning), and then its notes say why
        assert requirement.feature is None or requirement.required_for == "situational", requirement.id
        assert requirement.feature is not None or requirement.required_for != "situational" \
            or requirement.notes, requirement.id
        assert requirement.feature is None or requirement.feature in FEATURES
        if requirement.direction == "inbound":
            assert requirement.probe == "listen" and requirement.source_tag and not requirement.hosts
        if requirement.dns_private:  # a name that must resolve privately has its zone in this cloud
            for host in requirement.hosts:
                assert parsed.zone_of(host.split("}", 1)[-1].lstrip(".")), (cloud, requirement.id, host)
    assert any(z.workspace and z.privatelink_zone for z in parsed.zones)


def test_existing_ids_survive_and_ids_are_unique() -> None:
    ids = [row["id"] for row in raw()["requirement"]]
    assert len(ids) == len(set(ids)) and set(ids) >= EXISTING_IDS


CORE_OUTBOUND = {"entra-id", "entra-id-http", "arm", "graph", "aml-api", "aml-tundra", "batch",
                 "batch-node-management", "storage-blob", "storage-queue", "storage-table", "mcr", "mcr-data",
                 "front-door", "workspace-api", "workspace-cert", "azure-platform-dns"}
INSTANCE = CORE_OUTBOUND | {"storage-file", "storage-file-smb", "notebooks", "instance-jupyter",
                            "instance-jupyter-net", "instance-intellisense", "aml-tundra-api"}
CLUSTER = CORE_OUTBOUND | {"storage-file", "storage-file-smb", "acr"}
SERVERLESS = CORE_OUTBOUND | {"acr"}
INSTANCE_ONLY = {"notebooks", "instance-jupyter", "instance-jupyter-net", "instance-intellisense", "aml-tundra-api"}
VM = {"entra-id", "entra-id-http", "arm", "azure-platform-dns", "inbound-ssh"}

SCENARIOS = [
    # (compute, public_ip, private_endpoint, must contain, must not contain)
    *[(compute, pip, pe, core | ({"inbound-44224"} if pip else set()) | ({"private-endpoint-traffic"} if pe else set()),
       ({"inbound-44224"} if not pip else set()) | ({"private-endpoint-traffic"} if not pe else set())
       | ({"inbound-ssh"}) | (INSTANCE_ONLY if compute != "instance" else set()))
      for compute, core in (("instance", INSTANCE), ("cluster", CLUSTER), ("serverless", SERVERLESS))
      for pip in (False, True) for pe in (False, True)],
    ("vm", False, False, VM, {"aml-api", "batch", "storage-blob", "inbound-44224"}),
    ("hdinsight", True, True, VM, {"aml-api", "inbound-44224", "private-endpoint-traffic"}),
    ("databricks", False, False, {"entra-id", "arm", "storage-blob", "azure-platform-dns"}, {"batch", "inbound-ssh"}),
]


@pytest.mark.parametrize(("compute", "public_ip", "private_endpoint", "expected", "absent"), SCENARIOS)
def test_each_scenario_gets_its_core_requirements(compute: str, public_ip: bool, private_endpoint: bool,
                                                   expected: set[str], absent: set[str]) -> None:
    context = make_context(compute=compute, public_ip=public_ip, private_endpoint=private_endpoint)
    ids = {r.id for r in planner.applicable(catalog.load(), context)}
    assert expected <= ids, expected - ids
    assert not ids & absent
    assert all(catalog.load().by_id(i).feature is None for i in ids)  # features only when selected


def test_features_select_only_their_rows() -> None:
    context = make_context()
    base = {r.id for r in planner.applicable(catalog.load(), context)}
    for feature in sorted(FEATURES):
        added = {r.id for r in planner.applicable(catalog.load(), make_context(compute="cluster"), [feature])} \
            | {r.id for r in planner.applicable(catalog.load(), context, [feature])}
        extra = {i for i in added - base if catalog.load().by_id(i).feature is not None}
        assert extra and all(catalog.load().by_id(i).feature == feature for i in extra), feature


PUBLIC_SUFFIXES = (".windows.net", ".azure.com", ".azureml.net", "microsoftonline.com", ".api.azureml.ms",
                   ".tundra.azureml.ms", ".notebooks.azure.net", ".instances.ml.azure.ms")
SOVEREIGN = [  # (cloud, requirement, a name it must probe)
    ("usgov", "entra-id", "login.microsoftonline.us"),
    ("usgov", "arm", "management.usgovcloudapi.net"),
    ("usgov", "aml-tundra", "{region}.tundra.azureml.us"),
    ("usgov", "workspace-api", "{workspace_id}.workspace.{region}.api.ml.azure.us"),
    ("usgov", "notebooks", "{notebooks_label}.{region}.notebooks.usgovcloudapi.net"),
    ("usgov", "storage-file-smb", "{storage_account}.file.core.usgovcloudapi.net"),
    ("usgov", "batch", "{region}.batch.usgovcloudapi.net"),
    ("usgov", "instance-jupyter-net", "{compute_name}.{region}.instances.azureml.us"),
    ("usgov", "key-vault", "{key_vault}.vault.usgovcloudapi.net"),
    ("china", "entra-id", "login.chinacloudapi.cn"),
    ("china", "graph", "graph.chinacloudapi.cn"),
    ("china", "workspace-cert", "{workspace_id}.workspace.{region}.cert.api.ml.azure.cn"),
    ("china", "storage-blob", "{storage_account}.blob.core.chinacloudapi.cn"),
    ("china", "batch-node-management", "{region}.service.batch.chinacloudapi.cn"),
    ("china", "key-vault", "{key_vault}.vault.azure.cn"),
]


@pytest.mark.parametrize(("cloud", "requirement", "host"), SOVEREIGN)
def test_sovereign_variants_replace_public_names(cloud: str, requirement: str, host: str) -> None:
    row = catalog.load(cloud).by_id(requirement)
    assert host in row.hosts
    assert not any(h.endswith(s) or s + "." in h for h in row.hosts for s in PUBLIC_SUFFIXES), row.hosts
    assert not any(s in row.rule_fqdn for s in PUBLIC_SUFFIXES), row.rule_fqdn


@pytest.mark.parametrize(("cloud", "absent"), [("usgov", {"aml-experiments", "aml-tundra-api", "automl", "monitor"}),
                                            ("china", {"front-door", "aml-tundra-api", "automl"})])
def test_public_only_rows_stay_out_of_sovereign_clouds(cloud: str, absent: set[str]) -> None:
    assert not {r.id for r in catalog.load(cloud).requirements} & absent
