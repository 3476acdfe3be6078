"""The lab's HTTP side: IMDS, the public/private HTTPS front ends with WebSocket, and TLS by SNI."""

from __future__ import annotations

import datetime
import hashlib
import re
import ssl
import uuid
from collections.abc import Awaitable, Callable
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from lab import addresses
from lab.pki import Issuer
from lab.scenarios import Scenario, matches

SERVER = "Lab-Azure-FrontEnd/1.0"
WEBSOCKET_NAMES = ("*.instances.azureml.ms", "*.instances.ml.azure.ms", "*.instances.azureml.net")
IMDS_VERSIONS = ("2017-04-02", "2018-10-01", "2019-06-04", "2020-10-01", "2021-02-01", "2021-12-13")
"""Listed by /metadata/versions; any well-formed version from 2017-04-02 on is accepted, so the
agent's choice of a newer version never looks like an IMDS outage."""
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
FIREWALL_DENY = "Action: Deny. Reason: No rule matched. Proceeding with default action."
"""Azure Firewall's body for plain HTTP that no application rule allows, sent with status 470."""

Stamp = Callable[[web.Request, web.StreamResponse], Awaitable[None]]


def _stamp(scenario: Scenario) -> Stamp:
    """Server and Date on every answer; Date as the servers' clock has it (clock-skew)."""
    offset = datetime.timedelta(seconds=scenario.server_clock_offset)

    async def stamp(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = SERVER
        now = datetime.datetime.now(datetime.UTC) + offset
        response.headers["Date"] = format_datetime(now.replace(microsecond=0), usegmt=True)

    return stamp


def _not_found() -> web.Response:
    return web.json_response(
        {"error": {"code": "NotFound", "message": "The lab has no resource at this path."}},
        status=404,
    )


def imds_instance(scenario: Scenario) -> dict[str, Any]:
    """An IMDS /metadata/instance document for the simulated node."""
    c = scenario.context
    mac = addresses.NODE_MAC.replace(":", "").upper()
    return {
        "compute": {
            "azEnvironment": "AzurePublicCloud",
            "location": c.region,
            "name": c.compute_name,
            "osType": "Linux",
            "resourceGroupName": "lab-batch-pool-rg",
            "subscriptionId": "00000000-0000-4000-8000-000000000000",
            "vmId": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{c.compute_name}.{c.workspace_id}")),
            "vmSize": "Standard_DS3_v2",
            "zone": "",
        },
        "network": {
            "interface": [
                {
                    "ipv4": {
                        "ipAddress": [
                            {
                                "privateIpAddress": addresses.NODE,
                                "publicIpAddress": addresses.NODE_PUBLIC_IP if c.public_ip else "",
                            }
                        ],
                        "subnet": [
                            {
                                "address": addresses.NODE_SUBNET.split("/")[0],
                                "prefix": addresses.NODE_SUBNET.split("/")[1],
                            }
                        ],
                    },
                    "ipv6": {"ipAddress": []},
                    "macAddress": mac,
                }
            ],
        },
    }


def imds_loadbalancer(scenario: Scenario) -> dict[str, Any]:
    public = [{"frontendIpAddress": addresses.NODE_PUBLIC_IP, "privateIpAddress": addresses.NODE}]
    return {
        "loadbalancer": {
            "publicIpAddresses": public if scenario.context.public_ip else [],
            "inboundRules": [],
            "outboundRules": [],
        }
    }


def _imds_error(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


LAB_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.lab-managed-identity-token-5c1e.not-a-signature"
"""The one token the lab's IMDS mints (for any resource) and its resources accept: the tests look for it
in every output, where it must never appear."""


def _imds_token(request: web.Request) -> web.Response:
    """The managed identity token endpoint: asked without a resource (the agent's reachability
    check), IMDS answers 400 invalid_request and mints nothing; with one, the node's token."""
    resource = request.query.get("resource")
    if not resource:
        return web.json_response({"error": "invalid_request",
                                  "error_description": "Required audience parameter not specified"}, status=400)
    return web.json_response({"access_token": LAB_TOKEN, "expires_in": "86399", "expires_on": "1999999999",
                              "resource": resource, "token_type": "Bearer"})


def _leaf(document: Any, path: list[str]) -> Any:
    """The node of an IMDS document a leaf path names (/metadata/instance/compute/location)."""
    for part in path:
        document = document[int(part)] if isinstance(document, list) else document[part]
    return document


async def _imds(request: web.Request, scenario: Scenario) -> web.Response:
    """Instance metadata with IMDS's rules: Metadata: true, no X-Forwarded-For, api-version."""
    if (
        request.headers.get("Metadata", "").lower() != "true"
        or "X-Forwarded-For" in request.headers
    ):
        return _imds_error("Bad request. Required metadata header not specified")
    parts = [p for p in request.path.split("/") if p]
    if parts == ["metadata", "versions"]:
        return web.json_response({"apiVersions": list(IMDS_VERSIONS)})
    if "api-version" not in request.query:
        return _imds_error("Bad request. api-version was not specified in the request.")
    version = request.query["api-version"]
    if not _VERSION.match(version) or version < IMDS_VERSIONS[0]:
        return _imds_error(
            "Bad request. api-version is invalid or was not specified in the request."
        )
    if parts == ["metadata", "identity", "oauth2", "token"]:
        return _imds_token(request)
    documents = {"instance": imds_instance, "loadbalancer": imds_loadbalancer}
    if len(parts) < 2 or parts[0] != "metadata" or parts[1] not in documents:
        return _not_found()
    try:
        node = _leaf(documents[parts[1]](scenario), parts[2:])
    except (KeyError, IndexError, ValueError):
        return _not_found()
    if request.query.get("format") == "text" and not isinstance(node, (dict, list)):
        return web.Response(text=str(node))
    return web.json_response(node)


def http_app(scenario: Scenario) -> web.Application:
    """Port 80 everywhere: IMDS at its platform address, a plain 404 front end on every other address,
    and Azure Firewall's 470 deny for the scenario's `firewall_deny_http` names."""

    async def handle(request: web.Request) -> web.Response:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if sockname and sockname[0] == addresses.IMDS:
            return await _imds(request, scenario)
        if matches(request.host.rsplit(":", 1)[0], scenario.firewall_deny_http):
            return web.Response(status=470, reason="status code 470", text=FIREWALL_DENY)
        return _not_found()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    app.on_response_prepare.append(_stamp(scenario))
    return app


STORAGE_FIREWALL_DENY = (
    '<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthorizationFailure</Code><Message>This request is not '
    "authorized to perform this operation.\nRequestId:00000000-0000-0000-0000-000000000000</Message></Error>")
"""What Azure Storage answers a client its network rules do not allow (before any authentication)."""
WORKSPACE_PRIVATE_LINK_DENY = {"error": {
    "code": "UserError", "severity": None,
    "message": "Access to workspace was denied based on workspace private link configuration.",
    "messageFormat": None, "messageParameters": None, "referenceCode": None, "detailsUri": None, "target": None,
    "details": [], "innerError": None, "debugInfo": None,
    "additionalInfo": [{"type": "ComponentName", "info": {"value": "managementfrontend"}}]}}
"""What Azure ML answers on a workspace's public endpoint when its public network access is disabled
(the body MicrosoftDocs/azure-docs#90426 quotes)."""


def _denial(host: str) -> web.Response:
    """A resource's own network rules refusing the client, as that service words it."""
    if host.endswith(".api.azureml.ms"):
        return web.json_response(WORKSPACE_PRIVATE_LINK_DENY, status=403)
    if host.endswith(".azurecr.io"):
        return web.json_response(REGISTRY_FIREWALL_DENY, status=403)
    if host.endswith(".vault.azure.net"):
        return web.json_response(KEY_VAULT_FIREWALL_DENY, status=403)
    return web.Response(status=403, text=STORAGE_FIREWALL_DENY, content_type="application/xml",
                        headers={"x-ms-error-code": "AuthorizationFailure"})


KEY_VAULT_FIREWALL_DENY = {"error": {
    "code": "Forbidden",
    "message": f"Client address is not authorized and caller is not a trusted service.\r\nClient address: "
               f"{addresses.NODE}\r\nCaller: appid=00000000-0000-0000-0000-000000000000;oid=lab\r\nVault: "
               "contoso-kv;location=eastus",
    "innererror": {"code": "ForbiddenByFirewall"}}}
"""Key Vault's network rules refusing an authenticated caller (it checks them only after authentication)."""
KEY_VAULT_RBAC_DENY = {"error": {
    "code": "Forbidden",
    "message": "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or "
               "role definitions were changed recently, please observe propagation time.\r\nCaller: "
               "appid=00000000-0000-0000-0000-000000000000;oid=lab\r\nAction: "
               "'Microsoft.KeyVault/vaults/secrets/readMetadata/action'\r\nAssignment: (not found)\r\n"
               "DecisionReason: 'DeniedWithNoValidRBAC'\r\nVault: contoso-kv;location=eastus\r\n",
    "innererror": {"code": "ForbiddenByRbac"}}}
"""Key Vault refusing an authenticated caller without a role on it (an RBAC vault)."""
REGISTRY_FIREWALL_DENY = {"errors": [{
    "code": "DENIED", "message": f"client with IP '{addresses.NODE}' is not allowed access. Refer "
    "https://aka.ms/acr/firewall to grant access."}]}
"""A registry's network rules refusing the client (anonymous or not)."""
UNAUTHORIZED = {"error": {"code": "InvalidAuthenticationToken",
                          "message": "The access token is missing or invalid."}}


async def _authenticated(request: web.Request, host: str, scenario: Scenario) -> web.Response | None:
    """What the key vault, a registry and ARM answer a managed identity's request (check --use-identity):
    the network rules first where the service checks them first (the registry), after authentication
    where it checks them after (Key Vault); then the scenario's `identity_denied` names refuse the
    identity. None: not such a request."""
    vault = host.endswith(".vault.azure.net") and request.path == "/secrets"
    registry = host.endswith(".azurecr.io") and request.path == "/oauth2/exchange" and request.method == "POST"
    arm = host == "management.azure.com" and request.path == "/subscriptions"
    if not (vault or registry or arm):
        return None
    if registry and matches(host, scenario.resource_firewall):
        return web.json_response(REGISTRY_FIREWALL_DENY, status=403)
    presented = str((await request.post()).get("access_token")) if registry else \
        request.headers.get("Authorization", "").removeprefix("Bearer ")
    if presented != LAB_TOKEN:
        return web.json_response(UNAUTHORIZED, status=401)
    if vault and matches(host, scenario.resource_firewall):
        return web.json_response(KEY_VAULT_FIREWALL_DENY, status=403)
    if matches(host, scenario.identity_denied):
        if vault:
            return web.json_response(KEY_VAULT_RBAC_DENY, status=403)
        if registry:
            return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                                     status=401)
        return web.json_response({"error": {"code": "AuthorizationFailed", "message": "The client 'lab' does not "
                                            "have authorization to perform action over scope '/subscriptions'."}},
                                 status=403)
    if registry:
        return web.json_response({"refresh_token": LAB_TOKEN + ".registry"})
    return web.json_response({"value": []})


def https_app(scenario: Scenario) -> web.Application:
    """Port 443 everywhere: 404 JSON for any path, WebSocket echo on the compute instance names."""

    async def handle(request: web.Request) -> web.StreamResponse:
        host = request.host.rsplit(":", 1)[0].lower()
        if (answer := await _authenticated(request, host, scenario)) is not None:
            return answer
        if matches(host, scenario.resource_firewall):
            if host.endswith(".vault.azure.net"):  # Key Vault checks its network rules after authentication
                return web.json_response(UNAUTHORIZED, status=401)
            return _denial(host)
        if request.headers.get("Upgrade", "").lower() != "websocket" or not matches(
            host, WEBSOCKET_NAMES
        ):
            return _not_found()
        if scenario.websocket_refused:
            return web.Response(status=403, text="WebSocket upgrade denied by policy\n")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    app.on_response_prepare.append(_stamp(scenario))
    return app


class SniCertificates:
    """A server TLS context that presents, per SNI name, a leaf issued on first use and cached:
    by the inspection CA for the scenario's intercepted names, by the lab CA otherwise."""

    NO_SNI = "lab-no-sni.invalid"

    def __init__(self, scenario: Scenario, lab: Issuer, inspection: Issuer, leaves: Path) -> None:
        self._scenario = scenario
        self._issuers = {"lab": lab, "inspection": inspection}
        self._leaves = leaves
        self._contexts: dict[tuple[str, str], ssl.SSLContext] = {}

    def context(self) -> ssl.SSLContext:
        """The context to serve with: it switches to the SNI name's leaf during the handshake."""
        context = self._build(self._issuer(self.NO_SNI), self.NO_SNI)
        context.sni_callback = self._on_sni
        return context

    def _on_sni(self, sslobj: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        name = (name or self.NO_SNI).lower()
        key = (self._issuer(name), name)
        if key not in self._contexts:
            self._contexts[key] = self._build(*key)
        sslobj.context = self._contexts[key]

    def _issuer(self, name: str) -> str:
        return "inspection" if matches(name, self._scenario.tls_intercept) else "lab"

    def _build(self, issuer: str, name: str) -> ssl.SSLContext:
        path = self._leaves / f"{issuer}-{hashlib.sha256(name.encode()).hexdigest()[:16]}.pem"
        path.write_bytes(self._issuers[issuer].issue(name))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(path)
        return context
