"""One HTTP(S) request, pinned to the address the lower layers passed, directly or through an
explicit proxy. Any status from the service proves reachability (401/404 from an API root included)
except a resource's own network-rule denial, read from its Azure error code; what fails besides are
the middleboxes: Azure Firewall's 470, and proxies that want credentials, deny the CONNECT or the
request, or cannot reach the target (an answer the proxy made itself, named in squid's X-Squid-Error
or RFC 9209's Proxy-Status, is never the service's).

The exchange is h11's (sans-I/O HTTP/1.1) over our own stream (probes._stream), so a direct request
rides the tls check's verified connection (or the tcp check's, for http://) when it was handed over,
as a client's request would: one TCP connect and one TLS handshake per endpoint. Through a proxy:
CONNECT, then TLS inside, for https; the absolute-form request to the proxy for plain http. What a
hostile peer sends is bounded: a head by h11's max_incomplete_event_size, a body by what is read."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import quote, urlencode, urlsplit

import h11

from probes import _stream
from probes._net import ms, proxy_answer, proxy_error, received_at, require
from probes._trace import Fact, ProbeError, Trace
from probes._tunnel import MAX_HEAD, authorization, to_proxy
from probes.reasons import Reason
from probes.specs import HttpSpec as Spec
from probes.specs import Identity
from probes.tls import describe_verified

FIREWALL_DENIED = 470  # Azure Firewall application rule: "Action: Deny. Reason: No rule matched"
# A resource's own network rules answering an anonymous request (they are checked before
# authentication), as (Azure error code, a phrase of its message; "" for any): storage's
# AuthorizationFailure, the registry's DENIED "client with IP ... is not allowed access", a workspace
# with public network access disabled reached outside its private link ("Access to workspace was
# denied based on workspace private link configuration", "... not accessible from outside of the
# designated private link", code UserError). An auth answer (401, or 403 without one of these)
# proves the service was reached.
# Key Vault checks its network rules only after authentication, so only an authenticated request
# (check --use-identity) sees its denial: 403 with the inner code ForbiddenByFirewall ("Client address
# is not authorized and caller is not a trusted service").
NETWORK_DENIALS: tuple[tuple[str, str], ...] = (
    ("AuthorizationFailure", ""), ("DENIED", "not allowed access"), ("UserError", "private link"),
    ("ForbiddenByFirewall", ""))
DENIAL_STATUSES = frozenset({401, 403})  # Azure ML's SDK has seen the private link denial as a 401
ERROR_BODY_BYTES = 4096  # Azure error documents are small; never read more of an answer
FIREWALL_BODY_BYTES = 512  # the firewall's one-line explanation


@dataclass(frozen=True, slots=True)
class _Answer:
    """A response head: its status, each header's first value by lower-case name, and every
    Proxy-Authenticate offer."""

    status: int
    headers: dict[str, str]
    offers: list[Fact]


async def run(spec: Spec, addresses: tuple[str, ...], trace: Trace) -> None:
    """Through a proxy the proxy resolves the target, so `addresses` may then be empty. Directly, the
    request goes to the address the lower layers passed; Host, SNI and the certificate's name check
    stay the name. A handed connection that ends before any answer is tried once more afresh."""
    trace.note(addresses_ok=[], via_proxy=spec.proxy is not None,
               proxy=spec.proxy.shown if spec.proxy else None)
    address = require(addresses)[0] if addresses or not spec.proxy else None
    token = await _token(spec.identity, trace) if spec.identity is not None else None
    stream = _stream.take(spec, address, trace) if spec.proxy is None and address is not None else None
    await _stream.exchange_on(stream, lambda: _open(spec, address, trace), "request",
                              lambda connection: _exchange(spec, connection, trace, token), trace)
    if address is not None:
        trace.passed(address)


async def _open(spec: Spec, address: str | None, trace: Trace) -> _stream.Stream:
    """This check's own connection: to the address, through a CONNECT tunnel for https via a proxy,
    or to the proxy itself for plain http via a proxy (the absolute-form request)."""
    parts = urlsplit(spec.url)
    secure = parts.scheme == "https"
    if spec.proxy is not None and not secure:
        return _stream.Stream(await to_proxy(spec.proxy, trace), "")
    return await _stream.open_to(spec.host, parts.port or (443 if secure else 80), secure, spec.cafile,
                                 [address] if address else [], spec.proxy, trace)


TOKEN_BYTES = 65536  # a token answer is a few KiB: never read more
_TOKEN_CHARACTERS = r"[A-Za-z0-9._~+/=-]{1,16384}"  # RFC 6750's b64token: what a bearer header may carry


async def _token(identity: Identity, trace: Trace) -> str:
    """The managed identity's access token for the resource, from the token endpoint's answer. It is
    returned, never noted: the caller puts it in one request and drops it. An answer without one
    names the endpoint's own error (its error_description), never more of the body."""
    url = f"{identity.token_url}&resource={quote(identity.resource, safe='')}" \
        + (f"&client_id={quote(identity.client_id, safe='')}" if identity.client_id else "")
    trace.note(token_for=identity.resource)
    with trace.phase("token"):  # a failure leaves it open: the phase that failed
        try:
            status, body = await get(url, [("Metadata", "true")], TOKEN_BYTES)
        except (OSError, ValueError) as exc:
            raise ProbeError(Reason.HTTP_NO_TOKEN, f"the managed identity endpoint could not be asked "
                             f"({type(exc).__name__})") from None
        try:
            document = json.loads(body)
        except ValueError:  # its message would quote the body
            document = None
        answer: dict[str, object] = document if isinstance(document, dict) else {}
        token = answer.get("access_token")
        if status == 200 and isinstance(token, str) and not re.fullmatch(_TOKEN_CHARACTERS, token):
            # h11 would refuse it in a header, quoting it in its error
            raise ProbeError(Reason.HTTP_NO_TOKEN, "the managed identity endpoint's token is not a bearer token")
        if status != 200 or not isinstance(token, str) or not token:
            error = answer.get("error_description") or answer.get("error")
            raise ProbeError(Reason.HTTP_NO_TOKEN, f"the managed identity endpoint gave no token for "
                             f"{identity.resource}: HTTP {status}"
                             + (f" {error[:200]}" if isinstance(error, str) else ""))
    return token


def _request(spec: Spec, token: str | None = None) -> tuple[h11.Request, bytes]:
    """The request as the node's clients send it: origin-form to the service (or inside a CONNECT
    tunnel), absolute-form to a proxy for plain http, with the proxy's credentials; with a token, as
    Azure's clients present it (a bearer header, or a registry's exchange form), and its body."""
    parts = urlsplit(spec.url)
    secure = parts.scheme == "https"
    explicit = parts.port is not None and parts.port != (443 if secure else 80)
    headers = [("Host", f"{spec.host}:{parts.port}" if explicit else spec.host), ("User-Agent", "aml-netcheck"),
               ("Accept", "*/*"), *spec.headers, ("Connection", "close")]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if spec.proxy is not None and not secure:
        target = spec.url
        if credentials := authorization(spec.proxy):
            headers.append(("Proxy-Authorization", credentials))
    body = b""
    if token is not None and spec.identity is not None and spec.identity.exchange:
        body = urlencode({"grant_type": "access_token", "service": spec.host, "access_token": token}).encode()
        headers += [("Content-Type", "application/x-www-form-urlencoded"), ("Content-Length", str(len(body)))]
    elif token is not None:
        headers.append(("Authorization", f"Bearer {token}"))
    return h11.Request(method="POST" if body else spec.method, target=target, headers=headers), body


async def _exchange(spec: Spec, stream: _stream.Stream, trace: Trace, token: str | None = None) -> None:
    """Send the request, read the response head, judge it (reading what of the body a verdict needs)."""
    connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    request, body = _request(spec, token)
    await stream.send(connection.send(request) + (connection.send(h11.Data(data=body)) if body else b"")
                      + connection.send(h11.EndOfMessage()))
    try:
        answer = await _head(connection, stream, trace)
        await _judge(spec, answer, connection, stream, trace)
    except h11.RemoteProtocolError as exc:
        raise ProbeError(Reason.HTTP_INVALID_RESPONSE, f"not a valid HTTP response: {exc}") from exc


async def _head(connection: h11.Connection, stream: _stream.Stream, trace: Trace) -> _Answer:
    """The response head; `first_byte_ms` notes when its first byte came, after the request was sent
    (curl's starttransfer less its pretransfer), as the kernel received it (a busy loop reads it later)."""
    sent = time.monotonic()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await stream.recv()
            if not data and not stream.received:
                raise ProbeError(Reason.TCP_CLOSED, "the server closed the connection without a response")
            if data and stream.received == len(data):
                trace.note(first_byte_ms=ms(max(received_at(stream.sock) - sent, 0.0)))
            connection.receive_data(data)
        elif isinstance(event, h11.Response):
            headers: dict[str, str] = {}
            for name, value in event.headers:
                headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
            offers: list[Fact] = [v.decode("latin-1") for n, v in event.headers if n == b"proxy-authenticate"]
            return _Answer(event.status_code, headers, offers)
        elif not isinstance(event, h11.InformationalResponse):  # the peer closed mid-way
            raise ProbeError(Reason.TCP_CLOSED, "the server closed the connection without a response")


async def _body(connection: h11.Connection, stream: _stream.Stream, limit: int) -> bytes:
    """At most `limit` bytes of the body (chunked or not); what a broken or cut body gave."""
    body = b""
    try:
        while len(body) < limit:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.recv())
            elif isinstance(event, h11.Data):
                body += event.data
            else:  # the end of the message, or of the connection
                break
    except h11.RemoteProtocolError:
        pass
    return body[:limit]


async def _judge(spec: Spec, answer: _Answer, connection: h11.Connection, stream: _stream.Stream,
                 trace: Trace) -> None:
    date = answer.headers.get("date")
    trace.note(status=answer.status, server=answer.headers.get("server"), date=date, clock_skew_s=_skew(date))
    if answer.status == FIREWALL_DENIED:
        body = (await _body(connection, stream, FIREWALL_BODY_BYTES)).decode(errors="replace").strip()
        trace.note(body=body)
        raise ProbeError(Reason.HTTP_FIREWALL_DENIED,
                         f"HTTP 470 (firewall deny): {body.splitlines()[0] if body else ''}")
    cert = describe_verified(stream.tls) if spec.expected_issuers and stream.tls is not None else None
    if spec.proxy:  # plain HTTP, and HTTPS inside an inspecting proxy's TLS, can be the proxy's own answer
        if answer.status == 407:
            trace.note(proxy_authenticate=answer.offers)
            raise ProbeError(Reason.PROXY_AUTH_REQUIRED, "the proxy answered 407")
        error = proxy_error(answer.headers)
        trace.note(proxy_error=error, cert=cert)
        if error is not None:
            raise proxy_answer(answer.status, error)
    if spec.identity is not None:
        trace.note(authenticated=True)
        if 200 <= answer.status < 300:  # let in: the body is never read (it may name secrets, or hold a token)
            return
        if answer.status not in DENIAL_STATUSES:
            raise ProbeError(Reason.HTTP_STATUS, f"HTTP {answer.status} to the authenticated request")
    if answer.status in DENIAL_STATUSES:
        body = (await _body(connection, stream, ERROR_BODY_BYTES)).decode(errors="replace")
        codes, message = _resource_denial(answer, body, trace)
        if spec.identity is not None:  # authenticated, and no network rule named: the identity's own denial
            raise ProbeError(Reason.HTTP_IDENTITY_DENIED, f"HTTP {answer.status} {codes[-1] if codes else ''}: "
                             f"{message.splitlines()[0][:200] if message else ''}")
    if cert is not None:
        _check_issuer(spec, cert, trace)


async def get(url: str, headers: list[tuple[str, str]], limit: int) -> tuple[int, bytes]:
    """The agent's own plain-http GET (IMDS): to the IP literal the URL names, never through a proxy;
    (status, at most `limit` bytes of the body). ValueError for an answer that is no HTTP response."""
    parts = urlsplit(url)
    stream = await _stream.connect([parts.hostname or ""], parts.port or 80)
    try:
        connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = h11.Request(method="GET", target=target,
                              headers=[("Host", parts.netloc), *headers, ("Connection", "close")])
        await stream.send(connection.send(request) + connection.send(h11.EndOfMessage()))
        answer = await _head(connection, stream, Trace())
        return answer.status, await _body(connection, stream, limit)
    except (ProbeError, h11.RemoteProtocolError) as exc:
        raise ValueError(str(exc)) from exc
    finally:
        stream.close()


def _check_issuer(spec: Spec, cert: dict[str, Fact], trace: Trace) -> None:
    """Through a proxy there is no tls check of its own: the verified certificate of this
    connection says whether the proxy (or something behind it) re-signs the traffic."""
    trace.note(cert=cert)
    if cert["issuer_org"] not in spec.expected_issuers:
        raise ProbeError(Reason.TLS_UNEXPECTED_ISSUER, f"trusted, but issued by issuer {cert['issuer']}, "
                         f"not {' or '.join(spec.expected_issuers)}")


def _resource_denial(answer: _Answer, body: str, trace: Trace) -> tuple[tuple[str, ...], str]:
    """Read the Azure error codes of a 401 or 403 (the x-ms-error-code header, a JSON `error.code`
    with its nested `innerError` codes or `errors[0].code`, an XML `<Code>`) and fail when one is a
    network-rule denial; else (codes, message)."""
    codes, message = _azure_error(answer.headers.get("x-ms-error-code"), body)
    trace.note(azure_error_code=codes[0] if codes else None, azure_error_inner_codes=[*codes[1:]],
               azure_error_message=message[:300] or None)
    denial = next((code for code, phrase in NETWORK_DENIALS
                   if code in codes and phrase in message.lower()), None)
    if denial is not None:
        first_line = message.splitlines()[0][:200] if message else ""
        raise ProbeError(Reason.HTTP_RESOURCE_DENIED, f"HTTP {answer.status} {denial}: {first_line}")
    return codes, message


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
        server = server.replace(tzinfo=timezone.utc)
    return round((server - datetime.now(timezone.utc)).total_seconds(), 3)
