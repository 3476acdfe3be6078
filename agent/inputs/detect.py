"""Detection of the context the user did not give: environment variables, the workspace file
share mount, and (for `check` only, since it is a request) the instance metadata service.

Every value comes back with its source, and a detected value that fails validation is dropped
with a note rather than stopping the run: detection must never be the reason a check fails."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.inputs import context
from agent.platform import IMDS_URL
from probes._trace import Fact

IMDS_INSTANCE = "/metadata/instance?api-version=2021-02-01"
IMDS_LOADBALANCER = "/metadata/loadbalancer?api-version=2020-10-01"
IMDS_TIMEOUT = 1.0  # seconds for both requests: IMDS answers locally in milliseconds or not at all

_ENVIRONMENT: tuple[tuple[str, str], ...] = (  # (variable, context key), first found wins per key
    ("CI_NAME", "compute_name"),
    ("CI_WORKSPACE", "workspace_name"),
    ("AZUREML_ARM_WORKSPACE_NAME", "workspace_name"),
    ("AZUREML_WORKSPACE_ID", "workspace_id"),
    ("MSI_ENDPOINT", "identity_endpoint"),  # what Azure ML's credential reads first (azure-identity)
    ("IDENTITY_ENDPOINT", "identity_endpoint"),
    ("DEFAULT_IDENTITY_CLIENT_ID", "identity_client_id"),  # a cluster's user-assigned identity
)
_CLOUDS = {"AzurePublicCloud": "public", "AzureUSGovernmentCloud": "usgov", "AzureChinaCloud": "china"}
_SHARE = re.compile(r"^//([a-z0-9]{3,24})\.file\.core\.(?:windows\.net|usgovcloudapi\.net|chinacloudapi\.cn)/")


@dataclass(slots=True)
class Detected:
    """Detected context values with their sources, and what detection saw, for the report."""

    values: dict[str, object] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    notes: dict[str, Fact] = field(default_factory=dict)

    def offer(self, key: str, value: object, source: str) -> None:
        """Keep the first valid value per key."""
        if key in self.values or value in (None, ""):
            return
        try:
            self.values[key] = context.validate(key, value)
        except context.ContextError as exc:
            self.notes.setdefault("ignored", [])
            self.notes["ignored"].append(f"{source}: {exc}")  # type: ignore[union-attr]
            return
        self.sources[key] = source


def local(environ: Mapping[str, str], mounts: Path = Path("/proc/mounts")) -> Detected:
    """What the node says about itself without sending anything."""
    found = Detected()
    for variable, key in _ENVIRONMENT:
        found.offer(key, environ.get(variable), f"environment:{variable}")
    endpoint = environ.get("AZUREML_SERVICE_ENDPOINT", "")
    if match := re.match(r"https?://([a-z0-9]+)\.", endpoint):
        found.offer("region", match.group(1), "environment:AZUREML_SERVICE_ENDPOINT")
    if environ.get("CI_NAME"):
        found.offer("compute", "instance", "environment:CI_NAME")
    for account, mount_point in _file_shares(mounts):
        found.offer("storage_account", account, f"mounts:{mount_point}")
    return found


def _file_shares(mounts: Path) -> list[tuple[str, str]]:
    try:
        lines = mounts.read_text(errors="replace").splitlines()
    except OSError:
        return []
    shares = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and (match := _SHARE.match(fields[0].lower())):
            shares.append((match.group(1), fields[1]))
    return shares


async def imds(found: Detected, base: str = IMDS_URL, timeout: float = IMDS_TIMEOUT) -> None:
    """Read region, cloud and public IP from IMDS into `found`: no proxy (IMDS must never be
    proxied), one short deadline for both requests, and a note instead of an error when absent."""
    import asyncio

    try:
        async with asyncio.timeout(timeout):
            instance = await _get(base + IMDS_INSTANCE)
            compute = instance.get("compute", {})
            found.offer("region", compute.get("location"), "imds:compute.location")
            found.offer("cloud", _CLOUDS.get(compute.get("azEnvironment", "")), "imds:compute.azEnvironment")
            public = [a.get("publicIpAddress") for i in instance.get("network", {}).get("interface", [])
                      for a in i.get("ipv4", {}).get("ipAddress", []) if a.get("publicIpAddress")]
            source = "imds:network.publicIpAddress"
            if not public:  # a Standard-SKU public IP shows only on the load balancer
                balancer = await _get(base + IMDS_LOADBALANCER)
                public = [p.get("frontendIpAddress") for p in
                          balancer.get("loadbalancer", {}).get("publicIpAddresses", []) if p.get("frontendIpAddress")]
                source = "imds:loadbalancer.publicIpAddresses"
            found.offer("public_ip", bool(public), source)
            private = [a.get("privateIpAddress") for i in instance.get("network", {}).get("interface", [])[:1]
                       for a in i.get("ipv4", {}).get("ipAddress", [])[:1] if a.get("privateIpAddress")]
            found.notes["imds"] = {"vm_name": compute.get("name"), "vm_size": compute.get("vmSize"),
                                   "public_ips": public, "resource_group": compute.get("resourceGroupName"),
                                   "subscription_id": compute.get("subscriptionId"),
                                   "private_ip": private[0] if private else None}
    except (TimeoutError, OSError, ValueError) as exc:
        found.notes["imds"] = {"error": f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__}


IMDS_BODY_BYTES = 1 << 20  # an instance document is a few KiB: never read more than this


async def _get(url: str) -> dict[str, Any]:
    """IMDS's JSON document at `url`, by the probes' own HTTP/1.1 exchange (aiohttp stays out of `check`)."""
    from probes.http import get

    status, body = await get(url, [("Metadata", "true")], IMDS_BODY_BYTES)
    if status != 200:
        raise ValueError(f"HTTP {status} from {url.split('?')[0]}")
    document = json.loads(body.decode(errors="replace"))
    if not isinstance(document, dict):
        raise ValueError("IMDS answered with something other than a JSON object")
    return document
