"""napalm.get_network_driver("dlink_cli") -> DlinkCliDriver."""

from provisioner.push.dlink_cli import DlinkCliDriver

__all__ = ["DlinkCliDriver"]
