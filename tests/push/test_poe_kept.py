"""PoE stays as it was on the switch ports an order does not list (issue 15): a phone added on
site and plugged into a free port keeps its power when the switch is pushed."""

from __future__ import annotations

from typing import Any

from provisioner.push import setplan as sp
from provisioner.render.engine import Renderer

ORDER = "WT-2026-000123"


def _plan(inventory: Any, device: str) -> sp.SetPlan:
    payload = Renderer(inventory.settings, inventory).push_payload(ORDER, device)
    assert payload is not None
    kind, rendered = payload
    assert kind == "snmp"
    return sp.parse_setplan(rendered.data.decode())


def test_a_push_writes_no_poe_state_to_ports_the_order_does_not_list(
    sample_inventory: Any,
) -> None:
    plan = _plan(sample_inventory, "sw-roma")  # phones on ports 1-3 of 8
    assert plan.poe == {1: True, 2: True, 3: True}
    desired = sp.to_varbinds(plan)
    # The switch as found on site: every port powered, port 2 switched off by someone.
    running = [
        *(vb for vb in desired if not vb.oid.startswith(sp.POE_ADMIN)),
        *(sp.VarBind(f"{sp.POE_ADMIN}.{p}", "int", sp.TRUTH_FALSE if p == 2 else sp.TRUTH_TRUE)
          for p in range(1, 9)),
    ]  # fmt: skip
    writes = [vb for vb in sp.plan_writes(running, desired) if vb.oid.startswith(sp.POE_ADMIN)]
    assert [(vb.oid, vb.value) for vb in writes] == [(f"{sp.POE_ADMIN}.2", sp.TRUTH_TRUE)]
    diff = sp.diff_text(running, desired)
    assert "pethPsePortAdminEnable.1.5" not in diff  # a free port is not even shown


def test_the_me_cli_config_switches_no_port_off(sample_inventory: Any) -> None:
    files = Renderer(sample_inventory.settings, sample_inventory).device_files("b0:c5:54:00:00:01")[
        1
    ]
    cli = files["sw-milano.me.cli"].data.decode()
    assert "state enable" in cli
    assert "state disable" not in cli
