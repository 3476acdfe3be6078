"""The lab's address plan: every address the lab uses, all of them inside its namespaces.

Public Azure front ends are simulated in 198.18.0.0/15 (RFC 2544 benchmarking space), so no
real public address ever appears in a lab, not even in a DNS answer.
"""

from __future__ import annotations

import hashlib
import ipaddress

from agent.platform import AZURE_DNS as AZURE_DNS  # the Azure-provided resolver (and WireServer)
from agent.platform import IMDS_ADDRESS

IMDS = IMDS_ADDRESS

NODE_SUBNET = "10.0.0.0/24"
NODE = "10.0.0.4"  # the compute node (node namespace)
GATEWAY = "10.0.0.1"  # the az namespace's end of the link: the node's default route
NODE_MAC = "00:0d:3a:00:00:04"  # Azure's OUI, so IMDS and the interface agree
# With a network virtual appliance (forced tunnelling) GATEWAY is the appliance's, and this link
# joins it to the az namespace
NVA_UPLINK = "10.255.0.1"  # the appliance's end
NVA_UPLINK_AZ = "10.255.0.2"  # the az namespace's end
# Routes with next hop Internet around the appliance (scenarios with `internet_routes`): a second link
# straight from the node to the az namespace
INTERNET_NODE = "10.254.0.1"
INTERNET_AZ = "10.254.0.2"

# A container behind Docker's default bridge in the node (scenarios with `container_mtu`): the node
# routes and masquerades its traffic, as Docker does
DOCKER_BRIDGE_ADDRESS = "172.17.0.1"
CONTAINER = "172.17.0.2"
DOCKER_PREFIX = 16

PE_SUBNET = "10.0.1.0/24"
PE_WORKSPACE = "10.0.1.5"  # <guid>.workspace.<region>.api.azureml.ms, its cert name, CI names
PE_NOTEBOOKS = "10.0.1.6"  # ml-<ws>-<region>-<guid>.<region>.notebooks.azure.net
PE_FILE = "10.0.1.7"  # <storage>.file.core.windows.net
PE_BLOB = "10.0.1.8"  # <storage>.blob.core.windows.net

CUSTOM_DNS = "10.0.2.4"  # a customer DNS server in the VNet
PROXY = "10.0.3.8"  # a forward HTTP proxy in a hub subnet (scenarios with `proxy`)
PROXY_PORT = 3128

PUBLIC_NET = "198.18.0.0/15"  # every public name lands here
NODE_PUBLIC_IP = "198.19.255.4"  # the node's public IP in scenarios that give it one

LOCAL_PREFIXES = (
    f"{AZURE_DNS}/32", f"{IMDS}/32", PE_SUBNET, f"{CUSTOM_DNS}/32", f"{PROXY}/32", PUBLIC_NET
)
"""Answered by the az namespace for any address inside (AnyIP local routes)."""

_PUBLIC = ipaddress.ip_network(PUBLIC_NET)


def public_address(name: str) -> str:
    """Deterministic simulated public address of a name: stable across runs and processes."""
    digest = int.from_bytes(hashlib.sha256(name.lower().rstrip(".").encode()).digest()[:8], "big")
    usable = _PUBLIC.num_addresses - 2  # skip the network and broadcast addresses
    return str(_PUBLIC.network_address + 1 + digest % usable)
