"""The CONNECT tunnel through a real squid on loopback, configured as the lab configures it:
its answers (403 outside SSL_ports, 407 with its Basic challenge) are the reasons the agent gives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from lab import squid as lab_squid
from lab.scenarios import Scenario
from probes import tcp
from probes._trace import ProbeError, Trace
from probes.reasons import Reason
from probes.specs import Proxy

pytest_plugins = ["probe_peers"]

Squid = Callable[[Scenario], Awaitable[int]]
STOCK = Scenario("stock", "", "", proxy="open", proxy_connect_ports=(443,))
AUTH = Scenario("auth", "", "", proxy="auth")
USER = ":".join(lab_squid.CREDENTIALS)


async def test_a_stock_squid_refuses_connect_outside_ssl_ports(squid: Squid, tcp_listener: int, trace: Trace) -> None:
    via = Proxy.parse(f"http://127.0.0.1:{await squid(STOCK)}")
    with pytest.raises(ProbeError) as info:
        await tcp.run(tcp.Spec("127.0.0.1", tcp_listener, proxy=via), (), trace)
    assert info.value.reason is Reason.PROXY_DENIED
    assert f"127.0.0.1:{tcp_listener}" in info.value.detail
    assert trace.facts["proxy_status"] == 403 and trace.current == "connect"


async def test_an_open_squid_tunnels_to_any_port(squid: Squid, tcp_listener: int, trace: Trace) -> None:
    via = Proxy.parse(f"http://127.0.0.1:{await squid(Scenario('open', '', '', proxy='open'))}")
    await tcp.run(tcp.Spec("127.0.0.1", tcp_listener, proxy=via), (), trace)
    assert trace.facts["via_proxy"] is True


async def test_squid_demands_credentials(squid: Squid, tcp_listener: int, trace: Trace) -> None:
    port = await squid(AUTH)
    with pytest.raises(ProbeError) as info:
        await tcp.run(tcp.Spec("127.0.0.1", tcp_listener, proxy=Proxy.parse(f"http://127.0.0.1:{port}")), (), trace)
    assert info.value.reason is Reason.PROXY_AUTH_REQUIRED
    assert trace.facts["proxy_status"] == 407
    assert trace.facts["proxy_authenticate"] == [f'Basic realm="{lab_squid.REALM}"']


@pytest.mark.parametrize("user", ["aml-node:wrong", USER])
async def test_squid_checks_the_password(squid: Squid, tcp_listener: int, trace: Trace, user: str) -> None:
    """basic_ncsa_auth against the lab's MD5-crypt password file: only the right password passes."""
    via = Proxy.parse(f"http://{user}@127.0.0.1:{await squid(AUTH)}")
    spec = tcp.Spec("127.0.0.1", tcp_listener, proxy=via)
    if user == USER:
        await tcp.run(spec, (), trace)
        assert trace.facts["via_proxy"] is True
    else:
        with pytest.raises(ProbeError) as info:
            await tcp.run(spec, (), trace)
        assert info.value.reason is Reason.PROXY_AUTH_REQUIRED


def test_md5_crypt_matches_glibc() -> None:
    """The known MD5-crypt vector (`openssl passwd -1 -salt saltsalt password`)."""
    assert lab_squid.md5_crypt("password", "saltsalt") == "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/"
