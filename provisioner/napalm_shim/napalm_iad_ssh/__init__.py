"""napalm.get_network_driver("iad_ssh") -> IadSshDriver (a community driver module)."""

from provisioner.push.drivers.iad_ssh import IadSshDriver

__all__ = ["IadSshDriver"]
