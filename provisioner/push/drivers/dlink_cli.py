"""NAPALM driver for D-Link DGS-1100 */ME* switches over their CLI (netmiko ``dlink_ds``).

MINIMAL, and tested only against the lab's D-Link /ME mode (``IadSim(dialect="dlink-me")``),
not against a real switch. The non-/ME DGS-1100-08P/-24P have no CLI at all: they use
:mod:`provisioner.push.drivers.dlink_snmp`.

What it does:

* the config is D-Link CLI lines (``config ...``, ``create ...``, ``delete ...``,
  ``enable ...``, ``disable ...``), as ``device_templates/dlink/me.cli.j2`` renders them;
  a ``save`` line is dropped (the driver saves after committing);
* merge only: D-Link has no candidate datastore and no config replace short of a
  config download over TFTP, so ``load_replace_candidate`` raises
  ``ReplaceConfigException`` and ``rollback`` raises ``NotImplementedError``;
* ``compare_config()`` lists, as ``+`` lines, the candidate lines ``show config
  current_config`` does not already show; ``""`` when every line is there;
* ``commit_config()`` sends only those lines, stops at the first error answer
  ("Available commands:", "Next possible completions:", "Fail!"), then ``save``s and
  checks that every line now shows in the current config. Lines are applied one by one
  (the device applies each at once): a failure can leave part of them applied.

``optional_args``: those of :class:`~provisioner.push.drivers.base.SshDriver`; host keys
are pinned the same way as the IAD's. Error messages name the command words only: arguments
may hold secrets.
"""

from __future__ import annotations

import re

from napalm.base.exceptions import CommitError, MergeConfigException, ReplaceConfigException

from provisioner.push import hostkeys
from provisioner.push.drivers import base
from provisioner.push.errors import ConnectionException

PROMPT = r"^[A-Za-z0-9][^\s#]*:[A-Za-z0-9_-]+#[ \t]*$"  # DGS-1100-24P/ME:admin#
ERRORS = re.compile(r"Available commands:|Next possible completions:|Fail!")
CONFIG_LINE = re.compile(r"^(config|create|delete|enable|disable) \S")


def _dlink_connection_class() -> type:
    from netmiko.dlink.dlink_ds import DlinkDSSSH

    class DlinkConnection(hostkeys.with_pinned_keys(DlinkDSSSH)):  # type: ignore[misc]
        def cleanup(self, command: str = "logout") -> None:
            # netmiko re-enables clipaging with send_command_timing (2 s of waiting);
            # clipaging is per session on D-Link, and closing the channel ends it.
            return None

    return DlinkConnection


def redact(line: str) -> str:
    """The command words of a line, without its arguments (they may hold secrets)."""
    words = line.split()
    return " ".join(words[:3]) + (" ..." if len(words) > 3 else "")


def parse_lines(text: str) -> list[str]:
    """Config lines of a candidate, in order, without blanks, comments and ``save``."""
    lines: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = " ".join(raw.split())
        if not line or line.startswith("#") or line == "save":
            continue
        if any(ord(c) < 32 for c in raw.strip("\r\n")) or line.count('"') % 2:
            raise ValueError(f"line {number}: control character or unbalanced quote")
        if not CONFIG_LINE.match(line):
            raise ValueError(f"line {number}: not a D-Link config command: {line!r}")
        lines.append(line)
    return lines


class DlinkCliDriver(base.SshDriver):
    """DGS-1100 /ME over SSH CLI: merge-only, save after commit."""

    def _setup(self) -> None:
        super()._setup()
        self.candidate: list[str] | None = None
        self.last_changes: list[str] = []

    def open(self) -> None:
        self._connect(_dlink_connection_class(), "dlink_ds")

    def _send(self, command: str) -> str:
        conn = self._session
        if conn is None:
            raise ConnectionException(f"{self._where}: not open")
        conn.write_channel(command + "\n")
        raw = conn.read_until_pattern(PROMPT, read_timeout=self.command_timeout, re_flags=re.M)
        lines = [line.rstrip() for line in raw.replace("\r", "").split("\n")]
        # Drop our echo, the "Command: ..." echo, blank lines and the prompt.
        body = [line for line in lines[1:-1] if line.strip() and not line.startswith("Command: ")]
        return "\n".join(body)

    def _running_lines(self) -> list[str]:
        try:
            out = self._send("show config current_config")
        except Exception as exc:
            raise ConnectionException(f"{self._where}: show config: {exc}") from None
        return [" ".join(line.split()) for line in out.splitlines() if line.strip()]

    def _config_text(self, which: str) -> str:
        if which == "running":
            return "\n".join(self._running_lines())
        return "\n".join(self.candidate) if which == "candidate" and self.candidate else ""

    def load_merge_candidate(self, filename: str | None = None, config: str | None = None) -> None:
        text = self._candidate_text(filename, config)
        try:
            self.candidate = parse_lines(text)
        except ValueError as exc:
            raise MergeConfigException(f"{self._where}: invalid config: {exc}") from None

    def load_replace_candidate(
        self, filename: str | None = None, config: str | None = None
    ) -> None:
        raise ReplaceConfigException(
            "D-Link CLI cannot replace a config without a TFTP download: use load_merge_candidate"
        )

    def _missing(self) -> list[str]:
        assert self.candidate is not None
        present = set(self._running_lines())
        return [line for line in self.candidate if line not in present]

    def compare_config(self) -> str:
        if self.candidate is None:
            return ""
        return "\n".join(f"+{line}" for line in self._missing())

    def commit_config(self, message: str = "", revert_in: int | None = None) -> None:
        self._no_revert(revert_in, "D-Link CLI")
        if self.candidate is None:
            raise CommitError(f"{self._where}: no candidate loaded")
        try:
            missing = self._missing()
        except ConnectionException as exc:
            raise CommitError(f"commit: {exc}") from None
        self.last_changes = []
        if not missing:
            self.candidate = None
            return
        for line in [*missing, "save"]:
            try:
                out = self._send(line)
            except Exception as exc:
                raise CommitError(
                    f"{self._where}: failed at {redact(line)!r} after {len(self.last_changes)}"
                    f" lines: {exc}"
                ) from None
            if ERRORS.search(out):
                raise CommitError(
                    f"{self._where}: the switch refused {redact(line)!r} after"
                    f" {len(self.last_changes)} applied lines"
                )
            if line != "save":
                self.last_changes.append(line)
        try:
            still = self._missing()
        except ConnectionException as exc:
            raise CommitError(f"commit: verifying: {exc}") from None
        if still:
            shown = ", ".join(repr(redact(line)) for line in still)
            raise CommitError(f"{self._where}: not in the config after commit: {shown}")
        self.candidate = None

    def rollback(self) -> None:
        # Undoing CLI lines on a /ME switch means downloading the saved config over TFTP;
        # this driver is merge-only, so it says so instead of pretending.
        raise CommitError(
            f"{self._where}: rollback is not available over the /ME CLI (it needs a config "
            "download over TFTP): restore the backup by hand"
        )
