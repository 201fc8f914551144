"""A simulated IAD (access gateway) with an SSH CLI, and fault injection.

The CLI dialect is our contract with the IAD templates (see lab/README.md):

* prompt ``iad-<hostname>#`` in exec mode, ``iad-<hostname>(config)#`` in config mode
  (``<hostname>`` is the running ``system hostname``, else the simulator's name);
* ``show running-config`` / ``show startup-config``: sorted ``set <path...> <value>`` lines;
* ``configure``; then ``set <path...> <value>``, ``delete <path...>``, ``commit``,
  ``discard``, ``exit``/``end`` (uncommitted changes are dropped on leaving);
* ``save`` (exec mode) copies running to startup; ``show version``;
* anything else: ``% Invalid command: <cmd>``; ``exit``/``logout`` close the session.

``commit`` swaps the candidate in with one assignment, so a session that dies before it
leaves running untouched, and one that dies after it leaves the whole new config.

Both an interactive shell (netmiko, ``ssh -tt``) and exec requests (``ssh host 'show
running-config'``, one command per line) are served. ``line_editor=False``: asyncssh's line
editor echoes type-ahead early and confuses prompt detection, so echo is done here, only
when a pty was requested, and ``\\r``, ``\\n`` and ``\\r\\n`` all end a line.

Faults (:data:`FAULTS`, switchable at run time with :meth:`IadSim.set_fault`):
``drop-mid`` closes the connection when config line ``fault_lines + 1`` of a session
arrives (it is not executed); ``hang`` executes ``fault_command`` and then never answers
again; ``slow`` delays every reply by ``fault_delay``; ``auth-fail`` refuses every login;
``new-host-key`` presents another host key than :attr:`IadSim.host_key`; ``no-banner``
accepts TCP connections and never says a word.

``dialect="dlink-me"`` turns the same server into a D-Link DGS-1100/ME style CLI (prompt
``DGS-1100-24P/ME:admin#``, ``Command: X`` echo, ``show config current_config``,
``save``, "Available commands:" on errors): enough for the netmiko ``dlink_ds`` driver.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Coroutine, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import asyncssh

T = TypeVar("T")
Config = dict[tuple[str, ...], str]

FAULTS = ("drop-mid", "hang", "slow", "auth-fail", "new-host-key", "no-banner")
PATH_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/+@-]*$")
_QUOTE_NEEDED = re.compile(r'[\s"\\]')


# --- the dialect's text forms (kept independent of the driver's own parser on purpose: a
# shared bug would make both sides agree and the tests pass) ------------------------------


def tokens(line: str) -> list[str] | None:
    """Split a CLI line; ``"..."`` quotes with ``\\"`` and ``\\\\`` escapes. None if malformed."""
    out: list[str] = []
    i, n = 0, len(line)
    while i < n:
        if line[i] in " \t":
            i += 1
            continue
        if line[i] == '"':
            buf: list[str] = []
            i += 1
            while True:
                if i >= n:
                    return None  # unterminated quote
                c = line[i]
                if c == "\\" and i + 1 < n and line[i + 1] in '"\\':
                    buf.append(line[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    buf.append(c)
                    i += 1
            if i < n and line[i] not in " \t":
                return None  # "abc"def
            out.append("".join(buf))
        else:
            j = i
            while j < n and line[j] not in " \t":
                if line[j] == '"':
                    return None
                j += 1
            out.append(line[i:j])
            i = j
    return out


def quote(value: str) -> str:
    if value and not _QUOTE_NEEDED.search(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_lines(config: Mapping[tuple[str, ...], str]) -> list[str]:
    """Sorted ``set`` lines (sorted by path, component by component)."""
    return [f"set {' '.join(path)} {quote(config[path])}" for path in sorted(config)]


def parse_config(text: str) -> Config:
    """Read ``set`` lines (as ``show running-config`` prints them) into a config."""
    config: Config = {}
    for raw in text.splitlines():
        words = tokens(raw)
        if not words:
            continue
        if words[0] != "set" or len(words) < 3:
            raise ValueError(f"not a set line: {raw!r}")
        config[tuple(words[1:-1])] = words[-1]
    return config


# --- the device --------------------------------------------------------------------------


class IadSimError(RuntimeError):
    """The simulator could not start or was misused."""


def _prefix(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return len(a) < len(b) and b[: len(a)] == a


class _Server(asyncssh.SSHServer):
    def __init__(self, sim: IadSim) -> None:
        self._sim = sim
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._sim._conns.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._sim._conns.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True  # always ask for credentials

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        sim = self._sim
        if sim.fault == "auth-fail":
            return False
        return username == sim.username and password == sim.password

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        sim = self._sim
        if sim.fault == "auth-fail" or username != sim.username:
            return False
        return key.public_data in {k.public_data for k in sim._authorized}


class _Session:
    """One SSH session: a shell (prompted, maybe echoed) or an exec request."""

    def __init__(self, sim: IadSim, process: asyncssh.SSHServerProcess[str]) -> None:
        self.sim = sim
        self.process = process
        self.config_mode = False
        self.candidate: Config = {}
        self.config_lines = 0
        self.closed = False
        self.echo = process.get_terminal_type() is not None
        self.newline = "\r\n" if self.echo or not process.command else "\n"

    # --- I/O ---

    def write(self, text: str) -> None:
        if not self.closed and not self.process.is_closing():
            self.process.stdout.write(text)

    def prompt(self) -> str:
        return self.sim._dialect_prompt(self.config_mode)

    async def run(self) -> None:
        if self.process.command is not None:
            status = 0
            for line in self.process.command.splitlines():
                out = await self.line(line)
                if out is None:
                    return
                if self.sim._error_marker() in out:
                    status = 1
                if out:
                    self.write(out.replace("\r\n", "\n") + "\n")
            self.process.exit(status)
            return
        self.write(self.sim._banner() + self.newline + self.prompt())
        buf = ""
        last_cr = False
        while not self.closed:
            try:
                data = await self.process.stdin.read(1024)
            except (asyncssh.BreakReceived, asyncssh.TerminalSizeChanged):
                continue
            if not data:
                break  # EOF
            for ch in data:
                if ch == "\n" and last_cr:
                    last_cr = False
                    continue
                last_cr = ch == "\r"
                if ch in "\r\n":
                    line, buf = buf, ""
                    if self.echo:
                        self.write("\r\n")
                    out = await self.line(line)
                    if out is None:
                        return
                    if out:
                        self.write(out.replace("\n", self.newline) + self.newline)
                    self.write(self.prompt())
                elif ch in "\x7f\x08":
                    if buf:
                        buf = buf[:-1]
                        if self.echo:
                            self.write("\b \b")
                elif ch == "\x03":
                    buf = ""
                    self.write("^C" + self.newline + self.prompt())
                elif ch == "\x04" and not buf:
                    self.close()
                    return
                elif ch >= " ":
                    buf += ch
                    if self.echo:
                        self.write(ch)
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.process.exit(0)

    async def hang(self) -> None:
        """Never answer again; return when the client gives up and closes."""
        self.closed = True
        await self.process.channel.wait_closed()

    # --- one line: faults first, then the dialect ---

    async def line(self, raw: str) -> str | None:
        """Execute one line; None when the session is over (closed, dropped or hung)."""
        sim = self.sim
        line = raw.strip()
        sim.commands.append(line)
        if sim.fault == "slow":
            await asyncio.sleep(sim.fault_delay)
            if self.process.is_closing():
                return None  # the client gave up while we were slow
        if sim.fault == "drop-mid" and self.config_mode and line:
            if self.config_lines >= sim.fault_lines:
                self.closed = True
                self.process.channel.get_connection().abort()  # like a cut line: no goodbye
                return None
            self.config_lines += 1
        out = sim._execute(self, line)
        if self.closed:
            return None
        if sim.fault == "hang" and line.split()[:1] == sim.fault_command.split()[:1]:
            await self.hang()
            return None
        return out


class IadSim:
    """One simulated IAD reachable over SSH on 127.0.0.1. Context manager or start()/stop().

    State lives here and can be inspected from tests: :attr:`running`, :attr:`startup`,
    :attr:`commits`, :attr:`saves`, :attr:`commands` (every line received), :attr:`sessions`.
    """

    def __init__(
        self,
        hostname: str = "lab",
        *,
        port: int = 0,
        username: str = "admin",
        password: str = "lab-Pass-7",  # noqa: S107 - a lab device's documented login
        authorized_keys: Iterable[str | asyncssh.SSHKey] = (),
        host_key: str | Path | asyncssh.SSHKey | None = None,
        running: Mapping[tuple[str, ...], str] | None = None,
        dialect: str = "iad",
        model: str = "LAB-IAD-2FXS",
        firmware: str = "1.0.0-lab",
        serial: str = "LAB0000001",
        fault: str | None = None,
        fault_lines: int = 2,
        fault_command: str = "commit",
        fault_delay: float = 1.0,
        refuse: Iterable[str] = (),
    ) -> None:
        if dialect not in ("iad", "dlink-me"):
            raise IadSimError(f"unknown dialect {dialect!r}")
        self.hostname = hostname
        self.username = username
        self.password = password
        self.dialect = dialect
        self.model, self.firmware, self.serial = model, firmware, serial
        self._authorized = [
            k if isinstance(k, asyncssh.SSHKey) else asyncssh.import_public_key(k)
            for k in authorized_keys
        ]
        if host_key is None:
            self._host_key = asyncssh.generate_private_key("ssh-ed25519")
        elif isinstance(host_key, asyncssh.SSHKey):
            self._host_key = host_key
        else:
            self._host_key = asyncssh.read_private_key(str(host_key))
        self._other_key: asyncssh.SSHKey | None = None
        self._initial: Config = dict(running) if running is not None else self._factory()
        self.running: Config = dict(self._initial)
        self.startup: Config = dict(self._initial)
        self.commits = 0
        self.saves = 0
        self.sessions = 0
        self.commands: list[str] = []
        self.fault: str | None = None
        self.fault_lines = fault_lines
        self.fault_command = fault_command
        self.fault_delay = fault_delay
        self._initial_fault = fault
        # Config lines this firmware does not know (regexes): answered "% Invalid command".
        self.refuse = [re.compile(r) for r in refuse]
        self._started = time.monotonic()
        self._requested_port = port
        self.port = 0
        self._conns: set[asyncssh.SSHServerConnection] = set()
        self._raw_writers: set[asyncio.StreamWriter] = set()
        self._listener: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _factory(self) -> Config:
        if self.dialect == "dlink-me":
            return {}
        return {("system", "hostname"): self.hostname}

    # --- keys ---

    @property
    def host_key(self) -> str:
        """The host's public key as OpenSSH writes it (``ssh-ed25519 AAAA...``)."""
        key_type, blob = self._host_key.export_public_key("openssh").decode().split()[:2]
        return f"{key_type} {blob}"

    def known_hosts_line(self) -> str:
        """The line OpenSSH's known_hosts holds for this simulator."""
        return f"[127.0.0.1]:{self.port} {self.host_key}"

    # --- lifecycle ---

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> IadSim:
        if self._loop is not None:
            raise IadSimError("already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="iad-sim", daemon=True)
        self._thread.start()
        self.port = self._requested_port
        self._run(self._listen(self._initial_fault))
        self.fault = self._initial_fault
        return self

    async def _listen(self, fault: str | None) -> None:
        if fault == "no-banner":

            async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                self._raw_writers.add(writer)
                try:
                    await reader.read()  # until the client gives up
                finally:
                    self._raw_writers.discard(writer)
                    writer.close()

            self._listener = await asyncio.start_server(
                silent, "127.0.0.1", self.port, reuse_address=True
            )
            self.port = self._listener.sockets[0].getsockname()[1]
            return
        key = self._host_key
        if fault == "new-host-key":
            if self._other_key is None:
                self._other_key = asyncssh.generate_private_key("ssh-ed25519")
            key = self._other_key
        self._listener = await asyncssh.create_server(
            lambda: _Server(self),
            "127.0.0.1",
            self.port,
            server_host_keys=[key],
            process_factory=self._handle,
            line_editor=False,
            encoding="utf-8",
            reuse_address=True,
            login_timeout=30,
        )
        self.port = self._listener.get_port()

    async def _unlisten(self) -> None:
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()
            self._listener = None
        for conn in list(self._conns):
            conn.abort()
        self._conns.clear()
        for writer in list(self._raw_writers):
            writer.close()
        self._raw_writers.clear()

    async def _shutdown(self) -> None:
        await self._unlisten()
        # Sessions that hang on purpose wait for their channel: end them, not the loop.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            self._run(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._thread is not None
            self._thread.join(timeout=5)
            self._loop.close()
            self._loop = None

    def __enter__(self) -> IadSim:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- test controls ---

    def set_fault(
        self,
        mode: str | None,
        *,
        lines: int | None = None,
        command: str | None = None,
        delay: float | None = None,
    ) -> None:
        """Switch fault (None heals). Listener-level faults restart it on the same port."""
        if mode is not None and mode not in FAULTS:
            raise IadSimError(f"unknown fault {mode!r} (known: {', '.join(FAULTS)})")
        if lines is not None:
            self.fault_lines = lines
        if command is not None:
            self.fault_command = command
        if delay is not None:
            self.fault_delay = delay
        listener_faults = ("new-host-key", "no-banner")
        restart = (
            self._loop is not None
            and (mode in listener_faults or self.fault in listener_faults)
            and mode != self.fault
        )
        self.fault = mode
        if restart:

            async def relisten() -> None:
                await self._unlisten()
                await self._listen(mode)

            self._run(relisten())

    def reset(
        self, running: Mapping[tuple[str, ...], str] | None = None, refuse: Iterable[str] = ()
    ) -> None:
        """Back to the initial (or given) config, counters zero, no fault, no sessions."""
        self.set_fault(None)
        self.refuse = [re.compile(r) for r in refuse]
        if self._loop is not None:
            self._run(self._drop_sessions())
        self._initial = dict(running) if running is not None else self._factory()
        self.running = dict(self._initial)
        self.startup = dict(self._initial)
        self.commits = self.saves = self.sessions = 0
        self.commands = []

    async def _drop_sessions(self) -> None:
        for conn in list(self._conns):
            conn.abort()

    def running_text(self) -> str:
        return "\n".join(self._show(self.running))

    # --- the CLI ---

    async def _handle(self, process: asyncssh.SSHServerProcess[str]) -> None:
        self.sessions += 1
        session = _Session(self, process)
        try:
            await session.run()
        except (asyncssh.Error, OSError, ConnectionError):
            pass  # the client went away
        finally:
            session.closed = True

    def _prompt_host(self) -> str:
        name = self.running.get(("system", "hostname"), self.hostname)
        return re.sub(r"[^A-Za-z0-9._-]", "-", name) or self.hostname

    def _dialect_prompt(self, config_mode: bool) -> str:
        if self.dialect == "dlink-me":
            return f"{self.model}:admin#"
        return f"iad-{self._prompt_host()}{'(config)' if config_mode else ''}#"

    def _banner(self) -> str:
        if self.dialect == "dlink-me":
            return f"{self.model} Gigabit Ethernet Switch Command Line Interface\r\n"
        return f"{self.model} (provisioner lab), firmware {self.firmware}"

    def _error_marker(self) -> str:
        return "Available commands" if self.dialect == "dlink-me" else "% Invalid command"

    def _show(self, config: Config) -> list[str]:
        if self.dialect == "dlink-me":
            return [path[0] for path in sorted(config)]
        return config_lines(config)

    def _execute(self, session: _Session, line: str) -> str:
        if self.dialect == "dlink-me":
            return self._execute_dlink(session, line)
        if not line:
            return ""
        invalid = f"% Invalid command: {line}"
        words = tokens(line)
        if words is None:
            return invalid
        if session.config_mode:
            return self._execute_config(session, line, words) or ""
        if words == ["show", "running-config"]:
            return "\n".join(self._show(self.running))
        if words == ["show", "startup-config"]:
            return "\n".join(self._show(self.startup))
        if words == ["show", "version"]:
            uptime = int(time.monotonic() - self._started)
            return (
                f"model: {self.model}\nfirmware: {self.firmware}\nserial: {self.serial}\n"
                f"uptime: {uptime}"
            )
        if words == ["configure"]:
            session.config_mode = True
            session.candidate = dict(self.running)
            return ""
        if words == ["save"]:
            self.startup = dict(self.running)
            self.saves += 1
            return "Configuration saved."
        if words in (["exit"], ["logout"]):
            session.close()
            return ""
        return invalid

    def _execute_config(self, session: _Session, line: str, words: list[str]) -> str | None:
        invalid = f"% Invalid command: {line}"
        cand = session.candidate
        if any(r.search(line) for r in self.refuse):
            return invalid
        if words[0] == "set" and len(words) >= 3:
            path, value = tuple(words[1:-1]), words[-1]
            if not all(PATH_TOKEN.match(p) for p in path):
                return invalid
            if any(ord(c) < 32 for c in value):
                return invalid
            if any(_prefix(path, p) or _prefix(p, path) for p in cand):
                return invalid  # a leaf cannot also be a node
            cand[path] = value
            return None
        if words[0] == "delete" and len(words) >= 2:
            path = tuple(words[1:])
            doomed = [p for p in cand if p == path or _prefix(path, p)]
            if not doomed:
                return invalid
            for p in doomed:
                del cand[p]
            return None
        if words == ["commit"]:
            self.running = dict(cand)  # one assignment: never half a config
            self.commits += 1
            return None
        if words == ["discard"]:
            session.candidate = dict(self.running)
            return None
        if words in (["exit"], ["end"]):
            session.config_mode = False
            session.candidate = {}
            return None
        if words == ["show", "running-config"]:
            return "\n".join(self._show(self.running))
        if words == ["show", "candidate-config"]:
            return "\n".join(self._show(cand))
        return invalid

    # --- D-Link /ME dialect: a flat list of config commands, no candidate ---

    _DLINK_CONFIG = re.compile(r"^(config|create|delete|enable|disable) \S")

    def _execute_dlink(self, session: _Session, line: str) -> str:
        echo = f"Command: {line}\n\n" if line else ""
        if not line:
            return ""
        if line in ("disable clipaging", "enable clipaging"):
            return echo + "Success.\n"
        if line == "show config current_config":
            return echo + "\n".join(self._show(self.running)) + "\n"
        if line == "save":
            self.startup = dict(self.running)
            self.saves += 1
            return echo + "Saving all configurations to NV-RAM.......... Done.\n"
        if line in ("logout", "exit"):
            session.close()
            return ""
        refused = any(r.search(line) for r in self.refuse)
        if self._DLINK_CONFIG.match(line) and line.count('"') % 2 == 0 and not refused:
            # Applied at once, like the real CLI (no candidate on D-Link).
            key = (line,)
            self.running = {**self.running, key: ""}
            self.commits += 1
            return echo + "Success.\n"
        return (
            echo
            + "Available commands:\n..              ?               cable_diag      clear\n"
            + "config          create          delete          disable\n"
        )


def main() -> None:  # pragma: no cover - manual lab use
    """``python -m lab.iad_sim [hostname]``: run one IAD until Ctrl-C."""
    import sys

    with IadSim(sys.argv[1] if len(sys.argv) > 1 else "lab") as sim:
        print(f"IAD on ssh://admin@127.0.0.1:{sim.port} (password {sim.password}); Ctrl-C stops")
        print(f"known_hosts: {sim.known_hosts_line()}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":  # pragma: no cover
    main()
