"""Push: configure devices that do not pull (the PoE switch over SNMP, the IAD over SSH).

Drivers are NAPALM ``NetworkDriver`` subclasses, one module per device family:
:mod:`.dlink_snmp`, :mod:`.iad_ssh`, :mod:`.dlink_cli`. Nothing is imported here on
purpose: ``napalm.get_network_driver`` returns the first ``NetworkDriver`` subclass a
module holds, and an import of the base class into a package ``__init__`` makes it return
the abstract base (research/libraries.md §5).
"""
