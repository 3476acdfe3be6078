"""The support bundle (`check --bundle FILE`): one tar.gz to attach to a ticket, holding what a support
engineer needs to read the diagnosis again: the reports, the plan, the node's own files behind its
facts, and the versions. Pure over the Report and the facts given; the CLI gathers those.

Nothing else goes in (no environment, no config file, no logs). Credentials are redacted: the
report's proxy URLs and evidence already are (probes.specs.Proxy.redact), and every member is passed
through `redact` once more, for a URL's userinfo or a token in a query that a node file may carry."""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from agent.model import Report
from agent.output import plan
from agent.output.jsonreport import to_json
from agent.output.markdown import render_markdown

DIRECTORY = "aml-netcheck-bundle"  # every member is under it, so unpacking makes one directory
# userinfo of any URL: scheme://USER[:PASSWORD]@ (up to the first / or white space)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#@\"']*@")
# a secret carried in a query: SAS signatures, OAuth tokens and codes, keys and passwords
_QUERY_SECRET = re.compile(r"(?i)([?&](?:sig|token|access_token|refresh_token|code|key|password|secret)=)"
                           r"[^&\s\"'#]+")

_README = """\
aml-netcheck support bundle

report.json      the JSON report (schema report-1): context with sources, node facts, every check, findings
report.md        the same as markdown, for the ticket
plan.json        the checks planned for that context (aml-netcheck plan --format json)
detection.json   where each context value came from, and what detection saw (IMDS, environment, mounts)
versions.json    aml-netcheck, its catalog, Python, kernel, OS and the dependencies
command.json     the command line of the run
node/            the node's own files behind its facts: resolv.conf (and systemd-resolved's upstreams),
                 hosts, nsswitch.conf, the routing tables (/proc/net/route, ipv6_route), the nftables
                 ruleset (nft list ruleset, when readable), the proxy variables (redacted)

Credentials are redacted: a URL's user and password are ***, and so are tokens in a query.
"""


def redact(text: str) -> str:
    """`text` with every URL's userinfo and every query secret replaced by ***."""
    return _QUERY_SECRET.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


def members(report: Report, node_files: Mapping[str, str], nft_ruleset: str, versions: Mapping[str, Any],
            argv: list[str]) -> dict[str, str]:
    """The bundle's files by name (under DIRECTORY), redacted."""
    checks = [result.check for result in report.results]
    files = {
        "README.txt": _README,
        "report.json": to_json(report),
        "report.md": render_markdown(report),
        "plan.json": _json(plan.to_dict(report.catalog, report.context, checks)),
        "detection.json": _json({
            "context": {k: {"value": v.value, "source": v.source} for k, v in report.context.items()},
            "detection": report.node.get("detection"),
        }),
        "versions.json": _json(versions),
        "command.json": _json({"argv": argv}),
        **{f"node/{name}": text for name, text in node_files.items()},
        "node/nft-ruleset.txt": nft_ruleset,
        "node/proxy.json": _json(report.node.get("proxy")),
    }
    return {name: redact(text) for name, text in files.items()}


def archive(report: Report, files: Mapping[str, str]) -> bytes:
    """A gzip'd tar of `files` under DIRECTORY: regular files 0644 owned by root, all dated at the
    run's start, so that the archive says nothing of the machine that packed it."""
    mtime = datetime.fromisoformat(report.started_at.replace("Z", "+00:00")).timestamp()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"{DIRECTORY}/{name}")
            info.size, info.mtime, info.mode, info.uname, info.gname = len(data), int(mtime), 0o644, "root", "root"
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str) + "\n"
