"""Publish on write, as a state machine: random sequences of writes through the orders service
(apply, bind, unbind, swap, cancel, re-activate, arm, rotate), and after each one what a
running server answers over HTTP and TFTP is exactly what ``render`` gives from the store, for
every box that ever had a MAC here: a cancelled order's, an unbound or swapped-out box's files
are not found. Hypothesis looks for the sequence that breaks it.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fuzzing import examples
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from liveserve import Stack, serve_stack

from provisioner.documents.validate import check_text
from provisioner.errors import ProvisionerError
from provisioner.orders.service import OrdersService
from provisioner.render.engine import Renderer
from provisioner.settings import load_settings
from provisioner_lab.phones import FetchFailed, tftp_get

SAMPLES = Path(__file__).resolve().parent.parent / "inventory" / "orders"
ORDER = "WT-2026-000104"
FREE_EXTENSIONS = (204, 205)
SPARE_MACS = [f"00:80:f0:7e:00:{i:02x}" for i in range(1, 9)]


def _names(mac: str) -> list[str]:
    m = mac.replace(":", "")
    return [f"{m}.cfg", f"phonebook-{m}.xml"]


class PublishMachine(RuleBasedStateMachine):
    """One store, one running server; every rule is a write an operator or technician makes."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="publish-sm-"))
        self.stack_cm: Any = None
        self.stack: Stack | None = None
        self.inv: OrdersService | None = None
        self.doc: dict[str, Any] = {}
        self.seen: set[str] = set()  # every MAC that was ever bound here
        self.spare = list(SPARE_MACS)

    @initialize()
    def start(self) -> None:
        home = self.tmp / "home"
        home.mkdir()
        settings_ = load_settings({"PROVISIONER_HOME": str(home)})
        self.inv = OrdersService(settings_)
        self.doc = yaml.safe_load((SAMPLES / f"{ORDER}.yaml").read_text())
        self._apply(self.doc)
        self.inv.arm(ORDER, 600, actor="sm")
        root = self.tmp / "tftp_root"
        root.mkdir()
        self.stack_cm = serve_stack(self.inv, root)
        self.stack = self.stack_cm.__enter__()
        self.seen |= self._bound_macs()

    def teardown(self) -> None:
        if self.stack_cm is not None:
            self.stack_cm.__exit__(None, None, None)
        if self.inv is not None:
            self.inv.db.dispose()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---------------------------------------------------------------- helpers

    def _apply(self, doc: dict[str, Any]) -> None:
        checked = check_text(yaml.safe_dump(doc, sort_keys=False))
        assert checked.document is not None, checked.lines()
        assert self.inv is not None
        self.inv.apply(checked.document, actor="sm")

    def _bound_macs(self) -> set[str]:
        assert self.inv is not None
        return set(self.inv.read_order(ORDER, lambda o: [d.mac for d in o.devices if d.mac]))

    def _try(self, write: Any) -> None:
        """A write the offer's rules may refuse (the terminal limit, a taken MAC): refused
        writes change nothing, which the invariant checks as well."""
        try:
            write()
        except ProvisionerError:
            return
        self.seen |= self._bound_macs()

    # ---------------------------------------------------------------- writes

    @rule(short=st.sampled_from(FREE_EXTENSIONS),
          model=st.sampled_from(["alcatel-temporis-ip150", "alcatel-temporis-ip701g"]))  # fmt: skip
    def bind_a_new_phone(self, short: int, model: str) -> None:
        assert self.inv is not None
        if not self.spare:
            return
        mac = self.spare.pop()
        self._try(lambda: self.inv.bind(ORDER, mac=mac, extension=short, model=model,  # type: ignore[union-attr]
                                        actor="sm"))  # fmt: skip

    @rule(data=st.data())
    def unbind_a_box(self, data: st.DataObject) -> None:
        macs = sorted(self._bound_macs())
        if macs:
            mac = data.draw(st.sampled_from(macs))
            self._try(lambda: self.inv.unbind(ORDER, mac=mac, actor="sm"))  # type: ignore[union-attr]

    @rule(data=st.data())
    def swap_a_box(self, data: st.DataObject) -> None:
        macs = sorted(self._bound_macs())
        if macs and self.spare:
            old, new = data.draw(st.sampled_from(macs)), self.spare.pop()
            self._try(lambda: self.inv.swap(ORDER, old, new, actor="sm"))  # type: ignore[union-attr]

    @rule()
    def cancel_the_order(self) -> None:
        self._try(lambda: self.inv.cancel(ORDER, actor="sm"))  # type: ignore[union-attr]

    @rule()
    def reapply_the_document(self) -> None:
        """The NOC applies the document again (it re-activates a cancelled order)."""
        self._try(lambda: self._apply(self.doc))

    @rule(name=st.sampled_from(["Sala Uno", "Sala 1", "Sala Ortodonzia"]))
    def rename_an_extension(self, name: str) -> None:
        doc = copy.deepcopy(self.doc)
        next(e for e in doc["extensions"] if e["short"] == 202)["name"] = name
        self.doc = doc
        self._try(lambda: self._apply(doc))

    @rule(minutes=st.sampled_from([1, 600]))
    def arm_the_order(self, minutes: int) -> None:
        self._try(lambda: self.inv.arm(ORDER, minutes, actor="sm"))  # type: ignore[union-attr]

    @rule(short=st.sampled_from([200, 201, 202, 204]))
    def rotate_a_password(self, short: int) -> None:
        self._try(lambda: self.inv.rotate(ORDER, [short], actor="sm"))  # type: ignore[union-attr]

    # ---------------------------------------------------------------- the invariant

    @invariant()
    def the_server_answers_what_the_store_renders(self) -> None:
        if self.stack is None or self.inv is None:
            return
        self.stack.settle()  # what follows the store within a second, now
        renderer = Renderer(self.inv.settings, self.inv)
        for mac in sorted(self.seen):
            files = renderer.files_for_mac(mac)  # {} for a box that is no device's now
            for name in _names(mac):
                want = files.get(name)
                got_http = httpx.get(f"{self.stack.http}/{name}", timeout=5)
                http = got_http.content if got_http.status_code == 200 else None
                try:
                    tftp: bytes | None = tftp_get("127.0.0.1", self.stack.tftp_port, name,
                                                  timeout=2.0, retries=1)  # fmt: skip
                except FetchFailed:
                    tftp = None
                assert (http, tftp) == (want, want), f"{name}: served differs from the store"


TestPublishStateMachine = PublishMachine.TestCase
TestPublishStateMachine.settings = settings(
    max_examples=examples(6, 60),
    stateful_step_count=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture(autouse=True)
def _no_env_store(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PROVISIONER_DATABASE_URL", "PROVISIONER_SECRET_KEY", "PROVISIONER_SETTINGS"):
        monkeypatch.delenv(var, raising=False)
