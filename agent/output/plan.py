"""`plan`'s output: the checks `check` would run, as JSON or a table. Pure over the plan."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from agent.catalog import Catalog
from agent.model import Check, ContextValue
from agent.output.draw import Table
from probes.specs import Proxy


def to_dict(catalog: Catalog, context: Mapping[str, ContextValue], checks: Sequence[Check]) -> dict[str, Any]:
    return {
        "catalog_version": catalog.version,
        "context": {k: {"value": v.value, "source": v.source} for k, v in context.items()},
        "checks": [{"id": c.id, "layer": c.layer.value, "host": c.host, "port": c.port,
                    "protocol": c.protocol, "requirements": list(c.requirements), "needs": c.needs,
                    "path": c.path.value, "params": _params(c.spec), "skip": c.skip.value if c.skip else None,
                    "skip_detail": c.skip_detail or None} for c in checks],
    }


def table(catalog: Catalog, checks: Sequence[Check]) -> Table:
    return Table(f"{len(checks)} checks (catalog {catalog.version})", ("check", "requirements", "note"),
                 tuple((c.id, ", ".join(c.requirements), f"skip: {c.skip_detail}" if c.skip else "") for c in checks),
                 fold=True)


def _params(spec: Any) -> dict[str, Any]:
    """A Spec's fields as JSON values; a proxy as its redacted URL, a nested value (an Identity) as its fields."""
    def plain(value: Any) -> Any:
        if isinstance(value, Proxy):
            return value.shown
        if isinstance(value, bytes):
            return value.hex()
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return _params(value)
        return [plain(v) for v in value] if isinstance(value, tuple) else value

    return {f.name: plain(getattr(spec, f.name)) for f in dataclasses.fields(spec)}
