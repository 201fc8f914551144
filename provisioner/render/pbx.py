"""What the voice platform needs from the store: who may register, with which password.

The registering identity is exactly what a phone reads from its file (see
``device_templates/temporis/_sections.j2`` and
:func:`provisioner.render.drivers.temporis.sip_line`):

- user and auth name: the extension's E.164 number (``UserName`` / ``AuthName``);
- domain: the Temporis / IP2215 file has no domain key, so a phone registers as
  ``<UserName>@<SIPServerHost>``, and ``SIPServerHost`` is ``settings.sip_registrar``;
  the digest realm is that host too. The IAD's file does set ``voice sip domain`` to
  ``settings.sip_domain``, so an analog line registers in that domain. Every extension is
  therefore exported in both realms (one row when the two settings are equal): whichever
  device carries it, its identity is in the table, with the same password.

The Kamailio export is a ``db_text`` database (``version`` + ``subscriber``), read by
``auth_db`` with ``calculate_ha1`` and ``use_domain``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from provisioner.errors import ProvisionerError
from provisioner.render.context import build_order_view, load_order, load_secrets
from provisioner.render.drivers.temporis import sip_line
from provisioner.settings import Settings
from provisioner.store.access import Store
from provisioner.store.models import Order

FORMATS = ("kamailio",)
SUBSCRIBER_VERSION = 7  # Kamailio 5.x subscriber table version (auth_db checks it)


class ExportRefused(ProvisionerError):
    """The registrar's table cannot be written as asked (cancelled order, clashing users)."""


@dataclass(frozen=True)
class Subscriber:
    """One SIP account as the registrar knows it. Never log ``password``."""

    order_id: str
    short: int
    user: str  # the AOR user (UserName)
    auth_user: str  # the digest user name (AuthName); the table's username
    domain: str  # the AOR host and digest realm
    password: str = field(repr=False)


def sip_domains(settings: Settings) -> list[str]:
    """The domains devices register in: the registrar host (phone and DECT files name it as
    SIPServerHost and have no domain key), then the SIP domain (the IAD's lines)."""
    return list(dict.fromkeys([settings.sip_registrar, settings.sip_domain]))


def subscribers(inv: Store, order_ids: Iterable[str] | None = None) -> list[Subscriber]:
    """Every extension of the given orders (every active order for None), from the store.

    Built with the same function the phone files use, so the table and the files cannot
    disagree on who an extension is.
    """
    domains = sip_domains(inv.settings)
    out: list[Subscriber] = []
    with inv.db.read() as session:
        if order_ids is None:
            rows = list(
                session.scalars(
                    select(Order).where(Order.state == "active").order_by(Order.order_id)
                )
            )
        else:
            rows = []
            for oid in order_ids:
                row = inv.get(session, oid)
                if row.state != "active":
                    raise ExportRefused(
                        f"order {oid}: is {row.state}; its extensions may not register"
                    )
                rows.append(row)
        for row in rows:
            order = load_order(session, row.id)
            view = build_order_view(order)
            book = load_secrets(session, order, inv.vault.decrypt)
            for ext in view.extensions:
                password = book.get(f"extension:{ext.short}", "sip_password")
                line = sip_line(0, 0, ext, password)
                out += [
                    Subscriber(view.order_id, ext.short, line.user, line.auth_name, d, password)
                    for d in domains
                ]
    seen: dict[tuple[str, str], Subscriber] = {}
    for sub in out:
        key = (sub.auth_user, sub.domain)
        other = seen.setdefault(key, sub)
        if other is not sub:
            raise ExportRefused(
                f"order {sub.order_id}: extension {sub.short}: SIP user {sub.auth_user}@"
                f"{sub.domain} is also extension {other.short} of order {other.order_id}"
            )
    return out


def dbtext_escape(value: str) -> str:
    """A string as Kamailio's db_text reads it: ``\\``, ``:``, newline, CR, tab, NUL escaped."""
    table = {"\\": "\\\\", ":": "\\:", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}
    return "".join(table.get(c, c) for c in value)


def kamailio_tables(subs: Iterable[Subscriber]) -> dict[str, str]:
    """The db_text files: ``version`` and ``subscriber`` (username, domain, password)."""
    rows = sorted(subs, key=lambda s: (s.domain, s.auth_user))
    lines = ["username(string) domain(string) password(string)"]
    for sub in rows:
        if not sub.password:
            raise ExportRefused(f"order {sub.order_id}: extension {sub.short}: empty SIP password")
        cols = (sub.auth_user, sub.domain, sub.password)
        lines.append(":".join(dbtext_escape(c) for c in cols))
    return {
        "version": f"table_name(string) table_version(int)\nsubscriber:{SUBSCRIBER_VERSION}\n",
        "subscriber": "\n".join(lines) + "\n",
    }


def write_kamailio(subs: Iterable[Subscriber], out_dir: Path) -> list[Path]:
    """Write the db_text files into ``out_dir`` (created), each replaced atomically, 0600.

    Each file's modification time is a later whole second than the one it replaces: a
    Kamailio whose db_text runs in non-caching mode (``modparam("db_text","db_mode",1)``)
    reloads a table when its mtime, in seconds, changed, so it takes an export made in the
    same second as the previous one too, without a restart (its registrations stay).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in kamailio_tables(subs).items():
        target = out_dir / name
        before = int(target.stat().st_mtime) if target.exists() else None
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, 0o600)  # noqa: PTH101 - on the open temp file's path
            os.replace(tmp, target)  # noqa: PTH105 - atomic rename over the old table
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if before is not None and int(target.stat().st_mtime) <= before:
            os.utime(target, (before + 1, before + 1))
        written.append(target)
    return written
