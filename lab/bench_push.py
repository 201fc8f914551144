"""Push throughput: N lab switches, each pushed R times with a config change in between.

Not a test. A throwaway store (temporary PROVISIONER_HOME) gets ``--sims`` extra switches
(DGS-1100-08P rows with their own SNMP community) on the sample order WT-2026-000104; each
gets a :class:`lab.switch_sim.SwitchSim` (one snmpsim process each). Every round pushes
every switch a set-plan whose sysName/sysLocation differ from the last round, so every push
reads, backs up, diffs, writes, verifies and saves. The job function is the real one
(:func:`provisioner.push.job.push_config` in a pool like :func:`push_many`'s; results and
backups stored, audited).

Printed per concurrency: pushes, wall time, devices per second, and the ratio to the ideal
``per-device time x N / concurrency`` (per-device time measured alone, one at a time).

    .venv/bin/python -m lab.bench_push --sims 50 --rounds 4 --concurrency 20 50

Measured (2 cores, 2026-11-22; 200 snmpsim processes were not tried: 50 took 82 s to
start, so 50 sims x 4 rounds stand in for 200 switches): one push alone 0.73 s (median);
concurrency 20: 200 pushes in 131 s = 1.5 devices/s, 17.9x the ideal 7.3 s; concurrency 50:
118 s = 1.7 devices/s, 40.6x the ideal 2.9 s. No push failed. The runs are CPU-bound, not
I/O-bound: a push costs ~0.34 s of CPU in this process (GIL-bound, one core at most) plus
~0.11 s in the agent, and 0.19 s of the 0.34 s is the SNMP driver's ``open()`` building a
new pysnmp engine per device; the ideal assumes waiting on the network only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ORDER = "WT-2026-000104"


def _setup(home: Path, sims: int) -> tuple[Any, list[Any], list[str]]:
    os.environ["PROVISIONER_HOME"] = str(home)
    from sqlalchemy import select

    from provisioner.documents.validate import check_paths
    from provisioner.orders.service import OrdersService
    from provisioner.render.engine import DeviceKey
    from provisioner.settings import load_settings
    from provisioner.store.models import Device, Order, SecretRow

    settings = load_settings({"PROVISIONER_HOME": str(home)})
    inv = OrdersService(settings)
    for checked in check_paths([ROOT / "inventory" / "orders" / f"{ORDER}.yaml"]):
        assert checked.document is not None
        inv.apply(checked.document, source=checked.file, actor="bench")
    keys, communities = [], []
    with inv.db.write() as session:
        order = session.scalar(select(Order).where(Order.order_id == ORDER))
        assert order is not None
        for i in range(sims):
            device_id = f"bench-sw-{i:03d}"
            session.add(
                Device(
                    order_pk=order.id,
                    device_id=device_id,
                    position=1000 + i,
                    model="dlink-dgs-1100-08p",
                )
            )
            community = f"bench-community-{i:03d}"
            session.add(
                SecretRow(
                    order_pk=order.id,
                    owner=f"device:{device_id}",
                    name="snmp_community",
                    ciphertext=inv.vault.encrypt(community),
                    source="generated",
                )
            )
            keys.append(DeviceKey(ORDER, device_id, "dlink-dgs-1100-08p"))
            communities.append(community)
    return inv, keys, communities


def _plan(template: str, device_id: str, round_no: int) -> str:
    return template.replace('"sw-catania"', f'"{device_id}-r{round_no}"').replace(
        "Via Etnea 120", f"Via Etnea {120 + round_no}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--solo", type=int, default=5, help="pushes timed one at a time")
    args = parser.parse_args()

    from provisioner.push.job import push_config
    from provisioner.push.targets import DeviceAddress, Timeouts
    from provisioner.render.engine import Renderer
    from provisioner_lab.switch_sim import SwitchSim

    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        home = Path(tmp)
        inv, keys, communities = _setup(home / "home", args.sims)
        renderer = Renderer(inv.settings, inv)
        payload = renderer.push_payload(ORDER, "sw-catania")
        assert payload is not None
        template = payload[1].data.decode()
        t0 = time.monotonic()

        def start(i: int) -> SwitchSim:
            return SwitchSim(
                "dlink-dgs-1100-08p", workdir=home / f"sw{i}", community_rw=communities[i]
            ).start()

        with ThreadPoolExecutor(8) as pool:
            sims = list(pool.map(start, range(args.sims)))
        print(f"{args.sims} SwitchSim processes up in {time.monotonic() - t0:.1f} s", flush=True)
        timeouts = Timeouts(snmp=2.0, snmp_retries=1, retries=2, backoff=0.5)
        round_no = 0

        def one(i: int) -> Any:
            target = DeviceAddress("127.0.0.1", sims[i].port)
            plan = _plan(template, keys[i].device_id, round_no)
            return push_config(
                inv, keys[i], "snmp", plan, [], target, timeouts=timeouts, actor="bench"
            )

        try:
            # Per-device time: a few pushes alone, one at a time.
            solo = []
            for i in range(min(args.solo, args.sims)):
                r = one(i)
                assert r.result == "ok", r.error
                solo.append(r.seconds)
            per_device = statistics.median(solo)
            print(f"per-device push alone: median {per_device:.3f} s over {len(solo)}")
            for width in args.concurrency:
                results = []
                wall = 0.0
                for _ in range(args.rounds):
                    round_no += 1
                    started = time.monotonic()
                    with ThreadPoolExecutor(max_workers=width) as pool:
                        results += list(pool.map(one, range(args.sims)))
                    wall += time.monotonic() - started
                n = len(results)
                bad = [r for r in results if r.result != "ok"]
                ideal = per_device * n / width
                print(
                    f"concurrency {width:3d}: {n} pushes ({args.sims} sims x {args.rounds}"
                    f" rounds) in {wall:.1f} s = {n / wall:.1f} devices/s; ideal"
                    f" {ideal:.1f} s; actual/ideal {wall / ideal:.2f}x;"
                    f" per push median {statistics.median(r.seconds for r in results):.2f} s,"
                    f" max {max(r.seconds for r in results):.2f} s; not ok: {len(bad)}",
                    flush=True,
                )
                for r in bad[:3]:
                    print(f"  {r.device}: {r.result}: {r.error}")
        finally:
            for sim in sims:
                sim.stop()
            inv.db.dispose()


if __name__ == "__main__":
    main()
