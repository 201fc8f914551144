"""The ``provisioner`` command: what field technicians and the NOC type (see ``cli.app``).

Each module registers its commands on :data:`provisioner.cli.app.app`; they import only
typer, rich's console and ``cli.app`` at module level, so ``provisioner --help`` starts
fast. Command groups of other packages (``provisioner lab``) come from entry points.
"""

from provisioner.cli import api, orders, pbx, push, render, serve, worker
from provisioner.cli.app import app

__all__ = ["api", "app", "orders", "pbx", "push", "render", "serve", "worker"]
