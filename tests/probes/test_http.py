"""http probe against aiohttp.web servers on loopback (TLS from trustme), raw peers that answer
badly, and a small CONNECT proxy. The URL's name is never resolved: the probe is pinned to the
address it is given, and through a proxy the proxy (here: a test double) does the resolving."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from probe_loopback import (
    Serve,
    StreamHandler,
    plaintext,
    proxy,
    reset_after_read,
    server_context,
    silent,
)
from probes import _net, http
from probes._trace import ProbeError, Trace
from probes.reasons import Reason, classify
from probes.specs import Identity, Proxy

pytest_plugins = ["probe_peers"]

NAME = "svc.test"
HttpServer = Callable[..., Awaitable[int]]


def status(code: int, **headers: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        assert request.host.startswith(NAME)  # Host stays the name, whatever address was used
        return web.Response(status=code, text="Action: Deny. Reason: No rule matched." if code == 470 else "",
                            headers={"Server": "test", **headers})
    return handler


@pytest.fixture
async def https(http_server: HttpServer, ca: trustme.CA) -> Callable[..., Awaitable[int]]:
    async def start(code: int, **headers: str) -> int:
        return await http_server(status(code, **headers), tls=server_context(ca.issue_cert(NAME)))
    return start


@pytest.mark.parametrize("code", [200, 401, 404])
async def test_any_service_status_passes(code: int, https: Callable[..., Awaitable[int]], cafile: str,
                                         trace: Trace) -> None:
    port = await https(code)
    await http.run(http.Spec(f"https://{NAME}:{port}/", NAME, cafile=cafile), ("127.0.0.1",), trace)
    assert trace.facts["status"] == code and trace.facts["server"] == "test"
    assert trace.facts["addresses_ok"] == ["127.0.0.1"] and trace.facts["via_proxy"] is False
    assert abs(trace.facts["clock_skew_s"]) < 5  # type: ignore[arg-type]
    assert [p.name for p in trace.phases] == ["connect", "request"] and trace.current is None


async def test_firewall_deny(https: Callable[..., Awaitable[int]], cafile: str, trace: Trace) -> None:
    port = await https(470)
    with pytest.raises(ProbeError) as info:
        await http.run(http.Spec(f"https://{NAME}:{port}/", NAME, cafile=cafile), ("127.0.0.1",), trace)
    assert info.value.reason is Reason.HTTP_FIREWALL_DENIED
    assert trace.current == "request"
    assert trace.facts["body"] == "Action: Deny. Reason: No rule matched."


async def test_clock_skew(https: Callable[..., Awaitable[int]], cafile: str, trace: Trace) -> None:
    ahead = format_datetime(datetime.now(UTC) + timedelta(minutes=10), usegmt=True)
    port = await https(200, Date=ahead)
    await http.run(http.Spec(f"https://{NAME}:{port}/", NAME, cafile=cafile), ("127.0.0.1",), trace)
    assert trace.facts["date"] == ahead
    assert trace.facts["clock_skew_s"] == pytest.approx(600, abs=5)


async def test_no_date_header(serve: Serve, trace: Trace) -> None:
    port = await serve(plaintext(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"))
    await http.run(http.Spec(f"http://{NAME}:{port}/", NAME), ("127.0.0.1",), trace)
    assert trace.facts["status"] == 204 and trace.facts["clock_skew_s"] is None


BUSY = 0.5  # seconds the event loop is held after the peer's answer reached the node's socket


async def test_first_byte_is_when_the_kernel_received_it_not_when_a_busy_loop_read_it(serve: Serve,
                                                                                       trace: Trace) -> None:
    """The peer answers, then holds the whole event loop (the probe's reading with it) BUSY seconds: on
    loopback the answer is in the node's socket before the hold begins, so a figure that leaves the
    loop's lag out is at most what the probe took less the hold (a jiffy of tcp_info's granularity
    aside). A loaded node must not make a healthy path look slow."""
    async def answer_then_hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        time.sleep(BUSY)  # noqa: ASYNC251 (the point: the loop is busy while the answer waits)

    port = await serve(answer_then_hold)
    started = time.monotonic()
    await http.run(http.Spec(f"http://{NAME}:{port}/", NAME), ("127.0.0.1",), trace)
    took_ms = (time.monotonic() - started) * 1000
    first_byte = trace.facts["first_byte_ms"]
    assert isinstance(first_byte, float)
    assert first_byte <= took_ms - BUSY * 1000 + JIFFY_MS, (first_byte, took_ms)


JIFFY_MS = 10  # tcp_info's last-data-received age counts jiffies (HZ 100 at the coarsest)


@pytest.mark.parametrize(("code", "reason"), [
    (407, Reason.PROXY_AUTH_REQUIRED),
    (403, Reason.PROXY_DENIED),
    (502, Reason.PROXY_UPSTREAM_FAILED),
])
async def test_proxy_refuses_connect(code: int, reason: Reason, serve: Serve, cafile: str, trace: Trace) -> None:
    offers = 'Proxy-Authenticate: Basic realm="corp"\r\nProxy-Authenticate: Negotiate\r\n'
    proxy_port = await serve(proxy(code, offers if code == 407 else ""))
    via = Proxy.parse(f"http://alice:s3cret@127.0.0.1:{proxy_port}")
    spec = http.Spec(f"https://{NAME}/", NAME, proxy=via, cafile=cafile)
    with pytest.raises(ProbeError) as info:
        await http.run(spec, (), trace)
    assert info.value.reason is reason
    assert trace.current == "connect"
    assert trace.facts["proxy_status"] == code and trace.facts["via_proxy"] is True
    assert trace.facts["proxy"] == f"http://***@127.0.0.1:{proxy_port}"
    if code == 407:
        assert trace.facts["proxy_authenticate"] == ['Basic realm="corp"', "Negotiate"]


async def test_through_proxy(serve: Serve, https: Callable[..., Awaitable[int]], cafile: str,
                             trace: Trace) -> None:
    port = await https(200)
    proxy_port = await serve(proxy(200))
    via = Proxy.parse(f"http://127.0.0.1:{proxy_port}")
    spec = http.Spec(f"https://{NAME}:{port}/", NAME, proxy=via, cafile=cafile)
    await http.run(spec, (), trace)
    assert trace.facts["status"] == 200 and trace.facts["via_proxy"] is True


async def test_proxy_unreachable(refused_port: int, cafile: str, trace: Trace) -> None:
    spec = http.Spec(f"https://{NAME}/", NAME, proxy=Proxy.parse(f"http://127.0.0.1:{refused_port}"), cafile=cafile)
    with pytest.raises(ProbeError) as info:
        await http.run(spec, (), trace)
    assert info.value.reason is Reason.PROXY_UNREACHABLE
    assert trace.facts["proxy_errno"] == "ECONNREFUSED" and trace.current == "connect"


@pytest.mark.parametrize(("handler", "reason"), [
    (plaintext(b""), Reason.TCP_CLOSED),
    (reset_after_read, Reason.TCP_RESET),
    (plaintext(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), Reason.HTTP_INVALID_RESPONSE),
], ids=["closed", "reset", "not-http"])
async def test_broken_responses(handler: StreamHandler, reason: Reason, serve: Serve, trace: Trace) -> None:
    """Library errors either become a ProbeError or keep the OSError in their chain for classify."""
    port = await serve(handler)
    with pytest.raises(Exception) as info:  # noqa: PT011 (any error: the classification below is the assertion)
        await http.run(http.Spec(f"http://{NAME}:{port}/", NAME), ("127.0.0.1",), trace)
    got = info.value.reason if isinstance(info.value, ProbeError) else classify(info.value)
    assert got is reason
    assert trace.current == "request"


async def test_untrusted_certificate_is_classified(http_server: HttpServer, cafile: str, trace: Trace) -> None:
    other = trustme.CA(organization_name="Contoso Inspection")
    port = await http_server(status(200), tls=server_context(other.issue_cert(NAME)))
    with pytest.raises(Exception) as info:  # noqa: PT011 (any error: the classification below is the assertion)
        await http.run(http.Spec(f"https://{NAME}:{port}/", NAME, cafile=cafile), ("127.0.0.1",), trace)
    assert classify(info.value) is Reason.TLS_UNTRUSTED  # found in aiohttp's cause chain
    assert trace.current == "connect"


@pytest.mark.parametrize(("scheme", "phase"), [("http", "request"), ("https", "connect")])
async def test_silent_server(scheme: str, phase: str, serve: Serve, cafile: str, trace: Trace, unit: float) -> None:
    """No library timer fires first: the engine's deadline does, in the phase that stalled
    (over HTTPS the TLS handshake is part of aiohttp's connection set-up)."""
    port = await serve(silent)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(6 * unit):
            await http.run(http.Spec(f"{scheme}://{NAME}:{port}/", NAME, cafile=cafile), ("127.0.0.1",), trace)
    assert trace.current == phase


STORAGE_DENIED = ('<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthorizationFailure</Code><Message>'
                  'This request is not authorized to perform this operation.\nRequestId:1</Message></Error>')
REGISTRY_DENIED = ('{"errors":[{"code":"DENIED","message":"client with IP \'10.0.0.4\' is not allowed access. '
                   'Refer https://aka.ms/acr/firewall to grant access."}]}')
# Azure ML's answer to a workspace request from outside its private link while public network access
# is disabled (the body quoted in MicrosoftDocs/azure-docs#90426; the second message is the one
# azure-cli-extensions#6294 quotes, which the SDK raised as an authentication error: a 401)
WORKSPACE_DENIED = json.dumps({"error": {
    "code": "UserError", "severity": None,
    "message": "Access to workspace was denied based on workspace private link configuration.",
    "messageFormat": None, "messageParameters": None, "referenceCode": None, "detailsUri": None, "target": None,
    "details": [], "innerError": None, "debugInfo": None,
    "additionalInfo": [{"type": "ComponentName", "info": {"value": "managementfrontend"}},
                       {"type": "Correlation", "info": {"value": {"operation": "8be339a65b188842b08b01a7a7c81e7d",
                                                                  "request": "2a6b9f0e1c3d4e5f"}}}]},
    "correlation": {"operation": "8be339a65b188842b08b01a7a7c81e7d", "request": "2a6b9f0e1c3d4e5f"},
    "environment": "eastus", "location": "eastus", "time": "2026-12-01T23:00:00.0000000+00:00",
    "componentName": "managementfrontend"})
WORKSPACE_OUTSIDE = json.dumps({"error": {
    "code": "UserError",
    "message": "User is not authorized to access provided resources due to none of the workspaces/registries are "
               "accessible from outside of the designated private link.."}})


def answer(code: int, body: str, **headers: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=code, text=body, headers=headers)
    return handler


@pytest.mark.parametrize(("code", "body", "headers", "error"), [
    (403, STORAGE_DENIED, {"x-ms-error-code": "AuthorizationFailure"}, "AuthorizationFailure"),  # storage firewall
    (403, STORAGE_DENIED, {}, "AuthorizationFailure"),  # the code only in the XML body
    (403, REGISTRY_DENIED, {}, "DENIED"),  # a registry whose firewall does not allow the client IP
    (403, WORKSPACE_DENIED, {}, "UserError"),  # a workspace with public network access disabled
    (401, WORKSPACE_OUTSIDE, {}, "UserError"),  # the same denial as an SDK saw it
], ids=["storage-header", "storage-body", "registry", "workspace-private-link", "workspace-outside-private-link"])
async def test_a_resource_firewall_denial_fails(code: int, body: str, headers: dict[str, str], error: str,
                                                http_server: HttpServer, ca: trustme.CA, cafile: str,
                                                trace: Trace) -> None:
    """'Any HTTP answer proves reachability' passed a storage account or a registry whose own
    network rules deny the subnet: the share will not mount, the image will not pull."""
    port = await http_server(answer(code, body, **headers), tls=server_context(ca.issue_cert(NAME)))
    with pytest.raises(ProbeError) as info:
        await http.run(http.Spec(f"https://{NAME}:{port}/", NAME, cafile=cafile), ("127.0.0.1",), trace)
    assert info.value.reason is Reason.HTTP_RESOURCE_DENIED and error in info.value.detail
    assert trace.facts["azure_error_code"] == error


@pytest.mark.parametrize(("code", "body"), [
    (401, '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'),  # anonymous registry
    (403, '{"error":{"code":"AuthorizationFailed","message":"no permission"}}'),  # reached, not authorised
    (403, "<Error><Code>NoAuthenticationInformation</Code><Message>x</Message></Error>"),
    (401, '{"error":{"code":"UserError","message":"Authentication information is missing."}}'),  # workspace
    (403, ('{"error":{"code":"UserError","message":"The client does not have authorization to perform this '
           'action.","innerError":{"code":"AuthorizationFailed"}}}')),  # a workspace that was reached
])
async def test_an_auth_answer_still_proves_reachability(code: int, body: str, http_server: HttpServer,
                                                        ca: trustme.CA, cafile: str, trace: Trace) -> None:
    port = await http_server(answer(code, body), tls=server_context(ca.issue_cert(NAME)))
    await http.run(http.Spec(f"https://{NAME}:{port}/", NAME, cafile=cafile), ("127.0.0.1",), trace)
    assert trace.facts["status"] == code and trace.facts["addresses_ok"] == ["127.0.0.1"]
    assert trace.facts["azure_error_code"]  # read, and judged not a network-rule denial


async def test_the_inner_error_codes_are_read(http_server: HttpServer, ca: trustme.CA, cafile: str,
                                              trace: Trace) -> None:
    """An Azure ML error nests its specific codes under innerError: they are evidence too."""
    body = '{"error":{"code":"UserError","message":"m","innerError":{"code":"Forbidden","innerError":{"code":"X"}}}}'
    port = await http_server(answer(403, body), tls=server_context(ca.issue_cert(NAME)))
    await http.run(http.Spec(f"https://{NAME}:{port}/", NAME, cafile=cafile), ("127.0.0.1",), trace)
    assert trace.facts["azure_error_code"] == "UserError"
    assert trace.facts["azure_error_inner_codes"] == ["Forbidden", "X"]


async def test_an_inspecting_proxy_the_node_trusts_is_caught_on_the_proxied_path(
        serve: Serve, http_server: HttpServer, tmp_path: Path, trace: Trace) -> None:
    """The proxied path has no tls check of its own: a TLS-inspecting proxy whose CA the node
    trusts went unnoticed. The request's own verified certificate now names its issuer."""
    inspection = trustme.CA(organization_name="Contoso Inspection")
    inspection.cert_pem.write_to_path(str(tmp_path / "inspection.pem"))
    port = await http_server(status(200), tls=server_context(inspection.issue_cert(NAME)))
    via = Proxy.parse(f"http://127.0.0.1:{await serve(proxy(200))}")
    cafile = str(tmp_path / "inspection.pem")
    spec = http.Spec(f"https://{NAME}:{port}/", NAME, proxy=via, cafile=cafile,
                     expected_issuers=("Microsoft Corporation", "DigiCert Inc"))
    with pytest.raises(ProbeError) as info:
        await http.run(spec, (), trace)
    assert info.value.reason is Reason.TLS_UNEXPECTED_ISSUER and "Contoso Inspection" in info.value.detail
    cert = trace.facts["cert"]
    assert isinstance(cert, dict) and cert["issuer_org"] == "Contoso Inspection" and cert["issuer_key_id"]
    await http.run(replace(spec, expected_issuers=("Contoso Inspection",)), (), Trace())  # expected: passes


async def test_concurrent_requests_each_check_their_own_certificate(http_server: HttpServer, ca: trustme.CA,
                                                                    tmp_path: Path) -> None:
    """The checks of a run share one TLS context per trust store: the certificate a request judges
    must be its own connection's. A capture hooked on the shared context recorded every handshake
    into the check that set it last; the others judged nothing and passed."""
    inspection = trustme.CA(organization_name="Contoso Inspection")
    bundle = tmp_path / "both.pem"
    bundle.write_bytes(ca.cert_pem.bytes() + inspection.cert_pem.bytes())
    ports = {org: await http_server(status(200), tls=server_context(issuer.issue_cert(NAME)))
             for org, issuer in (("Microsoft Corporation", ca), ("Contoso Inspection", inspection))}
    expected = ("Microsoft Corporation",)

    async def one(org: str) -> tuple[str, Trace, Reason | None]:
        trace = Trace()
        spec = http.Spec(f"https://{NAME}:{ports[org]}/", NAME, cafile=str(bundle), expected_issuers=expected)
        try:
            await http.run(spec, ("127.0.0.1",), trace)
        except ProbeError as exc:
            return org, trace, exc.reason
        return org, trace, None

    async with _net.shared():
        outcomes = await asyncio.gather(*(one(org) for _ in range(6) for org in ports))
    for org, trace, reason in outcomes:
        cert = trace.facts.get("cert")
        assert isinstance(cert, dict) and cert["issuer_org"] == org
        assert reason is (None if org in expected else Reason.TLS_UNEXPECTED_ISSUER)


async def test_the_checks_of_a_run_share_a_session_and_each_keeps_its_address(serve: Serve) -> None:
    """One HTTP session serves a run: concurrent checks of one name still each reach the address
    their own lower layers passed (the URL names it; Host stays the name), and a cookie is never sent."""
    heads: list[bytes] = []

    def answering(server: str) -> StreamHandler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(f"HTTP/1.1 200 OK\r\nServer: {server}\r\nSet-Cookie: session={server}; Path=/\r\n"
                         "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
        return handler

    port = await serve(answering("one"), host="127.0.0.1")
    await serve(answering("two"), host="127.0.0.2", port=port)
    spec = http.Spec(f"http://{NAME}:{port}/", NAME)

    async def one(address: str) -> tuple[str, Trace]:
        trace = Trace()
        await http.run(spec, (address,), trace)
        return address, trace

    async with _net.shared():
        outcomes = await asyncio.gather(*(one(a) for _ in range(4) for a in ("127.0.0.1", "127.0.0.2")))
        await one("127.0.0.1")
    for address, trace in outcomes:
        assert trace.facts["server"] == {"127.0.0.1": "one", "127.0.0.2": "two"}[address]
        assert [p.name for p in trace.phases] == ["connect", "request"]
    assert len(heads) == 9 and all(f"Host: {NAME}:{port}\r\n".encode() in h for h in heads)
    assert not [h for h in heads if b"cookie:" in h.lower()]


async def test_a_cookie_never_carries_from_one_check_into_another(serve: Serve, http_server: HttpServer,
                                                                 ca: trustme.CA, cafile: str) -> None:
    """Through a proxy the URL keeps the name, where a session's cookie jar would keep what a service
    set and send it on the next check of the run."""
    sent: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        sent.append(request.headers.get("Cookie"))
        response = web.Response(status=200)
        response.set_cookie("session", "s3cret")
        return response

    port = await http_server(handler, tls=server_context(ca.issue_cert(NAME)))
    via = Proxy.parse(f"http://127.0.0.1:{await serve(proxy(200))}")
    spec = http.Spec(f"https://{NAME}:{port}/", NAME, proxy=via, cafile=cafile)
    async with _net.shared():
        for _ in range(2):
            await http.run(spec, (), Trace())
    assert sent == [None, None]


def endless(head: bytes, filler: bytes) -> StreamHandler:
    """A hostile peer: `head`, then `filler` for as long as the client reads."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head)
        while True:
            writer.write(filler)
            await writer.drain()
    return handler


async def test_endless_headers_are_an_invalid_response(serve: Serve, trace: Trace) -> None:
    """A head that never ends is read up to a bound (h11's max_incomplete_event_size), never to memory's."""
    port = await serve(endless(b"HTTP/1.1 200 OK\r\n", b"X-Filler: " + b"a" * 1000 + b"\r\n"))
    with pytest.raises(ProbeError) as info:
        await http.run(http.Spec(f"http://{NAME}:{port}/", NAME), ("127.0.0.1",), trace)
    assert info.value.reason is Reason.HTTP_INVALID_RESPONSE and trace.current == "request"


@pytest.mark.parametrize("chunked", [False, True], ids=["endless", "endless-chunked"])
async def test_an_endless_error_body_is_read_no_further_than_a_verdict_needs(chunked: bool, serve: Serve,
                                                                             trace: Trace) -> None:
    head = (b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n" if chunked
            else b"HTTP/1.1 403 Forbidden\r\nContent-Length: 1000000000000\r\n\r\n")
    filler = b"400\r\n" + b"x" * 1024 + b"\r\n" if chunked else b"x" * 1024
    port = await serve(endless(head, filler))
    await http.run(http.Spec(f"http://{NAME}:{port}/", NAME), ("127.0.0.1",), trace)
    assert trace.facts["status"] == 403 and trace.facts["azure_error_code"] is None


async def test_a_chunked_denial_is_read(serve: Serve, trace: Trace) -> None:
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (STORAGE_DENIED[:40].encode(),
                                                                       STORAGE_DENIED[40:].encode()))
    port = await serve(plaintext(b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
                                 + b"0\r\n\r\n"))
    with pytest.raises(ProbeError) as info:
        await http.run(http.Spec(f"http://{NAME}:{port}/", NAME), ("127.0.0.1",), trace)
    assert info.value.reason is Reason.HTTP_RESOURCE_DENIED
    assert trace.facts["azure_error_code"] == "AuthorizationFailure"


# check --use-identity: a token from a loopback stand-in for IMDS, an authenticated request to a TLS peer
# that answers as Key Vault, a registry or ARM does; the token must reach the peer and nothing else.
TOKEN = "eyJ0eXAiOiJKV1QifQ.lab-managed-identity-token-7f3a9c.signature"
KV_FIREWALL = {"error": {"code": "Forbidden", "message": "Client address is not authorized and caller is not a "
                         "trusted service.\r\nClient address: 127.0.0.1",
                         "innererror": {"code": "ForbiddenByFirewall"}}}
KV_RBAC = {"error": {"code": "Forbidden", "message": "Caller is not authorized to perform action on resource.\r\n"
                     "Action: 'Microsoft.KeyVault/vaults/secrets/readMetadata/action'",
                     "innererror": {"code": "ForbiddenByRbac"}}}
ACR_FIREWALL = {"errors": [{"code": "DENIED", "message": "client with IP '127.0.0.1' is not allowed access. "
                            "Refer https://aka.ms/acr/firewall to grant access."}]}


@pytest.fixture
async def identified(http_server: HttpServer, ca: trustme.CA) -> Callable[..., Awaitable[tuple[http.Spec, list[str]]]]:
    """(spec, what the resource received as credentials): IMDS's token endpoint and the resource."""
    async def start(code: int, body: object = None, *, exchange: bool = False, imds: int = 200,
                    minted: str = TOKEN, client_id: str = "") -> tuple[http.Spec, list[str]]:
        presented: list[str] = []

        async def token(request: web.Request) -> web.Response:
            assert request.headers["Metadata"] == "true" and request.query["resource"] == "https://vault.azure.net"
            assert request.query.get("client_id") == (client_id or None)
            if imds != 200:
                return web.json_response({"error": "invalid_request", "error_description": "Identity not found"},
                                         status=imds)
            return web.json_response({"access_token": minted, "expires_in": "86399", "token_type": "Bearer"})

        async def resource(request: web.Request) -> web.Response:
            form = await request.post() if exchange else {}
            presented.append(str(form.get("access_token")) if exchange else request.headers.get("Authorization", ""))
            return web.json_response(body, status=code) if body is not None else web.Response(
                status=code, text='{"value": [{"id": "https://svc.test/secrets/do-not-read"}]}')

        imds_port = await http_server(token)
        port = await http_server(resource, tls=server_context(ca.issue_cert(NAME)))
        identity = Identity("https://vault.azure.net", f"http://127.0.0.1:{imds_port}/token?api-version=2018-02-01",
                            exchange=exchange, client_id=client_id)
        return http.Spec(f"https://{NAME}:{port}/secrets?api-version=7.4&maxresults=1", NAME,
                         identity=identity), presented
    return start


def _nowhere(trace: Trace, *errors: BaseException) -> None:
    """The token is in no evidence, detail, phase or exception of the check."""
    seen = json.dumps(trace.facts) + repr(trace.phases) + "".join(f"{e!s}{e!r}{e.__cause__!r}" for e in errors)
    assert TOKEN not in seen and "lab-managed-identity-token" not in seen


@pytest.mark.parametrize("client_id", ["", "0b4f3c2a-1d9e-4f7a-8b6c-5d4e3f2a1b0c"])
async def test_an_authenticated_request_passes_without_reading_the_answer(
        client_id: str, identified: Callable[..., Awaitable[tuple[http.Spec, list[str]]]], cafile: str,
        trace: Trace) -> None:
    spec, presented = await identified(200, client_id=client_id)
    await http.run(replace(spec, cafile=cafile), ("127.0.0.1",), trace)
    assert presented == [f"Bearer {TOKEN}"]  # the token reached the resource, as Azure's clients send it
    assert trace.facts["status"] == 200 and trace.facts["authenticated"] is True
    assert [p.name for p in trace.phases] == ["token", "connect", "request"]
    assert "do-not-read" not in json.dumps(trace.facts)
    _nowhere(trace)


@pytest.mark.parametrize(("code", "body", "exchange", "reason", "words"), [
    (403, KV_FIREWALL, False, Reason.HTTP_RESOURCE_DENIED, "ForbiddenByFirewall"),
    (403, KV_RBAC, False, Reason.HTTP_IDENTITY_DENIED, "ForbiddenByRbac: Caller is not authorized"),
    (403, ACR_FIREWALL, True, Reason.HTTP_RESOURCE_DENIED, "DENIED: client with IP"),
    (401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}, True,
     Reason.HTTP_IDENTITY_DENIED, "UNAUTHORIZED"),
    (500, {"error": {"code": "InternalServerError", "message": "x"}}, False, Reason.HTTP_STATUS, "HTTP 500"),
])
async def test_an_authenticated_denial_tells_the_network_rule_from_the_identity(
        code: int, body: object, exchange: bool, reason: Reason, words: str,
        identified: Callable[..., Awaitable[tuple[http.Spec, list[str]]]], cafile: str, trace: Trace) -> None:
    spec, presented = await identified(code, body, exchange=exchange)
    with pytest.raises(ProbeError) as info:
        await http.run(replace(spec, cafile=cafile), ("127.0.0.1",), trace)
    assert info.value.reason is reason and words in info.value.detail
    assert presented == [TOKEN if exchange else f"Bearer {TOKEN}"]
    _nowhere(trace, info.value)


async def test_no_token_is_inconclusive_and_names_the_endpoints_error(
        identified: Callable[..., Awaitable[tuple[http.Spec, list[str]]]], cafile: str, trace: Trace) -> None:
    spec, presented = await identified(200, imds=400)
    with pytest.raises(ProbeError) as info:
        await http.run(replace(spec, cafile=cafile), ("127.0.0.1",), trace)
    assert info.value.reason is Reason.HTTP_NO_TOKEN and info.value.reason.status.value == "inconclusive"
    assert "HTTP 400 Identity not found" in info.value.detail and presented == []
    assert trace.current == "token"


async def test_a_token_no_header_may_carry_is_refused_unquoted(
        identified: Callable[..., Awaitable[tuple[http.Spec, list[str]]]], cafile: str, trace: Trace) -> None:
    """h11 would refuse it in the Authorization header and quote it in its error: it never gets there."""
    spec, presented = await identified(200, minted=TOKEN + "\r\nX-Injected: 1")
    with pytest.raises(ProbeError) as info:
        await http.run(replace(spec, cafile=cafile), ("127.0.0.1",), trace)
    assert info.value.reason is Reason.HTTP_NO_TOKEN and presented == []
    _nowhere(trace, info.value)
