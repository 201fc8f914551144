"""The base of every push driver: what the NAPALM drivers of this package have in common.

Contract, what a driver does (the push job relies on nothing else):

- ``open()`` reaches the device and logs in; failures are typed
  (:mod:`provisioner.push.errors`): ``ConnectAuthError``, ``ConnectTimeoutError``,
  ``HostKeyUnknown``/``HostKeyChanged`` (SSH), ``WrongDevice``, else ``ConnectionException``.
- ``get_config(retrieve="running")["running"]`` is the device's config as text, the form a
  backup stores and ``load_replace_candidate`` takes back.
- ``load_replace_candidate(config=...)`` validates a candidate (``MergeConfigException``
  when it is not valid); ``compare_config()`` is a unified diff, ``""`` when nothing differs.
- ``commit_config()`` sends only what differs (nothing at all when nothing does), verifies
  by reading back and saves; any failure is a ``CommitError``. ``rollback()`` re-applies the
  state read at the start of the last commit.
- ``close()`` is safe to call twice and on a broken session; a driver is a context manager
  (``with driver:`` opens it and always closes it).

A subclass declares ``DEFAULTS`` (its ``optional_args`` and their defaults) and implements
``open``, ``_end`` (how to drop its session) and the config methods. Keep one driver class
per module and import this module, not the class: ``napalm.get_network_driver`` returns the
first ``NetworkDriver`` subclass it finds in a driver's module.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar, Self

from napalm.base import base as napalm_base
from napalm.base.exceptions import CommitError, MergeConfigException

from provisioner.push import hostkeys


class PushDriver(napalm_base.NetworkDriver):
    """A NAPALM driver with one session (``_session``), options merged over ``DEFAULTS``."""

    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        hostname: str,
        username: str,
        password: str,
        timeout: int = 60,
        optional_args: dict[str, Any] | None = None,
    ) -> None:
        # The napalm base __init__ only raises NotImplementedError: not called on purpose.
        self.hostname = hostname
        self.username = username
        self.password = password
        self.timeout = timeout  # caps one whole operation (a read, a commit)
        self.optional_args: dict[str, Any] = {**self.DEFAULTS, **(optional_args or {})}
        self.port = int(self.optional_args["port"])
        self.candidate: Any = None  # the loaded candidate, in the driver's own form
        self._session: Any = None
        self._setup()

    def _setup(self) -> None:
        """A driver's own attributes from ``optional_args`` (NAPALM's constructor stays one)."""

    @property
    def _where(self) -> str:
        return f"{self.hostname}:{self.port}"

    # --- configs ---

    def get_config(
        self,
        retrieve: str = "all",
        full: bool = False,
        sanitized: bool = False,
        format: str = "text",
    ) -> dict[str, str]:
        """NAPALM's three configs (``retrieve``: all, running, startup or candidate)."""
        return {
            which: self._config_text(which) if retrieve in ("all", which) else ""
            for which in ("running", "startup", "candidate")
        }

    def _config_text(self, which: str) -> str:
        """One config as text ("" when the device has no such config or nothing is loaded)."""
        raise NotImplementedError

    # --- session ---

    def _end(self, session: Any) -> None:
        """Drop a session (best effort: it may be broken)."""
        raise NotImplementedError

    def _alive(self, session: Any) -> bool:
        return True

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            self._end(session)

    def is_alive(self) -> dict[str, bool]:
        session = self._session
        return {"is_alive": bool(session is not None and self._alive(session))}

    def __enter__(self) -> Self:
        # NAPALM's own __enter__/__exit__ print a bug-report plea to stdout for any exception
        # that is not NAPALM's; ours only open and close.
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # nothing can be done about it in a finaliser
            self.close()

    # --- candidate ---

    def _candidate_text(self, filename: str | None, config: str | None) -> str:
        if (filename is None) == (config is None):
            raise MergeConfigException("give exactly one of filename= or config=")
        return config if config is not None else Path(str(filename)).read_text()

    def discard_config(self) -> None:
        self.candidate = None

    def _no_revert(self, revert_in: int | None, what: str) -> None:
        if revert_in is not None:
            raise CommitError(f"commit-confirm (revert_in) is not supported by {what}")


class SshDriver(PushDriver):
    """A device with an SSH CLI, reached through netmiko with host keys pinned
    (:mod:`provisioner.push.hostkeys`).

    ``optional_args``: ``port`` (22), ``known_hosts`` (an OpenSSH known_hosts file),
    ``host_key`` (one ``type base64`` line), ``trust_on_first_use`` (False: an unknown key is
    refused; True: accepted and left in :attr:`new_host_key` for the caller to store),
    ``key_file`` (client private key; password otherwise), ``conn_timeout``,
    ``auth_timeout``, ``banner_timeout`` (10 each), ``command_timeout`` (30: seconds to wait
    for the prompt after each command).
    """

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "port": 22,
        "known_hosts": None,
        "host_key": None,
        "trust_on_first_use": False,
        "key_file": None,
        "conn_timeout": 10.0,
        "auth_timeout": 10.0,
        "banner_timeout": 10.0,
        "command_timeout": 30.0,
    }

    def _setup(self) -> None:
        super()._setup()
        self.command_timeout = float(self.optional_args["command_timeout"])
        self.new_host_key: str | None = None  # accepted by trust on first use at open()

    def _connect(self, conn_class: type, device_type: str, **extra: Any) -> None:
        self._session, self.new_host_key = hostkeys.open_pinned(
            conn_class,
            device_type,
            self.hostname,
            self.username,
            self.password,
            self.optional_args,
            **extra,
        )

    def pin(self, public_key: str) -> None:
        """Accept only ``public_key`` from now on (a key just trusted, for reconnects)."""
        self.optional_args["host_key"] = public_key
        self.optional_args["trust_on_first_use"] = False

    def _end(self, session: Any) -> None:
        # Closing the SSH channel ends the CLI session; an "exit" typed first would race the
        # close and make the device write into a dead socket.
        hostkeys.disconnect(session)

    def _alive(self, session: Any) -> bool:
        return bool(session.is_alive())
