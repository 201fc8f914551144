"""TFTP packets (RFC 1350, options RFC 2347-2349, windowsize RFC 7440): parse requests and
build answers. Pure functions over bytes: nothing here touches a socket or raises on junk."""

from __future__ import annotations

from dataclasses import dataclass

RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6
MIN_BLKSIZE, MAX_BLKSIZE = 8, 65464  # RFC 2348
MAX_OPTION_TIMEOUT = 30  # RFC 2349 allows 255 s; longer would let one RRQ hold a slot minutes
MAX_WINDOWSIZE = 64  # RFC 7440 allows 65535; a window past 64 blocks gains nothing on a LAN
_MAX_DISPLAY = 200

ERR_NOT_FOUND = b"\x00\x05\x00\x01File not found\x00"
"""The one answer for every unknown, refused or undecodable name."""
ERR_ACCESS = b"\x00\x05\x00\x02Access violation\x00"
ERR_BUSY = b"\x00\x05\x00\x00busy\x00"
ERR_UNKNOWN_TID = b"\x00\x05\x00\x05Unknown transfer ID\x00"


@dataclass(frozen=True)
class Request:
    opcode: int
    name: bytes
    mode: bytes
    options: dict[str, str]


@dataclass(frozen=True)
class Terms:
    """What a transfer was negotiated to: the OACK's options (empty: no OACK, plain RFC 1350
    lock-step from block 1), block size, retransmission timeout, blocks per window."""

    oack: dict[str, str]
    blksize: int = 512
    timeout: float = 2.0
    windowsize: int = 1


def parse_request(buf: bytes) -> Request | None:
    """Parse an RRQ/WRQ; ``None`` for anything else or anything malformed. Never raises."""
    if len(buf) < 4:
        return None
    opcode = int.from_bytes(buf[:2], "big")
    if opcode not in (RRQ, WRQ) or not buf.endswith(b"\0"):
        return None
    fields = buf[2:-1].split(b"\0")
    if len(fields) < 2:
        return None
    name, mode, *rest = fields
    options: dict[str, str] = {}
    # A trailing option name without a value is ignored, like tftpd-hpa does.
    for raw_key, raw_value in zip(rest[0::2], rest[1::2], strict=False):
        try:
            key, value = raw_key.decode("ascii").lower(), raw_value.decode("ascii")
        except UnicodeDecodeError:
            continue
        options.setdefault(key, value)  # the first of duplicated options wins
    return Request(opcode, name, mode.lower(), options)


def negotiate(requested: dict[str, str], size: int, default_timeout: float) -> Terms:
    """The terms of a transfer of ``size`` bytes. Only options the client asked for and that
    are valid are answered (RFC 2347); bad values are left out of the OACK."""
    accepted: dict[str, str] = {}
    blksize, timeout, windowsize = 512, default_timeout, 1
    wanted = as_int(requested.get("blksize"))
    if wanted is not None and wanted >= MIN_BLKSIZE:
        blksize = min(wanted, MAX_BLKSIZE)  # larger asks are answered with the maximum
        accepted["blksize"] = str(blksize)
    # tsize 0 is left out: curl rejects "tsize 0" in an OACK and aborts, and an empty file
    # needs no size announcement.
    if as_int(requested.get("tsize")) is not None and size > 0:
        accepted["tsize"] = str(size)
    wanted = as_int(requested.get("timeout"))
    if wanted is not None and 1 <= wanted <= MAX_OPTION_TIMEOUT:
        timeout = float(wanted)
        accepted["timeout"] = str(wanted)
    wanted = as_int(requested.get("windowsize"))
    if wanted is not None and wanted >= 1:
        windowsize = min(wanted, MAX_WINDOWSIZE)
        accepted["windowsize"] = str(windowsize)
    return Terms(accepted, blksize, timeout, windowsize)


def as_int(value: str | None) -> int | None:
    # Length-bounded: int() of a 5,000-digit string raises ValueError in Python 3.11+.
    if value is None or not (0 < len(value) <= 20 and value.isascii() and value.isdigit()):
        return None
    return int(value)


def oack(options: dict[str, str]) -> bytes:
    body = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in options.items())
    return b"\x00\x06" + body


def data(block: int, payload: bytes | memoryview) -> bytes:
    """A DATA packet; ``block`` is taken modulo 65536 (block numbers roll over)."""
    return b"\x00\x03" + (block & 0xFFFF).to_bytes(2, "big") + payload


def ack_of(buf: bytes) -> int | None:
    """The block number of an ACK packet, or None for anything else."""
    if len(buf) >= 4 and buf[0] == 0 and buf[1] == ACK:
        return int.from_bytes(buf[2:4], "big")
    return None


def is_error(buf: bytes) -> bool:
    return len(buf) >= 4 and buf[0] == 0 and buf[1] == ERROR


def to_netascii(payload: bytes) -> bytes:
    """RFC 1350/764 netascii: CR becomes CR NUL, LF becomes CR LF."""
    return payload.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


def display(name: bytes) -> str:
    """A file name safe for logs and events: escaped, at most 200 characters."""
    try:
        text = repr(name.decode("utf-8"))[1:-1]
    except UnicodeDecodeError:
        text = repr(name)[2:-1]
    return text[:_MAX_DISPLAY]
