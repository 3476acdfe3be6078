"""The names private endpoints serve, built from the scenario's context.

Apart from lab.zones so that scenarios (NO_PROXY lists) and zones (DNS answers) share one list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lab import addresses

if TYPE_CHECKING:
    from lab.scenarios import Context


@dataclass(frozen=True, slots=True)
class PrivateName:
    """A name a private endpoint serves: it CNAMEs into `link` (None: a plain A record)."""

    link: str | None
    address: str


def private_names(context: Context) -> dict[str, PrivateName]:
    """The names served privately, built from the context: the workspace's with its private
    endpoint, the storage account's blob and file names with the account's own endpoints."""
    r, g, w, c, s = (
        context.region,
        context.workspace_id,
        context.workspace_name,
        context.compute_name,
        context.storage_account,
    )
    names: dict[str, PrivateName] = {}
    if context.private_endpoint:
        api = f"{g}.workspace.{r}.privatelink.api.azureml.ms"
        notebooks_label = f"ml-{w}-{r}-{g}"[:63]
        names |= {
            f"{g}.workspace.{r}.api.azureml.ms": PrivateName(api, addresses.PE_WORKSPACE),
            f"{g}.workspace.{r}.cert.api.azureml.ms": PrivateName(api, addresses.PE_WORKSPACE),
            f"{notebooks_label}.{r}.notebooks.azure.net": PrivateName(
                f"{notebooks_label}.{r}.privatelink.notebooks.azure.net", addresses.PE_NOTEBOOKS
            ),
            f"{c}.{r}.instances.azureml.ms": PrivateName(None, addresses.PE_WORKSPACE),
            f"{c}.{r}.instances.ml.azure.ms": PrivateName(None, addresses.PE_WORKSPACE),
        }
    if context.storage_has_private_endpoint:
        names |= {
            f"{s}.file.core.windows.net": PrivateName(
                f"{s}.privatelink.file.core.windows.net", addresses.PE_FILE
            ),
            f"{s}.blob.core.windows.net": PrivateName(
                f"{s}.privatelink.blob.core.windows.net", addresses.PE_BLOB
            ),
        }
    return {name.lower(): entry for name, entry in names.items()}
