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
