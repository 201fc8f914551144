"""Push: configure devices that do not pull (the PoE switch over SNMP, the IAD over SSH).

Read in this order:

- :mod:`.runner`: ``push_many``, many devices at once (bounded concurrency);
- :mod:`.job`: one device, the state machine backup -> diff -> commit -> verify -> roll back;
- :mod:`.targets`: which devices are pushed, where they answer, credentials, timeouts;
- :mod:`.results`: what a push did, masked diffs, stored results;
- :mod:`.backups`, :mod:`.locks`, :mod:`.hostkeys`: versioned encrypted backups, one push
  per device at a time, SSH host-key pinning;
- :mod:`.errors`: what can go wrong, as types (retries are decided by type);
- :mod:`.setplan`, :mod:`.setlines`: the switch set-plan and the IAD's set lines as plain
  data (pure functions, no I/O);
- :mod:`.drivers`: NAPALM ``NetworkDriver`` subclasses on one base (:mod:`.drivers.base`),
  one module per device family: :mod:`.drivers.dlink_snmp`, :mod:`.drivers.iad_ssh`,
  :mod:`.drivers.dlink_cli`.

Nothing is imported here on purpose: the job and the drivers load NAPALM, netmiko, paramiko
and pysnmp, which the API and the CLI do not need to start.
"""
