"""The suite's own guard (``tests/loopback.py``): nothing leaves loopback from the test process."""

from __future__ import annotations

import errno
import os
import socket

import loopback
import pytest


@pytest.mark.parametrize(
    "family,kind,address",
    [
        (socket.AF_INET, socket.SOCK_STREAM, ("192.0.2.1", 22)),
        (socket.AF_INET, socket.SOCK_DGRAM, ("192.168.1.254", 161)),
        (socket.AF_INET6, socket.SOCK_DGRAM, ("2001:db8::1", 161)),
    ],
    ids=["tcp", "udp", "udp6"],
)
def test_a_destination_off_loopback_is_refused_and_recorded(
    family: int, kind: int, address: tuple[str, int]
) -> None:
    before = len(loopback.attempts)
    with socket.socket(family, kind) as s, pytest.raises(OSError) as raised:
        if kind == socket.SOCK_STREAM:
            s.connect(address)
        else:
            s.sendto(b"x", address)
    assert raised.value.errno == errno.ENETUNREACH
    assert len(loopback.attempts) == before + 1
    del loopback.attempts[before:]  # this test's own attempt is not a leak


def test_loopback_still_works() -> None:
    """The guard lets loopback through untouched: bytes arrive, nothing is recorded."""
    before = len(loopback.attempts)
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.connect(server.getsockname())
        peer, _ = server.accept()
        with peer:
            client.sendall(b"tcp")
            assert peer.recv(3) == b"tcp"
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        tx.sendto(b"udp", rx.getsockname())
        assert rx.recv(3) == b"udp"
    assert len(loopback.attempts) == before


def test_inside_a_lab_namespace_its_own_addresses_are_reachable() -> None:
    """The lab network's namespaces (lab/labnet.py) have no route out: a thread inside one
    may send to their addresses; back outside, the same address is refused again."""
    from provisioner_lab.labnet import LabNet, inside, probe_netns

    why = probe_netns()
    if why:
        pytest.skip(f"no network namespaces here: {why}")
    net = LabNet(name=f"pguard{os.getpid()}")
    net.up()
    try:
        before = len(loopback.attempts)
        with inside(net.svc):
            rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rx.bind((net.services_ip, 0))
            rx.settimeout(5)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                tx.sendto(b"lab", rx.getsockname())
            assert rx.recv(3) == b"lab"
        assert len(loopback.attempts) == before
        with rx, pytest.raises(OSError):
            rx.sendto(b"x", (net.services_ip, 9))
        del loopback.attempts[before:]
    finally:
        net.down()
