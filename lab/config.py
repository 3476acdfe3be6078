"""What the lab hands its server process: the scenario, the two CAs and a work directory.

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
    """What the server process needs: the scenario, the two CAs, and a directory for leaves."""

    scenario: Scenario
    lab_ca: CAFiles
    inspection_ca: CAFiles
    workdir: Path

    def to_json(self) -> str:
        return json.dumps(
            {
                "scenario": self.scenario.to_dict(),
                "lab_ca": [str(self.lab_ca.cert), str(self.lab_ca.key)],
                "inspection_ca": [str(self.inspection_ca.cert), str(self.inspection_ca.key)],
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
            Path(data["workdir"]),
        )
