"""What the lab hands its server process: the scenario, the CAs and a work directory.

Kept apart from lab.servers so that building a lab does not import the server stack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.pki import CAFiles
from lab.scenarios import Scenario


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What the server process needs: the scenario, the two CAs, the root that signs the lab CA
    (what the servers' own clients trust: squid), and a directory for leaves and server files."""

    scenario: Scenario
    lab_ca: CAFiles
    inspection_ca: CAFiles
    lab_root: Path
    workdir: Path

    def to_json(self) -> str:
        return json.dumps(
            {
                "scenario": self.scenario.to_dict(),
                "lab_ca": [str(self.lab_ca.cert), str(self.lab_ca.key)],
                "inspection_ca": [str(self.inspection_ca.cert), str(self.inspection_ca.key)],
                "lab_root": str(self.lab_root),
                "workdir": str(self.workdir),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        data: dict[str, Any] = json.loads(text)
        return cls(
            Scenario.from_dict(data["scenario"]),
            CAFiles(*map(Path, data["lab_ca"])),
            CAFiles(*map(Path, data["inspection_ca"])),
            Path(data["lab_root"]),
            Path(data["workdir"]),
        )
