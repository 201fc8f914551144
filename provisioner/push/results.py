"""What a push did (Nornir's ``Result``), fit to show and to store: masked diffs, one-line
errors, the ``push_results`` rows and their audit events."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from provisioner.errors import DeviceUnknown
from provisioner.push.setlines import ConfigSyntaxError, split_line
from provisioner.push.targets import Timeouts, audit_device, device_row
from provisioner.render.engine import DeviceKey, mask
from provisioner.settings import Settings
from provisioner.store import audit
from provisioner.store.models import utcnow
from provisioner.store.push_models import PushResultRow

_SECRET_WORD = re.compile(r"(password|secret|psk|community|key|pin)", re.I)

Step = Callable[[str, str], None]  # (device "ORDER/ID", step name): connect, backup, ...


def no_step(device: str, step: str) -> None:
    return None


class JobOptions(TypedDict, total=False):
    """How a push job runs, the same for every device (what a queued job stores)."""

    job_id: str
    actor: str
    dry_run: bool
    trust_on_first_use: bool
    timeouts: Timeouts | None


class PushOptions(JobOptions, total=False):
    """The keyword arguments of :func:`provisioner.push.job.push_config` (see there, and
    for the defaults) that the functions above it pass on as they are."""

    settings: Settings | None
    on_step: Step | None


@dataclass
class PushResult:
    """What one push did (Nornir's ``Result``): never "ok" unless verified on the device.

    ``result``: "ok", "no change", "dry-run", "failed" or "rolled back" (failed, and the
    device verified equal to its backup).

    ``exception`` is the typed error behind a failure (:mod:`provisioner.push.errors`), for
    a caller that acts on it (a CLI naming the option that helps); ``error`` its one line."""

    device: str  # ORDER/DEVICE_ID
    result: str
    changed: bool = False
    diff: str = ""  # masked
    exception: BaseException | None = field(default=None, repr=False)
    error: str = ""
    seconds: float = 0.0
    backup_version: int | None = None
    job_id: str = ""
    attempts: int = 0
    error_kind: str = ""  # the exception's type name (kept when read back from the store)

    @property
    def failed(self) -> bool:
        return self.result == "failed" or self.result == "rolled back"

    @property
    def diff_lines(self) -> int:
        return count_diff_lines(self.diff)

    def outcome(self) -> dict[str, Any]:
        """How it ended, by the names the ``push.device`` audit record and the job's result
        event give it."""
        return {
            "result": self.result,
            "changed": self.changed,
            "diff_lines": self.diff_lines,
            "backup": self.backup_version,
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }

    def fail(self, exc: BaseException) -> None:
        self.result = "failed"
        self.exception = exc
        self.error = one_line(exc)
        self.error_kind = type(exc).__name__


def count_diff_lines(diff: str) -> int:
    return sum(
        1 for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))
    )


def mask_diff(diff: str, secrets: Iterable[str]) -> str:
    """A diff fit to show and store: every known secret masked, and the value of any line
    whose path names a secret (an *old* password the store no longer knows, too)."""
    text = mask(diff.encode(), secrets).decode()
    out = []
    for line in text.splitlines():
        sign, body = line[:1], line[1:]
        if sign in "+- " and line and not line.startswith(("+++", "---")):
            if body.startswith("set "):
                try:
                    words = split_line(body)
                except ConfigSyntaxError:
                    words = ["set", "<malformed line>", ""]
                if any(_SECRET_WORD.search(w) for w in words[1:-1]) or len(words) < 3:
                    line = f"{sign}{' '.join(words[:-1])} ********"
            elif "=" in body and _SECRET_WORD.search(body.split("=", 1)[0]):
                line = f"{sign}{body.split('=', 1)[0]}= ********"
        out.append(line)
    return "\n".join(out)


def one_line(exc: BaseException) -> str:
    """An error as the one line a result shows (at most 500 characters)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]


def summary(results: Sequence[PushResult]) -> dict[str, int]:
    """How many devices ended with each result."""
    out: dict[str, int] = {}
    for r in results:
        out[r.result] = out.get(r.result, 0) + 1
    return out


# ---------------------------------------------------------------------- the store


def record(
    inv: Any, key: DeviceKey, device_pk: int, res: PushResult, started: datetime, actor: str
) -> None:
    """Store a device's result (``push_results``) and audit it (``push.device``)."""
    with inv.db.write() as session:
        session.add(
            PushResultRow(
                job_id=res.job_id,
                device_pk=device_pk,
                started_at=started,
                ended_at=utcnow(),
                changed=res.changed,
                diff_lines=res.diff_lines,
                result=res.result,
                error=res.error,
                diff=res.diff,
                backup_version=res.backup_version,
            )
        )
        audit_device(
            session,
            actor,
            "push.device",
            key,
            job=res.job_id,
            attempts=res.attempts,
            **res.outcome(),
        )


def record_failure(
    inv: Any, key: DeviceKey, exc: BaseException, actor: str, job_id: str
) -> PushResult:
    """A push that ended before it reached the device: "failed", stored unless the device is
    gone from the store."""
    actor = actor or audit.default_actor()
    res = PushResult(str(key), "failed", job_id=job_id or uuid.uuid4().hex)
    res.fail(exc)
    try:
        with inv.db.read() as session:
            device_pk = device_row(session, key).id
    except DeviceUnknown:
        return res
    record(inv, key, device_pk, res, utcnow(), actor)
    return res
