"""How hard fuzzing tests push: a reduced level by default (CI), the full level on request.

``PROVISIONER_FUZZ=full pytest tests/security`` runs every fuzzing test at its full level.
"""

from __future__ import annotations

import os

FULL = os.environ.get("PROVISIONER_FUZZ", "").lower() == "full"


def examples(reduced: int, full: int) -> int:
    """How many hypothesis examples a fuzzing test runs at this level."""
    return full if FULL else reduced
