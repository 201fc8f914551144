"""The NOTIFY check-sync client transaction: the request a registrar relays, its
retransmission over UDP, and the outcome each final answer means."""

from __future__ import annotations

import time
from typing import Any

from fakeregistrar import answer, header

from provisioner.voice.notify import (
    T1,
    Outcome,
    build_notify,
    parse_response,
    send_check_sync,
)


def test_the_request_is_a_notify_check_sync_to_the_user_at_the_registrar() -> None:
    msg = build_notify("+390957001102", "sip.example", ("10.1.2.3", 5070), branch="z9hG4bKab",
                       call_id="c1@10.1.2.3", tag="t1")  # fmt: skip
    first, *_ = msg.decode().split("\r\n")
    assert first == "NOTIFY sip:+390957001102@sip.example SIP/2.0"
    assert msg.endswith(b"Content-Length: 0\r\n\r\n")
    assert header(msg, "Event") == "check-sync"
    assert header(msg, "Via") == "SIP/2.0/UDP 10.1.2.3:5070;rport;branch=z9hG4bKab"
    assert header(msg, "To") == "<sip:+390957001102@sip.example>"
    assert header(msg, "CSeq") == "1 NOTIFY"
    assert header(msg, "Max-Forwards") == "70"
    assert ";tag=t1" in header(msg, "From")
    assert header(msg, "Call-ID") == "c1@10.1.2.3"


def test_a_response_is_read_for_status_branch_and_method_and_anything_else_is_ignored() -> None:
    req = build_notify("u", "r", ("127.0.0.1", 1), branch="z9hG4bKx", call_id="c", tag="t")
    got = parse_response(answer(req, "480 Temporarily Unavailable"))
    assert got is not None
    assert (got.status, got.reason, got.branch, got.method) == (
        480, "Temporarily Unavailable", "z9hG4bKx", "NOTIFY")  # fmt: skip
    assert parse_response(req) is None  # a request, not a response
    assert parse_response(b"\x00garbage") is None


def test_each_user_gets_one_notify_and_its_own_outcome(registrar: Any) -> None:
    codes = {"100": "200 OK", "101": "404 Not Found", "102": "480 Temporarily Unavailable",
             "103": "403 Forbidden"}  # fmt: skip

    def policy(n: int, msg: bytes) -> list[str]:
        user = msg.split(b" ")[1].decode().removeprefix("sip:").split("@")[0]
        return [codes[user]]

    fake = registrar(policy)
    answers = send_check_sync(list(codes), "127.0.0.1", fake.port, deadline=2)
    assert [(a.user, a.outcome, a.status) for a in answers] == [
        ("100", Outcome.delivered, 200),
        ("101", Outcome.not_registered, 404),
        ("102", Outcome.not_registered, 480),
        ("103", Outcome.refused, 403),
    ]
    assert answers[0].text == "delivered (200 OK)"
    assert sorted(fake.users()) == sorted(codes)
    assert len(fake.got) == 4  # answered at once: no retransmission


def test_a_lost_request_is_sent_again_after_t1_and_a_provisional_answer_keeps_waiting(
    registrar: Any,
) -> None:
    # The first copy is "lost"; the second gets 100 Trying, then 200 from the device.
    fake = registrar(lambda n, _m: [] if n == 1 else ["100 Trying", "200 OK"])
    t0 = time.monotonic()
    (got,) = send_check_sync(["200"], "127.0.0.1", fake.port, deadline=3)
    assert got.outcome == Outcome.delivered
    assert T1 * 0.9 <= got.seconds < T1 * 2
    assert len(fake.got) == 2
    assert time.monotonic() - t0 < 2


def test_no_answer_is_a_timeout_at_the_deadline_after_retransmissions(registrar: Any) -> None:
    fake = registrar(lambda _n, _m: [])
    t0 = time.monotonic()
    (got,) = send_check_sync(["200"], "127.0.0.1", fake.port, deadline=1.6)
    took = time.monotonic() - t0
    assert got.outcome == Outcome.timeout and got.status is None
    assert 1.5 <= took < 2.5
    assert len(fake.got) == 3  # at 0, 0.5 and 1.5 s (T1, then 2 * T1)


def test_a_source_address_not_of_this_host_fails_without_sending(registrar: Any) -> None:
    fake = registrar(lambda _n, _m: ["200 OK"])
    t0 = time.monotonic()
    (got,) = send_check_sync(["200"], "127.0.0.1", fake.port, deadline=5, source="192.0.2.1")
    assert got.outcome == Outcome.failed and "127.0.0.1" in got.reason
    assert time.monotonic() - t0 < 1
    assert fake.got == []


def test_the_source_address_is_the_one_set(registrar: Any) -> None:
    fake = registrar(lambda _n, _m: ["200 OK"])
    (got,) = send_check_sync(["200"], "127.0.0.1", fake.port, source="127.0.0.2")
    assert got.outcome == Outcome.delivered
    assert fake.got[0][0] == "127.0.0.2"


def test_a_registrar_port_where_nothing_listens_fails_every_notify_at_once() -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: ICMP port unreachable
    t0 = time.monotonic()
    answers = send_check_sync(["200", "201", "202"], "127.0.0.1", port, deadline=3)
    assert [a.outcome for a in answers] == [Outcome.failed] * 3
    assert all("nothing listens there" in a.reason or "refused" in a.reason for a in answers)
    assert time.monotonic() - t0 < 1
