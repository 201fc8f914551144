"""Push tests use the lab's fixtures (simulated devices, real peers, set-plans).

They live in tests/lab/conftest.py; it is loaded here by path because a conftest is not
an importable module (tests/ has no packages on purpose: a ``tests/lab`` package would
shadow the top-level ``lab``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "lab" / "conftest.py"
_SPEC = importlib.util.spec_from_file_location("provisioner_lab_fixtures", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
_FIXTURES = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = _FIXTURES
_SPEC.loader.exec_module(_FIXTURES)

client_key = _FIXTURES.client_key
iad = _FIXTURES.iad
iad_module = _FIXTURES.iad_module
net_snmp = _FIXTURES.net_snmp
openssh = _FIXTURES.openssh
plan_yaml = _FIXTURES.plan_yaml
switch = _FIXTURES.switch
switch_module = _FIXTURES.switch_module
v3 = _FIXTURES.v3
