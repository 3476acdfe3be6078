"""The TOML config file: the same context keys as the command line, plus run settings.

Everything is validated at load time and reported as one line naming the file and the key, so a
typo in a setup script's config fails loudly instead of silently checking the wrong thing."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.inputs import context, values


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


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An endpoint of the user's own (a private package mirror, their own storage) to check too."""

    host: str
    port: int
    probe: str = "https"  # https | websocket | tcp | udp | dns
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
        raise ConfigError(f"{name}: expected a list of strings, not {value!r}")
    return tuple(value)


_SETTINGS = ("timeout", "deadline", "concurrency", "expected_issuers", "with", "endpoint", "policy")
_BOUNDS = {"timeout": values.TIMEOUT, "deadline": values.DEADLINE, "concurrency": values.CONCURRENCY}
_PROBES = ("https", "websocket", "tcp", "udp", "dns")
_HOST = re.compile(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*")


def load(path: Path) -> Config:
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: invalid TOML: {exc}") from None
    try:
        return parse(data)
    except (ConfigError, context.ContextError) as exc:
        raise ConfigError(f"config {path}: {exc}") from None


def parse(data: Mapping[str, Any]) -> Config:
    given: dict[str, object] = {}
    settings: dict[str, Any] = {}
    endpoints: tuple[Endpoint, ...] = ()
    policy = Policy()
    for raw_key, value in data.items():
        key = raw_key.replace("-", "_")
        if key == "endpoint":
            endpoints = _endpoints(value)
        elif key == "policy":
            policy = _policy(value)
        elif key in context.KEYS_BY_NAME:
            given[key] = context.validate(key, value)
        elif key in _BOUNDS:
            number = _number(key, value, _BOUNDS[key])
            settings[key] = int(number) if _BOUNDS[key].whole else float(number)
        elif key == "expected_issuers":
            settings[key] = _strings(key, value)
        elif key == "with":
            settings["features"] = _features(key, _strings(key, value))
        else:
            known = ", ".join(sorted([k.name for k in context.KEYS] + list(_SETTINGS)))
            raise ConfigError(f"unknown key {raw_key!r} (known: {known})")
    return Config(context=given, settings=Settings(**settings), endpoints=endpoints, policy=policy)


def _endpoints(value: Any) -> tuple[Endpoint, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError("endpoint: expected [[endpoint]] tables")
    endpoints = []
    for index, table in enumerate(value, 1):
        where = f"endpoint #{index}"
        unknown = set(table) - {"host", "port", "probe", "purpose", "required"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        host, port = table.get("host"), table.get("port")
        if not isinstance(host, str) or "*" in host or not _HOST.fullmatch(host):
            raise ConfigError(f"{where}: host must be a DNS name or address, not {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError(f"{where}: port must be 1-65535, not {port!r}")
        probe = table.get("probe", "https")
        if probe not in _PROBES:
            raise ConfigError(f"{where}: probe must be one of {', '.join(_PROBES)}, not {probe!r}")
        required = table.get("required", True)
        if not isinstance(required, bool):
            raise ConfigError(f"{where}: required must be true or false")
        endpoints.append(Endpoint(host.lower(), port, probe, str(table.get("purpose", "")), required))
    return tuple(endpoints)


def _policy(value: Any) -> Policy:
    if not isinstance(value, dict) or set(value) - {"blocked", "reason"}:
        raise ConfigError("policy: expected a [policy] table with `blocked` and `reason`")
    blocked = _strings("policy.blocked", value.get("blocked", []))
    for entry in blocked:
        host, _, port = entry.partition(":")
        if not _HOST.fullmatch(host) or (port and not port.isdigit()):
            raise ConfigError(f"policy.blocked: {entry!r} is not a host, *.suffix or host:port")
    reason = value.get("reason", DEFAULT_POLICY_REASON)
    if not isinstance(reason, str):
        raise ConfigError("policy.reason: expected a string")
    return Policy(tuple(e.lower() for e in blocked), reason)
