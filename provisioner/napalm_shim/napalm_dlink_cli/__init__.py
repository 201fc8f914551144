"""napalm.get_network_driver("dlink_cli") -> DlinkCliDriver (a community driver module)."""

from provisioner.push.drivers.dlink_cli import DlinkCliDriver

__all__ = ["DlinkCliDriver"]
