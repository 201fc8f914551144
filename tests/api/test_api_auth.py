"""Tokens, roles and deny-by-default: who may call what, and how a refusal looks."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from apistore import OTHER, OWN, Store
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from provisioner.api.app import create_app
from provisioner.api.auth import Permission
from provisioner.api.limits import ApiLimits
from provisioner.api.routing import iter_routes
from provisioner.store.tokens import ApiToken

# Public on purpose: probes, scrapers, and the API's own description (and its assets).
PUBLIC = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/openapi.json",
    "/api/v1/docs",
    "/api/v1/docs/assets/{name}",
}
# The technician page signs in with its own session (tests/tech): each action checks it.
PAGE = "/tech"


def _permissions(dependant: Any) -> list[str]:
    found = []
    for dep in getattr(dependant, "dependencies", []):
        if isinstance(dep.call, Permission):
            found.append(dep.call.permission)
        found.extend(_permissions(dep))
    return found


def test_every_route_but_the_public_ones_declares_a_permission(app: FastAPI) -> None:
    checked = 0
    for path, methods, route in iter_routes(app):
        if path in PUBLIC or path.startswith(PAGE):
            continue
        perms = _permissions(getattr(route, "dependant", None))
        assert perms, f"{sorted(methods)} {path} has no Depends(require(...)): deny by default"
        checked += 1
    assert checked >= 12  # the walk really saw the API's routes


def test_the_walk_catches_an_unguarded_route(store: Store) -> None:
    """The check above can fail: a route added without a permission is found."""
    app = create_app(store.settings, store.inventory)

    @app.get("/api/v1/oops")
    def oops() -> dict[str, str]:
        return {}

    unguarded = [
        p
        for p, _, r in iter_routes(app)
        if p not in PUBLIC and not p.startswith(PAGE) and not _permissions(r.dependant)
    ]
    assert unguarded == ["/api/v1/oops"]


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-token",
        "Bearer pvt_1_wrong-secret",
        "Bearer pvt_999_x",
        "Bearer pvt_abc_x",
    ],
)
def test_no_valid_token_is_401_with_a_bearer_challenge(
    client: TestClient, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    r = client.get(f"/api/v1/orders/{OWN}", headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 401 and body["title"] == "Unauthorized"


def test_a_revoked_token_is_refused_from_the_next_request(client: TestClient, store: Store) -> None:
    h = store.headers("noc")
    assert client.get("/api/v1/orders", headers=h).status_code == 200
    token_id = int(store.tokens["noc"].split("_")[1])
    with store.inventory.db.write() as session:
        from provisioner.store import tokens

        tokens.revoke(session, token_id)
    assert client.get("/api/v1/orders", headers=h).status_code == 401


def test_tokens_are_stored_as_sha256_only(store: Store) -> None:
    db_file = store.settings.data_dir / "provisioner.db"
    store.inventory.db.dispose()  # flush the WAL into the file we read
    raw = db_file.read_bytes()
    with store.inventory.db.read() as session:
        rows = {r.id: r for r in session.query(ApiToken)}
    for text in store.tokens.values():
        _, token_id, secret = text.split("_", 2)
        assert secret.encode() not in raw
        assert rows[int(token_id)].token_hash == hashlib.sha256(secret.encode()).hexdigest()


def test_permission_refusal_is_403_problem(client: TestClient, store: Store) -> None:
    r = client.post(f"/api/v1/orders/{OWN}/cancel", headers=store.headers("viewer"))
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    assert "viewer" in r.json()["detail"]


def test_technician_sees_only_the_orders_on_the_token(client: TestClient, store: Store) -> None:
    h = store.headers("technician")
    listed = client.get("/api/v1/orders", headers=h).json()
    assert [o["order"] for o in listed["items"]] == [OWN] and listed["total"] == 1
    other = client.get(f"/api/v1/orders/{OTHER}", headers=h)
    missing = client.get("/api/v1/orders/WT-0000-NOPE", headers=h)
    # Same answer for "exists but not yours" and "does not exist": no existence oracle.
    assert other.status_code == missing.status_code == 404
    assert other.json()["detail"].replace(OTHER, "X") == missing.json()["detail"].replace(
        "WT-0000-NOPE", "X"
    )
    audit = client.get("/api/v1/audit", params={"limit": 200}, headers=h).json()["items"]
    assert audit and {e["order"] for e in audit} == {OWN}


def test_audit_actor_is_the_token_name(client: TestClient, store: Store) -> None:
    r = client.post(f"/api/v1/orders/{OTHER}/cancel", headers=store.headers("noc"))
    assert r.status_code == 200
    events = client.get(
        "/api/v1/audit", params={"order": OTHER, "limit": 1}, headers=store.headers("admin")
    ).json()["items"]
    assert events[0]["action"] == "order.cancelled"
    assert events[0]["actor"] == "api:t-noc"


def test_rate_limit_per_token_429_with_retry_after(store: Store) -> None:
    app = create_app(store.settings, store.inventory, ApiLimits(rate=0.5, burst=5))
    client = TestClient(app)
    statuses = [
        client.get("/api/v1/orders", headers=store.headers("viewer")).status_code for _ in range(8)
    ]
    assert statuses[:5] == [200] * 5
    assert statuses[5:] == [429] * 3
    r = client.get("/api/v1/orders", headers=store.headers("viewer"))
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["content-type"] == "application/problem+json"
    # Another token has its own bucket.
    assert client.get("/api/v1/orders", headers=store.headers("noc")).status_code == 200


def test_failed_logins_are_throttled_per_source(store: Store) -> None:
    app = create_app(store.settings, store.inventory, ApiLimits(rate=0.5, burst=3))
    client = TestClient(app)
    bad = {"Authorization": "Bearer pvt_1_guess"}
    statuses = [client.get("/api/v1/orders", headers=bad).status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]


def test_token_cli_create_list_revoke(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from provisioner.cli.app import app as cli

    monkeypatch.setenv("PROVISIONER_HOME", str(store.settings.home))
    for var in ("PROVISIONER_DATABASE_URL", "PROVISIONER_SECRET_KEY", "PROVISIONER_SETTINGS"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()
    made = runner.invoke(
        cli, ["token", "create", "--role", "technician", "--order", OWN, "--name", "mario"]
    )
    assert made.exit_code == 0, made.output
    text = made.stdout.strip().splitlines()[-1]
    assert text.startswith("pvt_")
    client = TestClient(create_app(store.settings, store.inventory))
    h = {"Authorization": f"Bearer {text}"}
    assert client.get(f"/api/v1/orders/{OWN}", headers=h).status_code == 200
    listed = runner.invoke(cli, ["token", "list"])
    assert "mario" in listed.stdout and text.split("_", 2)[2] not in listed.stdout
    token_id = text.split("_")[1]
    assert runner.invoke(cli, ["token", "revoke", token_id]).exit_code == 0
    assert client.get(f"/api/v1/orders/{OWN}", headers=h).status_code == 401
    refused = runner.invoke(cli, ["token", "create", "--role", "viewer", "--order", OWN])
    assert refused.exit_code == 1
    assert "technician" in refused.stderr
    no_order = runner.invoke(cli, ["token", "create", "--role", "technician"])
    assert no_order.exit_code == 1


def test_api_command_is_registered() -> None:
    from provisioner.cli.app import app as cli

    r = CliRunner().invoke(cli, ["api", "--help"])
    assert r.exit_code == 0 and "--port" in r.stdout and "/api/v1/openapi.json" in r.stdout
