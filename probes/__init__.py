"""Probes: one module per kind, each exposing a frozen `Spec` and
`async def run(spec, addresses, trace) -> None`. Knows nothing of agent/."""
