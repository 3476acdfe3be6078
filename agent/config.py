"""The TOML config file: the same context keys as the command line, plus run settings.

Everything is validated at load time and reported as one line naming the file and the key, so a
typo in a setup script's config fails loudly instead of silently checking the wrong thing."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import context


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
class Config:
    context: Mapping[str, object] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)


def _number(name: str, value: Any, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 \
            or (integer and not isinstance(value, int)):
        kind = "a positive whole number" if integer else "a positive number of seconds"
        raise ConfigError(f"{name}: expected {kind}, not {value!r}")
    return value


def _strings(name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name}: expected a list of strings, not {value!r}")
    return tuple(value)


_SETTINGS = ("timeout", "deadline", "concurrency", "expected_issuers", "with")


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
    values: dict[str, object] = {}
    settings: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = raw_key.replace("-", "_")
        if key in context.KEYS_BY_NAME:
            values[key] = context.validate(key, value)
        elif key in ("timeout", "deadline"):
            settings[key] = float(_number(key, value))
        elif key == "concurrency":
            settings[key] = int(_number(key, value, integer=True))
        elif key == "expected_issuers":
            settings[key] = _strings(key, value)
        elif key == "with":
            settings["features"] = _strings(key, value)
        else:
            known = ", ".join(sorted([k.name for k in context.KEYS] + list(_SETTINGS)))
            raise ConfigError(f"unknown key {raw_key!r} (known: {known})")
    return Config(context=values, settings=Settings(**settings))
