"""SIP ``NOTIFY`` with ``Event: check-sync``, sent through the registrar (pure parts apart
from the one UDP exchange).

The registrar relays the request to the contact the device registered (``lookup`` of its
location table) and relays the device's answer back. A device that answers 200 has taken
the request and re-fetches its files; the registrar answers 404 (or 480) itself when the
user has no registered contact.

The client transaction is RFC 3261's non-INVITE one over UDP (§17.1.2): the request is
retransmitted at T1 = 0.5 s, doubling up to T2 = 4 s, until a final answer; a provisional
answer (1xx) stops nothing but keeps the retransmissions at T2. Timer F is our ``deadline``
(default 2 s, not 32 s): a resync that needs longer is reported as a timeout rather than
hold a command or a worker.
"""

from __future__ import annotations

import enum
import errno
import os
import select
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

T1 = 0.5
T2 = 4.0
EVENT = "check-sync"
USER_AGENT = "provisioner-resync"


class Outcome(enum.StrEnum):
    """What became of one check-sync."""

    delivered = "delivered"  # the device answered 2xx
    not_registered = "not-registered"  # the registrar has no contact for it (404, 480)
    refused = "refused"  # another final answer (403: not from a trusted source, 405, 5xx)
    timeout = "timeout"  # no final answer by the deadline
    failed = "failed"  # could not be sent (the registrar's name does not resolve, ...)


@dataclass(frozen=True)
class Answer:
    """The final answer to one NOTIFY (status None: none came)."""

    user: str
    outcome: Outcome
    status: int | None = None
    reason: str = ""
    seconds: float = 0.0

    @property
    def text(self) -> str:
        """``delivered (200 OK)``, ``not-registered (404 Not Found)``, ``timeout``."""
        said = f"{self.status} {self.reason}".strip() if self.status else self.reason
        return f"{self.outcome} ({said})" if said else str(self.outcome)


def outcome_of(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.delivered
    if status in (404, 480):
        return Outcome.not_registered
    return Outcome.refused


def _token() -> str:
    return os.urandom(8).hex()


def build_notify(
    user: str,
    registrar: str,
    local: tuple[str, int],
    *,
    branch: str,
    call_id: str,
    tag: str,
    cseq: int = 1,
) -> bytes:
    """The request: ``NOTIFY sip:<user>@<registrar>`` carrying ``Event: check-sync`` and no
    body. ``local`` is where answers come back (Via, with ``rport``)."""
    host, port = local
    uri = f"sip:{user}@{registrar}"
    lines = [
        f"NOTIFY {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};rport;branch={branch}",
        "Max-Forwards: 70",
        f"From: <sip:provisioner@{host}>;tag={tag}",
        f"To: <{uri}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} NOTIFY",
        f"Event: {EVENT}",
        "Subscription-State: terminated",
        f"User-Agent: {USER_AGENT}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    branch: str
    method: str  # of CSeq


def parse_response(data: bytes) -> Response | None:
    """A SIP response's status, reason, top Via branch and CSeq method; None for anything
    else (a request, garbage)."""
    text = data.decode("utf-8", "replace")
    head, _, _ = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    first = lines[0].split(" ", 2)
    if len(first) < 2 or first[0] != "SIP/2.0" or not first[1].isdigit():
        return None
    branch = method = ""
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            continue
        key = name.strip().lower()
        if key in ("via", "v") and not branch:
            for param in value.split(";")[1:]:
                k, _, v = param.strip().partition("=")
                if k.lower() == "branch":
                    branch = v.split(",")[0].strip()
        elif key == "cseq":
            method = value.split()[-1].upper() if value.split() else ""
    return Response(int(first[1]), first[2].strip() if len(first) > 2 else "", branch, method)


def _fail(
    pending: dict[str, int], answers: dict[int, Answer], users: Sequence[str], why: str, at: float
) -> None:
    """End every pending transaction as failed (a transport error is the registrar's)."""
    for i in pending.values():
        answers[i] = Answer(users[i], Outcome.failed, reason=why, seconds=at)
    pending.clear()


def send_check_sync(
    users: Sequence[str],
    registrar: str,
    port: int,
    *,
    deadline: float = 2.0,
    source: str = "",
) -> list[Answer]:
    """One NOTIFY check-sync per user, all at once from one UDP socket, to the registrar
    ``registrar:port`` (from the address ``source`` when given: the one the registrar
    trusts); the answers in the order of ``users``."""
    if not users:
        return []
    t0 = time.monotonic()
    try:
        family, _, _, _, address = socket.getaddrinfo(registrar, port, type=socket.SOCK_DGRAM)[0]
    except (OSError, UnicodeError) as exc:
        why = f"registrar {registrar}:{port}: {exc.strerror if isinstance(exc, OSError) else exc}"
        return [Answer(u, Outcome.failed, reason=why) for u in users]
    answers: dict[int, Answer] = {}
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            if source:
                sock.bind((source, 0))
            sock.connect(address)  # answers come from the registrar only
        except OSError as exc:
            why = f"registrar {registrar}:{port}: {exc.strerror}"
            return [Answer(u, Outcome.failed, reason=why) for u in users]
        local = sock.getsockname()[:2]
        via_host = f"[{local[0]}]" if ":" in local[0] else local[0]
        pending: dict[str, int] = {}  # branch -> index in users
        messages: list[bytes] = []
        for i, user in enumerate(users):
            branch = f"z9hG4bK{_token()}"
            msg = build_notify(user, registrar, (via_host, local[1]), branch=branch,
                               call_id=f"{_token()}@{via_host}", tag=_token())  # fmt: skip
            messages.append(msg)
            pending[branch] = i
        interval = dict.fromkeys(range(len(users)), T1)
        next_send = dict.fromkeys(range(len(users)), t0)
        end = t0 + deadline
        while pending:
            now = time.monotonic()
            if now >= end:
                break
            for i in list(pending.values()):
                if next_send[i] <= now:
                    try:
                        sock.send(messages[i])
                    except OSError as exc:  # the ICMP error of an earlier send, or no route
                        _fail(pending, answers, users, f"registrar {registrar}:{port}: "
                              f"{exc.strerror}", now - t0)  # fmt: skip
                        break
                    next_send[i] = now + interval[i]
                    interval[i] = min(interval[i] * 2, T2)
            if not pending:
                break
            wake = min([end, *(next_send[i] for i in pending.values())])
            ready, _, _ = select.select([sock], [], [], max(0.0, wake - time.monotonic()))
            if not ready:
                continue
            try:
                data = sock.recv(65535)
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED:  # ICMP port unreachable: a transport
                    _fail(pending, answers, users,  # error ends the transactions (§17.1.4)
                          f"registrar {registrar}:{port}: nothing listens there",
                          time.monotonic() - t0)  # fmt: skip
                continue
            resp = parse_response(data)
            if resp is None or resp.method != "NOTIFY" or resp.branch not in pending:
                continue
            i = pending[resp.branch]
            if resp.status < 200:
                interval[i] = T2  # the far end has it: retransmit only at T2
                next_send[i] = time.monotonic() + T2
                continue
            del pending[resp.branch]
            answers[i] = Answer(users[i], outcome_of(resp.status), resp.status, resp.reason,
                                time.monotonic() - t0)  # fmt: skip
    waited = time.monotonic() - t0
    late = f"no answer in {deadline:g} s"
    return [
        answers.get(i) or Answer(u, Outcome.timeout, reason=late, seconds=waited)
        for i, u in enumerate(users)
    ]
