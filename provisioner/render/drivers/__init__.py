"""Device-family drivers and their registry.

The built-in drivers cover the catalog's families (temporis, dect, iad, ont, dlink). A model
shipped as its own package registers a :class:`~provisioner.render.drivers.base.Driver` subclass
under the entry-point group ``provisioner.render.drivers``::

    [project.entry-points."provisioner.render.drivers"]
    acme = "acme_provisioner.driver:AcmeDriver"

See ``docs/adding-a-model.md``.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from provisioner.catalog import MODELS
from provisioner.errors import RenderError
from provisioner.render.drivers.base import Driver, FileSpec, Identity

ENTRY_POINT_GROUP = "provisioner.render.drivers"

__all__ = [
    "ENTRY_POINT_GROUP",
    "Driver",
    "FileSpec",
    "Identity",
    "Registry",
    "builtin_drivers",
    "default_registry",
]


class Registry:
    """Drivers by family, and the driver of every model they declare."""

    def __init__(self, drivers: list[type[Driver] | Driver] | None = None):
        self._families: dict[str, Driver] = {}
        self._models: dict[str, Driver] = {}
        for d in drivers or ():
            self.register(d)

    def register(self, driver: type[Driver] | Driver, *, replace: bool = False) -> Driver:
        """Add a driver (class or instance). A model claimed twice is an error unless
        ``replace`` (an operator's package replacing a built-in driver on purpose)."""
        drv = driver() if isinstance(driver, type) else driver
        if not drv.family or not drv.models:
            raise RenderError(f"driver {type(drv).__name__}: declares no family or no models")
        for model in drv.models:
            row = MODELS.get(model)
            if row is None:
                raise RenderError(
                    f"driver {type(drv).__name__}: model {model} is not in the catalog"
                    " (provisioner/catalog.py holds every model's facts)"
                )
            if row.kind != drv.kind:
                raise RenderError(
                    f"driver {type(drv).__name__}: model {model} is a {row.kind} in the"
                    f" catalog, the driver serves {drv.kind}s"
                )
        for model in drv.models:
            other = self._models.get(model)
            if other is not None and not replace and other.family != drv.family:
                raise RenderError(
                    f"driver {type(drv).__name__}: model {model} is already "
                    f"{type(other).__name__}'s (family {other.family})"
                )
        old = self._families.get(drv.family)
        if old is not None and not replace:
            raise RenderError(f"driver {type(drv).__name__}: family {drv.family} is taken")
        if old is not None:
            for model in old.models:
                self._models.pop(model, None)
        self._families[drv.family] = drv
        for model in drv.models:
            self._models[model] = drv
        return drv

    def drivers(self) -> list[Driver]:
        return list(self._families.values())

    def family(self, name: str) -> Driver:
        try:
            return self._families[name]
        except KeyError:
            raise RenderError(f"no driver for family {name}") from None

    def has_model(self, model: str) -> bool:
        return model in self._models

    def for_model(self, model: str) -> Driver:
        try:
            return self._models[model]
        except KeyError:
            known = ", ".join(sorted(self._models))
            raise RenderError(f"no driver renders model {model} (drivers for: {known})") from None

    def load_entry_points(self, eps: list[EntryPoint] | None = None) -> None:
        """Register every driver of the ``provisioner.render.drivers`` entry-point group."""
        found = list(entry_points(group=ENTRY_POINT_GROUP)) if eps is None else eps
        for ep in found:
            try:
                obj = ep.load()
            except Exception as exc:
                raise RenderError(
                    f"driver entry point {ep.name} ({ep.value}): cannot load: {exc}"
                ) from None
            if not (isinstance(obj, type) and issubclass(obj, Driver)):
                raise RenderError(f"driver entry point {ep.name} ({ep.value}): not a Driver")
            if obj in {type(d) for d in self._families.values()}:
                continue  # a built-in listed as an entry point too
            self.register(obj, replace=True)


def builtin_drivers() -> list[type[Driver]]:
    from provisioner.render.drivers.dect import DectDriver
    from provisioner.render.drivers.dlink import DlinkDriver
    from provisioner.render.drivers.iad import IadDriver
    from provisioner.render.drivers.ont import OntDriver
    from provisioner.render.drivers.temporis import TemporisDriver

    return [TemporisDriver, DectDriver, IadDriver, OntDriver, DlinkDriver]


def default_registry() -> Registry:
    """The built-in drivers plus every installed driver package (entry points)."""
    reg = Registry(list(builtin_drivers()))
    reg.load_entry_points()
    return reg
