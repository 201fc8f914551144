"""Push jobs on the queue (PostgreSQL + procrastinate) run by `provisioner worker` processes:
enqueued through the API, followed over SSE, and a worker killed with SIGKILL mid-push.

Needs the PostgreSQL server at 127.0.0.1:5432 (trust auth; each module makes and drops its
own database); skips with a message where there is none.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from livehttp import LiveServer
from sqlalchemy import func, select, text

from provisioner.api.app import create_app
from provisioner.api.limits import ApiLimits
from provisioner.push import queue
from provisioner.push import setplan as sp
from provisioner.render.engine import Renderer
from provisioner.store import tokens
from provisioner.store.push_models import HostKey, PushJob
from provisioner_lab.iad_sim import IadSim
from provisioner_lab.switch_sim import SwitchSim
from provisioner_lab.up import Lab, start_lab

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
ORDER = "WT-2026-000104"
PG = "postgresql://postgres@127.0.0.1:5432"
LEASE = 3.0  # seconds: short, so a dead worker's push ends quickly here
OPEN = ApiLimits(rate=1e6, burst=1_000_000)
PROVISIONER = str(Path(sys.executable).parent / "provisioner")


@dataclass
class QueueLab:
    inv: Any
    renderer: Renderer
    lab: Lab
    switch: SwitchSim
    iad: IadSim
    env: dict[str, str]
    workdir: Path

    def targets(self) -> dict[str, Any]:
        return {d.key.device_id: d.address.as_dict() for d in self.lab.devices}

    def worker(self, name: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(
            [PROVISIONER, "worker", "--quiet", "--name", name, "--concurrency", "4"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return proc


@pytest.fixture(scope="module")
def qlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QueueLab]:
    psycopg = pytest.importorskip("psycopg")
    pytest.importorskip("procrastinate", reason="the queue extra: pip install 'provisioner[queue]'")
    try:
        admin = psycopg.connect(f"{PG}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432 ({exc}".splitlines()[0] + ")")
    name = f"prov_queue_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    workdir = tmp_path_factory.mktemp("queue")
    env = {
        "PROVISIONER_HOME": str(workdir / "home"),
        "PROVISIONER_DATABASE_URL": f"{PG}/{name}",
        "PROVISIONER_PUSH_QUEUE": "procrastinate",
        "PROVISIONER_PUSH_LEASE": str(LEASE),
    }
    import asyncssh

    from provisioner.documents.validate import check_paths
    from provisioner.orders.service import OrdersService
    from provisioner.push.targets import device_row
    from provisioner.settings import load_settings

    inv = OrdersService(load_settings(env))
    lab: Lab | None = None
    try:
        for checked in check_paths([ROOT / "inventory" / "orders" / f"{ORDER}.yaml"]):
            assert checked.ok and checked.document is not None
            inv.apply(checked.document, source=checked.file, actor="test")
        renderer = Renderer(inv.settings, inv)
        key = asyncssh.generate_private_key("ssh-ed25519")
        pub = key.export_public_key("openssh").decode().strip()
        lab = start_lab(inv, renderer, [ORDER], workdir / "lab", authorized_keys=[pub])
        by_kind = {d.kind: d for d in lab.devices}
        switch, iad = by_kind["snmp"].sim, by_kind["ssh"].sim
        assert isinstance(switch, SwitchSim) and isinstance(iad, IadSim)
        with inv.db.write() as session:
            session.add(
                HostKey(device_pk=device_row(session, by_kind["ssh"].key).id,
                        public_key=iad.host_key, trusted_by="test")
            )  # fmt: skip
        yield QueueLab(inv, renderer, lab, switch, iad, {**os.environ, **env}, workdir)
    finally:
        if lab is not None:
            lab.stop()
        inv.db.dispose()
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def _stop(*workers: subprocess.Popen[bytes]) -> None:
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            w.wait(timeout=20)
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()


def _sse(body: str) -> list[tuple[int, str, dict[str, Any]]]:
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if fields:
            events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return events


def _snmp_state(switch: SwitchSim, oids: list[str]) -> dict[str, str]:
    """The objects as net-snmp's snmpget reads them (octet strings in hex)."""
    snmpget = shutil.which("snmpget")
    if snmpget is None:
        pytest.skip("snmpget is not installed (apt-get install snmp)")
    out = subprocess.run(
        [snmpget, "-v2c", "-c", "public", "-On", "-Ox", "-Oq", "-t", "3", "-r", "2",
         f"127.0.0.1:{switch.port}", *oids],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    state = {}
    for line in out.splitlines():
        oid, _, value = line.partition(" ")
        state[oid.lstrip(".")] = value.strip()
    return state


def _managed_oids(lab: QueueLab) -> list[str]:
    payload = lab.renderer.push_payload(ORDER, "sw-catania")
    assert payload is not None
    plan = sp.parse_setplan(payload[1].data.decode())
    oids = {vb.oid for vb in sp.to_varbinds(plan)}
    return sorted(oids, key=sp.oid_key)


def test_a_push_enqueued_through_the_api_runs_on_a_worker_and_streams_steps_and_results(
    qlab: QueueLab,
) -> None:
    lab = qlab
    lab.switch.reset()
    lab.iad.reset()
    with lab.inv.db.write() as session:
        token = tokens.create(session, "noc", name="queue-noc")[1]
    app = create_app(lab.inv.settings, lab.inv, OPEN)
    with (
        LiveServer(app) as server,
        httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as c,
    ):
        r = c.post(f"/api/v1/orders/{ORDER}/push", json={"targets": lab.targets()})
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        # No worker yet: the job waits on the queue, its messages beside it in PostgreSQL.
        time.sleep(1.0)
        queued = c.get(f"/api/v1/push-jobs/{job}").json()
        assert queued["state"] == "running" and queued["summary"] == {}
        with lab.inv.db.read() as session:
            waiting = session.execute(
                text("SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'")
            ).scalar_one()
        assert waiting == 2
        assert lab.switch.write_count() == 0 and lab.iad.commits == 0

        worker = lab.worker("w-api")
        try:
            curl = shutil.which("curl")
            if curl is None:
                pytest.skip("curl is not installed (apt-get install curl)")
            stream = subprocess.run(
                [curl, "-sS", "-N", "--max-time", "120", "-H", f"Authorization: Bearer {token}",
                 f"{server.url}/api/v1/push-jobs/{job}/events"],
                capture_output=True, text=True, timeout=130,
            )  # fmt: skip
        finally:
            _stop(worker)
        assert stream.returncode == 0, stream.stderr
        events = _sse(stream.stdout)
        assert [i for i, _, _ in events] == list(range(1, len(events) + 1))
        names = [n for _, n, _ in events]
        assert names[-1] == "done" and names.count("done") == 1
        steps = {(d["device"], d["step"]) for _, n, d in events if n == "step"}
        assert ("sw-catania", "commit") in steps and ("iad-catania", "commit") in steps
        results = {d["device"]: d["result"] for _, n, d in events if n == "result"}
        assert results == {"sw-catania": "ok", "iad-catania": "ok"}
        assert events[-1][2]["summary"] == {"ok": 2}
        status = c.get(f"/api/v1/push-jobs/{job}").json()
        assert status["state"] == "finished" and status["summary"] == {"ok": 2}
    # The switch holds the pushed config, as net-snmp reads it; the IAD committed once.
    payload = lab.renderer.push_payload(ORDER, "sw-catania")
    assert payload is not None
    name = sp.parse_setplan(payload[1].data.decode()).system.name
    got = _snmp_state(lab.switch, [sp.SYS_NAME])[sp.SYS_NAME]
    assert bytes.fromhex(got.replace(" ", "").strip('"')).decode() == name
    assert lab.iad.commits == 1
    with lab.inv.db.read() as session:
        left = session.execute(
            text("SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')")
        ).scalar_one()
    assert left == 0


def test_a_job_and_its_queue_messages_are_written_in_one_transaction(
    qlab: QueueLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = qlab
    from provisioner.push import pgqueue
    from provisioner.push.targets import DeviceAddress, device_keys

    keys = device_keys(lab.inv, lab.renderer, ORDER)
    app = pgqueue.queue_app(lab.inv.settings)
    real = app.job_manager.batch_defer_jobs

    def defer_then_fail(jobs: Any, connection: Any = None) -> Any:
        real(jobs, connection=connection)  # the messages are written ...
        raise RuntimeError("the store went away")  # ... and the transaction fails after

    def count() -> tuple[int, int]:
        with lab.inv.db.read() as session:
            return (
                session.scalar(select(func.count()).select_from(PushJob)) or 0,
                session.execute(text("SELECT count(*) FROM procrastinate_jobs")).scalar_one(),
            )

    before = count()
    monkeypatch.setattr(app.job_manager, "batch_defer_jobs", defer_then_fail)
    with pytest.raises(RuntimeError):
        queue.create_job(lab.inv, ORDER, [(k, DeviceAddress("127.0.0.1", 9)) for k in keys])
    assert count() == before  # neither the job nor a message: no orphan either way


def test_a_worker_killed_mid_push_leaves_the_switch_old_or_new_and_the_job_failed(
    qlab: QueueLab,
) -> None:
    lab = qlab
    from provisioner.push.targets import DeviceAddress, Timeouts, device_keys

    lab.switch.reset()
    oids = _managed_oids(lab)
    old = _snmp_state(lab.switch, oids)
    sw_key = next(
        k for k in device_keys(lab.inv, lab.renderer, ORDER) if k.device_id == "sw-catania"
    )
    at = DeviceAddress("127.0.0.1", lab.switch.port)
    slow = Timeouts(snmp=4.0, snmp_retries=0, retries=0, operation=60)
    # Every answer of the switch takes 1 s: the push is still running when the worker dies.
    lab.switch.set_fault("slow", delay=1.0)
    job = queue.create_job(lab.inv, ORDER, [(sw_key, at)], actor="test", timeouts=slow)
    doomed = lab.worker("w-doomed")
    survivor = None
    try:
        deadline = time.monotonic() + 60
        while True:  # until the commit started: its SET is on its way or already applied
            items, done = queue.events_after(lab.inv, job, 0)
            if any(n == "step" and d["step"] == "commit" for _, n, d in items):
                break
            assert not done and time.monotonic() < deadline, items
            time.sleep(0.1)
        time.sleep(0.5)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
        killed_at = time.monotonic()
        items, done = queue.events_after(lab.inv, job, 0)
        assert not done and not any(n == "result" for _, n, _ in items)

        # Another worker takes over: the dead one's lease runs out and the push ends
        # "failed" within LEASE seconds and a reaper round (read without reaping here).
        survivor = lab.worker("w-survivor")
        while not queue.finished(lab.inv, job):
            assert time.monotonic() - killed_at < LEASE + 10, "the job is stuck running"
            time.sleep(0.2)
        ended = time.monotonic() - killed_at
        view = queue.job_view(lab.inv, job)
        assert view is not None
        result = view.devices["sw-catania"]["result"]
        assert result["result"] == "failed" and "stopped answering" in result["error"], result
        assert ended < LEASE + 10

        # The switch holds its old config or the new one (the plan went in one SET PDU).
        lab.switch.set_fault(None)
        middle = _snmp_state(lab.switch, oids)
        # Push it again to completion (the dead worker's device lock was released).
        again = queue.create_job(lab.inv, ORDER, [(sw_key, at)], actor="test")
        deadline = time.monotonic() + 60
        while not queue.finished(lab.inv, again):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        (res,) = queue.job_results(lab.inv, again)
        assert res.result in ("ok", "no change"), res.error
        new = _snmp_state(lab.switch, oids)
    finally:
        _stop(doomed, *([survivor] if survivor else []))
    assert new != old
    assert middle in (old, new), "the switch was left with a mix of old and new config"
