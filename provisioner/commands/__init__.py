"""CLI command groups, each registering on ``provisioner.cli.app``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from provisioner.errors import ProvisionerError


def import_lab(name: str) -> ModuleType:
    """``lab.<name>`` from the checkout (the lab is not part of the installed package)."""
    repo = Path(__file__).resolve().parents[2]
    if (repo / "lab" / f"{name}.py").is_file() and str(repo) not in sys.path:
        sys.path.append(str(repo))
    try:
        return importlib.import_module(f"lab.{name}")
    except ImportError as exc:
        raise ProvisionerError(f"lab {name}: needs the repository checkout ({exc})") from None
