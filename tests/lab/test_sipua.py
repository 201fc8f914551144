"""The lab's asyncio SIP user agent against a real Kamailio on loopback.

What a storm (and the resync tests) rely on: a device registers every account with the
password its file gave it, a wrong password ends in a failure rather than a hang, many
devices share one process each on its own address, and a check-sync NOTIFY is obeyed only
when it comes from the registrar.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from provisioner.render.pbx import Subscriber, write_kamailio
from provisioner_lab.sip import Kamailio, SipAccount, missing_tools
from provisioner_lab.sipua import SipMessage, UserAgent, parse_message

DOMAIN = "sip.test"
USERS = {f"+3906{n:07d}": f"pw:{n};x y" for n in range(12)}


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kamailio]:
    if "kamailio" in missing_tools():
        pytest.skip("kamailio is not installed (apt-get install kamailio)")
    tmp = tmp_path_factory.mktemp("kam")
    db = tmp / "db"
    subs = [Subscriber("T", n, u, u, DOMAIN, p) for n, (u, p) in enumerate(USERS.items())]
    write_kamailio(subs, db)
    with Kamailio(db, workdir=tmp) as kam:
        yield kam


def _acc(kam: Kamailio, user: str, password: str | None = None) -> SipAccount:
    return SipAccount(user, DOMAIN, USERS[user] if password is None else password, kam.address)


def test_a_device_registers_each_of_its_accounts_with_the_right_password(
    kamailio: Kamailio,
) -> None:
    users = list(USERS)[:3]  # a DECT base with three handsets: one UA, three accounts

    async def go() -> list[tuple[int | None, int]]:
        async with UserAgent([_acc(kamailio, u) for u in users]) as ua:
            results = await ua.register(deadline=10)
            gone = await ua.unregister()
            assert [r.status for r in gone] == [200, 200, 200]
            return [(r.status, r.transactions) for r in results]

    # each account: the 401 challenge, then the answered REGISTER
    assert asyncio.run(go()) == [(200, 2), (200, 2), (200, 2)]


def test_a_wrong_password_fails_quickly_instead_of_retrying_forever(kamailio: Kamailio) -> None:
    user = list(USERS)[3]

    async def go() -> tuple[int | None, float]:
        async with UserAgent([_acc(kamailio, user, "not-the-password")]) as ua:
            [r] = await ua.register(deadline=20)
            return r.status, r.seconds

    status, seconds = asyncio.run(go())
    assert status in (401, 403)
    assert seconds < 2


def test_many_devices_in_one_process_each_register_from_their_own_address(
    kamailio: Kamailio,
) -> None:
    users = list(USERS)[4:12]

    async def go() -> list[tuple[str, int | None]]:
        agents = [
            UserAgent([_acc(kamailio, u)], local_addr=(f"127.0.1.{i + 1}", 0))
            for i, u in enumerate(users)
        ]
        try:
            results = await asyncio.gather(*(ua.register(deadline=10) for ua in agents))
            return [(ua.local_addr[0], r[0].status) for ua, r in zip(agents, results, strict=True)]
        finally:
            await asyncio.gather(*(ua.close() for ua in agents))

    got = asyncio.run(go())
    assert got == [(f"127.0.1.{i + 1}", 200) for i in range(len(users))]


def test_no_registrar_means_retransmissions_then_no_answer_by_the_deadline() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]

        async def go() -> tuple[int | None, int, int]:
            acc = SipAccount("u", DOMAIN, "p", f"127.0.0.1:{port}")
            async with UserAgent([acc], t1=0.05, retry_base=0.1) as ua:
                [r] = await ua.register(deadline=2.0)
                return r.status, r.requests, r.transactions

        status, requests, transactions = asyncio.run(go())
    assert status is None
    assert requests >= 6  # timer A: 0.05, 0.1, 0.2, ... within each transaction
    assert transactions >= 1


def _notify(sender: socket.socket, ua_addr: tuple[str, int]) -> SipMessage:
    here = sender.getsockname()
    req = (
        f"NOTIFY sip:dev@{ua_addr[0]}:{ua_addr[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {here[0]}:{here[1]};branch=z9hG4bKtest{here[1]}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:pbx@sip.test>;tag=a\r\nTo: <sip:dev@sip.test>\r\n"
        "Call-ID: notify-1\r\nCSeq: 1 NOTIFY\r\nEvent: check-sync;reboot=false\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    sender.sendto(req.encode(), ua_addr)
    return parse_message(sender.recv(4096))


def test_check_sync_is_obeyed_from_the_registrar_only(kamailio: Kamailio) -> None:
    user = next(iter(USERS))

    async def go() -> tuple[int, int, int, list[str]]:
        called: list[str] = []

        async def on_check_sync(ua: UserAgent, req: SipMessage) -> None:
            called.append(req.header("event"))

        async with UserAgent([_acc(kamailio, user)], on_check_sync=on_check_sync) as ua:
            [r] = await ua.register(deadline=10)
            assert r.ok
            addr = ua.local_addr
            loop = asyncio.get_running_loop()

            def exchange(bind: str) -> int:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind((bind, 0))
                    s.settimeout(2)
                    return _notify(s, addr).status

            foreign = await loop.run_in_executor(None, exchange, "127.0.0.2")
            # the registrar's address (a socket beside Kamailio's on its IP)
            trusted = await loop.run_in_executor(None, exchange, kamailio.host)

            def options() -> int:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.settimeout(2)
                    s.sendto(
                        b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:1;branch=z9hG4bKo\r\n"
                        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: o\r\n"
                        b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                        addr,
                    )
                    return parse_message(s.recv(4096)).status

            opt = await loop.run_in_executor(None, options)
            await asyncio.sleep(0.05)
            return foreign, trusted, opt, called

    foreign, trusted, opt, called = asyncio.run(go())
    assert (foreign, trusted, opt) == (403, 200, 200)
    assert called == ["check-sync;reboot=false"]
