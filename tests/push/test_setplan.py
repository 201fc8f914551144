"""Set-plan: parsing, the models' limits, PortList bitmaps, varbinds and the write plan."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner.catalog import MODELS, snmp_model
from provisioner.errors import ProvisionerError
from provisioner.push import setplan as sp


def _replace(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


def test_a_rendered_plan_parses(plan_yaml: Callable[..., str]) -> None:
    plan = sp.parse_setplan(plan_yaml())
    assert plan.model == "dlink-dgs-1100-24p"
    assert plan.system.location == "Via Roma 1, 20121 Milano MI"
    assert [v.vid for v in plan.vlans] == [1, 20]
    assert plan.vlans[1].tagged == {1, 2}
    assert plan.vlans[1].egress == {1, 2}
    assert len(plan.pvid) == 24
    assert sorted(plan.poe) == list(range(1, 13))


def test_poe_on_port_13_of_a_24p_names_the_port_and_the_limit(
    plan_yaml: Callable[..., str],
) -> None:
    text = _replace(plan_yaml(), "12: true}", "12: true, 13: true}")
    with pytest.raises(sp.SetPlanError) as err:
        sp.parse_setplan(text)
    assert "poe: port 13 is not a PoE port (PoE ports: 1-12)" in str(err.value)
    assert "dlink-dgs-1100-24p" in str(err.value)
    assert isinstance(err.value, ProvisionerError)


def test_the_08p_has_poe_on_all_8_ports_and_no_port_9(plan_yaml: Callable[..., str]) -> None:
    plan = sp.parse_setplan(plan_yaml("dlink-dgs-1100-08p"))
    assert sorted(plan.poe) == list(range(1, 9))
    text = _replace(plan_yaml("dlink-dgs-1100-08p"), "tagged: [1, 2]", "tagged: [1, 9]")
    with pytest.raises(sp.SetPlanError, match=r"port 9 does not exist \(ports 1-8\)"):
        sp.parse_setplan(text)


@pytest.mark.parametrize("vid", [0, 4095, -1, "20"])
def test_vlan_ids_outside_1_4094_are_refused(plan_yaml: Callable[..., str], vid: object) -> None:
    text = _replace(plan_yaml(), "{vid: 20,", f"{{vid: {vid!r},".replace("'", '"'))
    with pytest.raises(sp.SetPlanError, match=r"is not a VLAN id \(1-4094\)"):
        sp.parse_setplan(text)


def test_every_problem_is_reported_at_once(plan_yaml: Callable[..., str]) -> None:
    text = plan_yaml()
    text = _replace(text, "tagged: [1, 2]", "tagged: [1, 25]")
    text = _replace(text, "1: 1, 2: 1,", "1: 7, 2: 1,")
    text = _replace(text, "name: sw-milano", "name: sw-milano, colour: red")
    with pytest.raises(sp.SetPlanError) as err:
        sp.parse_setplan(text)
    problems = err.value.problems
    assert any("port 25 does not exist (ports 1-24)" in p for p in problems)
    assert any("pvid: port 1 -> vlan 7 is not in the plan" in p for p in problems)
    assert any("unknown key 'colour'" in p for p in problems)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("1: 1, 2: 1, 3: 1,", "", "pvid: ports 1-3 have no PVID"),
        ("tagged: [1, 2]", "tagged: [1, 2], untagged: [2]", "port 2 is already untagged in vlan 1"),
        ("name: voice", "name: " + "v" * 33, "33 bytes, the limit is 32"),
        ("1: true,", "1: yes please,", "'yes please' is not true/false"),
    ],
)
def test_plan_limits(plan_yaml: Callable[..., str], old: str, new: str, message: str) -> None:
    with pytest.raises(sp.SetPlanError) as err:
        sp.parse_setplan(_replace(plan_yaml(), old, new))
    assert message in str(err.value)


def test_a_port_cannot_be_tagged_and_untagged_in_one_vlan(plan_yaml: Callable[..., str]) -> None:
    text = _replace(plan_yaml(), "untagged: [], tagged: [1, 2]", "untagged: [2], tagged: [2]")
    with pytest.raises(sp.SetPlanError, match="ports 2 are both tagged and untagged"):
        sp.parse_setplan(text)


def test_unknown_model_and_bad_yaml() -> None:
    with pytest.raises(sp.SetPlanError, match="'alcatel-ip2215' is not an SNMP switch"):
        sp.parse_setplan("model: alcatel-ip2215\n")
    with pytest.raises(sp.SetPlanError, match="not valid YAML"):
        sp.parse_setplan("model: [\n")


def test_portlist_port_1_is_the_top_bit_of_the_first_octet() -> None:
    assert sp.portlist([1], 24) == bytes([0x80, 0, 0])
    assert sp.portlist([8, 9], 24) == bytes([0x01, 0x80, 0])
    assert sp.portlist([24], 24) == bytes([0, 0, 0x01])
    assert sp.portlist(range(1, 9), 8) == b"\xff"
    assert sp.ports_of(bytes([0xC0, 0x00, 0x01])) == {1, 2, 24}
    with pytest.raises(ValueError, match="port 25 outside 1-24"):
        sp.portlist([25], 24)


@given(st.sets(st.integers(1, 24)))
def test_portlist_round_trip(ports: set[int]) -> None:
    data = sp.portlist(ports, 24)
    assert len(data) == 3
    assert sp.ports_of(data) == ports


def test_plan_to_varbinds_to_plan_round_trip(plan_yaml: Callable[..., str]) -> None:
    plan = sp.parse_setplan(plan_yaml(extra_vlan=100, poe_off=(3, 4)))
    varbinds = sp.to_varbinds(plan)
    assert sp.from_varbinds(plan.model, varbinds) == plan
    assert sp.parse_setplan(plan.to_yaml()) == plan
    by_oid = {vb.oid: vb for vb in varbinds}
    assert by_oid["1.3.6.1.2.1.1.5.0"].value == "sw-milano"
    assert by_oid["1.3.6.1.2.1.17.7.1.4.3.1.2.20"].value == bytes([0xC0, 0, 0])  # egress
    assert by_oid["1.3.6.1.2.1.17.7.1.4.3.1.4.20"].value == bytes(3)  # untagged: none
    assert by_oid["1.3.6.1.2.1.17.7.1.4.5.1.1.24"] == sp.VarBind(
        "1.3.6.1.2.1.17.7.1.4.5.1.1.24", "gauge", 1
    )
    assert by_oid["1.3.6.1.2.1.105.1.1.1.3.1.3"].value == sp.TRUTH_FALSE
    assert "1.3.6.1.2.1.105.1.1.1.3.1.13" not in by_oid  # port 13 has no PoE


def test_writes_are_only_what_differs_in_a_safe_order(plan_yaml: Callable[..., str]) -> None:
    old = sp.to_varbinds(sp.parse_setplan(plan_yaml(extra_vlan=100)))
    new = sp.to_varbinds(sp.parse_setplan(plan_yaml(voice_ports=(1, 2, 3))))
    assert sp.plan_writes(old, old) == []
    assert sp.diff_text(old, old) == ""
    writes = sp.plan_writes(old, new)
    assert [(w.oid, w.value) for w in writes] == [
        ("1.3.6.1.2.1.17.7.1.4.3.1.2.20", bytes([0xE0, 0, 0])),
        ("1.3.6.1.2.1.17.7.1.4.3.1.5.100", sp.ROW_DESTROY),  # last: nothing points at it
    ]
    back = sp.plan_writes(new, old)
    assert back[0] == sp.VarBind("1.3.6.1.2.1.17.7.1.4.3.1.5.100", "int", sp.ROW_CREATE_AND_GO)
    assert {w.oid for w in back[1:]} == {
        "1.3.6.1.2.1.17.7.1.4.3.1.1.100",
        "1.3.6.1.2.1.17.7.1.4.3.1.2.100",
        "1.3.6.1.2.1.17.7.1.4.3.1.4.100",
        "1.3.6.1.2.1.17.7.1.4.3.1.2.20",
    }


def test_the_default_vlan_is_never_destroyed() -> None:
    current = [sp.VarBind(f"{sp.VLAN_ROW_STATUS}.1", "int", 1)]
    assert sp.plan_writes(current, []) == []


def test_diff_names_objects_and_ports(plan_yaml: Callable[..., str]) -> None:
    old = sp.to_varbinds(sp.parse_setplan(plan_yaml()))
    new = sp.to_varbinds(sp.parse_setplan(plan_yaml(name="sw-roma", voice_ports=(5,))))
    diff = sp.diff_text(old, new)
    assert '-sysName = "sw-milano"' in diff
    assert '+sysName = "sw-roma"' in diff
    assert "+dot1qVlanStaticEgressPorts.20 = 080000 (ports 5)" in diff
    assert diff.startswith("--- running\n+++ candidate")


def test_model_facts_are_data() -> None:
    assert snmp_model("1.3.6.1.4.1.171.10.134.9") == "dlink-dgs-1100-24p"
    assert snmp_model(".1.3.6.1.4.1.171.10.134.9") == "dlink-dgs-1100-24p"
    assert snmp_model("1.3.6.1.4.1.9.1.1") is None
    assert sp.model_ports("dlink-dgs-1100-08p") == (8, tuple(range(1, 9)))
    assert not MODELS["dlink-dgs-1100-08p"].snmp.sys_object_id_verified
    assert not MODELS["dlink-dgs-1100-24p"].snmp.save_verified


def test_a_plan_without_the_default_vlan_empties_it(plan_yaml: Callable[..., str]) -> None:
    # Data on VLAN 10 (settings.lan_data_vlan): VLAN 1 cannot be deleted, so it is emptied.
    text = plan_yaml().replace("{vid: 1, name: data,", "{vid: 10, name: data,")
    text = text.replace(": 1,", ": 10,").replace(": 1}", ": 10}")
    plan = sp.parse_setplan(text)
    assert [v.vid for v in plan.vlans] == [10, 20]
    factory = [
        sp.VarBind(f"{sp.VLAN_NAME}.1", "str", "default"),
        sp.VarBind(f"{sp.VLAN_EGRESS}.1", "octets", b"\xff\xff\xff"),
        sp.VarBind(f"{sp.VLAN_UNTAGGED}.1", "octets", b"\xff\xff\xff"),
        sp.VarBind(f"{sp.VLAN_ROW_STATUS}.1", "int", 1),
    ]
    writes = {w.oid: w.value for w in sp.plan_writes(factory, sp.to_varbinds(plan))}
    assert writes[f"{sp.VLAN_EGRESS}.1"] == bytes(3)
    assert writes[f"{sp.VLAN_UNTAGGED}.1"] == bytes(3)
    assert f"{sp.VLAN_ROW_STATUS}.1" not in writes
    assert writes[f"{sp.VLAN_ROW_STATUS}.10"] == sp.ROW_CREATE_AND_GO
    # Once applied, the default VLAN's name (not managed) is no difference.
    applied = [factory[0], *sp.to_varbinds(plan)]
    assert sp.diff_text(applied, sp.to_varbinds(plan)) == ""
    assert sp.plan_writes(applied, sp.to_varbinds(plan)) == []
