"""A real SIP registrar (Kamailio, db_text) and real user agents (baresip) on loopback.

Set-up as measured in the team's research notes (research/sip-e2e.md):

* ``Kamailio``: ``kamailio -DD -E -f kamailio.cfg`` on a free UDP port of 127.0.0.1, digest
  auth against a db_text ``subscriber`` table (realm = the To domain), REGISTER; and NOTIFY
  from the provisioning server's address only (``trusted``), relayed to the contact the
  user registered (resync: ``Event: check-sync``). db_text runs in non-caching mode: a table
  whose file's mtime changed is read again, so ``provisioner pbx export`` into ``db_dir``
  reaches it without a restart (which would drop the registrations: usrloc keeps them in
  memory). :meth:`Kamailio.restart` is still there for a changed configuration.
  Stopped by SIGTERM to the main PID (it stops its own workers).
* :func:`register_accounts`: one ``baresip -f DIR`` per device with one account line per
  SIP account; the outcome of each account is read from its stdout. baresip has no timeout
  of its own and always exits 0: a watchdog SIGTERMs it at the deadline (then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

KAMAILIO = shutil.which("kamailio") or (
    "/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None
)
BARESIP = shutil.which("baresip")
BARESIP_MODULES = "/usr/lib/baresip/modules"
PACKAGES = "kamailio baresip-core"  # Debian packages these need

KAMAILIO_CFG = """#!KAMAILIO
debug=2
log_stderror=yes
children={children}
disable_tcp=yes
auto_aliases=no
listen=udp:{host}:{port}
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "db_text.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
modparam("db_text","db_mode",1)
modparam("usrloc","db_mode",0)
modparam("auth_db","db_url","text://{db}")
modparam("auth_db","calculate_ha1",1)
modparam("auth_db","password_column","password")
modparam("auth_db","use_domain",1)
request_route {{
  if ($rm == "NOTIFY") {{
    if ($si != "{trusted}") {{ sl_send_reply("403","Forbidden"); exit; }}
    if (!lookup("location")) {{ sl_send_reply("404","Not Found"); exit; }}
    if (!t_relay()) {{ sl_reply_error(); }}
    exit;
  }}
  if ($rm != "REGISTER") {{ sl_send_reply("405","Method Not Allowed"); exit; }}
  if (!www_authorize("$td","subscriber")) {{
    if ($rc == -2 || $rc == -3) {{ sl_send_reply("403","Forbidden"); exit; }}
    www_challenge("$td","0"); exit;
  }}
  if ($au != $tU) {{ sl_send_reply("403","Auth ID mismatch"); exit; }}
  if (!save("location")) {{ sl_reply_error(); exit; }}
  xlog("L_NOTICE","REGISTERED $tu $ct\\n");
}}
"""

# The same registrar with the subscriber table held in a hash table (htable), loaded once
# at start from a db_text table made of the subscriber table: db_text has no index, so
# auth_db walks every row for every authorised REGISTER (10,000 accounts: ~0.4 ms each).
KAMAILIO_HTABLE_CFG = (
    KAMAILIO_CFG.replace('loadmodule "auth_db.so"\n', 'loadmodule "htable.so"\n')
    .replace(
        """modparam("auth_db","db_url","text://{db}")
modparam("auth_db","calculate_ha1",1)
modparam("auth_db","password_column","password")
modparam("auth_db","use_domain",1)
""",
        """modparam("htable","db_url","text://{db}")
modparam("htable","htable","subs=>size=16;dbtable=htable;")
""",
    )
    .replace(
        'if (!www_authorize("$td","subscriber")) {{',
        'if (!pv_www_authenticate("$td","$sht(subs=>$au@$td)","0")) {{',
    )
)
_HTABLE_HEAD = "key_name(string) key_type(int) value_type(int) key_value(string) expires(int)\n"


def _dbtext_split(line: str) -> list[str]:
    """One db_text row into its columns (``\\:`` is a colon inside a value)."""
    cols, cur, i = [], [], 0
    unescape = {"\\": "\\", ":": ":", "n": "\n", "r": "\r", "t": "\t", "0": "\0"}
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            cur.append(unescape.get(line[i + 1], line[i + 1]))
            i += 2
            continue
        if c == ":":
            cols.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    cols.append("".join(cur))
    return cols


def htable_from_subscribers(db_dir: Path, out_dir: Path) -> int:
    """Write ``out_dir/htable`` (key ``user@domain``, value the password) from the db_text
    ``subscriber`` table in ``db_dir``; returns the rows."""
    from provisioner.render.pbx import dbtext_escape

    lines = (db_dir / "subscriber").read_text(encoding="utf-8").splitlines()[1:]
    rows = []
    for line in lines:
        if not line:
            continue
        user, domain, password = _dbtext_split(line)[:3]
        key = dbtext_escape(f"{user}@{domain}")
        rows.append(f"{key}:0:0:{dbtext_escape(password)}:0")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "version").write_text("table_name(string) table_version(int)\nhtable:2\n")
    (out_dir / "htable").write_text(_HTABLE_HEAD + "\n".join(rows) + "\n", encoding="utf-8")
    return len(rows)


BARESIP_CONFIG = f"""sip_listen 127.0.0.1:0
net_interface 127.0.0.1
dns_server 127.0.0.1:53
module_path {BARESIP_MODULES}
module g711.so
module_tmp account.so
"""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_OK = re.compile(r"^(?P<aor>\S+@\S+): \{\d+/\w+/v[46]\} (?P<code>\d{3}) (?P<reason>.*)$")
_FAIL = re.compile(r"reg: sip:(?P<aor>\S+@\S+?): (?P<code>\d{3}) (?P<reason>.*)$")


class SipLabError(RuntimeError):
    """The registrar or a user agent could not be run."""


def missing_tools() -> list[str]:
    """Programs the SIP lab needs that are not installed."""
    return [name for name, path in (("kamailio", KAMAILIO), ("baresip", BARESIP)) if not path]


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Kamailio:
    """Kamailio on ``host:port`` (a free port when 0), reading db_text from ``db_dir``."""

    def __init__(
        self,
        db_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        workdir: Path | None = None,
        children: int = 2,
        memory_mb: int = 0,
        lookup: str = "db",
        trusted: str = "127.0.0.1",
    ):
        if KAMAILIO is None:
            raise SipLabError(f"kamailio is not installed (apt-get install {PACKAGES})")
        self.db_dir = Path(db_dir).resolve()
        self.host = host
        self.port = port or free_udp_port(host)
        self.children = children  # UDP worker processes
        self.memory_mb = memory_mb  # shared memory (-m); 0: Kamailio's default (64)
        self.lookup = lookup  # "db": auth_db on db_text; "htable": in memory, read at start
        self.trusted = trusted  # the address NOTIFYs are relayed from (the provisioner)
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="kamailio-")
        self.workdir = Path(workdir) if workdir else Path(self._tmp.name)  # type: ignore[union-attr]
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0  # start to first SIP answer, last start
        self.log_path = self.workdir / "kamailio.log"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        cfg = self.workdir / "kamailio.cfg"
        template, db = KAMAILIO_CFG, self.db_dir
        if self.lookup == "htable":
            template, db = KAMAILIO_HTABLE_CFG, self.workdir / "htable-db"
            htable_from_subscribers(self.db_dir, db)
        cfg.write_text(
            template.format(
                host=self.host,
                port=self.port,
                db=db,
                children=self.children,
                trusted=self.trusted,
            )
        )
        memory = ["-m", str(self.memory_mb)] if self.memory_mb else []
        t0 = time.monotonic()
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [str(KAMAILIO), "-DD", "-E", *memory, "-f", str(cfg)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
            )
        finally:
            log.close()
        while not self._answers():
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-800:]
                self.proc = None
                raise SipLabError(f"kamailio exited at start:\n{tail}")
            if time.monotonic() - t0 > timeout:
                self.stop()
                raise SipLabError(f"kamailio on {self.address}: no answer after {timeout} s")
        self.start_seconds = time.monotonic() - t0

    def _answers(self) -> bool:
        """True once the registrar answers an OPTIONS (with 405: it takes REGISTER only)."""
        branch = f"z9hG4bK{os.urandom(6).hex()}"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((self.host, 0))
            s.settimeout(0.05)
            here = s.getsockname()[1]
            msg = (
                f"OPTIONS sip:{self.address} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {self.host}:{here};rport;branch={branch}\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:probe@lab>;tag=1\r\nTo: <sip:probe@lab>\r\n"
                f"Call-ID: {branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            )
            s.sendto(msg.encode(), (self.host, self.port))
            try:
                data = s.recv(4096)
            except OSError:
                return False
        return data.startswith(b"SIP/2.0 ")

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # the main PID stops its workers
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def restart(self) -> None:
        """Stop and start on the same port: db_text is read only at start."""
        self.stop()
        self.start()

    def __enter__(self) -> Kamailio:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


@dataclass(frozen=True)
class SipAccount:
    """One account to register: the AOR ``user@domain``, sent to ``registrar`` (host:port)."""

    user: str
    domain: str
    password: str = field(repr=False)
    registrar: str = ""  # host:port; empty: the domain itself on 5060
    auth_user: str = ""  # empty: the user

    @property
    def aor(self) -> str:
        return f"{self.user}@{self.domain}"

    def baresip_line(self) -> str:
        if '"' in self.password or "\n" in self.password:
            # baresip's account syntax cannot carry these (measured: 403).
            raise SipLabError(f"{self.aor}: password holds a character baresip cannot send")
        params = [f'auth_pass="{self.password}"']
        if self.auth_user and self.auth_user != self.user:
            params.append(f"auth_user={self.auth_user}")
        if self.registrar:
            params.append(f'outbound="sip:{self.registrar}"')
        params.append("regint=600")
        return f"<sip:{self.aor}>;" + ";".join(params)


@dataclass(frozen=True)
class Registration:
    aor: str
    status: int | None  # SIP status of the final answer; None: no answer by the deadline
    reason: str
    seconds: float  # UA start to this answer (or to the deadline)

    @property
    def outcome(self) -> str:
        return f"{self.status} {self.reason}".strip() if self.status else "no answer"


def register_accounts(accounts: Iterable[SipAccount], timeout: float = 5.0) -> list[Registration]:
    """Register every account from one baresip (one device); results in the given order.

    Each account's outcome is its first final answer (200, or 4xx/5xx after the digest
    challenge). baresip is stopped by PID when all answered or at ``timeout``.
    """
    accs = list(accounts)
    if not accs:
        return []
    if BARESIP is None:
        raise SipLabError(f"baresip is not installed (apt-get install {PACKAGES})")
    results: dict[str, Registration] = {}
    with tempfile.TemporaryDirectory(prefix="baresip-") as tmp:
        folder = Path(tmp)
        (folder / "config").write_text(BARESIP_CONFIG)
        (folder / "accounts").write_text("".join(a.baresip_line() + "\n" for a in accs))
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [BARESIP, "-f", str(folder)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        buf = b""
        wanted = {a.aor for a in accs}
        try:
            while set(results) < wanted:
                left = t0 + timeout - time.monotonic()
                if left <= 0:
                    break
                ready, _, _ = select.select([proc.stdout], [], [], left)
                if not ready:
                    break
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    line = _ANSI.sub("", raw.decode("utf-8", "replace")).strip()
                    m = _OK.match(line) or _FAIL.search(line)
                    if m and m["aor"] in wanted and m["aor"] not in results:
                        results[m["aor"]] = Registration(
                            m["aor"], int(m["code"]), _reason(m["reason"]), time.monotonic() - t0
                        )
        finally:
            _stop(proc)
    waited = time.monotonic() - t0
    return [results.get(a.aor) or Registration(a.aor, None, "", waited) for a in accs]


def _reason(text: str) -> str:
    # "OK (kamailio (5.6.3 ...)) [1 binding]" -> "OK"
    return text.split(" (", 1)[0].strip()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # baresip unregisters and exits
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(2)
    if proc.stdout is not None:
        with contextlib.suppress(OSError):
            proc.stdout.close()
