"""The ``provisioner`` command: what field technicians and the NOC type.

Every command has ``--help`` with an example. Errors are one line on stderr and a non-zero
exit status; no traceback reaches the user for an error we expected.

Start-up is part of the interface (a technician types dozens of commands an appointment):
command modules import typer, rich's console and this module only; everything else is
imported inside the command that needs it. Other packages add command groups through the
entry point group ``provisioner.commands`` (the lab's ``provisioner lab``), loaded only
when they are named or listed.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup

from provisioner.errors import ProvisionerError

if TYPE_CHECKING:
    from provisioner.orders.service import OrdersService
    from provisioner.settings import Settings

PLUGIN_GROUP = "provisioner.commands"


class Commands(TyperGroup):
    """The top-level group: our commands, then the command groups other packages register
    as entry points in :data:`PLUGIN_GROUP` (``name = "module:typer_app"``). A plugin is
    imported only when its name is given or the command list is shown; ours win a clash."""

    @functools.cached_property
    def plugins(self) -> dict[str, Any]:
        from importlib.metadata import entry_points

        return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}

    def list_commands(self, ctx: Any) -> list[str]:
        ours = super().list_commands(ctx)
        return ours + sorted(n for n in self.plugins if n not in self.commands)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            return _examples_verbatim(found)
        if cmd_name not in self.plugins:
            return found
        ep = self.plugins[cmd_name]
        try:
            loaded = ep.load()
            if not isinstance(loaded, typer.Typer):
                raise TypeError(f"{type(loaded).__name__} is not a typer.Typer")
            command = typer.main.get_command(loaded)
        except Exception as exc:  # a broken plugin must not take the other commands down
            command = _unavailable(cmd_name, f"{ep.value}: {type(exc).__name__}: {exc}")
        self.add_command(command, cmd_name)
        return _examples_verbatim(command)


def _indented(paragraph: str) -> bool:
    """A paragraph of examples: some line of it is indented."""
    return any(line.startswith(" ") for line in paragraph.splitlines())


def _examples_verbatim(command: Any) -> Any:
    """Keep a command's examples as written: click rewraps help paragraphs, which ran
    examples together on one line; a paragraph of indented lines is marked to stay verbatim
    (click's ``\\b``). Applied once per command, and to a group's commands."""
    if getattr(command, "_examples_kept", False):
        return command
    command._examples_kept = True
    if command.help:
        paragraphs = command.help.split("\n\n")
        command.help = "\n\n".join(
            "\b\n" + p if _indented(p) and not p.startswith("\b") else p for p in paragraphs
        )
    for sub in getattr(command, "commands", {}).values():
        _examples_verbatim(sub)
    return command


def _no_hyphen_breaks(module: Any) -> None:
    """Help text wraps between words only, never inside ``--dry-run`` or ``lab-targets.yaml``
    (a pasted example must work). click's ``wrap_text`` imports its ``TextWrapper`` when it
    runs: give it one that keeps hyphenated words whole."""
    base = module.TextWrapper

    class NoHyphenBreaks(base):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["break_on_hyphens"] = False
            kwargs["break_long_words"] = False
            super().__init__(*args, **kwargs)

    module.TextWrapper = NoHyphenBreaks


for _name in ("typer._click._textwrap", "click._textwrap"):  # typer 0.2x vendors click
    try:
        _no_hyphen_breaks(importlib.import_module(_name))
    except (ImportError, AttributeError):
        continue


def _unavailable(name: str, why: str) -> typer.core.TyperCommand:
    """A stand-in for a plugin that did not load: listed with the reason, exit 1 if run."""
    first = why.splitlines()[0] if why else "unknown error"

    def run() -> None:
        err.print(f"error: provisioner {name}: cannot load {first}", markup=False)
        raise typer.Exit(1)

    return typer.core.TyperCommand(
        name,
        callback=run,
        help=f"(unavailable: {first})",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )


app = typer.Typer(
    cls=Commands,
    name="provisioner",
    help="Zero-touch provisioning for the Office Smart virtual PBX: orders, device files, "
    "serving and push.",
    no_args_is_help=True,
    add_completion=True,  # provisioner --install-completion (bash, zsh, fish)
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
    from provisioner.settings import load_settings

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


def orders_service() -> OrdersService:
    """The orders service on the store the settings name, with logging set up: what a
    command works on (plugins' commands too: the one write path, DESIGN.md §4)."""
    from provisioner.orders.service import OrdersService

    settings = _settings()
    _setup_logging(settings)
    inv = OrdersService(settings)
    if settings.resync_after_publish:
        from provisioner.voice.resync import follow_publishes

        queue = follow_publishes(inv)
        if queue is not None:  # a command's writes are told before it exits
            wait = settings.resync_debounce_seconds + settings.resync_timeout + 1.0
            atexit.register(queue.close, wait)
    return inv


_inventory = orders_service  # the name the command modules use
