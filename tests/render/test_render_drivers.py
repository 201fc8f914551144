"""Drivers: a new model is one driver file plus templates; registry; template lookup order."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path
from typing import ClassVar

import pytest
from sqlalchemy import select

from provisioner.catalog import MODELS
from provisioner.errors import RenderError
from provisioner.render.dhcp import dhcp_snippet
from provisioner.render.drivers import (
    ENTRY_POINT_GROUP,
    Registry,
    builtin_drivers,
    default_registry,
)
from provisioner.render.drivers.base import Driver
from provisioner.render.engine import Renderer
from provisioner.store.models import Device

ACME_TEMPLATE = """{#- ACME SP-1 (made up for the test). -#}
<?xml version="1.0" encoding="UTF-8"?>
<sp1 firmware="{{ facts.firmware }}">
  <account number="{{ ext.number }}" name="{{ ext.name }}" registrar="{{ registrar }}"
           password="{{ password }}"/>
  <admin password="{{ admin }}"/>
</sp1>
"""


@pytest.fixture(autouse=True)
def _acme_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    # The made-up driver is a module of its own, as a driver package would ship it.
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


@pytest.fixture
def acme_in_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    # Its model's row joins the catalog, as a new model's row is added there.
    from acme_driver import ACME_SP1

    monkeypatch.setitem(MODELS, ACME_SP1.key, ACME_SP1)


def _make_acme(sample_inventory, settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    from acme_driver import AcmeDriver

    override = tmp_path / "override"
    (override / "acme").mkdir(parents=True)
    (override / "acme" / "sp1.xml.j2").write_text(ACME_TEMPLATE)
    with sample_inventory.db.write() as s:
        dev = s.scalar(select(Device).where(Device.mac == "00:80:f0:20:00:02"))
        dev.model = "acme-sp1"  # the box at extension 201 of WT-2026-000104 is now an SP-1
    reg = default_registry()
    reg.register(AcmeDriver)
    s2 = settings.model_copy(update={"template_override_dir": str(override)})
    return Renderer(s2, sample_inventory, registry=reg)


def test_a_new_model_is_one_driver_file_plus_templates(
    sample_inventory, settings, tmp_path: Path, acme_in_catalog: None
) -> None:  # type: ignore[no-untyped-def]
    r = _make_acme(sample_inventory, settings, tmp_path)
    files = r.files_for_mac("00:80:f0:20:00:02")
    assert list(files) == ["acme-0080f0200002.xml"]
    text = files["acme-0080f0200002.xml"].decode()
    assert 'number="+390957001101"' in text and 'firmware="sp1-2.0.bin"' in text
    assert "Dott. Salvatore Greco" in text
    key, data = r.lookup("acme-0080f0200002.xml") or (None, b"")
    assert (
        key is not None and key.device_id == "phone-201" and data == files["acme-0080f0200002.xml"]
    )
    # The rest of the order still renders, and the new phone is in the site's DHCP snippet.
    assert "acme-0080f0200002.xml" in r.render_order("WT-2026-000104")
    assert "00:80:f0:20:00:02" in dhcp_snippet(r, "WT-2026-000104", "catania", "dnsmasq")


def test_entry_point_drivers_are_registered(tmp_path: Path, acme_in_catalog: None) -> None:
    reg = Registry(list(builtin_drivers()))
    ep = EntryPoint(name="acme", value="acme_driver:AcmeDriver", group=ENTRY_POINT_GROUP)
    reg.load_entry_points([ep])
    assert reg.for_model("acme-sp1").family == "acme"
    bad = EntryPoint(name="nope", value="no_such_module:Driver", group=ENTRY_POINT_GROUP)
    with pytest.raises(RenderError, match="driver entry point nope"):
        reg.load_entry_points([bad])


def test_a_model_claimed_by_two_families_is_refused() -> None:
    class Impostor(Driver):
        family = "impostor"
        kind = "phone"
        models: ClassVar[tuple[str, ...]] = ("alcatel-temporis-ip150",)

    reg = Registry(list(builtin_drivers()))
    with pytest.raises(RenderError, match="already TemporisDriver's"):
        reg.register(Impostor)


def test_unknown_model_is_a_one_line_error() -> None:
    with pytest.raises(RenderError, match="no driver renders model acme-x9"):
        Registry(list(builtin_drivers())).for_model("acme-x9")


def test_every_catalog_model_with_a_network_interface_has_a_driver() -> None:
    reg = default_registry()
    for key, model in MODELS.items():
        if model.kind != "dect_handset":
            assert reg.has_model(key), key


def test_lookup_order_override_then_model_then_family(
    sample_inventory, settings, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    base = Path(__file__).resolve().parents[2] / "device_templates" / "temporis"
    original = (base / "phone.cfg.j2").read_text()
    override = tmp_path / "override"
    # Override for the IP150 only: the IP701G keeps the built-in family template.
    (override / "temporis" / "alcatel-temporis-ip150").mkdir(parents=True)
    (override / "temporis" / "alcatel-temporis-ip150" / "phone.cfg.j2").write_text(
        original.replace("Enable = 1", "Enable = 1\nOverride = ip150")
        if "Enable = 1" in original
        else original + "[ x ]\npath = /x\nOverride = ip150\n"
    )
    r = Renderer(
        settings.model_copy(update={"template_override_dir": str(override)}), sample_inventory
    )
    ip150 = r.files_for_mac("00:80:f0:00:00:04")["0080f0000004.cfg"].decode()
    ip701 = r.files_for_mac("00:80:f0:00:00:01")["0080f0000001.cfg"].decode()
    assert "Override = ip150" in ip150
    assert "Override" not in ip701
    # An override of the family base applies to every model of the family.
    (override / "temporis" / "phone.cfg.j2").write_text(
        "[ only ]\npath = /o\nk = {{ device.model }}\n"
    )
    r2 = Renderer(
        settings.model_copy(update={"template_override_dir": str(override)}), sample_inventory
    )
    assert r2.files_for_mac("00:80:f0:00:00:01")["0080f0000001.cfg"] == (
        b"[ only ]\npath = /o\nk = alcatel-temporis-ip701g\n"
    )
    # ...but the model-specific override still wins for the IP150.
    assert b"Override = ip150" in r2.files_for_mac("00:80:f0:00:00:04")["0080f0000004.cfg"]
