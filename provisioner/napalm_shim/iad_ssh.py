"""napalm.get_network_driver("iad_ssh") -> IadSshDriver."""

from provisioner.push.drivers.iad_ssh import IadSshDriver

__all__ = ["IadSshDriver"]
