"""API tokens expire (issue 11 item 13): ``token create --expires``, a default per role,
``never`` only when asked for; an expired token is refused like an unknown one, on every
request, and ``token list`` says so.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from livehttp import LiveServer
from sqlalchemy import select
from typer.testing import CliRunner

from provisioner.api.app import create_app
from provisioner.api.limits import ApiLimits
from provisioner.cli.app import app as cli
from provisioner.orders.service import OrdersService
from provisioner.store.models import AuditEvent
from provisioner.store.tokens import ApiToken

ORDER = "WT-2026-000123"
SLACK = timedelta(minutes=2)  # between the command's clock and the test's


def _create(*args: str) -> tuple[int, str]:
    """Run ``token create``; returns the new token's id and its text."""
    result = CliRunner().invoke(cli, ["token", "create", *args])
    assert result.exit_code == 0, result.output
    text = result.stdout.strip().splitlines()[-1]
    assert text.startswith("pvt_")
    return int(text.split("_")[1]), text


def _expires_at(inventory: OrdersService, token_id: int) -> datetime | None:
    with inventory.db.read() as session:
        at = session.get(ApiToken, token_id).expires_at  # type: ignore[union-attr]
    return None if at is None else at.replace(tzinfo=at.tzinfo or UTC)


def _rows(listing: str) -> dict[str, str]:
    """``token list``'s table rows by token name."""
    rows = {}
    for line in listing.splitlines():
        cells = line.split("│")
        if len(cells) > 3 and cells[1].strip().isdigit():
            rows[cells[2].strip()] = line
    return rows


def _expire(inventory: OrdersService, token_id: int) -> None:
    """Let the token's time pass (its expiry one second ago)."""
    with inventory.db.write() as session:
        row = session.get(ApiToken, token_id)
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)


@pytest.mark.parametrize(
    ("args", "lifetime"),
    [
        (["--role", "noc", "--expires", "30d"], timedelta(days=30)),
        (["--role", "viewer", "--expires", "12h"], timedelta(hours=12)),
        (["--role", "admin", "--expires", "90m"], timedelta(minutes=90)),
        (["--role", "technician", "--order", ORDER], timedelta(hours=12)),
        (["--role", "noc"], timedelta(days=90)),
        (["--role", "viewer"], timedelta(days=90)),
        (["--role", "admin"], timedelta(days=90)),
        (["--role", "technician", "--order", ORDER, "--expires", "3d"], timedelta(days=3)),
    ],
)
def test_create_sets_the_expiry_asked_for_or_the_roles_default(
    sample_inventory: OrdersService, args: list[str], lifetime: timedelta
) -> None:
    before = datetime.now(UTC)
    token_id, _ = _create(*args)
    at = _expires_at(sample_inventory, token_id)
    assert at is not None
    assert before + lifetime - SLACK <= at <= before + lifetime + SLACK


def test_never_only_when_asked_for_explicitly(sample_inventory: OrdersService) -> None:
    result = CliRunner().invoke(cli, ["token", "create", "--role", "noc", "--expires", "never"])
    assert result.exit_code == 0, result.output
    assert "never expires" in result.stderr
    token_id = int(result.stdout.strip().splitlines()[-1].split("_")[1])
    assert _expires_at(sample_inventory, token_id) is None
    with sample_inventory.db.read() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "token.created"))
        assert '"expires_at": null' in list(event)[-1].detail


@pytest.mark.parametrize(
    "value", ["30", "30x", "0d", "0m", "-1d", "1.5h", "", "forever", "d", "3651d", "99999999999d"]
)
def test_bad_expiry_forms_are_refused_in_one_line(
    sample_inventory: OrdersService, value: str
) -> None:
    result = CliRunner().invoke(cli, ["token", "create", "--role", "noc", "--expires", value])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: token expiry {value!r}: "), lines
    assert "Traceback" not in result.output and "pvt_" not in result.output
    with sample_inventory.db.read() as session:
        assert session.scalars(select(ApiToken)).all() == []


def test_an_expired_token_gets_401_like_an_unknown_one_and_is_throttled(
    sample_inventory: OrdersService,
) -> None:
    inv = sample_inventory
    token_id, text = _create("--role", "technician", "--order", ORDER, "--name", "mario")
    app = create_app(inv.settings, inv, ApiLimits(rate=0.01, burst=2))
    with LiveServer(app) as server, httpx.Client(base_url=server.url) as client:
        url = f"/api/v1/orders/{ORDER}"
        assert client.get(url, headers={"Authorization": f"Bearer {text}"}).status_code == 200
        _expire(inv, token_id)
        expired = client.get(url, headers={"Authorization": f"Bearer {text}"})
        unknown = client.get(url, headers={"Authorization": "Bearer pvt_999_guess"})
        assert (expired.status_code, expired.json()) == (unknown.status_code, unknown.json())
        assert expired.status_code == 401
        assert expired.headers["www-authenticate"].lower().startswith("bearer")
        # Failed logins from one source share a bucket: an expired token counts as one.
        again = client.get(url, headers={"Authorization": f"Bearer {text}"})
    assert again.status_code == 429 and "retry-after" in again.headers


def test_token_list_shows_each_expiry_and_expired_ones(sample_inventory: OrdersService) -> None:
    tech_id, _ = _create("--role", "technician", "--order", ORDER, "--name", "mario")
    _create("--role", "noc", "--name", "dashboard", "--expires", "never")
    _create("--role", "viewer", "--name", "wall", "--expires", "30d")
    at = _expires_at(sample_inventory, tech_id)
    assert at is not None
    listed = CliRunner().invoke(cli, ["token", "list"])
    assert listed.exit_code == 0, listed.output
    rows = _rows(listed.stdout)
    assert at.strftime("%Y-%m-%d %H:%M") in rows["mario"] and "expired" not in rows["mario"]
    assert "never" in rows["dashboard"]
    assert "expired" not in rows["wall"]
    _expire(sample_inventory, tech_id)
    listed = CliRunner().invoke(cli, ["token", "list"])
    rows = _rows(listed.stdout)
    assert "expired" in rows["mario"]
    assert "expired" not in rows["wall"] and "expired" not in rows["dashboard"]


def test_the_expires_option_is_documented() -> None:
    result = CliRunner().invoke(cli, ["token", "create", "--help"])
    assert "--expires" in result.stdout and "never" in result.stdout
