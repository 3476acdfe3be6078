"""What the user gave, validated before anything is sent: options, the config file, the proxy
settings and (for check and serve) what detection finds; `context()` merges them with their
sources, `plan()` turns them into checks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from agent import catalog, planner
from agent.inputs import context, detect, proxy, values
from agent.inputs.config import Config
from agent.inputs.detect import Detected
from agent.inputs.vantage import HOST, Vantage
from agent.model import Check, ContextValue
from agent.platform import DEFAULT_EXPECTED_ISSUERS
from probes import node
from probes.specs import SpecError


class InputError(ValueError):
    """A context value from the options or the config file is unusable; one line."""


@dataclass(frozen=True, slots=True)
class Inputs:
    given: Mapping[str, object]  # context options from the command line
    config: Config = field(default_factory=Config)
    plan_options: planner.PlanOptions = field(default_factory=planner.PlanOptions)
    detect: bool = True
    vantage: Vantage = HOST  # where check looks from (entered before anything is probed)

    @classmethod
    def build(cls, given: Mapping[str, object], cfg: Config, features: tuple[str, ...],
              detect_context: bool) -> Inputs:
        try:
            values.check_features(features)  # the config file's `with` was checked when it was read
            proxied = proxy.settings(os.environ, node.environment_file())
        except values.ValueProblem as exc:
            raise InputError(f"--with: {exc}") from None
        except proxy.ProxyError as exc:
            raise InputError(str(exc)) from None
        inputs = cls(given, cfg, planner.PlanOptions(
            features=frozenset(features or cfg.settings.features),
            expected_issuers=cfg.settings.expected_issuers or DEFAULT_EXPECTED_ISSUERS,
            blocked=cfg.policy.blocked, blocked_reason=cfg.policy.reason,
            proxy=proxied.proxy, http_proxy=proxied.http_proxy, no_proxy=proxied.no_proxy), detect_context)
        inputs.context()  # a bad option or config value stops here, before any detection or probing
        return inputs

    def context(self, detected: Detected | None = None) -> dict[str, ContextValue]:
        layers: list[tuple[context.Source, Any]] = [("option", self.given), ("config", self.config.context)]
        if detected is not None:
            layers.append((detected.sources, detected.values))
        try:
            return context.build(layers)
        except context.ContextError as exc:
            raise InputError(str(exc)) from None

    def local_detection(self) -> Detected | None:
        """Detection from files and the environment only: sends nothing (plan and rules)."""
        return detect.local(os.environ) if self.detect else None

    def plan(self, values: Mapping[str, ContextValue]) -> tuple[catalog.Catalog, tuple[Check, ...]]:
        cat = planner.with_endpoints(
            catalog.load(str(values["cloud"].value)),
            ((e.host, e.port, e.probe, e.purpose, e.required) for e in self.config.endpoints))
        try:
            vantage = "" if self.vantage.netns is None else self.vantage.describe()
            return cat, planner.plan(cat, values, replace(self.plan_options, vantage=vantage))
        except SpecError as exc:  # a user endpoint no probe can run
            raise InputError(f"cannot plan the checks: {exc}") from None
