"""napalm.get_network_driver("dlink_snmp") -> DlinkSnmpDriver (a community driver module)."""

from provisioner.push.drivers.dlink_snmp import DlinkSnmpDriver

__all__ = ["DlinkSnmpDriver"]
