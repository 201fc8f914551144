"""Where the NAPALM driver modules live in the source tree (not shipped as a package).

``napalm.get_network_driver("<name>")`` imports, in order, ``custom_napalm.<name>`` (a
site-local namespace the operator owns), ``napalm.<name>`` (core) and ``napalm_<name>`` (a
community driver). The wheel ships each folder here as its top-level community module
(``napalm_dlink_snmp``, ``napalm_iad_ssh``, ``napalm_dlink_cli``; see pyproject.toml), each
importing exactly one ``NetworkDriver`` class: napalm returns the first subclass a module
holds. We leave ``custom_napalm`` to the operator, who may override a driver there.
"""
