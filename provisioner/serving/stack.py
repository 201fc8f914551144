"""What ``provisioner serve`` runs, wired together: the provisioning service over the store,
and the TFTP server answering from it (the HTTP side is :class:`~provisioner.serving.http.
DeviceHttpApp`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from provisioner import data_path

# Package data: provisioner/tftp_root in the wheel, tftp_root/ in a checkout.
DEFAULT_TFTP_ROOT = data_path("tftp_root")


def build_service(inventory: Any, tftp_root: Path | None = None) -> Any:
    from provisioner.metrics import METRICS
    from provisioner.render.drivers import default_registry
    from provisioner.serving.guard import GuardPolicy, RedisGuard, SourceGuard
    from provisioner.serving.service import ProvisioningService

    counters: dict[tuple[str, str], tuple[Any, ...]] = {}  # labelled children, looked up once

    def count(protocol: str, outcome: str, _source: str) -> None:
        children = counters.get((protocol, outcome))
        if children is None:
            if outcome == "source_blocked":
                children = (METRICS.blocked_sources.labels(protocol=protocol),)
            else:
                children = (METRICS.fetches.labels(protocol=protocol, result=outcome),)
                if outcome == "served":
                    children += (METRICS.files_served.labels(protocol=protocol),)
            counters[(protocol, outcome)] = children
        for child in children:
            child.inc()

    s = inventory.settings
    root = tftp_root or (Path(s.tftp_root) if s.tftp_root else DEFAULT_TFTP_ROOT)
    policy = GuardPolicy(max_misses=s.sweep_max_misses, block_seconds=s.sweep_block_seconds)
    guard = RedisGuard(policy, s.redis_url) if s.redis_url else SourceGuard(policy)
    drivers = default_registry().drivers()
    return ProvisioningService(inventory, drivers, root, guard, on_event=count)


def tftp_resolver(service: Any) -> Any:
    """The TFTP server's resolver: the service's answer, or None for anything not served."""

    def resolve(name: str, source: str) -> Any:
        answer = service.fetch(name, source, "tftp")
        return answer if answer.outcome == "served" else None

    return resolve


def tftp_events(service: Any) -> Any:
    """The TFTP server's event hook: tell the service how each transfer it served ended."""

    def on_event(event: Any) -> None:
        if event.reply is not None and event.outcome in ("served", "error"):
            service.transfer_done(event.reply, completed=event.outcome == "served")

    return on_event


def tftp_service(service: Any, host: str, port: int, **options: Any) -> Any:
    """The TFTP server for ``service`` (not started); ``options`` go to ``TftpService``."""
    from provisioner.serving.tftp import TftpService

    return TftpService(tftp_resolver(service), host=host, port=port,
                       on_event=tftp_events(service), **options)  # fmt: skip
