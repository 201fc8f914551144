"""Push jobs over the REST API against the lab switch and IAD: start, follow (SSE), read back."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from livehttp import LiveServer
from sqlalchemy import func, select

from provisioner.api.app import create_app
from provisioner.api.limits import ApiLimits
from provisioner.store import tokens
from provisioner.store.models import AuditEvent
from provisioner.store.push_models import PushResultRow

ORDER = "WT-2026-000104"
OPEN = ApiLimits(rate=1e6, burst=1_000_000)


@pytest.fixture(scope="module")
def api_tokens(push_lab_module: Any) -> dict[str, str]:
    made = {}
    with push_lab_module.inv.db.write() as session:
        for role in ("viewer", "noc"):
            made[role] = tokens.create(session, role, name=f"push-{role}")[1]
        made["technician"] = tokens.create(session, "technician", name="push-tech", orders=[ORDER])[
            1
        ]
        made["other-tech"] = tokens.create(
            session, "technician", name="push-other", orders=["WT-2026-000123"]
        )[1]
    return made


@pytest.fixture
def api(push_lab: Any, api_tokens: dict[str, str]) -> Iterator[tuple[Any, Any, Any]]:
    app = create_app(push_lab.inv.settings, push_lab.inv, OPEN)
    with LiveServer(app) as server:
        yield push_lab, server, app


def _client(server: Any, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


def _targets(lab: Any) -> dict[str, Any]:
    return {
        lab.sw_key.device_id: lab.sw_at.as_dict(),
        lab.iad_key.device_id: lab.iad_at.as_dict(),
    }


def _wait(c: httpx.Client, job: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = c.get(f"/api/v1/push-jobs/{job}").json()
        if body["state"] == "finished":
            return body
        time.sleep(0.2)
    raise AssertionError(f"job {job} still running after {timeout} s")


def _sse(text: str) -> list[tuple[int, str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if fields:
            events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return events


def test_noc_pushes_the_lab_and_follows_it_with_curl(
    api: tuple[Any, Any, Any], api_tokens: dict[str, str]
) -> None:
    lab, server, _ = api
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed (apt-get install curl)")
    with _client(server, api_tokens["noc"]) as c:
        r = c.post(f"/api/v1/orders/{ORDER}/push", json={"targets": _targets(lab)})
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        assert r.headers["location"] == f"/api/v1/push-jobs/{job}"
        # curl -N follows the stream to its end (the "done" event closes it).
        auth = f"Authorization: Bearer {api_tokens['noc']}"
        out = subprocess.run(
            [curl, "-sS", "-N", "--max-time", "120", "-H", auth,
             f"{server.url}/api/v1/push-jobs/{job}/events"],
            capture_output=True, text=True, timeout=130,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        events = _sse(out.stdout)
        names = [name for _, name, _ in events]
        assert names[-1] == "done" and names.count("done") == 1
        assert [i for i, _, _ in events] == list(range(1, len(events) + 1))
        results = {d["device"]: d for _, name, d in events if name == "result"}
        assert {r["result"] for r in results.values()} == {"ok"}, results
        assert set(results) == {lab.sw_key.device_id, lab.iad_key.device_id}
        steps = {(d["device"], d["step"]) for _, name, d in events if name == "step"}
        assert (lab.iad_key.device_id, "commit") in steps
        assert events[-1][2]["summary"] == {"ok": 2}

        status = c.get(f"/api/v1/push-jobs/{job}").json()
        assert status["state"] == "finished" and status["actor"] == "api:push-noc"
        assert all(d["changed"] and d["backup"] == 1 for d in status["devices"])
        # Secrets of the order never reach a noc token, not even masked diffs' old values.
        for name in ("admin_password", "snmp_community"):
            for dev in (lab.sw_key.device_id, lab.iad_key.device_id):
                try:
                    secret = lab.secret(dev, name)
                except KeyError:
                    continue
                assert secret not in out.stdout and secret not in json.dumps(status)

        # The devices now hold the config: a dry-run finds nothing to change.
        again = c.post(
            f"/api/v1/orders/{ORDER}/push", json={"targets": _targets(lab), "dry_run": True}
        )
        assert again.status_code == 202
        done = _wait(c, again.json()["id"])
        assert done["dry_run"] and done["summary"] == {"no change": 2}, done

        metrics = c.get("/metrics").text
        assert 'provisioner_push_results_total{result="ok"}' in metrics
    with lab.inv.db.read() as session:
        audited = session.scalar(
            select(func.count(AuditEvent.id)).where(
                AuditEvent.action == "push.device", AuditEvent.actor == "api:push-noc"
            )
        )
    assert audited == 4


def test_job_outlives_the_process_and_resumes_after_last_event_id(
    api: tuple[Any, Any, Any], api_tokens: dict[str, str]
) -> None:
    lab, server, _ = api
    with _client(server, api_tokens["technician"]) as c:
        r = c.post(
            f"/api/v1/orders/{ORDER}/push",
            json={"targets": {lab.iad_key.device_id: lab.iad_at.as_dict()}, "dry_run": True},
        )
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        first = _wait(c, job)
        assert first["summary"] == {"dry-run": 1}
        full = _sse(c.get(f"/api/v1/push-jobs/{job}/events").text)
        tail = _sse(c.get(f"/api/v1/push-jobs/{job}/events", headers={"Last-Event-ID": "2"}).text)
        assert tail == full[2:]
        bad = c.get(f"/api/v1/push-jobs/{job}/events", headers={"Last-Event-ID": "null"})
        assert bad.status_code == 422 and "last-event-id" in bad.text
    # A new process (a restart) has no job board: the job is read back from the store, its
    # event stream too, numbered as before (a client may reconnect to any server).
    fresh = create_app(lab.inv.settings, lab.inv, OPEN)
    with LiveServer(fresh) as again, _client(again, api_tokens["viewer"]) as c:
        stored = c.get(f"/api/v1/push-jobs/{job}").json()
        assert stored["state"] == "finished" and stored["order"] == ORDER
        # Read back from SQLite (naive datetimes there): still RFC 3339 with the UTC offset.
        for key in ("started_at", "finished_at"):
            assert datetime.fromisoformat(stored[key]).utcoffset() == timedelta(0), stored[key]
        assert [(d["device"], d["result"]) for d in stored["devices"]] == [
            (lab.iad_key.device_id, "dry-run")
        ]
        events = _sse(c.get(f"/api/v1/push-jobs/{job}/events").text)
        assert events == full and [n for _, n, _ in events][-2:] == ["result", "done"]
        assert events[-1][2]["finished_at"] == stored["finished_at"]  # one spelling, with "Z"
        done_at = datetime.fromisoformat(events[-1][2]["finished_at"])
        assert done_at.utcoffset() == timedelta(0)
    with _client(server, api_tokens["other-tech"]) as c:
        assert c.get(f"/api/v1/push-jobs/{job}").status_code == 404  # not their order


def test_refused_targets_start_nothing(
    api: tuple[Any, Any, Any], api_tokens: dict[str, str]
) -> None:
    lab, server, _ = api
    with lab.inv.db.read() as session:
        phone = next(
            d.device_id for d in lab.inv.get(session, ORDER).devices if "temporis" in d.model
        )
    cases = {
        "outside push_networks": (
            {lab.iad_key.device_id: {"host": "203.0.113.7", "port": 22}},
            f"targets.{lab.iad_key.device_id}.host",
        ),
        "a phone (it fetches)": ({phone: {"host": "127.0.0.1", "port": 22}}, f"targets.{phone}"),
        "a host name": ({lab.iad_key.device_id: {"host": "iad.lan", "port": 22}}, "host"),
        "port true": ({lab.iad_key.device_id: {"host": "127.0.0.1", "port": True}}, "port"),
    }
    with _client(server, api_tokens["noc"]) as c:
        for label, (targets, where) in cases.items():
            r = c.post(f"/api/v1/orders/{ORDER}/push", json={"targets": targets})
            assert r.status_code == 422, (label, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert any(where in v["path"] for v in r.json()["violations"]), (label, r.text)
        for flag in ({"retries": False}, {"dry_run": 1}, {"connect_timeout": True}):
            r = c.post(f"/api/v1/orders/{ORDER}/push", json={"targets": _targets(lab), **flag})
            assert r.status_code == 422, (flag, r.text)
        r = c.post(
            f"/api/v1/orders/{ORDER}/push",
            json={"targets": {phone: _targets(lab)[lab.iad_key.device_id]}},
        )
        assert r.json()["type"] == "urn:provisioner:problem:push-refused", r.text
        assert r.json()["detail"] == "1 push target(s) refused"
        assert (
            c.post(
                "/api/v1/orders/WT-2026-999999/push", json={"targets": _targets(lab)}
            ).status_code
            == 404
        )
    with _client(server, api_tokens["viewer"]) as c:
        assert (
            c.post(f"/api/v1/orders/{ORDER}/push", json={"targets": _targets(lab)}).status_code
            == 403
        )
    with lab.inv.db.read() as session:
        assert session.scalar(select(func.count(PushResultRow.id))) == 0


def test_jobs_past_the_running_limit_get_429(
    api: tuple[Any, Any, Any], api_tokens: dict[str, str]
) -> None:
    lab, server, app = api
    from provisioner.api.pushjobs import JobBoard

    app.state.push_jobs = JobBoard(running=1)
    # A TCP peer that accepts and never speaks SSH: the first job waits out its timeout.
    with socket.socket() as mute, _client(server, api_tokens["noc"]) as c:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        slow = {lab.iad_key.device_id: {"host": "127.0.0.1", "port": mute.getsockname()[1]}}
        body = {"targets": slow, "connect_timeout": 2, "command_timeout": 2, "retries": 0}
        first = c.post(f"/api/v1/orders/{ORDER}/push", json=body)
        assert first.status_code == 202, first.text
        second = c.post(f"/api/v1/orders/{ORDER}/push", json={"targets": _targets(lab)})
        assert second.status_code == 429 and second.headers["retry-after"]
        done = _wait(c, first.json()["id"])
        assert done["summary"] == {"failed": 1}
        assert done["devices"][0]["error"]
        third = c.post(
            f"/api/v1/orders/{ORDER}/push", json={"targets": _targets(lab), "dry_run": True}
        )
        assert third.status_code == 202  # the slot is free again
        _wait(c, third.json()["id"])


def _follow(server: Any, token: str, job: str, lines: list[tuple[float, str]]) -> threading.Thread:
    """Read the job's event stream in a thread, each line with the time it came."""

    def read() -> None:
        with (
            _client(server, token) as c,
            c.stream("GET", f"/api/v1/push-jobs/{job}/events") as r,
        ):
            for line in r.iter_lines():
                lines.append((time.monotonic(), line))
        lines.append((time.monotonic(), "<end>"))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _slow_job(c: httpx.Client, lab: Any, mute: socket.socket, seconds: int) -> str:
    """A job that waits ``seconds`` on an SSH peer that never speaks."""
    slow = {lab.iad_key.device_id: {"host": "127.0.0.1", "port": mute.getsockname()[1]}}
    body = {"targets": slow, "connect_timeout": seconds, "command_timeout": 2, "retries": 0}
    r = c.post(f"/api/v1/orders/{ORDER}/push", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def test_a_quiet_stream_gets_keep_alive_comments(
    api: tuple[Any, Any, Any], api_tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lab, server, app = api
    from provisioner.api.routes import push as push_routes

    monkeypatch.setattr(push_routes, "SSE_KEEPALIVE", 0.3)
    lines: list[tuple[float, str]] = []
    with socket.socket() as mute, _client(server, api_tokens["noc"]) as c:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        job = _slow_job(c, lab, mute, 3)
        reader = _follow(server, api_tokens["noc"], job, lines)
        reader.join(timeout=30)
        assert app.state.push_jobs.wait(job, 30)
    text = [line for _, line in lines]
    assert text[-1] == "<end>" and "event: done" in text
    assert text.count(": keep-alive") >= 3  # about 3 s of waiting, one every 0.3 s


def test_streams_end_when_the_server_stops_even_while_a_job_runs(
    api: tuple[Any, Any, Any], api_tokens: dict[str, str]
) -> None:
    lab, server, app = api
    lines: list[tuple[float, str]] = []
    with socket.socket() as mute, _client(server, api_tokens["noc"]) as c:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        job = _slow_job(c, lab, mute, 8)
        reader = _follow(server, api_tokens["noc"], job, lines)
        deadline = time.monotonic() + 10
        while not any(line.startswith("event: step") for _, line in lines):
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
        try:
            # What SIGINT/SIGTERM does to `provisioner serve` or `provisioner api`.
            stopped_at = time.monotonic()
            server.server.handle_exit(signal.SIGINT, None)
            reader.join(timeout=20)
            server.thread.join(timeout=20)
            assert lines[-1][1] == "<end>" and lines[-1][0] - stopped_at < 3, lines
            assert not server.thread.is_alive()  # the job runs on; shutting down did not wait
            assert "event: done" not in [line for _, line in lines]
        finally:
            from sse_starlette.sse import AppStatus

            AppStatus.should_exit = False  # process-wide: later servers of this test run stream
            assert app.state.push_jobs.wait(job, 30)
