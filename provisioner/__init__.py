"""Zero-touch provisioning for the Office Smart virtual PBX."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def data_path(name: str) -> Path:
    """The folder of package data ``name`` (``device_templates``, ``tftp_root``).

    A wheel ships them inside the package (``provisioner/<name>``, mapped from the
    repository's top-level folders, see pyproject.toml). An editable install maps the
    package to the checkout, where the import system cannot find a mapped folder without
    ``__init__.py``: there the answer is the checkout's top-level folder.
    """
    from importlib.resources import files

    shipped = files(__name__) / name
    if shipped.is_dir():
        return Path(str(shipped))
    return Path(__file__).resolve().parent.parent / name
