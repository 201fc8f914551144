"""NAPALM driver for the D-Link DGS-1100 non-/ME switches, which have no CLI: SNMP only.

Contract (what the push job can rely on):

* the config is a *set-plan* (:mod:`provisioner.push.setplan`); ``get_config()["running"]``
  is the device read back as set-plan YAML;
* ``load_replace_candidate``/``load_merge_candidate`` validate the plan (an invalid plan,
  or one for another model, raises ``MergeConfigException``; merge is the same as replace:
  the plan describes every managed object of the device);
* ``compare_config()`` is a unified diff of varbind lines, ``""`` when nothing differs;
* ``commit_config()`` sends only the varbinds that differ from the device as last read
  (VLAN rows created with createAndGo and destroyed when the plan drops them) in one SET
  PDU, reads those objects back to verify, then writes D-Link's save object. With nothing
  to change it sends nothing at all. After it, :attr:`DlinkSnmpDriver.last_writes` holds
  the varbinds sent;
* ``rollback()`` re-applies the state read at the start of the last commit (also after a
  commit that failed half-way), verifies and saves;
* failures are typed (:mod:`provisioner.push.errors`): ``ConnectTimeoutError`` (no answer:
  unreachable, or a wrong v2c community, which agents do not answer), ``WrongDevice`` (not
  a known D-Link model, or another model than expected), ``ConnectionException`` (any other
  failed read), ``MergeConfigException`` (bad plan), ``CommitError`` (the device refused or
  stopped answering during commit/rollback; SNMPv2c write refused by policy).

``optional_args``:

=================  ========  ===========================================================
key                default   meaning
=================  ========  ===========================================================
port               161       UDP port
snmp_version       "2c"      "2c" or "3"
community          password  v2c community (read and write)
auth_key           password  v3 authentication pass phrase (user = ``username``)
priv_key           auth_key  v3 privacy pass phrase
auth_protocol      "SHA"     MD5, SHA, SHA224, SHA256, SHA384, SHA512
priv_protocol      "AES"     DES, 3DES, AES, AES192, AES256
context_name       ""        v3 context
require_v3         False     refuse any write that is not SNMPv3 authPriv (nothing is sent)
snmp_timeout       2.0       seconds per request
snmp_retries       1         retries per request (a dead device costs timeout*(retries+1))
max_varbinds       None      varbinds per PDU (None: as many as the agent accepts)
model              None      expected catalog model key; checked against sysObjectID
=================  ========  ===========================================================

The constructor's ``timeout`` caps one whole operation (a read of the device, a commit).

Every driver of a process sends through one pysnmp engine on one event loop
(:mod:`provisioner.push.snmp`); the synchronous methods submit coroutines to it (safe to
call from any thread, and from code that itself runs inside another event loop). A read of
the device (``get_config``) is kept for the session: the diff and the commit that follow
work from it instead of reading again (the push job holds the device's lock meanwhile), and
any write forgets it.

Registration: ``napalm.get_network_driver("dlink_snmp")`` looks for
``custom_napalm.dlink_snmp``, ``napalm.dlink_snmp``, ``napalm_dlink_snmp``; a module there
holding ``from provisioner.push.drivers.dlink_snmp import DlinkSnmpDriver`` does it. This
module imports the base *module*, not a base class, so even a star-import shim cannot make
napalm return an abstract base class.
"""

from __future__ import annotations

from typing import Any, ClassVar

from napalm.base.exceptions import CommitError, MergeConfigException

from provisioner.catalog import MODELS, snmp_model
from provisioner.push import setplan as sp
from provisioner.push.drivers import base
from provisioner.push.errors import ConnectionException, ConnectTimeoutError, WrongDevice
from provisioner.push.snmp import SnmpError, SnmpSession

VENDOR = "D-Link"


def _auth_protocols() -> tuple[dict[str, Any], dict[str, Any]]:
    from pysnmp.hlapi.v3arch import asyncio as h

    auth = {
        "MD5": h.USM_AUTH_HMAC96_MD5,
        "SHA": h.USM_AUTH_HMAC96_SHA,
        "SHA224": h.USM_AUTH_HMAC128_SHA224,
        "SHA256": h.USM_AUTH_HMAC192_SHA256,
        "SHA384": h.USM_AUTH_HMAC256_SHA384,
        "SHA512": h.USM_AUTH_HMAC384_SHA512,
    }
    priv = {
        "DES": h.USM_PRIV_CBC56_DES,
        "3DES": h.USM_PRIV_CBC168_3DES,
        "AES": h.USM_PRIV_CFB128_AES,
        "AES128": h.USM_PRIV_CFB128_AES,
        "AES192": h.USM_PRIV_CFB192_AES,
        "AES256": h.USM_PRIV_CFB256_AES,
    }
    return auth, priv


class DlinkSnmpDriver(base.PushDriver):
    """D-Link DGS-1100 (non-/ME) over SNMP: set-plan in, only the differing varbinds out."""

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "port": 161,
        "snmp_version": "2c",
        "auth_protocol": "SHA",
        "priv_protocol": "AES",
        "context_name": "",
        "require_v3": False,
        "snmp_timeout": 2.0,
        "snmp_retries": 1,
        "max_varbinds": None,
        "model": None,
    }

    def _setup(self) -> None:
        super()._setup()
        args = self.optional_args
        self.snmp_version = str(args["snmp_version"])
        if self.snmp_version not in ("2c", "3"):
            raise ConnectionException(f"snmp_version {self.snmp_version!r}: use '2c' or '3'")
        self.require_v3 = bool(args["require_v3"])
        self.snmp_timeout = float(args["snmp_timeout"])
        self.snmp_retries = int(args["snmp_retries"])
        limit = args["max_varbinds"]
        self.max_varbinds = None if limit is None else max(1, int(limit))
        self.expected_model: str | None = args["model"]
        self.model: str | None = None
        self.sys_object_id = ""
        self.candidate: sp.SetPlan | None = None
        self.last_writes: list[sp.VarBind] = []
        self._rollback_state: list[sp.VarBind] | None = None
        self._attempted = False
        self._session: SnmpSession | None = None
        self._known: list[sp.VarBind] | None = None  # the device as last read or written

    # --- connection ------------------------------------------------------------------

    def _auth(self) -> dict[str, Any]:
        args = self.optional_args
        if self.snmp_version == "2c":
            return {"version": "2c", "community": args.get("community") or self.password}
        auth_protocols, priv_protocols = _auth_protocols()
        auth_name = str(args["auth_protocol"]).upper()
        priv_name = str(args["priv_protocol"]).upper()
        if auth_name not in auth_protocols or priv_name not in priv_protocols:
            raise ConnectionException(
                f"{self._where}: unknown SNMPv3 protocols {auth_name}/{priv_name}"
                f" (auth: {', '.join(auth_protocols)}; priv: {', '.join(priv_protocols)})"
            )
        auth_key = args.get("auth_key") or self.password
        return {
            "version": "3",
            "user": self.username,
            "auth_key": auth_key,
            "priv_key": args.get("priv_key") or auth_key,
            "auth_protocol": auth_protocols[auth_name],
            "priv_protocol": priv_protocols[priv_name],
        }

    def open(self) -> None:
        """Read sysObjectID: proves the device answers and tells which model it is."""
        self._known = None
        client = self._session = SnmpSession(
            self.hostname,
            self.port,
            self._auth(),
            self.snmp_timeout,
            self.snmp_retries,
            str(self.optional_args["context_name"]),
            max_varbinds=self.max_varbinds,
        )
        try:
            client.setup(max(float(self.timeout), 10.0))
            answer = client.get([sp.SYS_OBJECT_ID], self._request_deadline())
        except SnmpError as exc:
            self.close()
            if exc.timeout:  # an agent does not answer a wrong community at all
                raise ConnectTimeoutError(
                    f"{exc} (unreachable, or wrong community/credentials)"
                ) from None
            raise ConnectionException(str(exc)) from None
        object_id = answer[0][1] if answer else None
        self.sys_object_id = str(object_id or "")
        found = snmp_model(self.sys_object_id)
        expected = self.expected_model
        if found is None and expected in sp.snmp_switches():
            # sysObjectIDs we could not verify (the -08P) must not lock the real device out:
            # trust the inventory's model, and say so in the facts.
            found = expected
        if found is None:
            self.close()
            raise WrongDevice(
                f"{self._where}: sysObjectID {self.sys_object_id or '(none)'} is not a known"
                " D-Link DGS-1100 model"
            )
        if expected and expected != found:
            self.close()
            raise WrongDevice(
                f"{self._where}: the device is a {found}, the inventory says {expected}"
            )
        self.model = found

    def _end(self, session: SnmpSession) -> None:
        # SNMP has no session on the device: alive means opened and not closed.
        session.close()

    def _request_deadline(self) -> float:
        # pysnmp gives up after timeout * (retries + 1) by itself; this is only a safety net
        # for a stuck loop, with room for a busy machine.
        return self.snmp_timeout * (self.snmp_retries + 1) + 5.0

    def _need(self) -> SnmpSession:
        if self._session is None or self.model is None:
            raise ConnectionException(f"{self._where}: not open")
        return self._session

    # --- reading ---------------------------------------------------------------------

    def read_varbinds(self) -> list[sp.VarBind]:
        """The managed objects as the device has them now (VLAN rows found by a walk)."""
        client = self._need()
        assert self.model is not None
        port_count, poe_ports = sp.model_ports(self.model)
        deadline = float(self.timeout)
        rows = client.column(sp.VLAN_ROW_STATUS, deadline)
        vids = [int(oid.rsplit(".", 1)[1]) for oid, _ in rows]
        kinds: dict[str, str] = dict.fromkeys((sp.SYS_CONTACT, sp.SYS_NAME, sp.SYS_LOCATION), "str")
        for vid in vids:
            kinds[f"{sp.VLAN_NAME}.{vid}"] = "str"
            kinds[f"{sp.VLAN_EGRESS}.{vid}"] = "octets"
            kinds[f"{sp.VLAN_UNTAGGED}.{vid}"] = "octets"
        kinds.update({f"{sp.PVID}.{p}": "gauge" for p in range(1, port_count + 1)})
        kinds.update({f"{sp.POE_ADMIN}.{p}": "int" for p in poe_ports})
        values = dict(client.get(list(kinds), deadline))
        out = [sp.VarBind(oid, "int", int(value)) for oid, value in rows]
        for oid, kind in kinds.items():
            value = values.get(oid)
            if value is None:
                continue  # the device lacks it: the diff shows it as missing
            if kind == "str":
                out.append(sp.VarBind(oid, "str", bytes(value).decode("utf-8", "replace")))
            elif kind == "octets":
                out.append(sp.VarBind(oid, "octets", bytes(value)))
            else:
                out.append(sp.VarBind(oid, kind, int(value)))  # type: ignore[arg-type]
        self._known = sorted(out, key=lambda vb: sp.oid_key(vb.oid))
        return list(self._known)

    def read_plan(self) -> sp.SetPlan:
        """The device read back as a set-plan."""
        self._need()
        return sp.from_varbinds(str(self.model), self._read(ConnectionException))

    def _read(self, error: type[Exception]) -> list[sp.VarBind]:
        try:
            return self.read_varbinds()
        except SnmpError as exc:
            if exc.timeout and error is ConnectionException:
                error = ConnectTimeoutError
            raise error(f"reading the device failed: {exc}") from None

    def get_facts(self) -> dict[str, Any]:
        client = self._need()
        assert self.model is not None
        try:
            values = dict(
                client.get([sp.SYS_DESCR, sp.SYS_UPTIME, sp.SYS_NAME], self._request_deadline())
            )
        except SnmpError as exc:
            raise (ConnectTimeoutError if exc.timeout else ConnectionException)(str(exc)) from None
        port_count, _ = sp.model_ports(self.model)
        name = bytes(values.get(sp.SYS_NAME) or b"").decode("utf-8", "replace")
        return {
            "uptime": float(values.get(sp.SYS_UPTIME) or 0) / 100.0,
            "vendor": VENDOR,
            "os_version": bytes(values.get(sp.SYS_DESCR) or b"").decode("utf-8", "replace"),
            "serial_number": "",  # not in the standard MIBs
            "model": MODELS[self.model].product,
            "hostname": name,
            "fqdn": name,
            "interface_list": [str(p) for p in range(1, port_count + 1)],
        }

    def _config_text(self, which: str) -> str:
        """running: the device as set-plan YAML; candidate: the loaded plan; no startup."""
        if which == "running":
            return self.read_plan().to_yaml()
        return self.candidate.to_yaml() if which == "candidate" and self.candidate else ""

    # --- candidate -------------------------------------------------------------------

    def load_replace_candidate(
        self, filename: str | None = None, config: str | None = None
    ) -> None:
        """Load a set-plan (text or file). Raises MergeConfigException if it is invalid."""
        text = self._candidate_text(filename, config)
        try:
            plan = sp.parse_setplan(text)
        except sp.SetPlanError as exc:
            raise MergeConfigException(f"{self._where}: invalid set-plan: {exc}") from None
        if self.model is not None and plan.model != self.model:
            raise MergeConfigException(
                f"{self._where}: set-plan is for {plan.model}, the device is a {self.model}"
            )
        self.candidate = plan

    def load_merge_candidate(self, filename: str | None = None, config: str | None = None) -> None:
        """Same as replace: a set-plan names every managed object, there is nothing to merge."""
        self.load_replace_candidate(filename=filename, config=config)

    def compare_config(self) -> str:
        """Unified diff, device vs candidate, as varbind lines; "" when equal or no candidate.

        The device as this session last read it (``get_config``) or wrote it, else read now."""
        if self.candidate is None:
            return ""
        return sp.diff_text(self._current(ConnectionException), sp.to_varbinds(self.candidate))

    def _current(self, error: type[Exception]) -> list[sp.VarBind]:
        return list(self._known) if self._known is not None else self._read(error)

    # --- writing ---------------------------------------------------------------------

    def _check_policy(self) -> None:
        if self.require_v3 and self.snmp_version != "3":
            raise CommitError(
                f"{self._where}: refusing an SNMPv{self.snmp_version} write: policy requires"
                " SNMPv3 authPriv (nothing was sent)"
            )

    def _read_back(self, current: list[sp.VarBind], writes: list[sp.VarBind]) -> list[sp.VarBind]:
        """The device after ``writes``: ``current`` with every written object read again
        (one batched GET; a destroyed VLAN row reads as absent, and so do its columns)."""
        client = self._need()
        try:
            values = dict(client.get([vb.oid for vb in writes], self._request_deadline()))
        except SnmpError as exc:
            raise CommitError(f"{self._where}: reading back failed: {exc}") from None
        state = {vb.oid: vb for vb in current}
        kinds = {vb.oid: vb.kind for vb in writes}
        gone: set[int] = set()
        for oid, kind in kinds.items():
            value = values.get(oid)
            if value is None:
                state.pop(oid, None)
                vid = sp.row_of(oid)
                if vid is not None:
                    gone.add(vid)
            elif kind == "str":
                state[oid] = sp.VarBind(oid, "str", bytes(value).decode("utf-8", "replace"))
            elif kind == "octets":
                state[oid] = sp.VarBind(oid, "octets", bytes(value))
            else:
                state[oid] = sp.VarBind(oid, kind, int(value))
        after = [vb for vb in state.values() if sp.vlan_of(vb.oid) not in gone]
        return sorted(after, key=lambda vb: sp.oid_key(vb.oid))

    def _apply(self, desired: list[sp.VarBind], what: str) -> list[sp.VarBind]:
        """Write what differs in one SET PDU, verify by reading it back, then save.
        Returns what was sent."""
        client = self._need()
        assert self.model is not None
        current = self._current(CommitError)
        writes = sp.plan_writes(current, desired)
        if not writes:
            return []
        if what == "commit":
            # Captured before the SET, so rollback works after a failed commit.
            self._rollback_state = current
        deadline = self._request_deadline()
        self._known = None  # from here on, only a new read says what the device holds
        try:
            client.set(writes, deadline)
        except SnmpError as exc:
            self.last_writes = writes[: exc.sent]
            raise CommitError(
                f"{what} failed after {exc.sent} of {len(writes)} varbinds ({exc});"
                " the device may be half-changed: roll back"
            ) from None
        self.last_writes = writes
        after = self._read_back(current, writes)
        left = sp.plan_writes(after, desired)
        if left:
            raise CommitError(
                f"{self._where}: {what} did not stick, still different:\n"
                + sp.diff_text(after, desired)
            )
        self._known = after
        ids = MODELS[self.model].snmp
        assert ids is not None  # open() accepts SNMP switches only
        try:
            client.set([sp.VarBind(ids.save_oid, "int", ids.save_value)], deadline)
        except SnmpError as exc:
            raise CommitError(f"{what}: applied but not saved ({exc})") from None
        return writes

    def commit_config(self, message: str = "", revert_in: int | None = None) -> None:
        """Send only the differing varbinds, verify, save. Nothing is sent when equal."""
        self._no_revert(revert_in, "SNMP")
        if self.candidate is None:
            raise CommitError(f"{self._where}: no candidate loaded")
        self._check_policy()
        self.last_writes = []
        # A new attempt: rollback() must never undo an older, good commit.
        self._rollback_state = None
        self._attempted = True
        self._apply(sp.to_varbinds(self.candidate), "commit")
        self.candidate = None

    def rollback(self) -> None:
        """Re-apply the state read at the start of the last commit.

        Does nothing when the last commit changed nothing (no difference, or it failed
        before the first SET); raises CommitError when nothing was committed.
        """
        if not self._attempted:
            raise CommitError(f"{self._where}: no commit to roll back")
        if self._rollback_state is None:
            return
        self._check_policy()
        self._apply(self._rollback_state, "rollback")
