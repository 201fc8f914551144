"""NAPALM driver for the IAD's SSH CLI: set lines (:mod:`provisioner.push.setlines`).

Contract (beyond :mod:`provisioner.push.drivers.base`, what the push job can rely on):

* the config is text of ``set <path...> <value>`` lines (blank lines and ``#`` comments
  ignored); ``get_config()`` returns running, startup and candidate as sorted set lines;
* ``load_replace_candidate`` validates every line (an unknown statement, a malformed quote,
  a control character or a path that is both leaf and node raises
  ``MergeConfigException``); ``load_merge_candidate`` keeps running paths the candidate
  does not mention;
* ``compare_config()`` is a unified diff of sorted set lines, ``""`` when equal;
* ``commit_config()`` does nothing at all when there is no difference. Otherwise it sends
  ``configure``, ``delete`` for removed paths, ``set`` for added/changed ones, ``commit``,
  ``end``, ``save``, then reads running and startup back and raises ``CommitError``
  unless both equal the candidate. Any ``% Invalid command`` answer, timeout or dropped
  connection also raises ``CommitError``. :attr:`IadSshDriver.last_changes` holds the
  lines sent;
* ``compare_config()`` and :attr:`IadSshDriver.last_changes` hold the configured values,
  secrets included (the driver cannot tell which values are secret): mask them before
  logging or storing. Error messages never carry values (:func:`redact`);
* ``rollback()`` re-applies the config read at the start of the last commit (reconnecting
  first if the commit killed the session);
* host keys are pinned (:class:`~provisioner.push.drivers.base.SshDriver`): an unknown key
  raises ``HostKeyUnknown`` unless ``trust_on_first_use``, a changed one always raises
  ``HostKeyChanged``.

``optional_args``: those of :class:`~provisioner.push.drivers.base.SshDriver`.

Why netmiko and not scrapli 2: host keys (see :mod:`provisioner.push.hostkeys`). netmiko's
``terminal_server`` class does no session preparation, and commands go through
``write_channel``/``read_until_pattern`` with our own prompt pattern (its ``send_command``
sleeps 0.2 s per read loop and waits a fixed 10 s for the echo).

Every line sent is built from validated tokens and quoted here: a value cannot carry a
newline (refused), so data can never start a second command. No shell is involved.
"""

from __future__ import annotations

import re
from typing import Any

from napalm.base.exceptions import CommandErrorException, CommitError, MergeConfigException

from provisioner.push import hostkeys
from provisioner.push.drivers import base
from provisioner.push.errors import ConnectionException, ConnectTimeoutError
from provisioner.push.setlines import (
    Config,
    ConfigSyntaxError,
    change_lines,
    diff_configs,
    format_config,
    merge_configs,
    parse_config,
    redact,
)

PROMPT = r"^iad-[A-Za-z0-9._-]+(?:\(config\))?#[ \t]*$"
ERROR_MARK = "% Invalid command"


def _iad_connection_class() -> type:
    """netmiko's terminal_server class, pinned keys, our prompt (built lazily: import cost)."""
    from netmiko.terminal_server.terminal_server import TerminalServerSSH

    class IadConnection(hostkeys.with_pinned_keys(TerminalServerSSH)):  # type: ignore[misc]
        prompt_timeout: float

        def session_preparation(self) -> None:
            self.read_until_pattern(PROMPT, read_timeout=self.prompt_timeout, re_flags=re.M)

    return IadConnection


class IadSshDriver(base.SshDriver):
    """The IAD over SSH: set-line config, candidate/commit on the device, pinned host keys."""

    def _setup(self) -> None:
        super()._setup()
        self.candidate: Config | None = None
        self._merge = False
        self.last_changes: list[str] = []
        self._rollback_config: Config | None = None
        self._attempted = False

    def open(self) -> None:
        """Connect, check the host key, log in, wait for the prompt."""
        self._connect(
            _iad_connection_class(), "terminal_server", prompt_timeout=self.command_timeout
        )

    # --- commands ---

    def _send(self, command: str) -> str:
        """Send one line, wait for the prompt, return the output without echo and prompt.

        Raises ``CommandErrorException`` on ``% Invalid command``; netmiko ReadTimeout or
        OSError/EOFError when the device hangs or the session is dropped.
        """
        conn = self._session
        if conn is None:
            raise ConnectionException(f"{self._where}: not open")
        conn.write_channel(command + "\n")
        raw = conn.read_until_pattern(PROMPT, read_timeout=self.command_timeout, re_flags=re.M)
        lines = raw.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if not lines or lines[0].strip() != command.strip():
            # The terminal echoes what we type: anything else means we are reading the
            # answer to something else. Never guess a device state from that.
            raise OSError(f"answer out of step: expected the echo of {redact(command)!r}")
        lines = lines[1:]
        if lines and re.match(PROMPT, lines[-1]):
            lines = lines[:-1]  # the prompt
        out = "\n".join(lines).strip("\n")
        if ERROR_MARK in out:
            # Not the device's text: it echoes the line, value (maybe a password) included.
            raise CommandErrorException(f"{self._where}: {ERROR_MARK}: {redact(command)}")
        return out

    def _guard(self, what: str, command: str) -> str:
        """_send, with every failure as a ConnectionException (reads): ConnectTimeoutError
        when the device did not answer in time."""
        try:
            return self._send(command)
        except (ConnectionException, CommandErrorException):
            raise
        except Exception as exc:
            self.close()  # its output stream is out of step: never read it again
            error = ConnectTimeoutError if hostkeys.timed_out(exc) else ConnectionException
            raise error(f"{self._where}: {what}: {_describe(exc)}") from None

    def cli(self, commands: list[str], encoding: str = "text") -> dict[str, str]:
        """Run exec-mode commands; {command: output}."""
        return {c: self._guard("cli", c) for c in commands}

    def read_running(self) -> Config:
        text = self._guard("show running-config", "show running-config")
        try:
            return parse_config(text)
        except ConfigSyntaxError as exc:
            raise ConnectionException(f"{self._where}: unreadable running-config: {exc}") from None

    def _config_text(self, which: str) -> str:
        if which in ("running", "startup"):
            return str(self._guard("get_config", f"show {which}-config"))
        return format_config(self.candidate) if self.candidate is not None else ""

    def get_facts(self) -> dict[str, Any]:
        version: dict[str, str] = {}
        for line in self._guard("get_facts", "show version").splitlines():
            key, _, value = line.partition(":")
            version[key.strip().lower()] = value.strip()
        hostname = self.read_running().get(("system", "hostname"), "")
        return {
            "uptime": float(version.get("uptime", -1) or -1),
            "vendor": version.get("vendor", "IAD"),
            "os_version": version.get("firmware", ""),
            "serial_number": version.get("serial", ""),
            "model": version.get("model", ""),
            "hostname": hostname,
            "fqdn": hostname,
            "interface_list": [],
        }

    # --- candidate ---

    def _load(self, filename: str | None, config: str | None, merge: bool) -> None:
        text = self._candidate_text(filename, config)
        try:
            self.candidate = parse_config(text)
        except ConfigSyntaxError as exc:
            raise MergeConfigException(f"{self._where}: invalid config: {exc}") from None
        self._merge = merge

    def load_replace_candidate(
        self, filename: str | None = None, config: str | None = None
    ) -> None:
        """The candidate replaces the whole running config."""
        self._load(filename, config, merge=False)

    def load_merge_candidate(self, filename: str | None = None, config: str | None = None) -> None:
        """The candidate's paths are added/changed; other running paths stay."""
        self._load(filename, config, merge=True)

    def _desired(self, running: Config) -> Config:
        assert self.candidate is not None
        return merge_configs(running, self.candidate) if self._merge else dict(self.candidate)

    def compare_config(self) -> str:
        if self.candidate is None:
            return ""
        running = self.read_running()
        return diff_configs(running, self._desired(running))

    # --- commit ---

    def _apply(self, target: Config, running: Config, what: str) -> None:
        lines = change_lines(running, target)
        self.last_changes = lines
        step = "configure"
        try:
            self._send("configure")
            for step in [*lines, "commit"]:
                self._send(step)
        except CommandErrorException:
            self._abandon()
            raise CommitError(
                f"{self._where}: {what}: the device refused {redact(step)!r}"
            ) from None
        except Exception as exc:
            self.close()
            raise CommitError(
                f"{self._where}: {what} failed at {redact(step)!r}: {_describe(exc)}; the running"
                " config is the old or the new one (commit is atomic on the device)"
            ) from None
        try:
            self._send("end")
            self._send("save")
            running_now = parse_config(self._send("show running-config"))
            startup_now = parse_config(self._send("show startup-config"))
        except Exception as exc:
            self.close()
            raise CommitError(
                f"{self._where}: {what}: committed, but saving/verifying failed: {_describe(exc)}"
            ) from None
        if running_now != target:
            differ = sorted(
                p for p in set(running_now) | set(target) if running_now.get(p) != target.get(p)
            )
            raise CommitError(
                f"{self._where}: {what}: running config differs after commit at "
                + ", ".join(" ".join(p) for p in differ)
            )
        if startup_now != target:
            raise CommitError(f"{self._where}: {what}: startup config differs after save")

    def _abandon(self) -> None:
        """After a refused line: throw the candidate away on the device, leave config mode."""
        try:
            self._send("discard")
            self._send("end")
        except Exception:
            self.close()

    def commit_config(self, message: str = "", revert_in: int | None = None) -> None:
        """Apply the candidate (nothing is sent when it equals running); verify; save."""
        self._no_revert(revert_in, "the IAD")
        if self.candidate is None:
            raise CommitError(f"{self._where}: no candidate loaded")
        self.last_changes = []
        # A new attempt: rollback() must never undo an older, good commit.
        self._rollback_config = None
        self._attempted = True
        try:
            running = self.read_running()
        except ConnectionException as exc:
            raise CommitError(f"commit: {exc}") from None
        target = self._desired(running)
        if target == running:
            self.candidate = None
            return
        self._rollback_config = running
        self._apply(target, running, "commit")
        self.candidate = None

    def rollback(self) -> None:
        """Re-apply the config read at the start of the last commit.

        Does nothing when the last commit changed nothing (equal configs, or it failed
        before the first line was sent); raises CommitError when nothing was committed.
        """
        if not self._attempted:
            raise CommitError(f"{self._where}: no commit to roll back")
        if self._rollback_config is None:
            return
        if not self.is_alive()["is_alive"]:
            self.close()
            self.open()
        try:
            running = self.read_running()
        except ConnectionException as exc:
            raise CommitError(f"rollback: {exc}") from None
        if running != self._rollback_config:
            self._apply(self._rollback_config, running, "rollback")


def _describe(exc: BaseException) -> str:
    from netmiko.exceptions import ReadTimeout

    if isinstance(exc, ReadTimeout):
        return "no prompt within the command timeout (device hung or too slow)"
    if isinstance(exc, OSError | EOFError):
        return f"connection lost ({exc.__class__.__name__}: {exc})"
    return " ".join(f"{exc.__class__.__name__}: {exc}".split())[:300]
