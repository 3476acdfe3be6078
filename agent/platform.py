"""Facts about the Azure platform every part of the agent relies on, written once: the
addresses the node talks to outside any VNet rule, and the issuers Azure endpoints' certificates
come from. The lab simulates these same addresses."""

from __future__ import annotations

AZURE_DNS = "168.63.129.16"  # Azure-provided DNS and the WireServer: never blocked, never proxied
IMDS_ADDRESS = "169.254.169.254"  # instance metadata, reached directly on port 80 (never through a proxy)
IMDS_URL = f"http://{IMDS_ADDRESS}"
IMDS_TARGET = f"{IMDS_ADDRESS}:80/tcp"
IMDS_TOKEN_URL = f"{IMDS_URL}/metadata/identity/oauth2/token?api-version=2018-02-01"  # managed identity tokens
DEFAULT_EXPECTED_ISSUERS = ("Microsoft Corporation", "DigiCert Inc")  # issuer O= of Azure endpoints' CAs
PRIVATELINK_LABEL = "privatelink"  # every private link zone is privatelink.<the service's public zone>
