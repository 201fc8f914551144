"""NAPALM driver for the IAD's SSH CLI (the ``set``-line dialect described in lab/README.md).

Contract (what the push job can rely on):

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
* host keys are pinned: ``known_hosts`` (an OpenSSH known_hosts file) and/or ``host_key``
  (one ``ssh-ed25519 AAAA...`` line). An unknown key is refused unless
  ``trust_on_first_use=True``, which accepts it and leaves it in
  :attr:`IadSshDriver.new_host_key` for the caller to store. A *changed* key is always
  refused (``ConnectionException`` saying so).

``optional_args``: ``port`` (22), ``known_hosts``, ``host_key``, ``trust_on_first_use``
(False), ``key_file`` (client private key; password auth otherwise), ``conn_timeout`` (10),
``auth_timeout`` (10), ``banner_timeout`` (10), ``command_timeout`` (30: seconds to wait
for the prompt after each command).

Why netmiko and not scrapli 2: host keys. netmiko sits on paramiko, whose ``SSHClient``
lets us pin keys from a file or a string, tell "unknown" from "changed" and implement
trust-on-first-use with a policy object; scrapli 2's new Zig core was not checked for any
of that. netmiko's ``terminal_server`` class does no session preparation, and commands go
through ``write_channel``/``read_until_pattern`` with our own prompt pattern (its
``send_command`` sleeps 0.2 s per read loop and waits a fixed 10 s for the echo).

Every line sent is built from validated tokens and quoted here: a value cannot carry a
newline (refused), so data can never start a second command. No shell is involved.

Registration: see :mod:`provisioner.push.drivers.dlink_snmp` (same rule; module
``custom_napalm/iad_ssh.py`` holding ``from provisioner.push.drivers.iad_ssh import IadSshDriver``).
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import paramiko
from napalm.base import base as napalm_base
from napalm.base.exceptions import (
    CommandErrorException,
    CommitError,
    ConnectAuthError,
    ConnectionException,
    MergeConfigException,
)

Config = dict[tuple[str, ...], str]

PROMPT = r"^iad-[A-Za-z0-9._-]+(?:\(config\))?#[ \t]*$"
CONFIG_PROMPT = r"\(config\)#[ \t]*$"
ERROR_MARK = "% Invalid command"
PATH_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/+@-]*$")
_NEEDS_QUOTES = re.compile(r'[\s"\\]')
DEFAULTS: dict[str, Any] = {
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


# --- the dialect as pure functions ------------------------------------------------------


class ConfigSyntaxError(ValueError):
    """A config text is not valid ``set``-line dialect."""


def split_line(line: str) -> list[str]:
    """Words of one CLI line: ``"..."`` quotes with ``\\"`` and ``\\\\`` escapes."""
    words: list[str] = []
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch in " \t":
            i += 1
        elif ch == '"':
            word: list[str] = []
            i += 1
            while i < n and line[i] != '"':
                if line[i] == "\\" and i + 1 < n and line[i + 1] in '"\\':
                    i += 1
                word.append(line[i])
                i += 1
            if i >= n:
                raise ConfigSyntaxError(f"unterminated quote in {line!r}")
            i += 1
            if i < n and line[i] not in " \t":
                raise ConfigSyntaxError(f"text right after a closing quote in {line!r}")
            words.append("".join(word))
        else:
            start = i
            while i < n and line[i] not in " \t":
                if line[i] == '"':
                    raise ConfigSyntaxError(f"quote inside a word in {line!r}")
                i += 1
            words.append(line[start:i])
    return words


def quote(value: str) -> str:
    """A value as the CLI reads it back: quoted when empty or holding space, quote, ``\\``."""
    if value and not _NEEDS_QUOTES.search(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_path(path: tuple[str, ...], where: str) -> None:
    for part in path:
        if not PATH_TOKEN.match(part):
            raise ConfigSyntaxError(f"{where}: {part!r} is not a valid path word")


def _check_value(value: str, where: str) -> None:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigSyntaxError(f"{where}: control characters are not allowed in a value")


def parse_config(text: str) -> Config:
    """Read ``set`` lines into {path: value}. Raises ConfigSyntaxError with the line number."""
    config: Config = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"line {number}"
        words = split_line(line)
        if words[0] != "set" or len(words) < 3:
            raise ConfigSyntaxError(f"{where}: expected 'set <path...> <value>', got {line!r}")
        path, value = tuple(words[1:-1]), words[-1]
        _check_path(path, where)
        _check_value(value, where)
        for other in config:
            if other != path and (other[: len(path)] == path or path[: len(other)] == other):
                raise ConfigSyntaxError(
                    f"{where}: {' '.join(path)} clashes with {' '.join(other)}"
                    " (a path cannot be both a value and a section)"
                )
        config[path] = value
    return config


def redact(line: str) -> str:
    """A CLI line fit for an error message or a log: a ``set`` value becomes ``<value>``.

    Values include passwords; only the caller knows which, so none is ever echoed here.
    """
    try:
        words = split_line(line)
    except ConfigSyntaxError:
        return "<malformed line>"
    if len(words) >= 3 and words[0] == "set":
        return " ".join([*words[:-1], "<value>"])
    return line


def format_config(config: Mapping[tuple[str, ...], str]) -> str:
    """Sorted ``set`` lines, as the device shows them."""
    return "\n".join(f"set {' '.join(p)} {quote(config[p])}" for p in sorted(config))


def diff_configs(old: Mapping[tuple[str, ...], str], new: Mapping[tuple[str, ...], str]) -> str:
    """Unified diff of sorted set lines; "" when equal."""
    if dict(old) == dict(new):
        return ""
    return "\n".join(
        difflib.unified_diff(
            format_config(old).splitlines(),
            format_config(new).splitlines(),
            "running",
            "candidate",
            lineterm="",
        )
    )


def change_lines(
    old: Mapping[tuple[str, ...], str], new: Mapping[tuple[str, ...], str]
) -> list[str]:
    """Config-mode lines that turn ``old`` into ``new``: deletes first, then sets.

    Deleting first lets a leaf become a section (and back) within one commit. Each removed
    path is deleted at its shortest prefix that ``new`` does not use (``delete`` removes a
    whole subtree), so dropping a phone line is one ``delete``, not one per setting.
    """
    deletes: list[tuple[str, ...]] = []
    for path in sorted(p for p in old if p not in new):
        for k in range(1, len(path) + 1):
            if not any(n[:k] == path[:k] for n in new):
                top = path[:k]
                break
        else:  # pragma: no cover - path is in new's prefixes only if it is a section there
            top = path
        if top not in deletes:
            deletes.append(top)
    lines = [f"delete {' '.join(p)}" for p in deletes]
    lines += [f"set {' '.join(p)} {quote(new[p])}" for p in sorted(new) if old.get(p) != new[p]]
    return lines


def merge_configs(
    running: Mapping[tuple[str, ...], str], candidate: Mapping[tuple[str, ...], str]
) -> Config:
    """Running plus candidate (candidate wins); running paths that clash are dropped."""
    merged = {
        p: v
        for p, v in running.items()
        if not any(p[: len(c)] == c or c[: len(p)] == p for c in candidate)
    }
    merged.update(candidate)
    return merged


# --- host keys ---------------------------------------------------------------------------


class HostKeyChanged(Exception):
    """The server's host key differs from the pinned one (not an SSHException on purpose:
    netmiko turns those into timeouts and the message would be lost)."""


class HostKeyUnknown(Exception):
    """No pinned key for this host and trust-on-first-use is off."""


def openssh_key(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


class _PinnedClient(paramiko.SSHClient):
    """paramiko client that reports a changed key as :class:`HostKeyChanged`."""

    def connect(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().connect(*args, **kwargs)
        except paramiko.BadHostKeyException as exc:
            self.close()
            raise HostKeyChanged(
                f"host key for {exc.hostname} CHANGED: pinned {openssh_key(exc.expected_key)},"
                f" offered {openssh_key(exc.key)}; refusing to connect (re-provision the key"
                " only if the device was really replaced)"
            ) from None
        except HostKeyUnknown:
            self.close()
            raise


class _Policy(paramiko.MissingHostKeyPolicy):
    def __init__(self, tofu: bool) -> None:
        self.tofu = tofu
        self.accepted: str | None = None

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if not self.tofu:
            raise HostKeyUnknown(
                f"host key for {hostname} is unknown ({openssh_key(key)}); pin it with"
                " known_hosts/host_key, or pass trust_on_first_use=True"
            )
        self.accepted = openssh_key(key)


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
            raise ConnectionException(f"host_key {host_key!r}: not an OpenSSH public key line")
        keys.add(name, entry.key.get_name(), entry.key)
    return keys


def with_pinned_keys(base: type) -> type:
    """A netmiko connection class that trusts only the keys in ``pinned``."""

    class Pinned(base):
        pinned: paramiko.HostKeys
        policy: _Policy

        def _build_ssh_client(self) -> paramiko.SSHClient:
            client = _PinnedClient()  # no system or user known_hosts: only what we pin
            for name, keys in self.pinned.items():
                for key_type in keys:
                    client.get_host_keys().add(name, key_type, keys[key_type])
            client.set_missing_host_key_policy(self.policy)
            return client

    return Pinned


def _iad_connection_class() -> type:
    """netmiko's terminal_server class, pinned keys, our prompt (built lazily: import cost)."""
    from netmiko.terminal_server.terminal_server import TerminalServerSSH

    class IadConnection(with_pinned_keys(TerminalServerSSH)):  # type: ignore[misc]
        prompt_timeout: float

        def session_preparation(self) -> None:
            self.read_until_pattern(PROMPT, read_timeout=self.prompt_timeout, re_flags=re.M)

    return IadConnection


def open_pinned(
    conn_class: type,
    device_type: str,
    hostname: str,
    username: str,
    password: str,
    args: Mapping[str, Any],
    **extra: Any,
) -> tuple[Any, str | None]:
    """Connect with netmiko, host keys pinned; returns (connection, key accepted by TOFU).

    Failures are napalm exceptions: ConnectAuthError, or ConnectionException saying what
    (changed key, unknown key, no answer).
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
    conn.policy = _Policy(bool(args["trust_on_first_use"]))
    for name, value in extra.items():
        setattr(conn, name, value)
    try:
        # Not conn._open(): that sends a blind Enter first, whose extra prompt would
        # arrive later and put every answer one prompt out of step.
        conn.establish_connection()
        conn.session_preparation()
    except (HostKeyChanged, HostKeyUnknown) as exc:
        _disconnect(conn)
        raise ConnectionException(f"{where}: {exc}") from None
    except NetmikoAuthenticationException:
        _disconnect(conn)
        raise ConnectAuthError(f"{where}: authentication failed") from None
    except Exception as exc:
        _disconnect(conn)
        text = " ".join(str(exc).split())[:300]
        raise ConnectionException(f"{where}: cannot connect: {text}") from None
    return conn, conn.policy.accepted


def _disconnect(conn: Any) -> None:
    with contextlib.suppress(Exception):  # best effort on a connection that failed
        conn.disconnect()


# --- the driver --------------------------------------------------------------------------


class IadSshDriver(napalm_base.NetworkDriver):
    """The IAD over SSH: set-line config, candidate/commit on the device, pinned host keys."""

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
        self.timeout = timeout
        args = dict(DEFAULTS)
        args.update(optional_args or {})
        self.optional_args = args
        self.port = int(args["port"])
        self.command_timeout = float(args["command_timeout"])
        self.new_host_key: str | None = None
        self.candidate: Config | None = None
        self._merge = False
        self.last_changes: list[str] = []
        self._rollback_config: Config | None = None
        self._attempted = False
        self._conn: Any = None

    @property
    def _where(self) -> str:
        return f"{self.hostname}:{self.port}"

    def open(self) -> None:
        """Connect, check the host key, log in, wait for the prompt."""
        self._conn, self.new_host_key = open_pinned(
            _iad_connection_class(),
            "terminal_server",
            self.hostname,
            self.username,
            self.password,
            self.optional_args,
            prompt_timeout=self.command_timeout,
        )

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Closing the SSH channel ends the CLI session; an "exit" typed first would
            # race the close and make the device write into a dead socket.
            _disconnect(conn)

    def is_alive(self) -> dict[str, bool]:
        conn = self._conn
        return {"is_alive": bool(conn is not None and conn.is_alive())}

    # --- commands ---

    def _send(self, command: str) -> str:
        """Send one line, wait for the prompt, return the output without echo and prompt.

        Raises ``CommandErrorException`` on ``% Invalid command``; netmiko ReadTimeout or
        OSError/EOFError when the device hangs or the session is dropped.
        """
        conn = self._conn
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
        """_send, with every failure as a ConnectionException (reads)."""
        try:
            return self._send(command)
        except (ConnectionException, CommandErrorException):
            raise
        except Exception as exc:
            self._drop()
            raise ConnectionException(f"{self._where}: {what}: {_describe(exc)}") from None

    def _drop(self) -> None:
        """Forget a session that timed out or died: its output stream is out of step."""
        conn, self._conn = self._conn, None
        if conn is not None:
            _disconnect(conn)

    def cli(self, commands: list[str], encoding: str = "text") -> dict[str, str]:
        """Run exec-mode commands; {command: output}."""
        return {c: self._guard("cli", c) for c in commands}

    def read_running(self) -> Config:
        text = self._guard("show running-config", "show running-config")
        try:
            return parse_config(text)
        except ConfigSyntaxError as exc:
            raise ConnectionException(f"{self._where}: unreadable running-config: {exc}") from None

    def get_config(
        self,
        retrieve: str = "all",
        full: bool = False,
        sanitized: bool = False,
        format: str = "text",
    ) -> dict[str, str]:
        out = {"running": "", "candidate": "", "startup": ""}
        if retrieve in ("all", "running"):
            out["running"] = self._guard("get_config", "show running-config")
        if retrieve in ("all", "startup"):
            out["startup"] = self._guard("get_config", "show startup-config")
        if retrieve in ("all", "candidate") and self.candidate is not None:
            out["candidate"] = format_config(self.candidate)
        return out

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
        if (filename is None) == (config is None):
            raise MergeConfigException("give exactly one of filename= or config=")
        text = config if config is not None else Path(str(filename)).read_text()
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

    def discard_config(self) -> None:
        self.candidate = None

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
            self._drop()
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
            self._drop()
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
            self._drop()

    def commit_config(self, message: str = "", revert_in: int | None = None) -> None:
        """Apply the candidate (nothing is sent when it equals running); verify; save."""
        if revert_in is not None:
            raise CommitError("commit-confirm (revert_in) is not supported by the IAD")
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
            self._drop()
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
