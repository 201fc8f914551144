"""The push package as a newcomer reads it: modules that each do one job, drivers on one base,
no dead code, and nothing loaded that a command does not use."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.push.drivers import base
from provisioner.push.drivers.dlink_cli import DlinkCliDriver
from provisioner.push.drivers.dlink_snmp import DlinkSnmpDriver
from provisioner.push.drivers.iad_ssh import IadSshDriver
from provisioner_lab.switch_sim import SwitchSim

ROOT = Path(__file__).resolve().parents[2]
PUSH = ROOT / "provisioner" / "push"
MODULES = sorted(
    "provisioner." + ".".join(p.relative_to(ROOT / "provisioner").with_suffix("").parts)
    for p in PUSH.rglob("*.py")
    if p.name != "__init__.py"
)
DRIVERS = [DlinkSnmpDriver, IadSshDriver, DlinkCliDriver]


def test_the_job_module_holds_one_devices_push_and_nothing_else() -> None:
    job = importlib.import_module("provisioner.push.job")
    own = {
        name
        for name, obj in vars(job).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and obj.__module__ == job.__name__
    }
    assert own == {"push_config", "push_device", "rollback_device"}


@pytest.mark.parametrize("module", MODULES)
def test_no_push_module_is_a_grab_bag(module: str) -> None:
    path = ROOT / (module.replace(".", "/") + ".py")
    assert len(path.read_text().splitlines()) <= 650, f"{module}: split it by job"


def test_the_lab_uses_only_public_product_names() -> None:
    private = []
    for path in sorted((ROOT / "lab").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("provisioner"):
                private += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert private == []


def _overrides(cls: type, name: str) -> bool:
    return any(name in vars(b) for b in cls.__mro__[1:])


def test_every_push_function_and_method_is_used() -> None:
    """Dead code: a name defined in provisioner/push that nothing in the product or the lab
    uses (overrides of NAPALM's or paramiko's methods are their callers' to use)."""
    corpus = "\n".join(
        p.read_text()
        for folder in ("provisioner", "lab", "device_templates")
        for p in (ROOT / folder).rglob("*")
        if p.suffix in (".py", ".j2")
    )
    unused = []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if getattr(obj, "__module__", None) != name:
                continue
            names = [attr]
            if inspect.isclass(obj):
                names += [
                    m
                    for m, f in vars(obj).items()
                    if inspect.isfunction(f)
                    and f.__code__.co_filename == module.__file__  # not a generated one
                    and not m.startswith("__")
                    and not _overrides(obj, m)
                ]
            for n in names:
                if len(re.findall(rf"\b{re.escape(n)}\b", corpus)) <= 1:  # its definition
                    unused.append(f"{name}.{n}")
    assert unused == []


@pytest.mark.parametrize("driver", DRIVERS, ids=lambda d: d.__name__)
def test_drivers_keep_only_what_differs_on_one_base(driver: type) -> None:
    assert issubclass(driver, base.PushDriver)
    for shared in ("_where", "close", "is_alive", "__enter__", "__exit__", "discard_config"):
        assert shared not in vars(driver), f"{driver.__name__} repeats {shared}"


def test_a_driver_is_a_context_manager_that_always_closes(
    switch: SwitchSim, capsys: pytest.CaptureFixture[str]
) -> None:
    class Interrupted(Exception):
        """Any error of the caller's own (not a builtin or NAPALM one)."""

    dev = DlinkSnmpDriver("127.0.0.1", "", "private", optional_args={"port": switch.port})
    with pytest.raises(Interrupted), dev:
        assert dev.is_alive()["is_alive"]
        raise Interrupted
    assert not dev.is_alive()["is_alive"]
    assert capsys.readouterr().out == ""  # NAPALM's own __exit__ prints a bug-report plea
    dev.close()  # twice is fine


def test_the_api_and_the_cli_start_without_the_device_libraries() -> None:
    code = (
        "import sys, provisioner.api.app, provisioner.cli.app, provisioner.push.runner,"
        " provisioner.push.targets, provisioner.push.results\n"
        "heavy = {'napalm', 'netmiko', 'paramiko', 'pysnmp'} & set(sys.modules)\n"
        "assert not heavy, heavy"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
