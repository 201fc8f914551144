"""Push throughput: N simulated switches pushed at a given concurrency, CPU counted.

Not a test. A throwaway store gets ``--switches`` extra DGS-1100-08P rows (each with its own
SNMP community) on the sample order WT-2026-000104; one :class:`lab.switch_sim.SwitchFarm`
(ONE snmpsim process) serves all of them. Every round pushes every switch a set-plan whose
sysName/sysLocation differ from the last round, so every push reads, backs up, diffs,
writes, verifies and saves. The job function is the real one (results and backups stored,
audited), run like ``provisioner push`` runs it (``--workers 0``, the default: a thread pool
in this process) or by ``provisioner worker`` processes on the queue (``--workers N``:
needs PostgreSQL, ``--database-url``).

The ideal is ``per-device time alone x N / concurrency`` (the per-device time measured one
push at a time). It only means something when a push mostly waits on the device, as real
pushes do: ``--latency`` (seconds before each reply: the management network's round trip
and the switch's CPU) and ``--save-latency`` (seconds a save to flash takes) give the
simulated switches that pace; with both at 0 a push never waits and the ideal is the CPU.
CPU seconds of this process, the workers and the agent are printed too (2 cores shared).

    .venv/bin/python -m lab.bench_push --switches 200 --concurrency 50
    .venv/bin/python -m lab.bench_push --switches 200 --concurrency 50 --workers 2 \\
        --database-url postgresql://postgres@127.0.0.1:5432/postgres

The last line is ``push: N devices, X devices/s, actual/ideal Y, failures Z``.

Measured (2 cores, 2026-12-01, while other engineers' test suites kept the load average at
7-8; 200 switches, concurrency 50, reply latency 20 ms, save 0.5 s): in one process 27.6
devices/s, actual/ideal 2.62, 0 failures, 39 ms of CPU per push (this process and the agent);
with 2 workers on the queue (PostgreSQL) 11.4 devices/s, 0 failures, 85 ms of worker CPU per
push (claims, leases, events and procrastinate on PostgreSQL, whose own CPU is not counted).
Without latency (--latency 0 --save-latency 0): 17.9 devices/s, CPU-bound. Before issue 14
(one snmpsim process and one pysnmp engine per switch, a SET PDU per 10 varbinds, four full
reads per push): 1.0-1.7 devices/s at concurrency 20-50, 18-40x the ideal.
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
ORDER = "WT-2026-000104"
MODEL = "dlink-dgs-1100-08p"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:13])  # utime stime (not the children's)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy so far (every process: PostgreSQL too)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _setup(
    home: Path, count: int, database_url: str | None, queue: bool = False
) -> tuple[Any, list[Any], list[str]]:
    from sqlalchemy import select

    from provisioner.documents.validate import check_paths
    from provisioner.orders.service import OrdersService
    from provisioner.render.engine import DeviceKey
    from provisioner.settings import load_settings
    from provisioner.store.models import Device, Order, SecretRow

    env = {"PROVISIONER_HOME": str(home)}
    if database_url:
        env["PROVISIONER_DATABASE_URL"] = database_url
    if queue:
        env["PROVISIONER_PUSH_QUEUE"] = "procrastinate"
    settings = load_settings(env)
    inv = OrdersService(settings)
    for checked in check_paths([ROOT / "inventory" / "orders" / f"{ORDER}.yaml"]):
        assert checked.document is not None
        inv.apply(checked.document, source=checked.file, actor="bench")
    keys, communities = [], []
    with inv.db.write() as session:
        sample = session.scalar(select(Order).where(Order.order_id == ORDER))
        assert sample is not None
        for i in range(count):
            # One switch per order, as in real life (an order renders whole: 200 switches in
            # one order would make every push render the other 199 too).
            order = Order(
                order_id=f"{ORDER}-B{i:03d}",
                customer_id=sample.customer_id,
                plan=sample.plan,
                lines=sample.lines,
                options=sample.options,
            )
            session.add(order)
            session.flush()
            device_id = f"bench-sw-{i:03d}"
            session.add(Device(order_pk=order.id, device_id=device_id, position=1, model=MODEL))
            community = f"bench-community-{i:03d}"
            secrets = {
                "snmp_community": community,
                "admin_password": f"bench-admin-{i:03d}-x7Kq",
                "snmp_auth_key": f"bench-auth-{i:03d}-x7Kq",
                "snmp_priv_key": f"bench-priv-{i:03d}-x7Kq",
            }
            for name, value in secrets.items():
                session.add(
                    SecretRow(
                        order_pk=order.id,
                        owner=f"device:{device_id}",
                        name=name,
                        ciphertext=inv.vault.encrypt(value),
                        source="generated",
                    )
                )
            keys.append(DeviceKey(order.order_id, device_id, MODEL))
            communities.append(community)
    return inv, keys, communities


def _plan(template: str, device_id: str, round_no: int) -> str:
    return template.replace('"sw-catania"', f'"{device_id}-r{round_no}"').replace(
        "Via Etnea 120", f"Via Etnea {120 + round_no}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--switches", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--solo", type=int, default=5, help="pushes timed one at a time")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds before a reply")
    parser.add_argument("--save-latency", type=float, default=0.5, help="seconds a save takes")
    parser.add_argument("--workers", type=int, default=0, help="0: in this process")
    parser.add_argument("--database-url", default=None, help="PostgreSQL (for --workers)")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile this process")
    args = parser.parse_args()
    if args.workers and not args.database_url:
        parser.error("--workers needs --database-url (the queue lives in PostgreSQL)")

    from provisioner.push.job import push_config
    from provisioner.push.targets import DeviceAddress, Timeouts
    from provisioner.render.engine import Renderer
    from provisioner_lab.switch_sim import SwitchFarm

    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        home = Path(tmp)
        database_url = _fresh_database(args.database_url) if args.database_url else None
        inv, keys, communities = _setup(
            home / "home", args.switches, database_url, queue=bool(args.workers)
        )
        renderer = Renderer(inv.settings, inv)
        payload = renderer.push_payload(ORDER, "sw-catania")
        assert payload is not None
        template = payload[1].data.decode()
        t0 = time.monotonic()
        farm = SwitchFarm(
            [(MODEL, f"sw-{i:03d}", c) for i, c in enumerate(communities)],
            home / "farm",
            latency=args.latency,
            save_latency=args.save_latency,
        ).start()
        print(
            f"{args.switches} switches in one snmpsim process up in {time.monotonic() - t0:.1f} s"
            f" (reply latency {args.latency * 1000:g} ms, save {args.save_latency:g} s)",
            flush=True,
        )
        timeouts = Timeouts(snmp=2.0, snmp_retries=1, retries=2, backoff=0.5)
        target = DeviceAddress("127.0.0.1", farm.port)
        round_no = 0

        def one(i: int) -> Any:
            plan = _plan(template, keys[i].device_id, round_no)
            return push_config(
                inv, keys[i], "snmp", plan, [], target, timeouts=timeouts, actor="bench"
            )

        profiler = None
        try:
            solo = []
            for i in range(min(args.solo, args.switches)):
                r = one(i)
                assert r.result == "ok", r.error
                solo.append(r.seconds)
            per_device = statistics.median(solo)
            print(f"per-device push alone: median {per_device:.3f} s over {len(solo)}")
            if args.profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            cpu_before = {"bench": cpu_seconds(os.getpid()), "agent": _agent_cpu(farm)}
            busy_before = machine_busy()
            results: list[Any] = []
            wall = 0.0
            worker_cpu = 0.0
            for _ in range(args.rounds):
                round_no += 1
                started = time.monotonic()
                if args.workers:
                    done, cpu = _on_the_queue(inv, renderer, keys, target, args, home)
                    results += done
                    worker_cpu += cpu
                else:
                    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                        results += list(pool.map(one, range(args.switches)))
                wall += time.monotonic() - started
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(str(args.profile))
            cpu = {
                "bench": cpu_seconds(os.getpid()) - cpu_before["bench"],
                "agent": _agent_cpu(farm) - cpu_before["agent"],
                "workers": worker_cpu,
            }
            machine = machine_busy() - busy_before
            n = len(results)
            bad = [r for r in results if r.result != "ok"]
            ideal = per_device * n / args.concurrency
            total_cpu = sum(cpu.values())
            seconds = sorted(r.seconds for r in results)
            print(
                f"{n} pushes ({args.switches} switches x {args.rounds} rounds, concurrency"
                f" {args.concurrency}, workers {args.workers or 'none: in this process'}) in"
                f" {wall:.1f} s; ideal {ideal:.1f} s; per push median {seconds[n // 2]:.2f} s,"
                f" max {seconds[-1]:.2f} s"
            )
            print(
                "CPU: "
                + ", ".join(f"{k} {v:.1f} s" for k, v in cpu.items() if v)
                + f"; {total_cpu / n * 1000:.0f} ms per push, {total_cpu / wall:.2f} cores busy;"
                f" the whole machine (PostgreSQL, other users too): {machine / wall:.2f} cores"
            )
            for r in bad[:3]:
                print(f"  {r.device}: {r.result}: {r.error}")
            print(
                f"push: {n} devices, {n / wall:.1f} devices/s, actual/ideal {wall / ideal:.2f},"
                f" failures {len(bad)}",
                flush=True,
            )
        finally:
            farm.stop()
            inv.db.dispose()
            if database_url:
                _drop_database(database_url)


def _agent_cpu(farm: Any) -> float:
    return cpu_seconds(farm.pid) if farm.pid else 0.0


# --- the queue (--workers N) ---------------------------------------------------------------


def _admin(url: str) -> Any:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    admin = make_url(url).set(drivername="postgresql+psycopg", database="postgres")
    return create_engine(admin, isolation_level="AUTOCOMMIT")


def _fresh_database(url: str) -> str:
    """A new database beside ``url``'s (dropped at the end)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = f"bench_push_{os.getpid()}"
    engine = _admin(url)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _drop_database(url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    engine = _admin(url)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    engine.dispose()


def _on_the_queue(
    inv: Any, renderer: Any, keys: list[Any], target: Any, args: Any, home: Path
) -> tuple[list[Any], float]:
    """Enqueue one push job of every switch, run ``args.workers`` workers until it is done.
    Returns the results and the workers' CPU seconds."""
    import subprocess

    from provisioner.push import queue
    from provisioner.push.targets import Timeouts

    # One job per order (each bench switch is its own order), as the NOC would push them.
    jobs = [
        queue.create_job(
            inv,
            key.order_id,
            [(key, target)],
            actor="bench",
            timeouts=Timeouts(snmp=2.0, snmp_retries=1, retries=2, backoff=0.5),
        )
        for key in keys
    ]
    env = dict(
        os.environ,
        PROVISIONER_HOME=str(inv.settings.home),
        PROVISIONER_DATABASE_URL=inv.settings.effective_database_url,
        PROVISIONER_PUSH_QUEUE="procrastinate",
        PROVISIONER_PUSH_CONCURRENCY=str(max(1, args.concurrency // args.workers)),
    )
    workers = [
        subprocess.Popen(
            [str(Path(sys.executable).parent / "provisioner"), "worker", "--quiet"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(home / f"worker{i}.log", "w"),  # noqa: SIM115 - the child owns it
        )
        for i in range(args.workers)
    ]
    cpu = 0.0
    try:
        deadline = time.monotonic() + 600
        while not all(queue.finished(inv, job_id) for job_id in jobs):
            if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
                raise SystemExit(f"the workers did not finish the job: see {home}/worker*.log")
            time.sleep(0.2)
        for w in workers:
            cpu += cpu_seconds(w.pid)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=30)
    return [r for job_id in jobs for r in queue.job_results(inv, job_id)], cpu


if __name__ == "__main__":
    main()
