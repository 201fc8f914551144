"""What can go wrong in a push, as types: callers decide by type, never by message text.

Connecting (NAPALM's pattern, :mod:`napalm.base.exceptions`): every failure to reach or log
in to a device is a ``ConnectionException``. Its subclasses say which:

- ``ConnectTimeoutError`` (NAPALM's): no answer in time; worth a retry.
- ``ConnectAuthError`` (NAPALM's): credentials refused; never retried (a retry could lock
  the account, and the answer will not change).
- :class:`HostKeyUnknown`, :class:`HostKeyChanged`: the SSH host key is not the pinned one;
  never retried, a change is audited.
- :class:`WrongDevice`: something answers, but not the model the inventory names; never
  retried.
- any other ``ConnectionException`` (connection lost, refused): retried.

:func:`retried` is that policy. The push job's own outcomes are :class:`DeviceBusy`,
:class:`NoAddress` and :class:`RollbackIncomplete`. Every class here is also a
:class:`~provisioner.errors.PushFailed`, so one ``except ProvisionerError`` catches them all.
Messages are in the domain's words; a CLI or an API adds how its user acts on them.

Importing this module imports NAPALM (about a second): only the drivers and the job do, when
a push runs.
"""

from __future__ import annotations

from napalm.base.exceptions import ConnectAuthError, ConnectionException, ConnectTimeoutError

from provisioner.errors import PushFailed

__all__ = [
    "ConnectAuthError",
    "ConnectTimeoutError",
    "ConnectionException",
    "DeviceBusy",
    "HostKeyChanged",
    "HostKeyError",
    "HostKeyUnknown",
    "NoAddress",
    "RollbackIncomplete",
    "WrongDevice",
    "retried",
]


class HostKeyError(ConnectionException, PushFailed):
    """The SSH server's host key is not one we pinned. Not a paramiko ``SSHException`` on
    purpose: netmiko turns those into timeouts, and the message would be lost."""

    def __init__(self, message: str, *, offered: str = "") -> None:
        super().__init__(message)
        self.offered = offered  # the key the server showed, "type base64"


class HostKeyUnknown(HostKeyError):
    """No key is pinned for this device, and trusting a first key was not asked for."""


class HostKeyChanged(HostKeyError):
    """The server's key differs from the pinned one: maybe another machine at that address."""

    def __init__(self, message: str, *, offered: str = "", pinned: str = "") -> None:
        super().__init__(message, offered=offered)
        self.pinned = pinned


class WrongDevice(ConnectionException, PushFailed):
    """The device that answers is not the model the inventory names (or not one we know)."""


class DeviceBusy(PushFailed):
    """Another push (another job, maybe another process) holds this device."""


class NoAddress(PushFailed):
    """No management address was given for the device (the store keeps none)."""


class RollbackIncomplete(PushFailed):
    """A commit failed and rolling back did not verify: the device may be half-changed.

    ``backup_version`` is the stored backup to restore."""

    def __init__(self, message: str, *, backup_version: int | None) -> None:
        super().__init__(message)
        self.backup_version = backup_version


_NEVER_RETRIED = (ConnectAuthError, HostKeyError, WrongDevice)


def retried(exc: BaseException) -> bool:
    """Whether a failure to connect or read is worth another try: a timeout or a lost
    connection is; refused credentials, a host key problem or the wrong device are not."""
    return isinstance(exc, ConnectionException) and not isinstance(exc, _NEVER_RETRIED)
