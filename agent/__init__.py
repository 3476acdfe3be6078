"""aml-netcheck: on-node connectivity diagnosis for Azure Machine Learning compute in a VNet.

The first module any entry point runs (`python -m agent`, the console script, the .deb's
launcher), so an older Python gets one line and exit 3 instead of a traceback: the check comes
before anything else is imported, and this file's syntax is that of Python 3.6."""

import sys

if sys.version_info < (3, 10):  # noqa: UP036 (the check is for the Pythons the target excludes)
    sys.stderr.write("aml-netcheck: error: needs Python >= 3.10, not Python " + sys.version.split()[0] + "\n")
    raise SystemExit(3)

__version__ = "0.1.0"


def version_line() -> str:
    """What `--version` prints. The catalog's version is read from the compiled catalog's
    top-level key, not through agent.catalog, which builds every row: `--version` is answered
    before anything else loads."""
    import json
    import os

    with open(os.path.join(os.path.dirname(__file__), "data", "requirements.json"), encoding="utf-8") as handle:
        return f"aml-netcheck {__version__} (catalog {json.load(handle)['version']})"


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
