"""The support bundle's contents over a synthetic report: its members, what each holds, and redaction
(the lab's run, tests/lab/test_bundle.py, checks the same of a real run with a proxy credential)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from agent import versions
from agent.output import bundle, jsonreport
from probes import node

from .synthetic import SCENARIOS, build

MEMBERS = {"README.txt", "report.json", "report.md", "plan.json", "detection.json", "versions.json",
           "command.json", "node/nft-ruleset.txt", "node/proxy.json"}


def unpack(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {info.name: info for info in tar.getmembers()}


def test_the_bundle_holds_the_reports_plan_node_files_and_versions() -> None:
    report = build(SCENARIOS[0])
    files = bundle.members(report, {"resolv.conf": "nameserver 168.63.129.16\n", "hosts": "127.0.0.1 localhost\n"},
                           "table inet filter {\n}\n", versions(), ["aml-netcheck", "check", "--bundle", "b.tgz"])
    assert set(files) == MEMBERS | {"node/resolv.conf", "node/hosts"}
    assert files["report.json"] == jsonreport.to_json(report)
    assert [c["id"] for c in json.loads(files["plan.json"])["checks"]] == [r.check.id for r in report.results]
    assert json.loads(files["detection.json"])["context"]["region"] == {"value": "eastus", "source": "option"}
    assert json.loads(files["versions.json"])["aml-netcheck"].startswith("aml-netcheck ")
    assert json.loads(files["versions.json"])["dependencies"]["dnspython"]
    data = bundle.archive(report, files)
    infos = unpack(data)
    assert set(infos) == {f"aml-netcheck-bundle/{name}" for name in files}
    assert all(i.isfile() and i.mode == 0o644 and i.uid == 0 and i.uname == "root" for i in infos.values())
    assert bundle.archive(report, files) == data  # nothing of the moment or the machine that packed it


@pytest.mark.parametrize(("text", "shown"), [
    ("export https_proxy=http://alice:s3cr%40t@proxy.contoso.net:3128\n",
     "export https_proxy=http://***@proxy.contoso.net:3128\n"),
    ('{"url": "https://TOKEN@proxy:3128/"}', '{"url": "https://***@proxy:3128/"}'),
    ("https://contosomlsa.blob.core.windows.net/c/b?sv=2022&sig=AbC%2Bd&se=2026",
     "https://contosomlsa.blob.core.windows.net/c/b?sv=2022&sig=***&se=2026"),
    ("see https://learn.microsoft.com/azure/x?tabs=cli", "see https://learn.microsoft.com/azure/x?tabs=cli"),
])
def test_every_member_is_redacted(text: str, shown: str) -> None:
    assert bundle.redact(text) == shown
    files = bundle.members(build(SCENARIOS[0]), {"hosts": text}, text, {}, [])
    assert files["node/hosts"] == shown and files["node/nft-ruleset.txt"] == shown


def test_the_node_files_are_read_where_they_are_and_missing_ones_left_out(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.0.2.4\n")
    monkeypatch.setattr(node, "SOURCE_FILES", {"resolv.conf": resolv, "hosts": tmp_path / "absent"})
    assert node.source_files() == {"resolv.conf": "nameserver 10.0.2.4\n"}
