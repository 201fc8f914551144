"""Shared fixtures: a private PROVISIONER_HOME per test, and the sample inventory applied.

``pytest --update-golden`` rewrites golden files instead of comparing against them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import loopback
import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "inventory" / "orders"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite golden files from what the code renders now (review the diff!)",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh PROVISIONER_HOME (SQLite store and secret key inside) for one test."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("PROVISIONER_HOME", str(h))
    for var in (
        "PROVISIONER_DATABASE_URL",
        "PROVISIONER_SECRET_KEY",
        "PROVISIONER_SETTINGS",
        "PROVISIONER_SECRET_KEY_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    return h


@pytest.fixture
def settings(home: Path):  # type: ignore[no-untyped-def]
    from provisioner.settings import load_settings

    return load_settings()


@pytest.fixture
def inventory(settings) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """An empty store in the test's home."""
    from provisioner.orders.service import OrdersService

    inv = OrdersService(settings)
    yield inv
    inv.db.dispose()


@pytest.fixture
def sample_inventory(inventory):  # type: ignore[no-untyped-def]
    """The store with every sample order of inventory/orders applied."""
    from provisioner.documents.validate import check_paths

    for checked in check_paths([SAMPLES]):
        assert checked.ok, checked.lines()
        assert checked.document is not None
        inventory.apply(checked.document, source=checked.file, actor="test")
    return inventory


# ---------------------------------------------------------------------- canary secrets in logs

CANARY = "CANARY-"


class _CanaryHandler(logging.Handler):
    """Sees every log record of the whole run; remembers any that carries a canary secret."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a broken record is not our concern here
            return
        if record.exc_info and record.exc_info[1] is not None:
            text += " " + str(record.exc_info[1])
        if CANARY in text:
            self.leaks.append(f"{record.name}: {text[:200]}")


_canary_handler = _CanaryHandler()


def pytest_sessionstart(session: pytest.Session) -> None:
    root = logging.getLogger()
    root.addHandler(_canary_handler)
    root.setLevel(min(root.level or logging.INFO, logging.INFO))
    logging.getLogger("provisioner").setLevel(logging.DEBUG)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Tests plant CANARY-... secrets in orders: none may ever reach a log line."""
    if _canary_handler.leaks:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["a canary secret reached the logs:", *_canary_handler.leaks[:20]]
        if reporter is not None:
            reporter.write_line("\n".join(lines), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if loopback.attempts:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# ---------------------------------------------------------------------- loopback only


def pytest_configure(config: pytest.Config) -> None:
    """Tests talk to loopback only (DEVELOPERS.md): see ``tests/loopback.py``."""
    loopback.install()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if loopback.attempts:
        lines = ["traffic to an address off loopback was attempted:"]
        lines += sorted(set(loopback.attempts))[:20]
        terminalreporter.write_line("\n".join(lines), red=True)
