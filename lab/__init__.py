"""Simulated devices for tests and demos: a D-Link switch (SNMP) and an IAD (SSH CLI)."""
