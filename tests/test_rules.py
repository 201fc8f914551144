"""Every rule of DESIGN.md §2: a document breaking just that rule is refused with a line
naming the order, the offending item and the limit; `provisioner validate` exits 1."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from provisioner.cli.app import app
from provisioner.documents.validate import check_text

BASE: dict[str, Any] = {
    "order": "WT-TEST-0001",
    "customer": {"name": "Prova S.r.l.", "vat": "IT01234567897"},
    "plan": "office_maxi",
    "lines": 4,
    "options": {"multisite": True, "fax_pos": 1},
    "numbers": {
        "single": ["+390612340000", "+390612340001"],
        "gnr": [{"first": "+390212345600", "last": "+390212345699"}],
        "isdn_groups": [["+390298765430", "+390298765431"]],
    },
    "sites": [
        {"id": "milano", "address": "Via Roma 1, 20121 Milano MI", "connectivity": "ftth"},
        {"id": "roma", "address": "Via Appia 10, 00179 Roma RM", "connectivity": "fttc"},
    ],
    "extensions": [
        {"number": "+390212345601", "short": 201, "type": "premium", "name": "Giulia Rossi",
         "site": "milano", "mobile": "+393331234567", "conference": "my_conference"},
        {"number": "+390212345602", "short": 202, "type": "operator", "name": "Reception",
         "site": "milano"},
        {"number": "+390212345603", "short": 203, "type": "standard", "name": "Ufficio",
         "site": "milano"},
        {"number": "+390212345604", "short": 204, "type": "standard", "name": "Magazzino",
         "site": "milano"},
        {"number": "+390612340000", "short": 301, "type": "standard", "name": "Roma 1",
         "site": "roma"},
    ],
    "devices": [
        {"model": "iad", "site": "milano", "mac": "00:1d:73:a0:00:01"},
        {"model": "mini-ont", "site": "milano", "serial": "ALCL1A2B3C4D"},
        {"model": "iad", "site": "roma"},
        {"model": "dlink-dgs-1100-24p", "id": "sw-milano", "site": "milano"},
        {"model": "alcatel-temporis-ip701g", "mac": "00:80:f0:00:00:01", "extension": 202,
         "switch": "sw-milano", "port": 1},
        {"model": "alcatel-ip2215", "mac": "00:80:f0:00:10:01", "site": "milano",
         "switch": "sw-milano", "port": 2,
         "handsets": [{"extension": 203}, {"extension": 204, "model": "alcatel-ip15"}]},
    ],
}  # fmt: skip

SMALL: dict[str, Any] = {
    "order": "WT-TEST-0002",
    "customer": {"name": "Bar Centrale", "vat": "IT01234567897"},
    "plan": "super_office_one",
    "lines": 1,
    "numbers": {"single": ["+390817654321"]},
    "sites": [{"id": "napoli", "address": "Via Toledo 1, Napoli", "connectivity": "ftth"}],
    "extensions": [
        {"number": "+390817654321", "short": 10, "type": "premium", "name": "Anna",
         "site": "napoli"}
    ],
    "devices": [
        {"model": "iad", "site": "napoli"},
        {"model": "mini-ont", "site": "napoli"},
    ],
}  # fmt: skip

Patch = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Patch:
    def patch(doc: dict[str, Any]) -> None:
        node: Any = doc
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        last = parts[-1]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return patch


def _append(path: str, value: Any) -> Patch:
    def patch(doc: dict[str, Any]) -> None:
        node: Any = doc
        for part in path.split("."):
            node = node[int(part)] if part.isdigit() else node[part]
        node.append(copy.deepcopy(value))

    return patch


def _many(*patches: Patch) -> Patch:
    def patch(doc: dict[str, Any]) -> None:
        for p in patches:
            p(doc)

    return patch


def _extra_exts(n: int, site: str = "milano", typ: str = "standard") -> Patch:
    def patch(doc: dict[str, Any]) -> None:
        for i in range(n):
            doc["extensions"].append(
                {"number": f"+3902123456{50 + i:02d}", "short": 250 + i, "type": typ,
                 "name": f"Extra {i}", "site": site}
            )  # fmt: skip

    return patch


def _phone(ext: int, mac: str, **kw: Any) -> dict[str, Any]:
    return {"model": "alcatel-temporis-ip150", "mac": mac, "extension": ext, **kw}


# (rule id, base, patch, expected path in the line, expected limit text in the line)
CASES: list[tuple[str, dict[str, Any], Patch, str, str]] = [
    ("plan-connectivity", SMALL, _set("sites.0.connectivity", "adsl"),
     "sites[0].connectivity", "super_office_one: fttc, ftth"),
    ("lines-above-plan", BASE, _set("lines", 9), "lines", "office_maxi: 3 to 8"),
    ("lines-below-plan", BASE, _set("lines", 2), "lines", "office_maxi: 3 to 8"),
    ("lines-fwa-exactly-3", BASE,
     _many(_set("sites.1.connectivity", "fwa"), _set("lines", 4)), "lines", "office_maxi: 3"),
    ("lines-small-plan", SMALL, _set("lines", 2), "lines", "super_office_one: 1"),
    ("extensions-too-few", BASE,
     lambda d: d.update(extensions=d["extensions"][:2], devices=d["devices"][:4]),
     "extensions", "office_maxi: 3 to 32"),
    # Past the largest plan's 32 the document's own cap speaks (before any rule runs).
    ("extensions-too-many", BASE, _extra_exts(28), "extensions", "at most 32"),
    ("extensions-office-plus-max", BASE,
     _many(_set("plan", "office_plus"), _set("lines", 2), _extra_exts(4)),
     "extensions", "office_plus: 2 to 8"),
    ("extensions-small-exactly-1", SMALL,
     _append("extensions", {"number": "+390817654321", "short": 11, "type": "premium",
                            "name": "B", "site": "napoli"}),
     "extensions", "super_office_one: exactly 1"),
    ("extension-type-small-plan", SMALL, _set("extensions.0.type", "standard"),
     "extensions[0].type", "super_office_one: premium only"),
    ("short-unique", BASE, _set("extensions.1.short", 201),
     "extensions[1].short", "short numbers are unique in the order"),
    ("number-one-extension", BASE, _set("extensions.1.number", "+390212345601"),
     "extensions[1].number", "one number per extension"),
    ("number-not-held", BASE, _set("extensions.1.number", "+390299999999"),
     "extensions[1].number", "numbers.single, numbers.gnr or numbers.isdn_groups"),
    ("extension-site-unknown", BASE, _set("extensions.1.site", "torino"),
     "extensions[1].site", "sites"),
    ("multisite-required", BASE, _set("options.multisite", False),
     "options.multisite", "multisite is required for more than one site"),
    ("site-id-unique", BASE, _set("sites.1.id", "milano"), "sites[1].id", "site ids are unique"),
    ("conference-premium-only", BASE, _set("extensions.2.conference", "my_conference"),
     "extensions[2].conference", "Premium extensions only"),
    ("conference-large-not-super-office-one", SMALL,
     _set("extensions.0.conference", "my_conference_large"),
     "extensions[0].conference", "not with super_office_one"),
    ("conference-not-both", BASE,
     _set("extensions.0.conference", ["my_conference", "my_conference_large"]),
     "extensions[0].conference", "one conference option per extension"),
    ("mobile-premium-only", BASE, _set("extensions.2.mobile", "+393330000000"),
     "extensions[2].mobile", "Premium extensions only"),
    ("multi-selection-not-super-office-one", SMALL, _set("options", {"multi_selection": True}),
     "options.multi_selection", "not with super_office_one"),
    ("fax-pos-not-super-office-one", SMALL, _set("options", {"fax_pos": 1}),
     "options.fax_pos", "not with super_office_one"),
    ("efax-not-super-office-one", SMALL, _set("options", {"efax": True}),
     "options.efax", "not with super_office_one"),
    ("call-distributor-not-super-office-one", SMALL,
     _set("options", {"call_distributor_light": True}),
     "options.call_distributor_light", "not with super_office_one"),
    ("fax-pos-at-most-2", BASE, _set("options.fax_pos", 3), "options.fax_pos", "at most 2"),
    ("fax-pos-fits-analog-ports", SMALL,
     _many(_set("plan", "office_one"), _set("options", {"fax_pos": 2})),
     "options.fax_pos", "the IAD has 2 (port 1 is the analog extension on office_one)"),
    ("gnr-overlap-single", BASE, _append("numbers.single", "+390212345650"),
     "numbers.single[2]", "a GNR range moves whole: list it once"),
    ("gnr-ranges-overlap", BASE,
     _append("numbers.gnr", {"first": "+390212345690", "last": "+390212345709"}),
     "numbers.gnr[1]", "a GNR range is held whole, once"),
    ("gnr-not-a-range", BASE,
     _set("numbers.gnr.0", {"first": "+390212345699", "last": "+390212345600"}),
     "numbers.gnr[0]", "first below last"),
    ("number-listed-twice", BASE, _append("numbers.single", "+390612340000"),
     "numbers.single[2]", "also at numbers.single[0]"),
    ("isdn-group-at-most-8", BASE,
     _set("numbers.isdn_groups.0", [f"+3902987654{30 + i}" for i in range(9)]),
     "numbers.isdn_groups[0]", "at most 8"),
    ("isdn-group-one-block", BASE, _append("numbers.isdn_groups.0", "+390298761111"),
     "numbers.isdn_groups[0][2]", "one group, one block: +3902987654xx"),
    ("isdn-group-same-length", BASE, _append("numbers.isdn_groups.0", "+3902987654321"),
     "numbers.isdn_groups[0][2]", "one group, one block: +3902987654xx"),
    ("isdn-group-empty", BASE, _append("numbers.isdn_groups", []),
     "numbers.isdn_groups[1]", "1 to 8 numbers, the progenitor first"),
    ("terminals-quota", BASE,
     _many(_append("devices", _phone(201, "00:80:f0:00:00:02")),
           _append("devices", _phone(301, "00:80:f0:00:00:03")),
           _set("extensions.2.type", "operator")),
     "devices", "at most 3: one per standard/premium extension"),
    ("one-terminal-per-extension", BASE, _append("devices", _phone(203, "00:80:f0:00:00:04")),
     "devices[6].extension", "one terminal per extension"),
    ("terminal-extension-unknown", BASE, _append("devices", _phone(299, "00:80:f0:00:00:05")),
     "devices[6].extension", "extensions"),
    ("dect-capacity", BASE,
     _many(_extra_exts(5),
           _set("devices.5.handsets", [{"extension": 203}, {"extension": 204}]
                + [{"extension": 250 + i} for i in range(5)])),
     "devices[5].handsets", "at most 5"),
    ("poe-port-not-poe", BASE, _set("devices.4.port", 13),
     "devices[4].port", "dlink-dgs-1100-24p: PoE ports 1-12 of 24"),
    ("poe-port-does-not-exist", BASE, _set("devices.4.port", 30),
     "devices[4].port", "dlink-dgs-1100-24p: PoE ports 1-12 of 24"),
    ("poe-port-shared", BASE, _set("devices.5.port", 1), "devices[5].port", "one device per port"),
    ("poe-switch-unknown", BASE, _set("devices.4.switch", "sw-roma"),
     "devices[4].switch", "a switch id"),
    ("poe-switch-other-site", BASE,
     _many(_set("devices.3.site", "roma"), _set("devices.5.port", 3)),
     "devices[4].switch", "same site"),
    ("iad-one-per-site", BASE, _append("devices", {"model": "iad", "site": "milano"}),
     "sites[0]", "exactly one per site"),
    ("iad-missing", BASE, lambda d: d["devices"].pop(2), "sites[1]", "exactly one per site"),
    ("ont-on-ftth", BASE, lambda d: d["devices"].pop(1), "sites[0]", "exactly one on FTTH"),
    ("ont-only-ftth", BASE, _append("devices", {"model": "mini-ont", "site": "roma"}),
     "devices[6].model", "a Mini ONT goes with FTTH only"),
    ("analog-only-no-ip-phones", SMALL,
     _append("devices", {"model": "alcatel-temporis-ip150", "extension": 10}),
     "devices[2].model", "super_office_one: no IP phones or DECT"),
    ("device-mac-unique", BASE, _set("devices.5.mac", "00-80-F0-00-00-01"),
     "devices[5].mac", "one box, one device"),
    ("device-key-applies", BASE, _set("devices.0.port", 3),
     "devices[0].port", "Access gateway (IAD)"),
    ("handset-site", BASE,
     _many(_set("extensions.3.site", "roma")),
     "devices[5].handsets[1].extension", "a handset's site is its base's site"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "base", "patch", "path", "limit"), CASES, ids=[c[0] for c in CASES]
)
def test_rule_violation_is_reported(
    rule: str, base: dict[str, Any], patch: Patch, path: str, limit: str
) -> None:
    assert check_text(yaml.safe_dump(base), "base.yaml").ok, "the base document must be valid"
    doc = copy.deepcopy(base)
    patch(doc)
    checked = check_text(yaml.safe_dump(doc, sort_keys=False), "order.yaml")
    assert not checked.ok
    lines = checked.lines()
    order = doc["order"]
    hits = [ln for ln in lines if f": {order}: {path}: " in ln and f"({limit})" in ln]
    assert hits, f"{rule}: no line names {path} with limit ({limit}); got:\n" + "\n".join(lines)
    for line in lines:
        assert line.startswith("order.yaml:"), line


def test_validate_cli_exit_1_with_the_line(tmp_path: Path) -> None:
    doc = copy.deepcopy(BASE)
    doc["devices"][4]["port"] = 13
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = CliRunner().invoke(app, ["validate", str(f)])
    assert result.exit_code == 1
    assert "devices[4].port: port 13 of sw-milano is not a PoE port" in result.output
    assert "(dlink-dgs-1100-24p: PoE ports 1-12 of 24)" in result.output
    assert "Traceback" not in result.output


def test_all_violations_reported_not_only_the_first() -> None:
    doc = copy.deepcopy(BASE)
    doc["lines"] = 20
    doc["devices"][4]["port"] = 13
    doc["extensions"][2]["mobile"] = "+393330000000"
    lines = check_text(yaml.safe_dump(doc, sort_keys=False), "o.yaml").lines()
    assert len(lines) >= 3
    assert any(": lines: " in ln for ln in lines)
    assert any("devices[4].port" in ln for ln in lines)
    assert any("extensions[2].mobile" in ln for ln in lines)


def test_a_secondary_isdn_number_serves_an_extension_without_its_progenitor() -> None:
    """The seeds: the progenitor must be ported (listed first in its group), and the customer
    chooses which numbers of the group to activate; the progenitor need not serve one."""
    doc = copy.deepcopy(BASE)
    doc["extensions"][3]["number"] = "+390298765431"  # secondary; the progenitor ...430 unused
    checked = check_text(yaml.safe_dump(doc, sort_keys=False), "o.yaml")
    assert checked.ok, checked.lines()


def test_an_isdn_group_of_eight_straddling_a_decade_is_one_block() -> None:
    doc = copy.deepcopy(BASE)
    doc["numbers"]["isdn_groups"] = [[f"+3902987654{n}" for n in range(36, 44)]]
    doc["extensions"][3]["number"] = "+390298765440"
    checked = check_text(yaml.safe_dump(doc, sort_keys=False), "o.yaml")
    assert checked.ok, checked.lines()


def test_samples_are_valid() -> None:
    result = CliRunner().invoke(app, ["validate", "inventory/orders/"])
    assert result.exit_code == 0, result.output
    assert "0 refused" in result.output
