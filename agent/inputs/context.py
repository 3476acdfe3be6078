"""The node's context: which compute, cloud, region and workspace the checks are planned for.

Every value carries its source, so the report can say where it came from. Precedence: command
line option, then the config file, then detection, then the documented default."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agent.inputs.values import shown
from agent.model import ContextValue

CLOUDS = ("public", "usgov", "china")
COMPUTE_KINDS = ("instance", "cluster", "serverless", "vm", "hdinsight", "databricks")
# The workspace's managed virtual network (its isolation mode); "disabled" is the customer's own VNet
MANAGED_NETWORK_MODES = ("disabled", "allow_internet_outbound", "allow_only_approved_outbound")
# What a managed virtual network can hold: Azure ML's own compute only (no attached VMs, no Kubernetes)
MANAGED_NETWORK_COMPUTE = ("instance", "cluster", "serverless")


class ContextError(ValueError):
    """A context value is malformed; the message is one line naming the key."""


def _pattern(regex: str, what: str) -> Callable[[str], str]:
    def validate(value: str) -> str:  # compiled on first use (re caches it), not at every start
        if not re.fullmatch(regex, value):
            raise ContextError(f"{what}: {shown(value)}")
        return value

    return validate


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def validate(value: str) -> str:
        if value not in choices:
            raise ContextError(f"must be one of {', '.join(choices)}, not {shown(value)}")
        return value

    return validate


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    kind: type  # str or bool
    validate: Callable[[str], str] | None = None
    default: str | bool | None = None
    hint: str = ""  # how to give it, for skipped checks


KEYS: tuple[Key, ...] = (
    Key("region", str, _pattern(r"[a-z][a-z0-9]{1,30}", "an Azure region name like eastus"),
        hint="--region"),
    Key("cloud", str, _choice(CLOUDS), "public"),
    Key("compute", str, _choice(COMPUTE_KINDS), "instance"),
    Key("public_ip", bool, default=False),
    Key("private_endpoint", bool, default=False),
    Key("peered", bool, default=False),  # compute in another VNet than the workspace endpoint
    # the compute subnet's route table sends 0.0.0.0/0 to an appliance or on-premises: out of the
    # node's sight (a path that passes a hop before it dies says so); unknown by default
    Key("forced_tunnel", bool),
    # Not detectable from the node (a managed VNet looks like any other from inside): a managed network
    # changes every remedy of a blocked flow to its outbound rules, since Azure ML owns its NSG and routes
    Key("managed_network", str, _choice(MANAGED_NETWORK_MODES), hint="--managed-network"),
    # The VNet's DNS is an Azure DNS Private Resolver (its inbound endpoint, or Azure DNS with a forwarding
    # ruleset linked to the VNet): private zones link to the resolver's VNet, forwarding is a ruleset rule
    Key("dns_private_resolver", bool),
    Key("registry_data_endpoint", bool, default=False),  # the registry has dedicated data endpoints (Premium)
    # Whether a dependent resource has its own private endpoint: not implied by the workspace's
    # (a resource may use a service endpoint instead), so unknown by default; unknown, the DNS check
    # reads it from the public answer's CNAME chain (a private endpoint's name is privatelink.*)
    Key("storage_private_endpoint", bool),
    Key("key_vault_private_endpoint", bool),
    Key("registry_private_endpoint", bool),
    Key("workspace_id", str, _pattern(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "a workspace GUID"),
        hint="--workspace-id"),
    Key("workspace_name", str, _pattern(r"[A-Za-z0-9][A-Za-z0-9_-]{1,32}", "a workspace name"),
        hint="--workspace-name"),
    Key("storage_account", str, _pattern(r"[a-z0-9]{3,24}", "a storage account name"),
        hint="--storage-account"),
    Key("container_registry", str, _pattern(r"[A-Za-z0-9]{5,50}", "a container registry name"),
        hint="--container-registry"),
    Key("key_vault", str, _pattern(r"[A-Za-z][A-Za-z0-9-]{2,23}", "a key vault name"),
        hint="--key-vault"),
    Key("compute_name", str, _pattern(r"[A-Za-z][A-Za-z0-9-]{1,23}", "a compute name"),
        hint="--compute-name"),
)
KEYS_BY_NAME: dict[str, Key] = {key.name: key for key in KEYS}

Context = Mapping[str, ContextValue]


def validate(name: str, value: object) -> str | bool:
    """Check one value against its key; raises ContextError naming the key."""
    key = KEYS_BY_NAME[name]
    if key.kind is bool:
        if not isinstance(value, bool):
            raise ContextError(f"{name}: expected true or false, not {shown(value)}")
        return value
    if not isinstance(value, str):
        raise ContextError(f"{name}: expected a string, not {shown(value)}")
    try:
        return key.validate(value) if key.validate else value
    except ContextError as exc:
        raise ContextError(f"{name}: {exc}") from None


Source = str | Mapping[str, str]  # one source for a whole layer, or one per key (detection)


def build(layers: list[tuple[Source, Mapping[str, object]]]) -> dict[str, ContextValue]:
    """Merge (source, values) layers, first wins; the documented defaults come last."""
    merged: dict[str, ContextValue] = {}
    for key in KEYS:
        for source, values in layers:
            value = values.get(key.name)
            if value is not None:
                where = source if isinstance(source, str) else source.get(key.name, "detected")
                merged[key.name] = ContextValue(validate(key.name, value), where)
                break
        else:
            merged[key.name] = ContextValue(key.default, "default" if key.default is not None else "unknown")
    if managed_network(merged) and merged["compute"].value not in MANAGED_NETWORK_COMPUTE:
        raise ContextError(f"managed_network: a managed virtual network holds only Azure ML's own compute "
                           f"({', '.join(MANAGED_NETWORK_COMPUTE)}), not compute {merged['compute'].value}")
    return merged


def managed_network(context: Context) -> str | None:
    """The isolation mode of the workspace's managed virtual network, None outside one (a
    customer VNet, or not said)."""
    value = context["managed_network"].value if "managed_network" in context else None
    return str(value) if value not in (None, "disabled") else None


def template_values(context: Context) -> dict[str, str]:
    """The placeholders catalog host names use, including derived ones."""
    values = {name: str(v.value) for name, v in context.items()
              if v.value is not None and KEYS_BY_NAME[name].kind is str}
    if {"workspace_name", "region", "workspace_id"} <= values.keys():
        values["notebooks_label"] = notebooks_label(
            values["workspace_name"], values["region"], values["workspace_id"])
    return values


def notebooks_label(workspace_name: str, region: str, workspace_id: str) -> str:
    """`ml-<name>-<region>-<guid>` with the name cut so the DNS label stays within 63 octets."""
    room = 63 - len(f"ml--{region}-{workspace_id}")
    return f"ml-{workspace_name.lower()[:max(room, 0)]}-{region}-{workspace_id}"


def hint_for(placeholder: str) -> str:
    if placeholder == "notebooks_label":
        return "--workspace-name, --workspace-id and --region"
    key = KEYS_BY_NAME.get(placeholder)
    return key.hint if key and key.hint else f"--{placeholder.replace('_', '-')}"
