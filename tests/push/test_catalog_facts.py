"""One catalog row per model: the render drivers, the set-plan and the push drivers read it,
so a fact fixed there (a firmware name, a switch's SNMP ids) is fixed everywhere."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import pytest

from provisioner.catalog import MODELS
from provisioner.errors import RenderError
from provisioner.push.drivers.dlink_snmp import DlinkSnmpDriver
from provisioner.render.context import DeviceView
from provisioner.render.drivers import Registry, builtin_drivers, default_registry
from provisioner.render.drivers.base import Driver
from provisioner.render.engine import Renderer
from provisioner_lab.switch_sim import SwitchSim


def test_every_driver_reads_its_models_facts_from_the_catalog() -> None:
    for drv in default_registry().drivers():
        for model in drv.models:
            assert drv.facts(DeviceView("dev-1", model)) is MODELS[model], (drv.family, model)


def test_a_firmware_name_fixed_in_the_catalog_reaches_the_phone_file(
    sample_inventory: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "alcatel-temporis-ip701g"
    monkeypatch.setitem(MODELS, key, dataclasses.replace(MODELS[key], firmware="IP701G-v2.img"))
    files = Renderer(settings, sample_inventory).files_for_mac("00:80:f0:00:00:01")
    text = files["0080f0000001.cfg"].decode()
    assert "IP701G-v2.img" in text and "IP701G.img" not in text


def test_the_switch_driver_names_the_model_the_catalog_gives(
    switch: SwitchSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "dlink-dgs-1100-24p"
    args = {"port": switch.port, "snmp_timeout": 0.5, "snmp_retries": 1}
    with DlinkSnmpDriver("127.0.0.1", "", "private", optional_args=args) as dev:
        assert dev.model == key and dev.get_facts()["model"] == MODELS[key].product
        monkeypatch.setitem(MODELS, key, dataclasses.replace(MODELS[key], product="DGS-1100-24PV2"))
        assert dev.get_facts()["model"] == "DGS-1100-24PV2"


def test_a_driver_for_a_model_the_catalog_lacks_is_refused_in_one_line() -> None:
    class Stray(Driver):
        """A phone nobody can order."""

        family = "stray"
        kind = "phone"
        models: ClassVar[tuple[str, ...]] = ("stray-x1",)

    with pytest.raises(RenderError, match="model stray-x1 is not in the catalog") as err:
        Registry(list(builtin_drivers())).register(Stray)
    assert "\n" not in str(err.value)
