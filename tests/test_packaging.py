"""The product as people install it (issue 12): the wheel, the lab package, start-up cost,
the dependency list.

The wheel tests build the wheel from the checkout's files, install it with pip into a fresh
venv and run ``provisioner`` from an empty folder outside the checkout. The venv reaches the
dependencies already installed in the test's own venv through a ``.pth`` line (nothing is
downloaded), but not the checkout: a ``.pth`` line adds a folder to ``sys.path`` without
running the editable install's import hook that lives there, and the wheel's own
site-packages comes first. A probe checks where every piece was imported from.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint, packages_distributions
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "inventory" / "orders"
HOST = "127.0.0.1"
ORDER = "WT-2026-000104"
PHONE_MAC = "00:80:f0:20:00:01"
PHONE_FILE = "0080f0200001.cfg"
CURL = shutil.which("curl")
# What the wheel is built from (pyproject.toml maps the top-level folders into it).
SOURCES = ("pyproject.toml", "README.md", "provisioner", "device_templates", "tftp_root", "lab")
JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".*_cache")


def _run(argv: list[str | Path], **kw: Any) -> subprocess.CompletedProcess[Any]:
    kw.setdefault("timeout", 180)
    kw.setdefault("text", True)
    return subprocess.run([str(a) for a in argv], capture_output=True, check=False, **kw)


# ---------------------------------------------------------------------- the wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built by pip from a copy of the checkout's sources (no backend fetched)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=JUNK)
        else:
            shutil.copy2(path, src / name)
    dist = tmp_path_factory.mktemp("dist")
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "--no-index", "-q", "-w", dist, src])  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = dist.glob("provisioner-*.whl")
    return found


@dataclass
class Installed:
    venv: Path
    python: Path
    provisioner: Path
    work: Path  # an empty folder outside the checkout, the commands' working directory
    env: dict[str, str]

    def run(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[Any]:
        return _run([self.provisioner, *args], cwd=self.work, env=self.env, **kw)


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel pip-installed into a fresh venv that sees our dependencies, not the checkout."""
    root = tmp_path_factory.mktemp("installed")
    assert not root.resolve().is_relative_to(REPO)
    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    pip = _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
                "--no-index", "-q", wheel])  # fmt: skip
    assert pip.returncode == 0, pip.stdout + pip.stderr
    # Only now the dependencies: pip above saw a bare venv, so it installed the wheel whole.
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site.stdout.strip()) / "_test_dependencies.pth").write_text("\n".join(sorted(ours)))
    work = root / "work"
    work.mkdir()
    home = root / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PROVISIONER_", "PYTHON", "VIRTUAL_ENV"))}  # fmt: skip
    env.update(PROVISIONER_HOME=str(home), PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
    return Installed(venv, python, venv / "bin" / "provisioner", work, env)


def test_the_wheel_ships_templates_static_root_migrations_the_lab_and_napalm_modules(
    wheel: Path,
) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {p.relative_to(REPO).as_posix() for p in (REPO / "device_templates").rglob("*.j2")}
    migrations = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "provisioner" / "store" / "migrations").rglob("*")
        if p.suffix in (".py", ".mako")
    }
    page = {  # the technician page's templates and static files
        p.relative_to(REPO).as_posix()
        for p in (REPO / "provisioner" / "tech").rglob("*")
        if p.suffix in (".html", ".css", ".js", ".svg")
    }
    expected = (
        {f"provisioner/{t}" for t in templates}
        | migrations
        | page
        | {
            "provisioner/tftp_root/.gitkeep",
            "provisioner/py.typed",
            "provisioner_lab/__init__.py",
            "provisioner_lab/commands.py",
            "provisioner_lab/switch_sim.py",
            "provisioner_lab/install.py",
            "napalm_dlink_snmp/__init__.py",
            "napalm_iad_ssh/__init__.py",
            "napalm_dlink_cli/__init__.py",
        }
    )
    assert templates and page and expected <= names, sorted(expected - names)
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    # Not custom_napalm (the operator's site-local namespace), not a bare `lab`, no tests.
    assert tops == {"provisioner", "provisioner_lab", "napalm_dlink_snmp", "napalm_iad_ssh",
                    "napalm_dlink_cli"}  # fmt: skip
    assert not [n for n in names if n.startswith("provisioner/napalm_shim")]
    meta = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    points = zipfile.ZipFile(wheel).read(meta).decode()
    assert "[provisioner.commands]\nlab = provisioner_lab.commands:app" in points


def test_the_installed_product_comes_from_the_wheel_not_from_the_checkout(
    installed: Installed,
) -> None:
    probe = """
import importlib.metadata, importlib.util, json, napalm, provisioner, provisioner_lab
drivers = {n: napalm.get_network_driver(n) for n in ("dlink_snmp", "iad_ssh", "dlink_cli")}
print(json.dumps({
    "provisioner": provisioner.__file__,
    "provisioner_lab": provisioner_lab.__file__,
    "templates": str(provisioner.data_path("device_templates")),
    "tftp_root": str(provisioner.data_path("tftp_root")),
    "dist": str(importlib.metadata.distribution("provisioner").locate_file("")),
    "napalm": {n: importlib.util.find_spec(f"napalm_{n}").origin for n in drivers},
    "classes": {n: f"{c.__module__}.{c.__name__}" for n, c in drivers.items()},
    "custom_napalm": importlib.util.find_spec("custom_napalm") is not None,
}))
"""
    got = _run([installed.python, "-c", probe], cwd=installed.work, env=installed.env)
    assert got.returncode == 0, got.stderr
    where = json.loads(got.stdout)
    venv = str(installed.venv)
    for key in ("provisioner", "provisioner_lab", "templates", "tftp_root", "dist"):
        assert where[key].startswith(venv), (key, where[key])
    assert all(path.startswith(venv) for path in where["napalm"].values()), where["napalm"]
    assert where["classes"] == {
        "dlink_snmp": "provisioner.push.drivers.dlink_snmp.DlinkSnmpDriver",
        "iad_ssh": "provisioner.push.drivers.iad_ssh.IadSshDriver",
        "dlink_cli": "provisioner.push.drivers.dlink_cli.DlinkCliDriver",
    }
    assert where["custom_napalm"] is False


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.skipif(not CURL, reason="needs curl (apt-get install curl)")
def test_validate_apply_render_and_serve_work_from_the_installed_wheel(
    installed: Installed,
) -> None:
    orders = installed.work / "orders"
    shutil.copytree(SAMPLES, orders)
    checked = installed.run("validate", "orders")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    applied = installed.run("apply", "orders")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert f"{ORDER}: created" in applied.stdout
    rendered = _run([installed.provisioner, "render", PHONE_MAC, PHONE_FILE, "--show-secrets"],
                    cwd=installed.work, env=installed.env, text=False)  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    expected = rendered.stdout
    assert b"SIPServerHost" in expected  # rendered from the templates the wheel ships
    armed = installed.run("arm", ORDER)
    assert armed.returncode == 0, armed.stdout + armed.stderr

    http = _free_port(socket.SOCK_STREAM)
    tftp = _free_port(socket.SOCK_DGRAM)
    argv = [installed.provisioner, "serve", "--host", HOST, "--tftp-port", str(tftp),
            "--http-port", str(http)]  # fmt: skip
    server = subprocess.Popen(argv, cwd=installed.work, env=installed.env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        body = installed.work / "fetched.cfg"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            fetched = _run([CURL, "-sS", "-o", body, "-w", "%{http_code}", "--max-time", "10",
                            f"http://{HOST}:{http}/{PHONE_FILE}"])  # fmt: skip
            if fetched.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert fetched.stdout == "200", fetched.stdout + fetched.stderr
        assert body.read_bytes() == expected
    finally:
        server.send_signal(signal.SIGINT)
        try:
            out, _ = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            out, _ = server.communicate()
    assert b"stopped" in out, out


def test_the_installed_lab_commands_come_from_the_entry_point(installed: Installed) -> None:
    listed = installed.run("--help")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^\s+lab\s+Simulated devices", listed.stdout, re.M), listed.stdout
    up = installed.run("lab", "up", "--help")
    assert up.returncode == 0, up.stderr
    assert "--targets-out" in up.stdout
    # The simulated phones load from the installed lab, then look the order up in the store.
    phones = installed.run("lab", "phones", "--order", "WT-NOPE")
    assert (phones.returncode, phones.stderr) == (1, "error: order WT-NOPE: not in the store\n")


# ---------------------------------------------------------------------- the lab apart


def _imports(path: Path) -> Iterator[str]:
    """Every module a file imports, at any depth (an import inside a function counts too)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant | ast.JoinedStr)
        ):
            first = node.args[0]
            text = first.value if isinstance(first, ast.Constant) else ast.unparse(first)[2:]
            yield str(text)


def test_no_module_of_the_product_imports_the_lab() -> None:
    bad = [
        f"{path.relative_to(REPO)}: {name}"
        for path in sorted((REPO / "provisioner").rglob("*.py"))
        for name in _imports(path)
        if name.split(".")[0] in ("lab", "provisioner_lab")
    ]
    assert bad == []


def _cli(code: str, *args: str, before: str = "") -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh interpreter (``before`` first), then ``code`` (start-up cost is
    what a fresh process pays)."""
    script = (
        f"import sys\n{before}\n"
        f"sys.argv = ['provisioner', *{list(args)!r}]\n"
        "from provisioner.cli import app\n"
        "try:\n    app()\nexcept SystemExit as e:\n    code = e.code\n"
        f"{code}\n"
    )
    return _run([sys.executable, "-c", script], cwd=REPO)


HEAVY = ("sqlalchemy", "pydantic", "yaml", "jinja2", "cryptography", "alembic", "fastapi",
         "starlette", "uvicorn", "napalm", "netmiko", "paramiko", "pysnmp",
         "asyncssh", "httpx", "snmpsim")  # fmt: skip
REPORT = f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"


def _loaded(result: subprocess.CompletedProcess[str]) -> list[str]:
    line = next(ln for ln in result.stderr.splitlines() if ln.startswith("LOADED "))
    return list(ast.literal_eval(line.removeprefix("LOADED ")))


def test_provisioner_help_lists_the_lab_and_imports_no_library_it_does_not_need() -> None:
    shown = _cli(REPORT, "--help")
    assert re.search(r"^\s+lab\s+Simulated devices", shown.stdout, re.M), shown.stdout
    assert re.search(r"^\s+status\s+", shown.stdout, re.M), shown.stdout
    assert _loaded(shown) == []


def test_status_imports_the_store_and_nothing_for_rendering_serving_or_pushing(
    sample_inventory: Any,
) -> None:
    shown = _cli(REPORT, "status", ORDER)
    assert "phone-200" in shown.stdout, shown.stdout + shown.stderr
    # The store (SQLAlchemy), the order model (pydantic, yaml) and the vault are needed; no
    # migration check through alembic on a store that is current, no web stack, no push.
    assert set(_loaded(shown)) <= {"sqlalchemy", "pydantic", "yaml", "cryptography"}


NO_LAB_EXTRA = """
import importlib.abc
class NoLabExtra(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("asyncssh", "httpx", "snmpsim", "pysmi"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoLabExtra())
"""


def test_lab_commands_without_the_lab_extra_say_which_package_is_missing() -> None:
    listed = _cli("", "lab", "--help", before=NO_LAB_EXTRA)
    assert listed.returncode == 0, listed.stderr
    assert "phones" in listed.stdout
    for args in (["up"], ["phones", "--order", ORDER]):
        ran = _cli("sys.exit(code)", "lab", *args, before=NO_LAB_EXTRA)
        assert ran.returncode == 1, ran.stdout + ran.stderr
        assert re.fullmatch(
            rf"error: lab {args[0]}: needs the lab extra \(pip install 'provisioner\[lab\]'\): "
            r"no module named '(asyncssh|httpx)'\n",
            ran.stderr,
        ), ran.stderr


def test_a_command_group_that_does_not_load_is_listed_with_the_reason_and_fails_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.metadata

    from typer.testing import CliRunner

    from provisioner.cli import app

    broken = EntryPoint("broken", "no_such_module_anywhere:app", "provisioner.commands")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [broken])
    runner = CliRunner()
    listed = runner.invoke(app, ["--help"])
    assert listed.exit_code == 0, listed.output
    assert re.search(r"^\s+broken\s+\(unavailable: no_such_module_anywhere:app", listed.output,
                     re.M), listed.output  # fmt: skip
    ran = runner.invoke(app, ["broken", "up"])
    assert ran.exit_code == 1
    assert "error: provisioner broken: cannot load no_such_module_anywhere:app" in ran.output
    assert "Traceback" not in ran.output
    assert runner.invoke(app, ["orders", "--help"]).exit_code == 0


def test_token_create_help_names_every_role_the_store_knows() -> None:
    from typer.testing import CliRunner

    from provisioner.cli import app
    from provisioner.store.tokens import ROLES

    shown = CliRunner().invoke(app, ["token", "create", "--help"])
    assert shown.exit_code == 0, shown.output
    assert all(re.search(rf"\b{role}\b", shown.output) for role in ROLES), shown.output


def test_napalm_finds_the_drivers_as_community_modules_and_leaves_custom_napalm_alone() -> None:
    import importlib.util

    import napalm

    from provisioner.push.drivers.dlink_cli import DlinkCliDriver
    from provisioner.push.drivers.dlink_snmp import DlinkSnmpDriver
    from provisioner.push.drivers.iad_ssh import IadSshDriver

    assert napalm.get_network_driver("dlink_snmp") is DlinkSnmpDriver
    assert napalm.get_network_driver("iad_ssh") is IadSshDriver
    assert napalm.get_network_driver("dlink_cli") is DlinkCliDriver
    assert importlib.util.find_spec("custom_napalm") is None


# ---------------------------------------------------------------------- dependencies


def _name(requirement: str) -> str:
    """The normalised distribution name of a PEP 508 requirement."""
    found = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert found, requirement
    return re.sub(r"[-_.]+", "-", found[1]).lower()


PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
RUNTIME = {_name(r) for r in PROJECT["dependencies"]}
EXTRAS = {k: {_name(r) for r in v} for k, v in PROJECT["optional-dependencies"].items()}
# Listed for the settings, metrics and SSE work of issue 12 that lands with other branches;
# once the product imports them, this set can go.
ANNOUNCED = {"pydantic-settings", "prometheus-client"}
# Needed by a library we import, not imported by us: FastAPI's form parsing (the technician
# page's posts) needs python-multipart installed.
INDIRECT = {"python-multipart"}


def _third_party(folder: str) -> dict[str, set[str]]:
    """Distribution -> the top-level modules of it that the folder's code imports."""
    dists = packages_distributions()
    ours = {"provisioner", "provisioner_lab", "lab", *sys.stdlib_module_names}
    found: dict[str, set[str]] = {}
    for path in (REPO / folder).rglob("*.py"):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in ours or top.startswith("napalm_"):
                continue
            for dist in dists.get(top, [f"(no installed distribution has {top})"]):
                found.setdefault(_name(dist), set()).add(top)
    return found


def test_the_runtime_dependencies_are_what_the_product_imports() -> None:
    imported = _third_party("provisioner")
    # The postgres, redis and queue extras are the product's own, imported only when
    # configured (procrastinate only when push_queue = procrastinate).
    optional = EXTRAS["postgres"] | EXTRAS["redis"] | EXTRAS["queue"]
    assert set(imported) - RUNTIME - optional == set(), "imported but not a runtime dependency"
    unused = RUNTIME - set(imported) - ANNOUNCED - INDIRECT
    assert unused == set(), "a runtime dependency nothing imports"
    assert {"scrapli", "asyncssh", "httpx"} & RUNTIME == set()


def test_the_lab_extra_brings_what_the_lab_imports_and_dev_brings_the_lab() -> None:
    imported = set(_third_party("lab"))
    assert imported - RUNTIME - EXTRAS["lab"] == set()
    assert {"asyncssh", "httpx", "snmpsim"} <= EXTRAS["lab"]
    assert "provisioner" in EXTRAS["dev"]  # provisioner[postgres,lab]
    dev_line = next(r for r in PROJECT["optional-dependencies"]["dev"] if _name(r) == "provisioner")
    assert "lab" in dev_line


def test_every_dependency_has_a_lower_bound() -> None:
    extras = PROJECT["optional-dependencies"].values()
    listed = [*PROJECT["dependencies"], *(r for extra in extras for r in extra)]
    loose = [r for r in listed if _name(r) != "provisioner" and not re.search(r">=|==", r)]
    assert loose == []
