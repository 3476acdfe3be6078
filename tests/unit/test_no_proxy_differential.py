"""NO_PROXY against requests itself: thousands of seeded (URL, NO_PROXY) pairs, each decided by
`agent.inputs.proxy` (entries parsed as `settings` parses them) and by requests' own
`should_bypass_proxies`, which must agree on every one. The agent plans the proxied path from this
decision, so a disagreement is a node the agent calls healthy while Azure ML's SDK, in the same
environment, goes through the proxy (or the other way round)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
import requests.utils

from agent.inputs import proxy

SEED = 20261201
PAIRS = 10_000  # about 3 s here; 200,000 pairs over seeds 1-10 also agreed when this was written

_ZONES = ("api.azureml.ms", "notebooks.azure.net", "instances.azureml.ms", "privatelink.api.azureml.ms",
          "core.windows.net", "example.org", "contoso.net", "azureml.ms", "ms", "localhost", "a.b")
_LABELS = ("ws", "eastus", "guid", "ml-x", "api", "x", "privatelink", "notebooks")
_IPV4 = ("10.0.0.1", "10.0.1.5", "10.0.255.254", "10.1.0.5", "10.255.0.1", "11.0.0.1", "169.254.169.254",
         "168.63.129.16", "127.0.0.1", "192.168.1.10", "172.16.5.4", "0.0.0.0", "255.255.255.255",
         "10.1", "127.1", "0x7f.0.0.1", "010.0.0.1")
_IPV6 = ("fd00::5", "fd00::", "::1", "fe80::1", "2001:db8::1", "::ffff:10.0.0.1", "fd00:0:0:0:0:0:0:5")
_PORTS = (80, 443, 8443, 3128, 5, 1)
_BLOCKS = (0, 1, 8, 10, 16, 23, 24, 31, 32, 33)
_SEPARATORS = (",", ",", ",", ", ", " ,", " , ", ",,", " ", "  ", "\t,", ",\n", ", \t")


@dataclass(frozen=True, slots=True)
class Pair:
    host: str  # as the agent gets it: a name or an IP literal, IPv6 without brackets
    port: int | None  # the port the URL writes
    no_proxy: str
    via_environment: str | None  # the variable it is read from, or None: passed to requests as an argument

    @property
    def url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{shown}{'' if self.port is None else f':{self.port}'}/path"


def _case(rng: random.Random, text: str) -> str:
    """Mostly as is; sometimes upper case, sometimes every letter flipped at random."""
    roll = rng.random()
    if roll < 0.75:
        return text
    if roll < 0.85:
        return text.upper()
    return "".join(c.upper() if rng.random() < 0.5 else c for c in text)


def _name(rng: random.Random) -> str:
    zone = rng.choice(_ZONES)
    roll = rng.random()
    if roll < 0.3:
        return zone
    if roll < 0.8:
        return ".".join(rng.sample(_LABELS, rng.randint(1, 2))) + "." + zone
    return rng.choice(_LABELS) + zone  # a longer name that ends like the zone without a dot between: xapi.azureml.ms


def _host(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.6:
        host = _name(rng)
        if rng.random() < 0.1:
            host += "."
        return _case(rng, host)
    if roll < 0.85:
        return rng.choice(_IPV4)
    return _case(rng, rng.choice(_IPV6))


def _suffixes(host: str) -> list[str]:
    labels = host.rstrip(".").split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def _entry(rng: random.Random, host: str, port: int | None) -> str:
    """One NO_PROXY entry, often about this host (itself, a parent, its network), decorated."""
    roll = rng.random()
    if roll < 0.08:
        return rng.choice(("*", "", " ", "\t", ".", "..", "*.", ":443", "/", "*.*"))
    if ":" in host or roll < 0.2:  # IPv6 literals, and IPv6 written every way
        address = host if ":" in host and rng.random() < 0.7 else rng.choice(_IPV6)
        return rng.choice((address, f"[{address}]", f"[{address}]:443", f"{address}:443", address.upper(),
                           "fd00::/8", "::/0", "fd00::/64", address + "/128"))
    if rng.random() < 0.3:  # IPv4: the address, a part of it, a block around it
        address = host if host in _IPV4 else rng.choice(_IPV4)
        parts = address.split(".")
        return rng.choice((address, f"{address}:{rng.choice(_PORTS)}", ".".join(parts[rng.randrange(len(parts)):]),
                           f"{address}/{rng.choice(_BLOCKS)}", f"{'.'.join(parts[:2])}/{rng.choice(_BLOCKS)}",
                           "10/8", "10.0/16", f"{address}/x", f"{address}/8/8", "10.0.0.0/ 16"))
    name = rng.choice(_suffixes(host)) if host not in _IPV4 and rng.random() < 0.7 else _name(rng)
    name = rng.choice(("", "", "", ".", "..", "*.", "*", "*..", " .")) + name
    if rng.random() < 0.1:
        name += "."
    if rng.random() < 0.25:
        name += f":{port if port is not None and rng.random() < 0.6 else rng.choice(_PORTS)}"
    return _case(rng, name)


def _no_proxy(rng: random.Random, host: str, port: int | None) -> str:
    roll = rng.random()
    if roll < 0.02:
        return rng.choice(("*", " *", "* ", "*,", ",*", "*,*", "*, example.org"))
    if roll < 0.05:
        return ""
    text = ""
    for _ in range(rng.randint(1, 5)):
        if text or rng.random() < 0.1:
            text += rng.choice(_SEPARATORS)
        text += _entry(rng, host, port)
    return text + (rng.choice(_SEPARATORS) if rng.random() < 0.1 else "")


def pairs(count: int, seed: int) -> list[Pair]:
    rng = random.Random(seed)
    made: list[Pair] = []
    for _ in range(count):
        host = _host(rng)
        port = rng.choice(_PORTS) if rng.random() < 0.5 else None
        environment = rng.choice((None, None, "no_proxy", "NO_PROXY"))
        made.append(Pair(host, port, _no_proxy(rng, host, port), environment))
    return made


def agent_decides(pair: Pair) -> bool:
    name = pair.via_environment or "NO_PROXY"
    entries = proxy.settings({"HTTPS_PROXY": "http://proxy.contoso.net:3128", name: pair.no_proxy}, {}).no_proxy
    assert entries == proxy.no_proxy_entries(pair.no_proxy)
    return proxy.bypassed(pair.host, pair.port, entries)


def requests_decides(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> bool:
    """requests as Azure ML's SDK calls it (NO_PROXY from the environment) or with the value given."""
    if pair.via_environment is None:
        return requests.utils.should_bypass_proxies(pair.url, no_proxy=pair.no_proxy)
    with monkeypatch.context() as env:
        env.setenv(pair.via_environment, pair.no_proxy)
        return requests.utils.should_bypass_proxies(pair.url, no_proxy=None)


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variable of the machine running the tests may take part."""
    for name in ("no_proxy", "NO_PROXY", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_every_pair_is_decided_as_requests_decides(clean_environment: pytest.MonkeyPatch) -> None:
    corpus = pairs(PAIRS, SEED)
    decided = [(pair, agent_decides(pair), requests_decides(pair, clean_environment)) for pair in corpus]
    wrong = [(pair, ours) for pair, ours, theirs in decided if ours != theirs]
    shown = "\n".join(f"  {p.url} NO_PROXY={p.no_proxy!r} ({p.via_environment or 'argument'}): agent {ours}"
                      for p, ours in wrong[:25])
    assert not wrong, f"{len(wrong)} of {len(corpus)} pairs decided unlike requests (seed {SEED}):\n{shown}"
    # The corpus exercises both answers and every kind of host, or agreeing would prove little.
    bypassing = [pair for pair, _, theirs in decided if theirs]
    assert len(bypassing) > PAIRS // 5 and len(decided) - len(bypassing) > PAIRS // 5
    for kind in (lambda p: ":" in p.host, lambda p: p.host in _IPV4, lambda p: p.port is not None,
                 lambda p: "*." in p.no_proxy, lambda p: "/" in p.no_proxy, lambda p: p.host.endswith("."),
                 lambda p: p.via_environment is not None, lambda p: p.host != p.host.lower()):
        assert sum(1 for p in bypassing if kind(p)) >= 20


def test_the_corpus_is_the_seeded_one() -> None:
    """Same seed, same pairs: a disagreement found once can be found again."""
    assert pairs(50, SEED) == pairs(50, SEED) and len(set(pairs(PAIRS, SEED))) > PAIRS * 0.8
