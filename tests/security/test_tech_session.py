"""The technician page's session (issue 15): a one-time login link, an HttpOnly SameSite=Strict
cookie scoped to the token's orders and expiry, CSRF-checked writes, and a cookie that works
on the API's reads only."""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from apistore import OPEN_LIMITS, OTHER, OWN, Store, copy_store, populate

from provisioner.api import tokens
from provisioner.api.app import create_app
from provisioner.tech.i18n import EN, IT, pick


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import yaml

    home = tmp_path_factory.mktemp("tech") / "home"
    s = populate(home)
    s.inventory.db.dispose()
    (home / "tokens.yaml").write_text(yaml.safe_dump({"tokens": s.tokens, "macs": s.macs}))
    return home


@pytest.fixture
def store(template: Path, tmp_path: Path) -> Store:
    return copy_store(template, tmp_path / "home")


@pytest.fixture
def client(store: Store) -> TestClient:
    return TestClient(create_app(store.settings, store.inventory, OPEN_LIMITS))


def _link(store: Store, orders: tuple[str, ...] = (OWN,), expires: str = "12h") -> str:
    return tokens.issue(store.inventory, "technician", name="mario", orders=list(orders),
                        expires=expires, link=True).text  # fmt: skip


def _login(client: TestClient, code: str) -> str:
    r = client.post("/tech/login", data={"code": code}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return str(r.headers["location"])


def _csrf(client: TestClient, order: str = OWN) -> str:
    page = client.get(f"/tech/orders/{order}")
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
    assert found
    return found.group(1)


def test_the_login_link_works_once_and_is_no_bearer_token(client: TestClient, store: Store) -> None:
    code = _link(store)
    # Opening the link (a chat app's preview does this) uses nothing up.
    assert client.get(f"/tech/login/{code}").status_code == 200
    assert client.get(f"/tech/login/{code}").status_code == 200
    bearer = {"Authorization": f"Bearer {code}"}
    assert client.get("/api/v1/orders", headers=bearer).status_code == 401
    where = _login(client, code)
    assert where == f"/tech/orders/{OWN}" and "pvt_" not in where
    second = TestClient(client.app).post("/tech/login", data={"code": code},
                                         follow_redirects=False)  # fmt: skip
    assert second.status_code == 401
    assert "pv_session" not in second.headers.get("set-cookie", "")


def test_the_session_cookie_is_httponly_samesite_strict_and_ends_with_the_token(
    client: TestClient, store: Store
) -> None:
    r = client.post("/tech/login", data={"code": _link(store, expires="90m")},
                    follow_redirects=False)  # fmt: skip
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    age = int(re.search(r"Max-Age=(\d+)", cookie).group(1))  # type: ignore[union-attr]
    assert timedelta(minutes=89) <= timedelta(seconds=age) <= timedelta(minutes=90)


def test_a_session_sees_the_token_s_orders_only(client: TestClient, store: Store) -> None:
    _login(client, _link(store))
    assert client.get(f"/tech/orders/{OWN}").status_code == 200
    assert client.get(f"/tech/orders/{OTHER}").status_code == 404
    assert client.get(f"/api/v1/events?order={OTHER}&seconds=1").status_code == 404
    assert client.get(f"/api/v1/orders/{OTHER}").status_code == 404
    assert client.get(f"/api/v1/orders/{OWN}").status_code == 200  # reads work on the cookie


def test_the_cookie_does_not_authorize_api_writes(client: TestClient, store: Store) -> None:
    _login(client, _link(store))
    r = client.post(f"/api/v1/orders/{OWN}/arm", json={"minutes": 10})
    assert r.status_code == 401
    status = client.get(f"/api/v1/orders/{OWN}/status").json()
    assert "armed" not in status["counts"]


@pytest.mark.parametrize(
    "forged",
    [
        {"csrf": ""},
        {"csrf": "0" * 64},
        {"origin": "https://evil.example"},
    ],
    ids=["no token", "wrong token", "another site"],
)
def test_a_forged_write_is_refused_and_changes_nothing(
    client: TestClient, store: Store, forged: dict[str, str]
) -> None:
    _login(client, _link(store))
    token = _csrf(client)
    data = {"csrf": forged.get("csrf", token), "minutes": "30"}
    headers = {"Origin": forged["origin"]} if "origin" in forged else {}
    r = client.post(f"/tech/orders/{OWN}/arm", data=data, headers=headers,
                    follow_redirects=False)  # fmt: skip
    assert r.status_code == 403
    assert "armed" not in client.get(f"/api/v1/orders/{OWN}/status").json()["counts"]
    ok = client.post(f"/tech/orders/{OWN}/arm", data={"csrf": token, "minutes": "30"},
                     follow_redirects=False)  # fmt: skip
    assert ok.status_code == 303
    assert client.get(f"/api/v1/orders/{OWN}/status").json()["counts"] == {"armed": 5}


def test_revoking_the_token_ends_the_session(client: TestClient, store: Store) -> None:
    code = _link(store)
    _login(client, code)
    assert client.get(f"/tech/orders/{OWN}").status_code == 200
    tokens.revoke(store.inventory, int(code.split("_")[1]))
    r = client.get(f"/tech/orders/{OWN}")
    assert r.status_code == 401 and "open a new link" in r.text


def test_a_technician_lifts_only_a_block_of_the_order_s_own_devices(
    client: TestClient, store: Store
) -> None:
    from datetime import UTC, datetime

    from provisioner.store.models import DeviceState, SourceBlock

    now = datetime.now(UTC)
    with store.inventory.db.write() as session:
        order = store.inventory.get(session, OWN)
        session.add(DeviceState(device_pk=order.devices[2].id, last_refused_source="198.51.100.7",
                                last_refused_at=now, refusals=3, fetches=0))  # fmt: skip
        until = now + timedelta(minutes=15)
        for source in ("198.51.100.7", "203.0.113.9"):
            session.add(SourceBlock(source=source, blocked_at=now, until=until, protocol="tftp",
                                    names=20))  # fmt: skip
    _login(client, _link(store))
    page = client.get(f"/tech/orders/{OWN}").text
    assert "198.51.100.7" in page and "203.0.113.9" not in page
    token = _csrf(client)
    other = client.post(f"/tech/orders/{OWN}/unblock", data={"csrf": token,
                        "source": "203.0.113.9"}, follow_redirects=False)  # fmt: skip
    assert other.status_code == 422
    own = client.post(f"/tech/orders/{OWN}/unblock", data={"csrf": token,
                      "source": "198.51.100.7"}, follow_redirects=False)  # fmt: skip
    assert own.status_code == 303
    blocked = {b["source"] for b in client.get("/api/v1/blocks").json()["items"]}
    assert blocked == {"203.0.113.9"}


def test_a_refused_bind_says_why_on_the_page_and_binds_nothing(
    client: TestClient, store: Store
) -> None:
    _login(client, _link(store))
    token = _csrf(client)
    r = client.post(f"/tech/orders/{OWN}/bind", data={"csrf": token, "mac": "00:80:f0:00:00:0g",
                    "target": "ext:204", "model": "alcatel-temporis-ip150"})  # fmt: skip
    assert r.status_code == 409
    assert "not a MAC address" in r.text and "Traceback" not in r.text
    assert client.get(f"/api/v1/orders/{OWN}/status").json()["free_extensions"]


def test_both_languages_have_every_word_and_italian_wins_for_it() -> None:
    assert set(EN) == set(IT)
    assert pick("it-IT,it;q=0.9,en;q=0.8") == "it"
    assert pick("en-GB,it;q=0.5") == "en"
    assert pick("de-DE") == "en"
    assert pick("de;q=1, it;q=0.4") == "it"
