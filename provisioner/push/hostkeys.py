"""SSH host-key pinning: which keys we accept, how the connection enforces it, what we record.

A device's SSH host key is pinned in the store (``host_keys``: one key per device). A
connection accepts exactly the pinned key (no system or user ``known_hosts`` is read):

- no key pinned: refused with :class:`~provisioner.push.errors.HostKeyUnknown`, unless the
  caller trusts the first key seen; the push job then stores it (:func:`trust`) and audits
  ``push.host-key-trusted``;
- another key than the pinned one: always refused with
  :class:`~provisioner.push.errors.HostKeyChanged`; the push job audits
  ``push.host-key-changed`` (:func:`record_change`). Re-pinning is a decision for a person.

Why paramiko (under netmiko) and not scrapli 2: its ``SSHClient`` pins keys from a file or a
string, tells "unknown" from "changed" and takes a policy object for trust-on-first-use.
Both SSH drivers (the IAD's and the D-Link /ME's) connect through :func:`open_pinned`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import paramiko

from provisioner.push.errors import (
    ConnectAuthError,
    ConnectionException,
    ConnectTimeoutError,
    HostKeyChanged,
    HostKeyUnknown,
)
from provisioner.push.targets import audit_device
from provisioner.store.push_models import HostKey

if TYPE_CHECKING:
    from provisioner.render.engine import DeviceKey


def openssh_key(key: paramiko.PKey) -> str:
    """A public key as one ``type base64`` line (known_hosts and ``host_keys`` spelling)."""
    return f"{key.get_name()} {key.get_base64()}"


# ---------------------------------------------------------------------- the store


def pinned(inv: Any, device_pk: int) -> str | None:
    """The device's pinned key (``type base64``), or None."""
    with inv.db.read() as session:
        row = session.get(HostKey, device_pk)
        return row.public_key if row else None


def trust(inv: Any, key: DeviceKey, device_pk: int, public_key: str, actor: str, at: str) -> None:
    """Pin the key a trust-on-first-use login saw (unless one got pinned meanwhile)."""
    with inv.db.write() as session:
        if session.get(HostKey, device_pk) is None:
            session.add(HostKey(device_pk=device_pk, public_key=public_key, trusted_by=actor))
            audit_device(session, actor, "push.host-key-trusted", key, key=public_key, address=at)


def record_change(
    inv: Any, key: DeviceKey, exc: HostKeyChanged, actor: str, at: str, job_id: str
) -> None:
    """Audit a refused connection whose host key differs from the pinned one."""
    with inv.db.write() as session:
        audit_device(
            session,
            actor,
            "push.host-key-changed",
            key,
            address=at,
            job=job_id,
            offered=exc.offered,
            pinned=exc.pinned,
            message=str(exc),
        )


# ---------------------------------------------------------------------- the connection


class _PinnedClient(paramiko.SSHClient):
    """paramiko client that reports a changed key as :class:`HostKeyChanged`."""

    def connect(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().connect(*args, **kwargs)
        except paramiko.BadHostKeyException as exc:
            self.close()
            offered, expected = openssh_key(exc.key), openssh_key(exc.expected_key)
            raise HostKeyChanged(
                f"host key of {exc.hostname} CHANGED: pinned {expected}, offered {offered};"
                " refusing to connect (re-pin it only if the device was really replaced)",
                offered=offered,
                pinned=expected,
            ) from None
        except HostKeyUnknown:
            self.close()
            raise


class _FirstUse(paramiko.MissingHostKeyPolicy):
    """No key pinned: refuse, or (trust on first use) accept the key and remember it."""

    def __init__(self, trust_first: bool) -> None:
        self.trust_first = trust_first
        self.accepted: str | None = None

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        seen = openssh_key(key)
        if not self.trust_first:
            raise HostKeyUnknown(
                f"host key of {hostname} is unknown ({seen}): no key is pinned for this device",
                offered=seen,
            )
        self.accepted = seen


def pinned_keys(
    hostname: str, port: int, known_hosts: str | None, host_key: str | None
) -> paramiko.HostKeys:
    """The host keys we accept: a known_hosts file and/or one ``type base64`` line."""
    keys = paramiko.HostKeys()
    if known_hosts:
        try:
            keys.load(str(known_hosts))
        except OSError as exc:
            raise ConnectionException(f"known_hosts {known_hosts}: {exc}") from None
    if host_key:
        name = hostname if port == 22 else f"[{hostname}]:{port}"  # known_hosts spelling
        entry = paramiko.hostkeys.HostKeyEntry.from_line(f"{name} {host_key.strip()}")
        if entry is None or entry.key is None:
            raise ConnectionException(f"host key {host_key!r}: not an OpenSSH public key line")
        keys.add(name, entry.key.get_name(), entry.key)
    return keys


@functools.cache
def with_pinned_keys(base: type) -> type:
    """A netmiko connection class that trusts only the keys in ``pinned``."""

    class Pinned(base):
        pinned: paramiko.HostKeys
        policy: _FirstUse

        def _build_ssh_client(self) -> paramiko.SSHClient:
            client = _PinnedClient()  # no system or user known_hosts: only what we pin
            for name, keys in self.pinned.items():
                for key_type in keys:
                    client.get_host_keys().add(name, key_type, keys[key_type])
            client.set_missing_host_key_policy(self.policy)
            return client

    return Pinned


def open_pinned(
    conn_class: type,
    device_type: str,
    hostname: str,
    username: str,
    password: str,
    args: Mapping[str, Any],
    **extra: Any,
) -> tuple[Any, str | None]:
    """Connect with netmiko, host keys pinned; returns (connection, key accepted on first use).

    ``args``: ``port``, ``known_hosts``, ``host_key``, ``trust_on_first_use``, ``key_file``,
    ``conn_timeout``, ``auth_timeout``, ``banner_timeout``. Failures, by type:
    :class:`HostKeyUnknown`, :class:`HostKeyChanged`, ``ConnectAuthError``,
    ``ConnectTimeoutError`` (no answer in time), ``ConnectionException`` (anything else).
    """
    from netmiko.exceptions import NetmikoAuthenticationException

    port = int(args["port"])
    where = f"{hostname}:{port}"
    conn = conn_class(
        host=hostname,
        port=port,
        username=username,
        password=password,
        device_type=device_type,
        use_keys=bool(args["key_file"]),
        key_file=args["key_file"],
        allow_agent=False,
        system_host_keys=False,
        alt_host_keys=False,
        ssh_strict=True,
        conn_timeout=float(args["conn_timeout"]),
        auth_timeout=float(args["auth_timeout"]),
        banner_timeout=float(args["banner_timeout"]),
        fast_cli=True,
        auto_connect=False,
    )
    conn.pinned = pinned_keys(hostname, port, args["known_hosts"], args["host_key"])
    conn.policy = _FirstUse(bool(args["trust_on_first_use"]))
    for name, value in extra.items():
        setattr(conn, name, value)
    try:
        # Not conn._open(): that sends a blind Enter first, whose extra prompt would
        # arrive later and put every answer one prompt out of step.
        conn.establish_connection()
        conn.session_preparation()
    except (HostKeyChanged, HostKeyUnknown):
        disconnect(conn)
        raise
    except NetmikoAuthenticationException:
        disconnect(conn)
        raise ConnectAuthError(f"{where}: authentication failed") from None
    except Exception as exc:
        disconnect(conn)
        text = " ".join(str(exc).split())[:300]
        if timed_out(exc):
            raise ConnectTimeoutError(f"{where}: no answer in time: {text}") from None
        raise ConnectionException(f"{where}: cannot connect: {text}") from None
    return conn, conn.policy.accepted


def timed_out(exc: BaseException) -> bool:
    """Whether a failure to connect or read was, at its root, a timeout.

    Decided on the types along the exception chain: a socket timeout or netmiko's
    ``ReadTimeout`` is one; netmiko's ``NetmikoTimeoutException`` is one unless it wraps an
    ``OSError`` (a refused or unreachable port is an answer, not silence).
    """
    from netmiko.exceptions import NetmikoTimeoutException, ReadTimeout

    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 10:  # a chain is short; never loop on a cycle
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(e, TimeoutError | ReadTimeout) for e in chain):
        return True
    if any(isinstance(e, OSError) for e in chain):
        return False
    return any(isinstance(e, NetmikoTimeoutException) for e in chain)


def disconnect(conn: Any) -> None:
    """Best effort on a connection that failed or is done."""
    with contextlib.suppress(Exception):  # a broken session may fail to close
        conn.disconnect()
