"""The lab network: network namespaces joined by a bridge, for DHCP and boot storms.

``provisioner lab net up`` builds, for a name ``P`` (default ``plab``)::

    P-svc  (services)            P-sw (the bridges)             P-dev (devices)
    svc0 10.66.0.1/16 ---veth--- to-svc0 [br0] to-dev0 ---veth--- dev0 10.66.0.2/16
    route 10.66.128.0/17                                       promisc; AnyIP:
      via 10.66.0.2                                            route local 10.66.128.0/17 dev lo
    svc1 10.67.0.1/16 ---veth--- to-svc1 [br1] to-dev1 ---veth--- dev1 10.67.0.2/16
    ...                  (``segments``: one broadcast domain per area, 1 by default)

Nothing is added to the machine's own namespace: the bridge lives in a namespace of its own,
so no frame can leave the three. The devices' namespace holds every address of the DHCP pool
at once (the "AnyIP" local route), so each simulated device binds its sockets to the address
DHCP leased it without an ``ip addr add`` per device; the services reach the pool through
``dev0`` as a gateway, so their neighbour table holds one entry, not one per device (the
kernel's ARP table is global and stops at ``gc_thresh3``, 1024 by default).

Processes are started inside a namespace by :func:`inside` (``setns`` on this thread; a child
inherits it), so their readiness probes run there too. ``down`` ends the processes still in
the namespaces (the lab's own: ``ip netns pids``) and deletes the namespaces, which deletes
the veths and the bridge.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"


class LabNetError(RuntimeError):
    """The lab network cannot be built here (not root, a tool missing, netns refused)."""


@dataclass(frozen=True)
class Segment:
    """One broadcast domain (an area of the city): its bridge, links and addresses."""

    index: int
    network: str  # 10.(66+k).0.0/16
    services_ip: str  # .0.1 on svc<k>: the DHCP server of the area
    devices_gw: str  # .0.2 on dev<k>
    pool: str  # .128.0/17: the devices' addresses (32,766)

    @property
    def svc_if(self) -> str:
        return f"svc{self.index}"

    @property
    def dev_if(self) -> str:
        return f"dev{self.index}"

    @property
    def bridge(self) -> str:
        return f"br{self.index}"

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.network).prefixlen

    def pool_range(self) -> tuple[str, str]:
        net = ipaddress.ip_network(self.pool)
        return str(net.network_address + 1), str(net.broadcast_address - 1)


@dataclass(frozen=True)
class LabNet:
    """Names and addresses of one lab network of ``segments`` broadcast domains.

    Segment 0 holds the services' address (``services_ip``: the provisioning server and
    the registrar files name); segment k has its own bridge, DHCP server address and pool
    (10.(66+k).128.0/17). Unicast traffic of every segment's devices goes over segment 0's
    link (the devices' namespace routes 10.66.0.0/16 there; the services route every pool
    back through 10.66.0.2), so only DHCP broadcasts are split by area.
    """

    name: str = "plab"
    segments: int = 1

    def segment(self, k: int) -> Segment:
        b = 66 + k
        return Segment(k, f"10.{b}.0.0/16", f"10.{b}.0.1", f"10.{b}.0.2", f"10.{b}.128.0/17")

    @property
    def all_segments(self) -> list[Segment]:
        return [self.segment(k) for k in range(self.segments)]

    @property
    def services_ip(self) -> str:
        return self.segment(0).services_ip

    @property
    def pool(self) -> str:
        return ", ".join(s.pool for s in self.all_segments)

    @property
    def svc(self) -> str:
        return f"{self.name}-svc"

    @property
    def dev(self) -> str:
        return f"{self.name}-dev"

    @property
    def sw(self) -> str:
        return f"{self.name}-sw"

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return (self.svc, self.dev, self.sw)

    # ------------------------------------------------------------------ state

    def existing(self) -> list[str]:
        """Which of this lab's namespaces exist now."""
        return [ns for ns in self.namespaces if Path(NETNS_DIR, ns).exists()]

    def is_up(self) -> bool:
        return len(self.existing()) == len(self.namespaces)

    # ------------------------------------------------------------------ up / down

    def up(self) -> bool:
        """Build the namespaces, veths and bridges; False (nothing done) when already up."""
        require_netns()
        if not 1 <= self.segments <= 32:
            raise LabNetError(f"segments: 1 to 32, not {self.segments}")
        if self.is_up():
            return False
        if self.existing():
            self.down()  # half-built (an interrupted up): start again
        gw0 = self.segment(0).devices_gw
        try:
            for ns in self.namespaces:
                _ip("netns", "add", ns)
            for ns in self.namespaces:
                _ip("-n", ns, "link", "set", "lo", "up")
            for seg in self.all_segments:
                br = seg.bridge
                _ip("-n", self.sw, "link", "add", br, "type", "bridge")
                # no STP, no forwarding delay: the devices talk the moment the link is up
                _ip("-n", self.sw, "link", "set", br, "type", "bridge", "stp_state", "0",
                    "forward_delay", "0")  # fmt: skip
                _ip("-n", self.sw, "link", "set", br, "up")
                for end, ns in ((seg.svc_if, self.svc), (seg.dev_if, self.dev)):
                    peer = f"to-{end}"
                    _ip("-n", ns, "link", "add", end, "type", "veth", "peer", "name", peer,
                        "netns", self.sw)  # fmt: skip
                    _ip("-n", self.sw, "link", "set", peer, "master", br, "up")
                p = str(seg.prefixlen)
                _ip("-n", self.svc, "addr", "add", f"{seg.services_ip}/{p}", "dev", seg.svc_if)
                _ip("-n", self.svc, "link", "set", seg.svc_if, "up")
                _ip("-n", self.dev, "addr", "add", f"{seg.devices_gw}/{p}", "dev", seg.dev_if)
                _ip("-n", self.dev, "link", "set", seg.dev_if, "up", "promisc", "on")
                _ip("-n", self.dev, "route", "add", "local", seg.pool, "dev", "lo")
                _ip("-n", self.svc, "route", "add", seg.pool, "via", gw0, "dev", "svc0")
        except LabNetError:
            self.down()
            raise
        return True

    def down(self) -> list[str]:
        """End the processes left in the namespaces, delete them; returns what was removed."""
        removed = []
        for ns in self.existing():
            for pid in netns_pids(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while netns_pids(ns) and time.monotonic() < deadline:
                time.sleep(0.05)
            for pid in netns_pids(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
            removed.append(ns)
        return removed


def netns_pids(ns: str) -> list[int]:
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
    return [int(x) for x in r.stdout.split() if x.isdigit() and int(x) != os.getpid()]


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise LabNetError(f"ip {' '.join(args)}: {r.stderr.strip() or r.returncode}")


def require_netns() -> None:
    """Raise :class:`LabNetError` saying why network namespaces cannot be used here."""
    if os.geteuid() != 0:
        raise LabNetError("the lab network needs root (network namespaces, raw sockets)")
    if shutil.which("ip") is None:
        raise LabNetError("the lab network needs iproute2's ip (apt-get install iproute2)")


def probe_netns() -> str | None:
    """None when a namespace can be created here, else why not (for tests to skip on)."""
    try:
        require_netns()
    except LabNetError as exc:
        return str(exc)
    name = f"plab-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return None


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise LabNetError(f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the block (this thread) in network namespace ``ns``: sockets opened and processes
    started in it belong there; back to the original namespace after."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"{NETNS_DIR}/{ns}", os.O_RDONLY)
    except FileNotFoundError:
        os.close(own)
        raise LabNetError(
            f"network namespace {ns} does not exist (provisioner lab net up)"
        ) from None
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)
