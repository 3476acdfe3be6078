"""One HTTP(S) request with aiohttp, pinned to the address the lower layers passed, directly or
through an explicit proxy. Any status from the service proves reachability (401/404 from an
API root included) except a resource's own network-rule denial, read from its Azure error code;
what fails besides are the middleboxes: Azure Firewall's 470, and proxies that want credentials,
deny the CONNECT or the request, or cannot reach the target (an answer the proxy made itself,
named in squid's X-Squid-Error or RFC 9209's Proxy-Status, is never the service's)."""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import SimpleNamespace
from urllib.parse import urlsplit

import aiohttp
from aiohttp.connector import Connection
from yarl import URL

from probes._net import errno_name, proxy_answer, proxy_error, proxy_reason, require, run_shared, tls_context
from probes._trace import Fact, ProbeError, Trace
from probes.reasons import Reason, local_limit
from probes.specs import HttpSpec as Spec
from probes.tls import describe_cert

FIREWALL_DENIED = 470  # Azure Firewall application rule: "Action: Deny. Reason: No rule matched"
# A resource's own network rules answering an anonymous request (they are checked before
# authentication), as (Azure error code, a phrase of its message; "" for any): storage's
# AuthorizationFailure, the registry's DENIED "client with IP ... is not allowed access", a workspace
# with public network access disabled reached outside its private link ("Access to workspace was
# denied based on workspace private link configuration", "... not accessible from outside of the
# designated private link", code UserError). An auth answer (401, or 403 without one of these)
# proves the service was reached.
NETWORK_DENIALS: tuple[tuple[str, str], ...] = (
    ("AuthorizationFailure", ""), ("DENIED", "not allowed access"), ("UserError", "private link"))
DENIAL_STATUSES = frozenset({401, 403})  # Azure ML's SDK has seen the private link denial as a 401
ERROR_BODY_BYTES = 4096  # Azure error documents are small; never read more of an answer


class _Response(aiohttp.ClientResponse):
    """Keeps the certificate of the connection this response came on. It is read when the response
    starts: aiohttp releases the connection (force_close: closes it) as soon as a short answer is
    read, before the response reaches us. Per response, so concurrent checks sharing one TLS
    context each see their own; the context itself is never touched."""

    peer_certificate: bytes | None = None

    async def start(self, connection: Connection) -> aiohttp.ClientResponse:
        transport = connection.transport
        tls = transport.get_extra_info("ssl_object") if transport is not None else None
        if isinstance(tls, (ssl.SSLObject, ssl.SSLSocket)):
            self.peer_certificate = tls.getpeercert(binary_form=True)
        return await super().start(connection)


async def run(spec: Spec, addresses: tuple[str, ...], trace: Trace) -> None:
    """Through a proxy the proxy resolves the target, so `addresses` may then be empty. Directly, the
    request goes to the address the lower layers passed, named in the URL; Host, SNI and the
    certificate's name check stay the name."""
    trace.note(addresses_ok=[], via_proxy=spec.proxy is not None,
               proxy=spec.proxy.shown if spec.proxy else None)
    address = require(addresses)[0] if addresses or not spec.proxy else None
    parts = urlsplit(spec.url)
    secure = parts.scheme == "https"
    context: ssl.SSLContext | bool = tls_context(spec.cafile) if secure else True
    url, headers, server_hostname = URL(spec.url), {}, None
    if spec.proxy is None and address is not None:
        url = url.with_host(address)
        explicit = parts.port is not None and parts.port != (443 if secure else 80)
        headers = {"Host": f"{spec.host}:{parts.port}" if explicit else spec.host}
        server_hostname = spec.host if secure else None
    with ExitStack() as phases:
        async with _session() as session:
            try:
                proxy = spec.proxy.url if spec.proxy else None
                async with session.request(spec.method, url, proxy=proxy, ssl=context, headers=headers,
                                           server_hostname=server_hostname, allow_redirects=False,
                                           trace_request_ctx=_Phases(trace, phases)) as response:
                    await _judge(spec, response, trace)
            except aiohttp.ClientHttpProxyError as exc:
                offers: list[Fact] = [*exc.headers.getall("Proxy-Authenticate", [])] if exc.headers else []
                trace.note(proxy_status=exc.status, proxy_authenticate=offers)
                raise ProbeError(proxy_reason(exc.status),
                                 f"proxy answered CONNECT with {exc.status} {exc.message}") from exc
            except aiohttp.ClientProxyConnectionError as exc:
                trace.note(proxy_errno=errno_name(exc))
                if local_limit(exc):
                    raise  # no socket to the proxy could be opened here: the node's limit, not the proxy
                raise ProbeError(Reason.PROXY_UNREACHABLE,
                                 f"cannot connect to the proxy: {exc.strerror}") from exc
            except aiohttp.ServerDisconnectedError as exc:
                raise ProbeError(Reason.TCP_CLOSED,
                                 "the server closed the connection without a response") from exc
            except aiohttp.ClientResponseError as exc:
                raise ProbeError(Reason.HTTP_INVALID_RESPONSE,
                                 f"not a valid HTTP response: {exc.message}") from exc
    if address is not None:
        trace.passed(address)


@dataclass(frozen=True, slots=True)
class _Phases:
    """One request's phases, handed to the session's trace callbacks (the session serves a run)."""

    trace: Trace
    stack: ExitStack


async def _connecting(_: aiohttp.ClientSession, context: SimpleNamespace, __: object) -> None:
    phases = context.trace_request_ctx
    if isinstance(phases, _Phases):
        phases.stack.enter_context(phases.trace.phase("connect"))


async def _connected(_: aiohttp.ClientSession, context: SimpleNamespace, __: object) -> None:
    phases = context.trace_request_ctx
    if isinstance(phases, _Phases):
        phases.stack.close()  # ends "connect" cleanly; the request phase follows
        phases.stack.enter_context(phases.trace.phase("request"))


def _new_session() -> aiohttp.ClientSession:
    """A session concurrent checks can share, carrying nothing from one request into another: no
    cookies, no pooled connection (force_close), no DNS cache, no connection limit (the engine
    bounds the checks; a limit would queue a check inside its connect phase). The target is pinned
    by the URL; only a proxy's name is resolved, the way applications do (getaddrinfo)."""
    config = aiohttp.TraceConfig()
    config.on_connection_create_start.append(_connecting)
    config.on_connection_create_end.append(_connected)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=aiohttp.ThreadedResolver(), use_dns_cache=False,
                                       force_close=True, limit=0),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,  # the engine passes the proxy explicitly
        timeout=aiohttp.ClientTimeout(total=None),  # the engine owns time
        trace_configs=[config],
        response_class=_Response,
    )


async def _close(session: aiohttp.ClientSession) -> None:
    await session.close()


@asynccontextmanager
async def _session() -> AsyncIterator[aiohttp.ClientSession]:
    """The run's session (probes._net.Shared), else one for this request alone."""
    scope = run_shared()
    if scope is not None:
        yield scope.get("http-session", _new_session, _close)
        return
    async with _new_session() as session:
        yield session


async def _judge(spec: Spec, response: aiohttp.ClientResponse, trace: Trace) -> None:
    date = response.headers.get("Date")
    trace.note(status=response.status, server=response.headers.get("Server"), date=date,
               clock_skew_s=_skew(date))
    if response.status == FIREWALL_DENIED:
        body = (await response.content.read(512)).decode(errors="replace").strip()
        trace.note(body=body)
        raise ProbeError(Reason.HTTP_FIREWALL_DENIED,
                         f"HTTP 470 (firewall deny): {body.splitlines()[0] if body else ''}")
    der = response.peer_certificate if isinstance(response, _Response) else None
    cert = describe_cert(der) if spec.expected_issuers and der else None
    if spec.proxy:  # plain HTTP, and HTTPS inside an inspecting proxy's TLS, can be the proxy's own answer
        if response.status == 407:
            trace.note(proxy_authenticate=[*response.headers.getall("Proxy-Authenticate", [])])
            raise ProbeError(Reason.PROXY_AUTH_REQUIRED, "the proxy answered 407")
        error = proxy_error(response.headers)
        trace.note(proxy_error=error, cert=cert)
        if error is not None:
            raise proxy_answer(response.status, error)
    if response.status in DENIAL_STATUSES:
        await _resource_denial(response, trace)
    if cert is not None:
        _check_issuer(spec, cert, trace)


def _check_issuer(spec: Spec, cert: dict[str, Fact], trace: Trace) -> None:
    """Through a proxy there is no tls check of its own: the verified certificate of this
    connection says whether the proxy (or something behind it) re-signs the traffic."""
    trace.note(cert=cert)
    if cert["issuer_org"] not in spec.expected_issuers:
        raise ProbeError(Reason.TLS_UNEXPECTED_ISSUER, f"trusted, but issued by issuer {cert['issuer']}, "
                         f"not {' or '.join(spec.expected_issuers)}")


async def _resource_denial(response: aiohttp.ClientResponse, trace: Trace) -> None:
    """Read the Azure error codes of a 401 or 403 (the x-ms-error-code header, a JSON `error.code`
    with its nested `innerError` codes or `errors[0].code`, an XML `<Code>`) and fail when one is a
    network-rule denial."""
    body = (await response.content.read(ERROR_BODY_BYTES)).decode(errors="replace")
    codes, message = _azure_error(response.headers.get("x-ms-error-code"), body)
    trace.note(azure_error_code=codes[0] if codes else None, azure_error_inner_codes=[*codes[1:]],
               azure_error_message=message[:300] or None)
    denial = next((code for code, phrase in NETWORK_DENIALS
                   if code in codes and phrase in message.lower()), None)
    if denial is not None:
        first_line = message.splitlines()[0][:200] if message else ""
        raise ProbeError(Reason.HTTP_RESOURCE_DENIED, f"HTTP {response.status} {denial}: {first_line}")


def _azure_error(header: str | None, body: str) -> tuple[tuple[str, ...], str]:
    """(codes, message) of an Azure error answer, whichever of its forms it uses: the outer code
    first, then the inner ones, most specific last."""
    codes: list[str] = [header] if header else []
    message = ""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict):
        error = document.get("error")
        errors = document.get("errors")
        first = error if isinstance(error, dict) else errors[0] if isinstance(errors, list) and errors else None
        if isinstance(first, dict):
            message = str(first.get("message") or "")
        inner: object = first
        while isinstance(inner, dict) and len(codes) < 8:  # innerError nests; a hostile body may nest deep
            if inner.get("code"):
                codes.append(str(inner["code"]))
            inner = inner.get("innerError", inner.get("innererror"))
    else:
        found = re.search(r"<Code>([^<]{1,100})</Code>", body)
        codes += [found.group(1)] if found and not codes else []
        text = re.search(r"<Message>([^<]{0,500})</Message>", body)
        message = text.group(1) if text else ""
    return tuple(dict.fromkeys(codes)), message


def _skew(date: str | None) -> float | None:
    """Server Date minus local time, seconds: TLS and Entra tokens tolerate only minutes."""
    if not date:
        return None
    try:
        server = parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return None
    if server.tzinfo is None:
        server = server.replace(tzinfo=UTC)
    return round((server - datetime.now(UTC)).total_seconds(), 3)
