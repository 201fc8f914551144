"""Simulated IP phones and DECT bases that boot like the real ones.

A :class:`Phone` knows only its MAC and where the provisioning server is (DHCP option 66 in
real life). Booting it:

1. asks, like Yealink-derived firmware, for the names every unit of its model asks for
   (the model-wide ``y000000000000.cfg``, its firmware image, ``<mac12>-local.cfg``: none of
   them exists here, and none may count against the office's address), then fetches
   ``<mac12>.cfg``: the first time over TFTP (a minimal RRQ/ACK client) or plain HTTP, later
   over HTTP with the credentials its previous file installed (``[ autoprovision ] user`` /
   ``password``), as the firmware does;
2. parses the file in the device's own format (the Yealink-legacy INI of the Temporis
   phones and the IP2215 base: ``[ account ]`` sections with ``path=``), with a parser of
   its own, not the server's;
3. registers every enabled account with a real SIP user agent (baresip, :mod:`lab.sip`)
   as ``UserName@SIPServerHost``, digest user ``AuthName``, sent to the file's
   ``SIPServerHost:SIPServerPort`` unless the lab routes it elsewhere.

A DECT base's file holds one account per handset slot (``HandsetSlot``): each handset
registers as its own extension.

    python -m lab.phones 00:80:f0:20:00:01 --server 127.0.0.1 --tftp-port 1069
"""

from __future__ import annotations

import argparse
import hashlib
import re
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from provisioner_lab.sip import Registration, SipAccount, register_accounts

_SECTION = re.compile(r"^\s*\[\s*(?P<name>[^\]]+?)\s*\]\s*$")
_ACCOUNT_PATH = re.compile(r"sipAccount(\d+)\.cfg$")


class FetchFailed(RuntimeError):
    """The phone did not get its file (the server's answer or a timeout)."""


# ---------------------------------------------------------------------- the file


@dataclass(frozen=True)
class FileAccount:
    """One ``[ account ]`` section, as the phone reads it."""

    index: int  # N of path=/config/voip/sipAccountN.cfg
    slot: int  # DECT handset slot (HandsetSlot); 0 on a desk phone
    label: str
    user: str  # UserName
    auth_name: str  # AuthName
    password: str = field(repr=False)
    host: str = ""  # SIPServerHost
    port: int = 5060  # SIPServerPort
    enabled: bool = True


@dataclass(frozen=True)
class PhoneFile:
    accounts: list[FileAccount]
    prov_user: str = ""
    prov_password: str = field(default="", repr=False)
    server_address: str = ""


def parse_sections(text: str) -> list[tuple[str, dict[str, str]]]:
    """``[ name ]`` sections with ``key = value`` lines, in file order (sections repeat)."""
    sections: list[tuple[str, dict[str, str]]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        m = _SECTION.match(line)
        if m:
            sections.append((m["name"], {}))
            continue
        key, eq, value = line.partition("=")
        if not eq or not sections:
            raise ValueError(f"line {n}: not a key = value line in a section")
        sections[-1][1][key.strip()] = value.strip()
    return sections


def parse_phone_file(data: bytes) -> PhoneFile:
    """The accounts and provisioning credentials a Temporis phone / IP2215 base reads."""
    accounts = []
    prov: dict[str, str] = {}
    for name, keys in parse_sections(data.decode("utf-8")):
        if name == "account":
            m = _ACCOUNT_PATH.search(keys.get("path", ""))
            if m is None:
                raise ValueError("[ account ] without a sipAccountN.cfg path")
            accounts.append(
                FileAccount(
                    index=int(m[1]),
                    slot=int(keys.get("HandsetSlot", "0") or 0),
                    label=keys.get("Label", ""),
                    user=keys.get("UserName", ""),
                    auth_name=keys.get("AuthName", "") or keys.get("UserName", ""),
                    password=keys.get("password", ""),
                    host=keys.get("SIPServerHost", ""),
                    port=int(keys.get("SIPServerPort", "5060") or 5060),
                    enabled=keys.get("Enable", "1") == "1",
                )
            )
        elif name == "autoprovision":
            prov = keys
    return PhoneFile(
        accounts, prov.get("user", ""), prov.get("password", ""), prov.get("server_address", "")
    )


# ---------------------------------------------------------------------- fetching


def tftp_get(host: str, port: int, name: str, timeout: float = 3.0, retries: int = 3) -> bytes:
    """Read ``name`` over TFTP (RFC 1350, octet mode, 512-byte blocks)."""
    rrq = struct.pack("!H", 1) + name.encode() + b"\0octet\0"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(rrq, (host, port))
        last: bytes = rrq
        dest: tuple[str, int] = (host, port)
        peer: tuple[str, int] | None = None
        expected, out, tries = 1, bytearray(), 0
        while True:
            try:
                pkt, addr = s.recvfrom(4 + 65464)
            except TimeoutError:
                tries += 1
                if tries > retries:
                    raise FetchFailed(f"tftp {name}: no answer from {host}:{port}") from None
                s.sendto(last, dest)
                continue
            if peer is None:
                peer = dest = addr  # the server answers from its transfer port
            elif addr != peer:
                continue
            op = struct.unpack("!H", pkt[:2])[0]
            if op == 5:
                msg = pkt[4:].split(b"\0", 1)[0].decode("utf-8", "replace")
                code = struct.unpack("!H", pkt[2:4])[0]
                raise FetchFailed(f"tftp {name}: error {code} {msg}".rstrip())
            if op != 3:
                continue
            block = struct.unpack("!H", pkt[2:4])[0]
            last = struct.pack("!HH", 4, block)
            s.sendto(last, peer)
            if block == expected:
                out += pkt[4:]
                expected = (expected + 1) % 65536
                tries = 0
                if len(pkt) - 4 < 512:
                    return bytes(out)


def http_get(url: str, auth: tuple[str, str] | None = None, timeout: float = 5.0) -> bytes:
    try:
        r = httpx.get(url, auth=auth, timeout=timeout)
    except httpx.HTTPError as exc:
        raise FetchFailed(f"http {url}: {exc}") from None
    if r.status_code != 200:
        raise FetchFailed(f"http {url}: {r.status_code}")
    return r.content


# ---------------------------------------------------------------------- the phone


@dataclass(frozen=True)
class AccountResult:
    index: int
    slot: int
    label: str
    user: str
    status: int | None
    outcome: str  # "200 OK", "403 Forbidden", "no answer"
    seconds: float


@dataclass
class PhoneReport:
    device_id: str
    model: str
    mac: str
    fetched_via: str = ""  # tftp | http | http+auth; empty when the fetch failed
    sha256: str = ""
    error: str = ""
    fetch_seconds: float = 0.0
    accounts: list[AccountResult] = field(default_factory=list)
    seconds: float = 0.0  # the whole boot: fetch, parse, register

    @property
    def registered(self) -> bool:
        return bool(self.accounts) and all(a.status == 200 for a in self.accounts)


class Phone:
    """One device that pulls ``<mac12>.cfg``: a desk phone or a DECT base."""

    def __init__(
        self,
        mac: str,
        *,
        server: str = "127.0.0.1",
        tftp_port: int = 69,
        http_port: int = 80,
        device_id: str = "",
        model: str = "",
    ):
        self.mac = mac.lower()
        self.mac12 = re.sub(r"[^0-9a-f]", "", self.mac)
        self.server = server
        self.tftp_port = tftp_port
        self.http_port = http_port
        self.device_id = device_id or self.mac12
        self.model = model
        self.file: PhoneFile | None = None  # what the last fetch installed
        self.data: bytes = b""

    @property
    def filename(self) -> str:
        return f"{self.mac12}.cfg"

    def boot_names(self) -> list[str]:
        """What the firmware asks for at boot before its own file [I: Yealink-legacy habit]."""
        names = ["y000000000000.cfg"]
        facts = _facts(self.model)
        firmware = getattr(facts, "firmware", "")
        if firmware:
            names.append(firmware)
        names.append(f"{self.mac12}-local.cfg")
        return names

    def ask_generic(self, protocol: str = "tftp") -> list[str]:
        """Ask for :meth:`boot_names`; returns the ones the server had (usually none)."""
        got = []
        for name in self.boot_names():
            try:
                if protocol == "tftp":
                    tftp_get(self.server, self.tftp_port, name, timeout=1.0, retries=1)
                else:
                    http_get(f"http://{self.server}:{self.http_port}/{name}")
                got.append(name)
            except FetchFailed:
                continue
        return got

    def fetch(self, protocol: str = "tftp") -> str:
        """Fetch and install the file; returns how (tftp | http | http+auth).

        With credentials from a previous file the phone always uses HTTP with them.
        """
        url = f"http://{self.server}:{self.http_port}/{self.filename}"
        if self.file is not None and self.file.prov_user:
            data = http_get(url, (self.file.prov_user, self.file.prov_password))
            via = "http+auth"
        elif protocol == "tftp":
            data = tftp_get(self.server, self.tftp_port, self.filename)
            via = "tftp"
        else:
            data = http_get(url)
            via = "http"
        self.file = parse_phone_file(data)
        self.data = data
        return via

    def sip_accounts(self, registrar: str | None = None) -> list[tuple[FileAccount, SipAccount]]:
        """The enabled accounts as a UA registers them (``registrar``: HOST:PORT override)."""
        if self.file is None:
            return []
        return [
            (
                a,
                SipAccount(
                    a.user, a.host, a.password, registrar or f"{a.host}:{a.port}", a.auth_name
                ),
            )
            for a in self.file.accounts
            if a.enabled
        ]

    def register(self, registrar: str | None = None, timeout: float = 5.0) -> list[AccountResult]:
        """Register every account of the installed file, from one UA (as the device does)."""
        pairs = self.sip_accounts(registrar)
        regs: list[Registration] = register_accounts([s for _, s in pairs], timeout)
        return [
            AccountResult(a.index, a.slot, a.label, a.user, r.status, r.outcome, r.seconds)
            for (a, _), r in zip(pairs, regs, strict=True)
        ]

    def boot(
        self, protocol: str = "tftp", registrar: str | None = None, timeout: float = 5.0
    ) -> PhoneReport:
        """Fetch, parse, register; a failed fetch leaves the old file and registers nothing."""
        report = PhoneReport(self.device_id, self.model, self.mac)
        t0 = time.monotonic()
        try:
            self.ask_generic("http" if self.file is not None else protocol)
            report.fetched_via = self.fetch(protocol)
        except (FetchFailed, ValueError, UnicodeDecodeError) as exc:
            report.error = str(exc)
            report.seconds = report.fetch_seconds = time.monotonic() - t0
            return report
        report.fetch_seconds = time.monotonic() - t0
        report.sha256 = hashlib.sha256(self.data).hexdigest()
        report.accounts = self.register(registrar, timeout)
        report.seconds = time.monotonic() - t0
        return report


def _facts(model: str) -> Any:
    """The catalog's row of a model (firmware name, ...), or None for a model it lacks."""
    from provisioner.catalog import MODELS

    return MODELS.get(model)


# ---------------------------------------------------------------------- an order's phones


def order_phones(inv: Any, order_id: str, **kwargs: Any) -> list[Phone]:
    """A :class:`Phone` for every bound desk phone and DECT base of the order."""
    from provisioner.catalog import MODELS

    with inv.db.read() as session:
        order = inv.get(session, order_id)
        return [
            Phone(d.mac, device_id=d.device_id, model=d.model, **kwargs)
            for d in order.devices
            if d.mac and MODELS[d.model].kind in ("phone", "dect_base")
        ]


def boot_order(
    inv: Any,
    order_id: str,
    *,
    server: str = "127.0.0.1",
    tftp_port: int = 69,
    http_port: int = 80,
    registrar: str | None = None,
    protocol: str = "tftp",
    timeout: float = 5.0,
) -> list[PhoneReport]:
    """Boot every phone and DECT base of the order, one after the other."""
    phones = order_phones(inv, order_id, server=server, tftp_port=tftp_port, http_port=http_port)
    return [p.boot(protocol, registrar, timeout) for p in phones]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Boot one simulated phone: fetch, register.")
    ap.add_argument("mac")
    ap.add_argument("--server", default="127.0.0.1")
    ap.add_argument("--tftp-port", type=int, default=69)
    ap.add_argument("--http-port", type=int, default=80)
    ap.add_argument("--protocol", choices=("tftp", "http"), default="tftp")
    ap.add_argument("--registrar", help="HOST:PORT (default: the file's SIPServerHost:Port)")
    args = ap.parse_args(argv)
    phone = Phone(args.mac, server=args.server, tftp_port=args.tftp_port,
                  http_port=args.http_port)  # fmt: skip
    r = phone.boot(args.protocol, args.registrar)
    print(f"{phone.filename}: {r.fetched_via or 'not fetched: ' + r.error} {r.sha256[:12]}")
    for a in r.accounts:
        print(f"  account {a.index} slot {a.slot} {a.user}: {a.outcome} ({a.seconds:.3f} s)")
    print(f"  {r.seconds:.3f} s")
    return 0 if r.registered else 1


if __name__ == "__main__":
    sys.exit(main())
