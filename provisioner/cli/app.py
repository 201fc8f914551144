"""The ``provisioner`` command: what field technicians and the NOC type.

Every command has ``--help`` with an example. Errors are one line on stderr and a non-zero
exit status; no traceback reaches the user for an error we expected.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import typer
from rich.console import Console

from provisioner.errors import ProvisionerError
from provisioner.settings import Settings, load_settings

app = typer.Typer(
    name="provisioner",
    help="Zero-touch provisioning for the Office Smart virtual PBX: orders, device files, "
    "serving and push.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# No emoji codes: "order.yaml:100: ..." must not print as "order.yaml💯 ...".
out = Console(
    highlight=False, soft_wrap=True, emoji=False, width=None if sys.stdout.isatty() else 160
)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

F = TypeVar("F", bound=Callable[..., Any])


def _settings() -> Settings:
    return load_settings()


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Library chatter (per-packet, per-migration) is not for people.
    for noisy in ("alembic", "tftpy", "asyncssh", "paramiko", "netmiko", "pysnmp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Our own INFO lines go to the audit log; keep the terminal to what a person asked for.
    logging.getLogger("provisioner").setLevel(
        max(logging.WARNING, getattr(logging, settings.log_level.upper(), logging.INFO))
    )


def handles_errors(fn: F) -> F:
    """Turn expected errors into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ProvisionerError as exc:
            for line in str(exc).splitlines() or [type(exc).__name__]:
                err.print(f"error: {line}", markup=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _inventory() -> Any:
    from provisioner.orders.service import OrdersService

    settings = _settings()
    _setup_logging(settings)
    return OrdersService(settings)


def import_lab(name: str) -> ModuleType:
    """``lab.<name>`` from the checkout (the lab is not part of the installed package)."""
    repo = Path(__file__).resolve().parents[2]
    if (repo / "lab" / f"{name}.py").is_file() and str(repo) not in sys.path:
        sys.path.append(str(repo))
    try:
        return importlib.import_module(f"lab.{name}")
    except ImportError as exc:
        raise ProvisionerError(f"lab {name}: needs the repository checkout ({exc})") from None
