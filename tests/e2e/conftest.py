"""End-to-end fixtures: our server (TFTP + HTTP) in-process, a real Kamailio, real baresip.

Every process is started on a free loopback port and stopped by PID. Tests skip only when
the Debian packages are missing: ``apt-get install kamailio baresip-core``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from liveserve import Stack, serve_stack
from typer.testing import CliRunner

from provisioner.cli.app import app
from provisioner_lab.sip import PACKAGES, Kamailio, free_udp_port, missing_tools

ROOT = Path(__file__).resolve().parents[2]

_MISSING = missing_tools()


@pytest.fixture(autouse=True)
def _sip_tools() -> None:
    if _MISSING:
        pytest.skip(f"{', '.join(_MISSING)} not installed (apt-get install {PACKAGES})")


@pytest.fixture
def sip_port(home: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """The registrar's port; phone files name 127.0.0.1 and this port (set before settings)."""
    port = free_udp_port()
    monkeypatch.setenv("PROVISIONER_SIP_REGISTRAR", "127.0.0.1")
    monkeypatch.setenv("PROVISIONER_SIP_REGISTRAR_PORT", str(port))
    return port


@pytest.fixture
def settings(sip_port: int) -> Any:
    """Settings read after the registrar's address is in the environment."""
    from provisioner.settings import load_settings

    return load_settings()


@pytest.fixture
def served(sip_port: int, sample_inventory: Any, tmp_path: Path) -> Iterator[Stack]:
    """The sample orders in the store, served over TFTP and HTTP on loopback."""
    root = tmp_path / "tftp_root"
    root.mkdir()
    with serve_stack(sample_inventory, root) as stack:
        yield stack


@pytest.fixture
def cli() -> Callable[..., Any]:
    """Run a ``provisioner`` command; fails the test on a non-zero exit."""
    runner = CliRunner()

    def run(*args: str, ok: bool = True) -> Any:
        result = runner.invoke(app, list(args))
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return run


@pytest.fixture
def registrar(
    served: Stack, sip_port: int, tmp_path: Path, cli: Callable[..., Any]
) -> Iterator[Kamailio]:
    """Kamailio on the phones' registrar port with the store's subscribers (pbx export)."""
    db = tmp_path / "kamailio-db"
    cli("pbx", "export", "--all", "--format", "kamailio", "--out", str(db))
    kam = Kamailio(db, port=sip_port, workdir=tmp_path)
    kam.start()
    try:
        yield kam
    finally:
        kam.stop()
