"""One root exception; every user-facing error is one line that says what and where."""

from __future__ import annotations


class ProvisionerError(Exception):
    """Root of every error this package raises on purpose.

    ``str(error)`` is the one line a user sees: what went wrong and where.
    """


class SettingsError(ProvisionerError):
    """A setting (environment variable or settings file) is missing or wrong."""


class InvalidMac(ProvisionerError, ValueError):
    """A value is not a device's MAC address. Also a ``ValueError``, so a pydantic validator
    that raises it gives a validation error (a 422 problem, a document violation)."""


class OrderRejected(ProvisionerError):
    """An order breaks the offer's rules. ``violations`` holds every broken rule, one per line."""

    def __init__(self, violations: list[str]):
        self.violations = list(violations)
        super().__init__("\n".join(self.violations))


class OrderUnknown(ProvisionerError):
    """No order with that id in the store."""


class OrderConflict(ProvisionerError):
    """The order's state forbids the change: it exists already, or it is cancelled."""


class ResyncRefused(OrderConflict):
    """A resync cannot be asked: the order is cancelled, or the device registers no account
    that could take a check-sync (a switch, an IAD, a planned box)."""


class DeviceUnknown(ProvisionerError):
    """No device with that MAC, serial or id."""


class BlockUnknown(ProvisionerError):
    """No block in force for that source address."""


class BindRefused(ProvisionerError):
    """A bind would break the offer's rules (terminal limit, extension taken, MAC in use)."""


class SecretKeyError(ProvisionerError):
    """The key that encrypts secrets at rest is missing, unreadable or wrong."""


class RenderError(ProvisionerError):
    """A device file could not be rendered or failed its checks."""


class PushFailed(ProvisionerError):
    """A push to a device failed."""
