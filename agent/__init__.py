"""aml-netcheck: on-node connectivity diagnosis for Azure Machine Learning compute in a VNet."""

__version__ = "0.1.0"


def version_line() -> str:
    """What `--version` prints. The catalog's version is read from the file's top-level keys (those
    before its first table), not through agent.catalog, which builds every row: `--version` is
    answered before anything else loads."""
    import os
    import tomllib

    with open(os.path.join(os.path.dirname(__file__), "data", "requirements.toml"), encoding="utf-8") as handle:
        head = handle.read().partition("\n[")[0]
    return f"aml-netcheck {__version__} (catalog {tomllib.loads(head)['version']})"


# The distributions whose versions a support bundle names: the agent's dependencies (pyproject.toml)
DEPENDENCIES = ("dnspython", "h11", "websockets", "psutil", "typer", "click", "rich", "aiohttp", "cryptography")


def versions() -> dict[str, object]:
    """The agent, its catalog, the interpreter, the kernel and OS, and the dependencies installed:
    what a support bundle records (never on the path of --version)."""
    import platform
    from importlib import metadata

    def installed(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    os_release = {}
    try:
        with open("/etc/os-release", encoding="utf-8") as handle:
            os_release = dict(line.rstrip("\n").split("=", 1) for line in handle if "=" in line)
    except OSError:
        pass
    return {"aml-netcheck": version_line(), "python": platform.python_version(),
            "python_implementation": platform.python_implementation(), "kernel": platform.release(),
            "machine": platform.machine(), "os": os_release.get("PRETTY_NAME", "").strip('"') or None,
            "dependencies": {name: installed(name) for name in DEPENDENCIES}}
