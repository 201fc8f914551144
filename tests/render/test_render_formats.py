"""Rendered files parse with standard tools and say what the order says."""

from __future__ import annotations

import configparser
import dataclasses
import json
import re
import shlex
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from provisioner.documents.validate import check_text
from provisioner.render.dhcp import dhcp_snippet
from provisioner.render.engine import Renderer

O123 = "WT-2026-000123"


def ini(data: bytes) -> configparser.ConfigParser:
    # configparser as it comes, non-strict: Temporis repeats "[ account ]" per SIP account.
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.SECTCRE = re.compile(r"\[\s*(?P<header>[^\]]+?)\s*\]")  # "[ Time ]" is section Time
    cp.read_string(data.decode())
    return cp


def sections(data: bytes) -> list[dict[str, str]]:
    """Each "[ x ]" block as a dict, in file order (the duplicates configparser merges)."""
    out: list[dict[str, str]] = []
    for line in data.decode().splitlines():
        if line.startswith("["):
            out.append({"": line.strip("[] ")})
        elif " = " in line:
            k, _, v = line.partition(" = ")
            out[-1][k] = v
    return out


def cli(data: bytes) -> dict[str, str]:
    """IAD CLI lines as {"path words": value}; shlex reads the dialect's quoting."""
    out = {}
    for line in data.decode().splitlines():
        words = shlex.split(line)
        assert words[0] == "set", line
        out[" ".join(words[1:-1])] = words[-1]
    return out


def sip(inv, order: str, short: int) -> str:  # type: ignore[no-untyped-def]
    with inv.db.read() as s:
        return inv.secret(s, inv.get(s, order), f"extension:{short}", "sip_password")


# ---------------------------------------------------------------------- Temporis / DECT


def test_every_ini_file_parses_with_configparser(renderer: Renderer) -> None:
    files = renderer.render_order(O123)
    cfgs = [f for f in files.values() if f.format == "ini"]
    assert len(cfgs) == 12  # 11 bound desk phones + 1 DECT base
    for f in cfgs:
        cp = ini(f.data)
        assert cp["Time"]["TimeZoneName"] == "Italy(Rome)", f.name
        assert all("path" in cp[s] for s in cp.sections()), f.name


def test_phone_registers_its_extension_with_its_own_credentials(
    renderer: Renderer, sample_inventory
) -> None:  # type: ignore[no-untyped-def]
    files = renderer.files_for_mac("00:80:f0:00:00:02")
    cp = ini(files["0080f0000002.cfg"])
    acc = cp["account"]
    assert acc["UserName"] == acc["AuthName"] == "+390212345601"
    assert acc["DisplayName"] == "Giulia Rossi"
    assert acc["password"] == sip(sample_inventory, O123, 201)
    assert acc["SIPServerHost"] == "sip.officesmart.example"
    assert acc["SIPServerPort"] == "5060"
    assert cp["autoprovision"]["user"] == "0080f0000002"
    with sample_inventory.db.read() as s:
        order = sample_inventory.get(s, O123)
        prov = sample_inventory.secret(s, order, "device:phone-201", "provisioning_password")
        admin = sample_inventory.secret(s, order, "device:phone-201", "admin_password")
    assert cp["autoprovision"]["password"] == prov
    assert cp["AdminPassword"]["password"] == admin
    assert cp["firmware"]["firmware_name"] == "IP701G.img"
    assert cp["Message"]["VoiceNumber0"] == "*98"
    assert cp["RemotePhoneBook0"]["URL"].endswith("/phonebook-0080f0000002.xml")
    assert cp["VLAN"]["ISVLAN"] == "1" and cp["VLAN"]["VID"] == "20"
    assert not [s for s in cp.sections() if s.startswith("memory")]  # not an operator


def test_operator_phone_monitors_colleagues_and_parks(renderer: Renderer) -> None:
    data = renderer.files_for_mac("00:80:f0:00:00:01")["0080f0000001.cfg"]
    keys = [s for s in sections(data) if s[""].startswith("memory")]
    assert len(keys) == 10  # the IP701G's keys: 9 BLF + call park
    assert [k["Value"] for k in keys[:9]] == [str(n) for n in range(201, 210)]
    assert {k["DKtype"] for k in keys[:9]} == {"16"}
    assert keys[-1]["DKtype"] == "10" and keys[-1]["Label"] == "Park"


def test_phone_off_the_switch_has_no_voice_vlan(renderer: Renderer, sample_inventory) -> None:  # type: ignore[no-untyped-def]
    sample_inventory.bind(O123, mac="00:80:f0:00:01:04", device_id="phone-303")
    cp = ini(renderer.files_for_mac("00:80:f0:00:01:04")["0080f0000104.cfg"])
    assert cp["VLAN"]["ISVLAN"] == "0"
    assert cp["firmware"]["firmware_name"] == "IP150.img"


def test_dect_base_has_one_account_per_slot_as_ordered(
    renderer: Renderer, sample_inventory
) -> None:  # type: ignore[no-untyped-def]
    data = renderer.files_for_mac("00:80:f0:00:10:01")["0080f0001001.cfg"]
    accounts = [s for s in sections(data) if s[""] == "account"]
    assert [(a["HandsetSlot"], a["Label"]) for a in accounts] == [
        ("1", "211"),
        ("2", "212"),
        ("3", "213"),
        ("4", "230"),
    ]
    assert [a["path"] for a in accounts] == [f"/config/voip/sipAccount{i}.cfg" for i in range(4)]
    assert accounts[3]["password"] == sip(sample_inventory, O123, 230)


def test_phonebook_lists_every_extension(renderer: Renderer) -> None:
    data = renderer.files_for_mac("00:80:f0:00:00:04")["phonebook-0080f0000004.xml"]
    root = ET.fromstring(data)  # noqa: S314 - our own output
    entries = [
        (e.findtext("Name"), [t.text for t in e.findall("Telephone")])
        for e in root.iter("DirectoryEntry")
    ]
    assert len(entries) == 24
    assert entries[0] == ("Reception Milano", ["200", "+390212345600"])
    assert ("Stefano Leone", ["305", "+390212345654"]) in entries


# ---------------------------------------------------------------------- IAD


def test_iad_wan_follows_connectivity(renderer: Renderer) -> None:
    milano = cli(renderer.render_device(O123, "iad-milano")["iad-milano.cli"].data)
    assert milano["wan medium"] == "ethernet" and milano["wan mode"] == "pppoe"
    assert milano["wan vlan"] == "835" and milano["wan voice vlan"] == "836"
    roma = cli(renderer.render_device(O123, "iad-roma")["iad-roma.cli"].data)
    assert roma["wan medium"] == "vdsl" and roma["wan vlan"] == "835"
    adsl = cli(renderer.render_device("WT-2026-000103", "iad-brescia")["iad-brescia.cli"].data)
    assert (adsl["wan atm vpi"], adsl["wan atm vci"], adsl["wan atm encapsulation"]) == (
        "8",
        "35",
        "llc",
    )
    assert adsl["wan mode"] == "pppoe"
    fwa = cli(renderer.render_device("WT-2026-000104", "iad-catania")["iad-catania.cli"].data)
    assert fwa["wan mode"] == "dhcp" and "wan pppoe username" not in fwa


def test_iad_trunk_lan_and_credentials(renderer: Renderer, sample_inventory) -> None:  # type: ignore[no-untyped-def]
    c = cli(renderer.files_for_mac("00:1d:73:a0:00:01")["001d73a00001.cfg"])
    assert c["voice trunk channels"] == "8"  # the order's simultaneous calls
    assert c["lan dhcp option66"] == "http://prov.officesmart.example/"
    assert c["lan vlan voice"] == "20"
    assert c["lan voice dhcp option66"] == "http://prov.officesmart.example/"
    assert c["wan pppoe username"] == "wt-2026-000123.milano@officesmart.example"
    with sample_inventory.db.read() as s:
        order = sample_inventory.get(s, O123)
        pppoe = sample_inventory.secret(s, order, "site:milano", "pppoe_password")
    assert c["wan pppoe password"] == pppoe


def test_iad_fax_and_pos_ports(renderer: Renderer) -> None:
    c = cli(renderer.render_device(O123, "iad-milano")["iad-milano.cli"].data)
    assert (c["fxs 1 use"], c["fxs 1 t38"], c["fxs 1 codecs"]) == ("fax", "true", "g711a")
    assert (c["fxs 2 use"], c["fxs 2 t38"], c["fxs 2 codecs"]) == ("pos", "false", "g711a")
    assert (c["fxs 2 vad"], c["fxs 2 echo-cancel"]) == ("false", "false")
    roma = cli(renderer.render_device(O123, "iad-roma")["iad-roma.cli"].data)
    assert not [k for k in roma if k.startswith("fxs")]


def test_analog_extension_on_port_1_of_small_plans(renderer: Renderer, sample_inventory) -> None:  # type: ignore[no-untyped-def]
    c = cli(renderer.render_device("WT-2026-000101", "iad-napoli")["iad-napoli.cli"].data)
    assert c["fxs 1 use"] == "phone" and c["fxs 1 account line"] == "1"
    assert c["voice line 1 number"] == "+390817654321"
    assert c["voice line 1 display-name"] == "Anna Esposito"
    assert c["voice line 1 password"] == sip(sample_inventory, "WT-2026-000101", 10)
    assert c["voice trunk channels"] == "1"


def test_fax_pos_default_goes_to_first_site_iad(inventory, settings) -> None:  # type: ignore[no-untyped-def]
    doc = """
order: T-FAX
customer: {name: Prova, vat: IT01234567897}
plan: office_plus
lines: 2
options: {fax_pos: 2, multisite: true}
numbers: {single: ["+390200000001", "+390200000002"]}
sites:
  - {id: a, address: Via A 1, connectivity: fttc}
  - {id: b, address: Via B 1, connectivity: fttc}
extensions:
  - {number: "+390200000001", short: 21, type: standard, name: Uno, site: a}
  - {number: "+390200000002", short: 22, type: standard, name: Due, site: b}
devices:
  - {model: iad, site: b, mac: "02:00:00:00:fa:02"}
  - {model: iad, site: a, mac: "02:00:00:00:fa:01"}
"""
    checked = check_text(doc)
    assert checked.ok, checked.lines()
    assert checked.document is not None
    inventory.apply(checked.document)
    r = Renderer(settings, inventory)
    a = cli(r.files_for_mac("02:00:00:00:fa:01")["02000000fa01.cfg"])
    b = cli(r.files_for_mac("02:00:00:00:fa:02")["02000000fa02.cfg"])
    assert (a["fxs 1 use"], a["fxs 2 use"]) == ("fax", "fax")
    assert not [k for k in b if k.startswith("fxs")]


def test_every_value_is_a_setting(sample_inventory, home, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from provisioner.settings import load_settings

    monkeypatch.setenv("PROVISIONER_WAN_DATA_VLAN", "911")
    monkeypatch.setenv("PROVISIONER_LAN_VOICE_VLAN", "42")
    monkeypatch.setenv("PROVISIONER_SIP_REGISTRAR", "reg.example.net")
    monkeypatch.setenv("PROVISIONER_HTTP_PORT", "8080")
    s = load_settings()
    r = Renderer(s, sample_inventory)
    c = cli(r.files_for_mac("00:1d:73:a0:00:01")["001d73a00001.cfg"])
    assert c["wan vlan"] == "911" and c["lan vlan voice"] == "42"
    assert c["voice sip registrar"] == "reg.example.net"
    assert c["lan dhcp option66"] == "http://prov.officesmart.example:8080/"
    cp = ini(r.files_for_mac("00:80:f0:00:00:02")["0080f0000002.cfg"])
    assert cp["VLAN"]["VID"] == "42" and cp["account"]["SIPServerHost"] == "reg.example.net"


def test_iad_cli_values_with_spaces_and_quotes_are_quoted() -> None:
    from provisioner.render.engine import cli_quote

    assert cli_quote("plain") == "plain"
    assert cli_quote("two words") == '"two words"'
    assert cli_quote('say "hi"') == '"say \\"hi\\""'
    assert cli_quote("back\\slash") == '"back\\\\slash"'
    assert cli_quote("") == '""'


# ---------------------------------------------------------------------- ONT, switch


def test_ont_record(renderer: Renderer, sample_inventory) -> None:  # type: ignore[no-untyped-def]
    key, data = renderer.lookup("ont-ALCL1A2B3C4D.txt") or (None, b"")
    assert key is not None and key.device_id == "ont-milano"
    rec = yaml.safe_load(data)
    with sample_inventory.db.read() as s:
        order = sample_inventory.get(s, O123)
        ploam = sample_inventory.secret(s, order, "device:ont-milano", "ploam_password")
    assert rec["serial"] == "ALCL1A2B3C4D" and rec["ploam_password"] == ploam
    assert rec["loid"] == "WT-2026-000123-milano"
    assert rec["wan"] == {"data_vlan": 835, "voice_vlan": 836}


@pytest.mark.parametrize(
    ("switch", "ports", "poe", "voice"),
    [
        ("sw-milano", 24, 12, list(range(1, 13))),
        ("sw-roma", 8, 8, [1, 2, 3]),
    ],
)
def test_switch_setplan_shape(
    renderer: Renderer, switch: str, ports: int, poe: int, voice: list[int]
) -> None:
    plan = yaml.safe_load(renderer.render_device(O123, switch)[f"{switch}.setplan.yaml"].data)
    assert list(plan) == ["model", "system", "vlans", "pvid", "poe"]
    assert plan["system"]["name"] == switch
    data, vo = plan["vlans"]
    assert data == {"vid": 1, "name": "data", "untagged": list(range(1, ports + 1)), "tagged": []}
    assert vo == {"vid": 20, "name": "voice", "untagged": [], "tagged": voice}
    assert plan["pvid"] == dict.fromkeys(range(1, ports + 1), 1)
    # PoE on for the ports the order uses; the other PoE ports are left as they are.
    assert plan["poe"] == {p: True for p in voice if p <= poe}


def test_switch_me_cli(renderer: Renderer) -> None:
    text = renderer.render_device(O123, "sw-roma")["sw-roma.me.cli"].data.decode()
    assert "config snmp system_name sw-roma\n" in text
    assert "create vlan voice tag 20\n" in text
    assert "config vlan voice add tagged 1-3\n" in text
    assert "config poe ports 1-3 state enable\n" in text
    assert "state disable" not in text  # free ports keep their PoE state
    assert text.endswith("save\n")


# ---------------------------------------------------------------------- DHCP


def test_dnsmasq_snippet_passes_dnsmasq_test(renderer: Renderer, tmp_path: Path) -> None:
    text = dhcp_snippet(renderer, O123, "milano", "dnsmasq")
    assert "dhcp-host=00:80:f0:00:00:01,set:prov\n" in text
    assert 'dhcp-option=tag:prov,66,"http://prov.officesmart.example/"\n' in text
    assert "00:1d:73:a0:00:01" not in text  # the IAD is no phone
    if shutil.which("dnsmasq") is None:
        pytest.skip("dnsmasq not installed (apt-get install dnsmasq): syntax not checked")
    conf = tmp_path / "snippet.conf"
    conf.write_text(text)
    run = subprocess.run(["dnsmasq", "--test", "-C", str(conf)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    conf.write_text(text + "dhcp-option=tag:prov,sixtysix\n")  # the check can fail
    bad = subprocess.run(["dnsmasq", "--test", "-C", str(conf)], capture_output=True, text=True)
    assert bad.returncode != 0


def _kea_config(snippet: dict) -> dict:  # type: ignore[type-arg]
    """The snippet inside the smallest full Kea configuration."""
    return {
        "Dhcp4": {
            "interfaces-config": {"interfaces": []},
            "lease-database": {"type": "memfile", "persist": False},
            "subnet4": [
                {"id": 1, "subnet": "192.0.2.0/24", "pools": [{"pool": "192.0.2.10-192.0.2.99"}]}
            ],
            **snippet["Dhcp4"],
        }
    }


def test_kea_snippet_passes_kea_test(renderer: Renderer, tmp_path: Path) -> None:
    snippet = json.loads(dhcp_snippet(renderer, O123, "roma", "kea"))
    (cls,) = snippet["Dhcp4"]["client-classes"]
    assert cls["test"] == (
        "hexstring(pkt4.mac, ':') == '00:80:f0:00:01:01' or "
        "hexstring(pkt4.mac, ':') == '00:80:f0:00:01:02'"
    )
    assert cls["option-data"] == [
        {"name": "tftp-server-name", "code": 66, "data": "http://prov.officesmart.example/"}
    ]
    assert list(snippet["Dhcp4"]) == ["client-classes"]  # nothing for other clients
    if shutil.which("kea-dhcp4") is None:
        pytest.skip("kea-dhcp4 not installed (apt-get install kea-dhcp4-server): not checked")
    conf = tmp_path / "kea.json"
    conf.write_text(json.dumps(_kea_config(snippet)))
    run = subprocess.run(["kea-dhcp4", "-t", str(conf)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    broken = _kea_config(snippet)
    broken["Dhcp4"]["client-classes"][0]["test"] = "hexstring(pkt4.mac ==="
    conf.write_text(json.dumps(broken))
    bad = subprocess.run(["kea-dhcp4", "-t", str(conf)], capture_output=True, text=True)
    assert bad.returncode != 0


def test_dhcp_snippet_for_a_site_without_phones_is_valid(renderer: Renderer) -> None:
    snippet = json.loads(dhcp_snippet(renderer, "WT-2026-000101", "napoli", "kea"))
    assert snippet["Dhcp4"]["client-classes"][0]["test"].endswith("'none'")
    assert "dhcp-host" not in dhcp_snippet(renderer, "WT-2026-000101", "napoli", "dnsmasq")


def test_public_settings_is_not_the_settings(settings) -> None:  # type: ignore[no-untyped-def]
    from provisioner.render.drivers.base import public_settings

    names = {f.name for f in dataclasses.fields(public_settings(settings))}
    assert not names & {"secret_key", "database_url", "secret_key_file", "home"}
