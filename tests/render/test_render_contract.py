"""One contract every registered driver passes, built-in or from a package (NAPALM-style)."""

from __future__ import annotations

import pytest

from provisioner.render.context import DeviceView
from provisioner.render.drivers import default_registry
from provisioner.render.drivers.base import KIND_SECRETS, Driver, Identity
from provisioner.render.engine import FORMATS, RenderEngine

DRIVERS = default_registry().drivers()


@pytest.mark.parametrize("drv", DRIVERS, ids=lambda d: d.family)
def test_driver_declares_what_it_serves(drv: Driver) -> None:
    assert drv.family and drv.kind in KIND_SECRETS and drv.models and drv.files
    assert type(drv).__doc__, "a driver says what it is in its docstring"
    patterns = [s.pattern for s in drv.files]
    assert len(set(patterns)) == len(patterns)
    for spec in drv.files:
        assert spec.format in FORMATS, spec
    if drv.push is not None:
        assert drv.push in ("ssh", "snmp")
        assert drv.push_file in [s.pattern for s in drv.files if not s.served]


@pytest.mark.parametrize("drv", DRIVERS, ids=lambda d: d.family)
def test_every_model_has_every_template(drv: Driver, settings) -> None:  # type: ignore[no-untyped-def]
    engine = RenderEngine(settings)
    for model in drv.models:
        for spec in drv.files:
            # RenderError names the missing template; a found one must be a real template.
            assert engine.template(spec.family or drv.family, model, spec.template) is not None


@pytest.mark.parametrize("drv", DRIVERS, ids=lambda d: d.family)
def test_served_names_are_recognised_as_that_device(drv: Driver) -> None:
    for model in drv.models:
        dev = DeviceView("dev-1", model, mac="00:80:f0:12:34:56", serial="ALCL0000ABCD")
        for name, spec in drv.file_specs(dev):
            found = drv.match(name)
            if not spec.served:
                assert found is None, name  # pushed/shown files are never handed out
            elif "{serial}" in spec.pattern:
                assert found == Identity(serial="ALCL0000ABCD"), name
            else:
                assert found == Identity(mac="00:80:f0:12:34:56"), name
        assert drv.match("nothing-like-this.bin") is None
