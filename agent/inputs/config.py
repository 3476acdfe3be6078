"""The TOML config file: the same context keys as the command line, plus run settings.

Everything is validated at load time and reported as one line naming the file and the key, so a
typo in a setup script's config fails loudly instead of silently checking the wrong thing."""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.inputs import context, values

# Bounds that keep reading and planning a bad config short. A config is a few dozen lines (the
# README's example is 1 kB), but a fleet's own endpoints may number thousands: 5,000 [[endpoint]]
# tables with a purpose each are about 600 kB. Planning is linear in endpoints and blocked entries.
# tomllib's time follows the tokens it reads, and its memory the tables it makes (a dotted table
# header of 14 parts: 95 us and 15 kB; 1 MiB of them took 3.7 s and 428 MiB, an array of 524,000
# integers 1.8 s), so both are counted before parsing (MAX_TOKENS, MAX_STRUCTURES). Measured worst
# within these bounds (on 2 busy cores): 0.64 s for 60,000 one-line keys, 120 MiB for a 1 MiB
# string of \u escapes; 5,000 HTTPS endpoints and 256 blocked wildcards read and plan in 0.8 s
# (20,066 checks; 4.9 s when each check was matched against every entry).
MAX_BYTES = 1 << 20
MAX_ENDPOINTS = 5000
MAX_BLOCKED = 256
# A valid config nests 2 deep ([[endpoint]], `blocked = [...]` in [policy]). tomllib recurses on
# brackets (RecursionError past ~300) and is quadratic in the parts of a dotted key (a 100 kB key of
# 50,000 parts: 90 s and 9 GB), so deeper text is refused before it is parsed.
MAX_NESTING = 16
# What the parser's time follows, counted before it runs: tokens (a string, a comment, a bracket, a
# dot, a run of `=`, `,` and new lines) and among them structures (tables, arrays, dotted-key parts:
# each `[`, `{` or `.`). A [[endpoint]] table with host, port, probe, purpose and required is 18
# tokens and 2 structures, so these leave room for MAX_ENDPOINTS of them commented.
MAX_TOKENS = 24 * MAX_ENDPOINTS
MAX_STRUCTURES = 4 * MAX_ENDPOINTS


class ConfigError(ValueError):
    """The config file cannot be used; the message is one line."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Run settings that are not context: how long, how wide, what to trust."""

    timeout: float | None = None
    deadline: float | None = None
    concurrency: int | None = None
    expected_issuers: tuple[str, ...] | None = None
    features: tuple[str, ...] = ()
    use_identity: bool = False  # check --use-identity: authenticated requests with the node's managed identity
    latency: Mapping[str, float] = field(default_factory=dict)  # [latency]: milliseconds per layer


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An endpoint of the user's own (a private package mirror, their own storage) to check too."""

    host: str
    port: int
    probe: str = "https"  # https | websocket | tcp | udp | dns | smb
    purpose: str = ""
    required: bool = True  # False: a failure is a warning


DEFAULT_POLICY_REASON = "blocked by policy"


@dataclass(frozen=True, slots=True)
class Policy:
    """Endpoints blocked on purpose: reported as `skip` with the reason instead of failing."""

    blocked: tuple[str, ...] = ()  # "host", "*.suffix" or either with ":port"
    reason: str = DEFAULT_POLICY_REASON


@dataclass(frozen=True, slots=True)
class Config:
    context: Mapping[str, object] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    endpoints: tuple[Endpoint, ...] = ()
    policy: Policy = field(default_factory=Policy)


def _number(name: str, value: Any, bound: values.Bound) -> float:
    try:
        return bound.check(value)
    except values.ValueProblem as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _features(name: str, names: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return values.check_features(names)
    except values.ValueProblem as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _strings(name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name}: expected a list of strings, not {values.shown(value)}")
    return tuple(value)


_SETTINGS = ("timeout", "deadline", "concurrency", "expected_issuers", "with", "use_identity", "endpoint", "policy",
             "latency")
LATENCY_KEYS = ("dns_ms", "tcp_ms", "tls_ms", "http_ms")  # agent/latency.py: Thresholds, one per layer
_BOUNDS = {"timeout": values.TIMEOUT, "deadline": values.DEADLINE, "concurrency": values.CONCURRENCY}
_PROBES = ("https", "websocket", "tcp", "udp", "dns", "smb")
# Patterns are compiled on first use (re caches them): only a run with a config file reads them.
_HOST = r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*"


def load(path: Path) -> Config:
    if sys.version_info >= (3, 11):  # only a run with a config file parses TOML
        import tomllib
    else:  # its base, tomli 2.0 (pyproject.toml's dependency on 3.10)
        import tomli as tomllib

    where = str(path) if str(path).isprintable() else repr(str(path))  # the message stays one line
    try:
        text = _read(path)
        _check_nesting(text)
        return parse(tomllib.loads(text))
    except OSError as exc:
        raise ConfigError(f"cannot read config {where}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {where}: invalid TOML: {exc}") from None
    except (ConfigError, context.ContextError) as exc:
        raise ConfigError(f"config {where}: {exc}") from None


def _read(path: Path) -> str:
    """At most MAX_BYTES of a regular file. Anything else (a device, a FIFO, a directory) is refused
    before it is opened: /dev/zero never ends and a FIFO waits for a writer. The second look, after
    opening, makes sure what is read is what was looked at."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ConfigError("not a regular file")
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC), "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise ConfigError("not a regular file")
        data = file.read(MAX_BYTES + 1)  # a file that grows while it is read is cut here too
    if len(data) > MAX_BYTES:
        raise ConfigError(f"larger than {MAX_BYTES >> 10} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text") from None


# What nests in TOML text, with strings and comments skipped whole: the brackets of tables, arrays
# and inline tables, the dots of a dotted key, and what ends a key (=, a comma, a new line).
_TOKEN = r'''
    "{3}(?:[^"\\]|\\.|"(?!""))*"{3,5}     # a multi-line basic string (a line may end in \)
  | '{3}(?:[^']|'(?!''))*'{3,5}           # a multi-line literal string
  | "(?:[^"\\\n]|\\[^\n])*"              # a basic string
  | '[^'\n]*'                            # a literal string
  | \#[^\n]*                             # a comment
  | [\[\]{}.]
  | [=,\n]+
'''


def _check_nesting(text: str) -> None:
    """Refuse text nested deeper than MAX_NESTING (brackets open plus parts of the key), or longer
    than MAX_TOKENS or MAX_STRUCTURES, before the parser sees it; a quote that opens no valid
    string is skipped, so its text still counts."""
    depth = dots = structures = 0
    for tokens, match in enumerate(re.finditer(_TOKEN, text, re.VERBOSE | re.DOTALL), 1):
        token = match.group()
        if token in ("[", "{"):
            depth, dots, structures = depth + 1, 0, structures + 1
        elif token in ("]", "}"):
            depth, dots = max(depth - 1, 0), 0
        elif token == ".":
            dots, structures = dots + 1, structures + 1
        elif token[0] in "=,\n":
            dots = 0
        if depth + dots > MAX_NESTING or structures > MAX_STRUCTURES or tokens > MAX_TOKENS:
            line = text.count("\n", 0, match.start()) + 1
            if depth + dots > MAX_NESTING:
                raise ConfigError(f"nested deeper than {MAX_NESTING} levels (line {line})")
            if structures > MAX_STRUCTURES:
                raise ConfigError(f"more than {MAX_STRUCTURES:,} tables, arrays and dotted-key parts (line {line})")
            raise ConfigError(f"more than {MAX_TOKENS:,} values, brackets and lines (line {line})")


def parse(data: Mapping[str, Any]) -> Config:
    given: dict[str, object] = {}
    settings: dict[str, Any] = {}
    endpoints: tuple[Endpoint, ...] = ()
    policy = Policy()
    spelled: dict[str, str] = {}
    for raw_key, value in data.items():
        key = raw_key.replace("-", "_")
        if key in spelled:  # private-endpoint and private_endpoint: TOML sees two keys, the last would win
            raise ConfigError(f"{key}: given twice (as {spelled[key]!r} and {raw_key!r})")
        spelled[key] = raw_key
        if key == "endpoint":
            endpoints = _endpoints(value)
        elif key == "policy":
            policy = _policy(value)
        elif key == "latency":
            settings["latency"] = _latency(value)
        elif key in context.KEYS_BY_NAME:
            given[key] = context.validate(key, value)
        elif key in _BOUNDS:
            number = _number(key, value, _BOUNDS[key])
            settings[key] = int(number) if _BOUNDS[key].whole else float(number)
        elif key == "expected_issuers":
            settings[key] = _strings(key, value)
        elif key == "with":
            settings["features"] = _features(key, _strings(key, value))
        elif key == "use_identity":
            if not isinstance(value, bool):
                raise ConfigError(f"use_identity: expected true or false, not {values.shown(value)}")
            settings[key] = value
        else:
            known = ", ".join(sorted([k.name for k in context.KEYS] + list(_SETTINGS)))
            raise ConfigError(f"unknown key {values.shown(raw_key)} (known: {known})")
    return Config(context=given, settings=Settings(**settings), endpoints=endpoints, policy=policy)


def _endpoints(value: Any) -> tuple[Endpoint, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError("endpoint: expected [[endpoint]] tables")
    if len(value) > MAX_ENDPOINTS:
        raise ConfigError(f"endpoint: at most {MAX_ENDPOINTS} [[endpoint]] tables, not {len(value)}")
    endpoints = []
    for index, table in enumerate(value, 1):
        where = f"endpoint #{index}"
        unknown = set(table) - {"host", "port", "probe", "purpose", "required"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(values.shown(k) for k in sorted(unknown))}")
        host, port = table.get("host"), table.get("port")
        if not isinstance(host, str) or "*" in host or len(host) > 253 or not re.fullmatch(_HOST, host):
            raise ConfigError(f"{where}: host must be a DNS name or address, not {values.shown(host)}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError(f"{where}: port must be 1-65535, not {values.shown(port)}")
        probe = table.get("probe", "https")
        if probe not in _PROBES:
            raise ConfigError(f"{where}: probe must be one of {', '.join(_PROBES)}, not {values.shown(probe)}")
        purpose = table.get("purpose", "")
        if not isinstance(purpose, str):
            raise ConfigError(f"{where}: purpose must be a string, not {values.shown(purpose)}")
        required = table.get("required", True)
        if not isinstance(required, bool):
            raise ConfigError(f"{where}: required must be true or false")
        endpoints.append(Endpoint(host.lower(), port, probe, purpose, required))
    return tuple(endpoints)


def _policy(value: Any) -> Policy:
    if not isinstance(value, dict) or set(value) - {"blocked", "reason"}:
        raise ConfigError("policy: expected a [policy] table with `blocked` and `reason`")
    blocked = _strings("policy.blocked", value.get("blocked", []))
    if len(blocked) > MAX_BLOCKED:
        raise ConfigError(f"policy.blocked: at most {MAX_BLOCKED} entries, not {len(blocked)}")
    for entry in blocked:
        host, colon, port = entry.partition(":")
        if not re.fullmatch(_HOST, host) or (colon and not values.is_port(port)):
            raise ConfigError(f"policy.blocked: {values.shown(entry)} is not a host, *.suffix or host:port "
                              "(port 1-65535)")
    reason = value.get("reason", DEFAULT_POLICY_REASON)
    if not isinstance(reason, str):
        raise ConfigError("policy.reason: expected a string")
    return Policy(tuple(e.lower() for e in blocked), reason)


def _latency(value: Any) -> dict[str, float]:
    """[latency]: `dns_ms`, `tcp_ms`, `tls_ms`, `http_ms`, each within values.LATENCY_MS; keyed by layer."""
    if not isinstance(value, dict):
        raise ConfigError(f"latency: expected a [latency] table with {', '.join(LATENCY_KEYS)}")
    layers: dict[str, float] = {}
    for raw_key, number in value.items():
        key = raw_key.replace("-", "_")
        if key not in LATENCY_KEYS:
            raise ConfigError(f"latency: unknown key {values.shown(raw_key)} (known: {', '.join(LATENCY_KEYS)})")
        layer = key.removesuffix("_ms")
        if layer in layers:
            raise ConfigError(f"latency.{key}: given twice")
        layers[layer] = float(_number(f"latency.{key}", number, values.LATENCY_MS))
    return layers
