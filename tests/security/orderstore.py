"""A store with the sample orders and a token per role, and hostile order documents.

Shared by the document tests of the security corpus (``test_documents*.py``).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from provisioner.api.limits import ApiLimits
from provisioner.documents.validate import check_paths
from provisioner.orders.service import OrdersService
from provisioner.settings import Settings
from provisioner.store import tokens

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "inventory" / "orders"
ORDER = "WT-2026-000123"  # a stored order: PUT targets it
OPEN_LIMITS = ApiLimits(rate=1e6, burst=1_000_000)  # no 429 in these tests
YAML = "application/yaml"
JSON = "application/json"
# The environment the CLI reads; the rest of PROVISIONER_* is cleared (see conftest.home).
_CLEARED = (
    "PROVISIONER_DATABASE_URL",
    "PROVISIONER_SECRET_KEY",
    "PROVISIONER_SETTINGS",
    "PROVISIONER_SECRET_KEY_FILE",
)


@dataclass
class DocStore:
    home: Path
    settings: Settings
    inventory: OrdersService
    tokens: dict[str, str]

    def headers(self, role: str, ctype: str = YAML) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}", "Content-Type": ctype}

    def env(self) -> dict[str, str | None]:
        """The environment for ``CliRunner().invoke(..., env=...)`` on this store."""
        return {"PROVISIONER_HOME": str(self.home), **dict.fromkeys(_CLEARED)}


def make_store(home: Path) -> DocStore:
    """Every sample order applied, one token per role (no technician: no order is theirs)."""
    settings = Settings(home=home)
    inv = OrdersService(settings)
    for checked in check_paths([SAMPLES]):
        assert checked.ok and checked.document is not None, checked.lines()
        inv.apply(checked.document, source=checked.file, actor="test")
    made = {}
    with inv.db.write() as session:
        for role in ("viewer", "noc", "admin"):
            made[role] = tokens.create(session, role, name=f"t-{role}")[1]
    return DocStore(home, settings, inv, made)


def sample(order_id: str = ORDER) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((SAMPLES / f"{order_id}.yaml").read_text())
    return data


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A "billion laughs": ``levels`` nested lists of ``width`` aliases (9 x 9: 340 bytes that
    expand to 9^9 = 387 million strings)."""
    lines = ["a: &a [" + ",".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        name, prev = chr(ord("a") + i), chr(ord("a") + i - 1)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * width) + "]")
    return "\n".join(lines) + "\n"


def largest_document() -> dict[str, Any]:
    """The largest order document the caps allow: every list at its cap (32 sites and
    extensions, 128 devices, 5 handsets per base, 32 entries of each kind of number, groups
    of 8), every optional key given. The offer's rules refuse it (160 handsets on 32
    extensions, ...): it is the most work one document can ask for."""
    sites = [
        {
            "id": f"s{i}",
            "address": f"Via Roma {i}, 20121 Milano MI",
            "connectivity": "ftth",
            "pppoe_username": f"user{i}@isp.example",
            "pppoe_password": f"pppoe-secret-{i:04d}",
        }
        for i in range(32)
    ]
    extensions = [
        {
            "number": f"+3902123456{i:02d}",
            "short": 200 + i,
            "type": "premium",
            "name": f"Persona {i}",
            "site": f"s{i}",
            "email": f"p{i}@rossi.example",
            "mobile": f"+39333123{i:04d}",
            "conference": ["my_conference"],
            "sip_password": f"sip-secret-{i:04d}",
        }
        for i in range(32)
    ]
    devices: list[dict[str, Any]] = []
    for i in range(32):
        site = f"s{i}"
        devices += [
            {"model": "iad", "id": f"iad{i}", "site": site, "mac": f"00:1d:73:00:00:{i:02x}",
             "fax_pos": ["fax", "pos"], "admin_password": f"admin-secret-{i:04d}"},
            {"model": "mini-ont", "id": f"ont{i}", "site": site, "serial": f"ALCL0000{i:04X}",
             "ploam_password": f"ploam{i:05d}"},
            {"model": "dlink-dgs-1100-08p", "id": f"sw{i}", "site": site,
             "mac": f"b0:c5:54:00:00:{i:02x}", "admin_password": f"admin-sw-{i:04d}",
             "snmp_community": f"community-{i:04d}", "snmp_auth_key": f"authkey-{i:04d}",
             "snmp_priv_key": f"privkey-{i:04d}"},
            {"model": "alcatel-ip2215", "id": f"dect{i}", "site": site,
             "mac": f"00:80:f0:00:10:{i:02x}", "switch": f"sw{i}", "port": 1,
             "admin_password": f"admin-dect-{i:04d}",
             "handsets": [{"extension": 200 + i, "model": "alcatel-ip2215-handset"}]
             + [{"extension": 200 + i, "model": "alcatel-ip15"}] * 4},
        ]  # fmt: skip
    return {
        "order": "WT-2026-999999",
        "customer": {"name": "Grande Cliente S.p.A.", "vat": "IT01234567897"},
        "plan": "office_maxi",
        "lines": 8,
        "options": {
            "multisite": True,
            "multi_selection": True,
            "call_distributor_light": True,
            "efax": True,
            "fax_pos": 2,
        },
        "numbers": {
            "single": [f"+3906123400{i:02d}" for i in range(32)],
            "gnr": [
                {"first": f"+39021{i:02d}00000", "last": f"+39021{i:02d}09999"} for i in range(32)
            ],
            "isdn_groups": [[f"+3905544{i:02d}20{j}" for j in range(8)] for i in range(32)],
        },
        "sites": sites,
        "extensions": extensions,
        "devices": devices,
    }


def run_capped(
    code: str, *args: str, memory: int = 2 << 30, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -c code args`` with at most ``memory`` bytes of address space: a document
    bomb that a regression lets through fails this process, not the machine."""
    cap = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))\n"
    return subprocess.run(
        [sys.executable, "-c", cap + code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
