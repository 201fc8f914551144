"""NAPALM driver for the D-Link DGS-1100 non-/ME switches, which have no CLI: SNMP only.

Contract (what the push job can rely on):

* the config is a *set-plan* (:mod:`provisioner.push.setplan`); ``get_config()["running"]``
  is the device read back as set-plan YAML;
* ``load_replace_candidate``/``load_merge_candidate`` validate the plan (an invalid plan,
  or one for another model, raises ``MergeConfigException``; merge is the same as replace:
  the plan describes every managed object of the device);
* ``compare_config()`` is a unified diff of varbind lines, ``""`` when nothing differs;
* ``commit_config()`` reads the device, sends only the varbinds that differ (VLAN rows
  created with createAndGo and destroyed when the plan drops them), reads back to verify,
  then writes D-Link's save object. With nothing to change it sends nothing at all.
  After it, :attr:`DlinkSnmpDriver.last_writes` holds the varbinds sent;
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
max_varbinds       10        varbinds per SET PDU
model              None      expected catalog model key; checked against sysObjectID
=================  ========  ===========================================================

The constructor's ``timeout`` caps one whole operation (a read of the device, a commit).

pysnmp 7 is asyncio-only and an SnmpEngine is bound to the loop it first ran on, so each
driver owns one event loop in a private thread and one engine created inside it; the
synchronous methods submit coroutines to it (safe to call from any thread, and from code
that itself runs inside another event loop).

Registration: ``napalm.get_network_driver("dlink_snmp")`` looks for
``custom_napalm.dlink_snmp``, ``napalm.dlink_snmp``, ``napalm_dlink_snmp``; a module there
holding ``from provisioner.push.drivers.dlink_snmp import DlinkSnmpDriver`` does it. This
module imports the base *module*, not a base class, so even a star-import shim cannot make
napalm return an abstract base class.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from napalm.base.exceptions import CommitError, MergeConfigException

from provisioner.catalog import MODELS, snmp_model
from provisioner.push import setplan as sp
from provisioner.push.drivers import base
from provisioner.push.errors import ConnectionException, ConnectTimeoutError, WrongDevice

T = TypeVar("T")

VENDOR = "D-Link"
_GET_CHUNK = 20  # OIDs per GET PDU: small enough for any agent's response size


class SnmpError(Exception):
    """An SNMP request failed; ``timeout`` tells no-answer apart from a refusal."""

    def __init__(self, message: str, *, timeout: bool = False):
        super().__init__(message)
        self.timeout = timeout


class _NoMibCompiler:
    """Stands in for pysmi's MIB compiler: we send numeric OIDs only.

    With pysmi installed (snmpsim needs it), pysnmp builds a lark parser for ASN.1 MIBs on
    an engine's first request, ~1.5 s of CPU per driver; numeric OIDs never need it.
    """

    def compile(self, *names: str, **options: Any) -> dict[str, str]:
        return {}


class _SnmpClient:
    """A thin pysnmp 7 adapter on a private event loop. Values come back as plain Python."""

    def __init__(
        self,
        host: str,
        port: int,
        auth: dict[str, Any],
        timeout: float,
        retries: int,
        context_name: str = "",
    ) -> None:
        self._host, self._port = host, port
        self._auth_args = auth
        self._timeout, self._retries = timeout, retries
        self._context_name = context_name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"snmp-{host}:{port}", daemon=True
        )
        self._thread.start()
        self._engine: Any = None
        self._target: Any = None
        self._auth: Any = None
        self._lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, T], deadline: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=deadline)
        except TimeoutError:
            future.cancel()
            raise SnmpError(f"no answer within {deadline:g} s", timeout=True) from None

    async def _setup(self) -> None:
        from pysnmp.hlapi.v3arch import asyncio as h

        if self._engine is not None:
            return
        import pysnmp.smi.mibs

        self._engine = h.SnmpEngine()  # inside the running loop: it binds to this loop
        self._engine.get_mib_builder().set_mib_compiler(
            _NoMibCompiler(), str(Path(pysnmp.smi.mibs.__file__).parent)
        )
        self._target = await h.UdpTransportTarget.create(
            (self._host, self._port), timeout=self._timeout, retries=self._retries
        )
        a = self._auth_args
        if a["version"] == "3":
            self._auth = h.UsmUserData(
                a["user"],
                authKey=a["auth_key"],
                privKey=a["priv_key"],
                authProtocol=a["auth_protocol"],
                privProtocol=a["priv_protocol"],
            )
        else:
            # v2c only when the caller allows it; require_v3 refuses writes before sending.
            self._auth = h.CommunityData(a["community"], mpModel=1)  # noqa: S508

    @staticmethod
    def _plain(value: Any) -> Any:
        """pysnmp value -> bytes/int/str, or None for noSuchObject/Instance/endOfMibView."""
        from pyasn1.type import univ
        from pysnmp.proto import rfc1905

        if isinstance(value, rfc1905.NoSuchObject | rfc1905.NoSuchInstance | rfc1905.EndOfMibView):
            return None
        if isinstance(value, univ.OctetString):  # also IpAddress, Opaque
            return bytes(value.asOctets())
        if isinstance(value, univ.ObjectIdentifier):
            return str(value)
        return int(value)

    def _check(self, what: str, result: tuple[Any, Any, Any, Any]) -> list[tuple[str, Any]]:
        error_indication, error_status, error_index, var_binds = result
        where = f"{self._host}:{self._port}"
        if error_indication:
            from pysnmp.proto.errind import RequestTimedOut

            timed_out = isinstance(error_indication, RequestTimedOut)
            return self._fail(f"{where}: {what}: {error_indication}", timed_out)
        if error_status:
            oid = "?"
            if error_index and 0 < int(error_index) <= len(var_binds):
                oid = str(var_binds[int(error_index) - 1][0])
            return self._fail(f"{where}: {what}: {error_status.prettyPrint()} at {oid}", False)
        return [(str(oid), self._plain(val)) for oid, val in var_binds]

    @staticmethod
    def _fail(message: str, timeout: bool) -> list[tuple[str, Any]]:
        raise SnmpError(message, timeout=timeout)

    async def _get(self, oids: list[str]) -> list[tuple[str, Any]]:
        from pysnmp.hlapi.v3arch import asyncio as h

        await self._setup()
        out: list[tuple[str, Any]] = []
        for i in range(0, len(oids), _GET_CHUNK):
            objs = [h.ObjectType(h.ObjectIdentity(o)) for o in oids[i : i + _GET_CHUNK]]
            result = await h.get_cmd(
                self._engine,
                self._auth,
                self._target,
                h.ContextData(contextName=self._context_name),
                *objs,
                lookupMib=False,  # numeric OIDs, raw values: no MIB resolution
            )
            out += self._check("get", result)
        return out

    async def _walk(self, prefix: str) -> list[tuple[str, Any]]:
        from pysnmp.hlapi.v3arch import asyncio as h

        await self._setup()
        out: list[tuple[str, Any]] = []
        async for result in h.walk_cmd(
            self._engine,
            self._auth,
            self._target,
            h.ContextData(contextName=self._context_name),
            h.ObjectType(h.ObjectIdentity(prefix)),
            lexicographicMode=False,  # else it walks on to the end of the MIB
            lookupMib=False,
        ):
            out += [(o, v) for o, v in self._check("walk", result) if v is not None]
        return out

    async def _set(self, varbinds: list[sp.VarBind]) -> None:
        from pysnmp.hlapi.v3arch import asyncio as h

        await self._setup()
        objs = []
        for vb in varbinds:
            value: Any
            if vb.kind == "int":
                value = h.Integer32(int(vb.value))
            elif vb.kind == "gauge":
                value = h.Gauge32(int(vb.value))
            elif vb.kind == "octets":
                assert isinstance(vb.value, bytes)
                value = h.OctetString(vb.value)
            else:
                value = h.OctetString(str(vb.value).encode())
            objs.append(h.ObjectType(h.ObjectIdentity(vb.oid), value))
        result = await h.set_cmd(
            self._engine,
            self._auth,
            self._target,
            h.ContextData(contextName=self._context_name),
            *objs,
            lookupMib=False,
        )
        answered = self._check("set", result)
        # snmpsim (and some agents) answer errorStatus 0 with noSuchInstance for an object
        # they cannot write: that is a failure too.
        missing = [oid for oid, value in answered if value is None]
        if missing:
            raise SnmpError(f"{self._host}:{self._port}: set: no such object {', '.join(missing)}")

    def setup(self, deadline: float) -> None:
        """Create the engine now, so that its cost never counts against a request timeout."""
        with self._lock:
            self.run(self._setup(), deadline)

    def get(self, oids: list[str], deadline: float) -> list[tuple[str, Any]]:
        with self._lock:
            return self.run(self._get(oids), deadline)

    def walk(self, prefix: str, deadline: float) -> list[tuple[str, Any]]:
        with self._lock:
            return self.run(self._walk(prefix), deadline)

    def set(self, varbinds: list[sp.VarBind], deadline: float) -> None:
        with self._lock:
            self.run(self._set(varbinds), deadline)

    def close(self) -> None:
        async def _close() -> None:
            if self._engine is not None:
                self._engine.close_dispatcher()

        # Closing a broken engine must not mask the error that got us here.
        with contextlib.suppress(Exception):
            self.run(_close(), 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()


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
        "max_varbinds": 10,
        "model": None,
    }

    def __init__(
        self,
        hostname: str,
        username: str,
        password: str,
        timeout: int = 60,
        optional_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(hostname, username, password, timeout, optional_args)
        args = self.optional_args
        self.snmp_version = str(args["snmp_version"])
        if self.snmp_version not in ("2c", "3"):
            raise ConnectionException(f"snmp_version {self.snmp_version!r}: use '2c' or '3'")
        self.require_v3 = bool(args["require_v3"])
        self.snmp_timeout = float(args["snmp_timeout"])
        self.snmp_retries = int(args["snmp_retries"])
        self.max_varbinds = max(1, int(args["max_varbinds"]))
        self.expected_model: str | None = args["model"]
        self.model: str | None = None
        self.sys_object_id = ""
        self.candidate: sp.SetPlan | None = None
        self.last_writes: list[sp.VarBind] = []
        self._rollback_state: list[sp.VarBind] | None = None
        self._attempted = False
        self._session: _SnmpClient | None = None

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
        client = self._session = _SnmpClient(
            self.hostname,
            self.port,
            self._auth(),
            self.snmp_timeout,
            self.snmp_retries,
            str(self.optional_args["context_name"]),
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

    def _end(self, session: _SnmpClient) -> None:
        # SNMP has no session on the device: alive means opened and not closed.
        session.close()

    def _request_deadline(self) -> float:
        # pysnmp gives up after timeout * (retries + 1) by itself; this is only a safety net
        # for a stuck loop, with room for a busy machine.
        return self.snmp_timeout * (self.snmp_retries + 1) + 5.0

    def _need(self) -> _SnmpClient:
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
        rows = client.walk(sp.VLAN_ROW_STATUS, deadline)
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
        return sorted(out, key=lambda vb: sp.oid_key(vb.oid))

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

    def get_config(
        self,
        retrieve: str = "all",
        full: bool = False,
        sanitized: bool = False,
        format: str = "text",
    ) -> dict[str, str]:
        """running: the device as set-plan YAML; candidate: the loaded plan; no startup."""
        out = {"running": "", "candidate": "", "startup": ""}
        if retrieve in ("all", "running"):
            out["running"] = self.read_plan().to_yaml()
        if retrieve in ("all", "candidate") and self.candidate is not None:
            out["candidate"] = self.candidate.to_yaml()
        return out

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
        """Unified diff, device vs candidate, as varbind lines; "" when equal or no candidate."""
        if self.candidate is None:
            return ""
        return sp.diff_text(self._read(ConnectionException), sp.to_varbinds(self.candidate))

    # --- writing ---------------------------------------------------------------------

    def _check_policy(self) -> None:
        if self.require_v3 and self.snmp_version != "3":
            raise CommitError(
                f"{self._where}: refusing an SNMPv{self.snmp_version} write: policy requires"
                " SNMPv3 authPriv (nothing was sent)"
            )

    def _apply(self, desired: list[sp.VarBind], what: str) -> list[sp.VarBind]:
        """Write what differs, verify by reading back, then save. Returns what was sent."""
        client = self._need()
        assert self.model is not None
        current = self._read(CommitError)
        writes = sp.plan_writes(current, desired)
        if not writes:
            return []
        if what == "commit":
            # Captured before the first SET, so rollback works after a half-done commit.
            self._rollback_state = current
        deadline = self._request_deadline()
        sent: list[sp.VarBind] = []
        try:
            for i in range(0, len(writes), self.max_varbinds):
                pdu = writes[i : i + self.max_varbinds]
                client.set(pdu, deadline)
                sent += pdu
        except SnmpError as exc:
            self.last_writes = sent
            raise CommitError(
                f"{what} failed after {len(sent)} of {len(writes)} varbinds ({exc});"
                " the device may be half-changed: roll back"
            ) from None
        self.last_writes = sent
        after = self._read(CommitError)
        left = sp.plan_writes(after, desired)
        if left:
            raise CommitError(
                f"{self._where}: {what} did not stick, still different:\n"
                + sp.diff_text(after, desired)
            )
        ids = MODELS[self.model].snmp
        assert ids is not None  # open() accepts SNMP switches only
        try:
            client.set([sp.VarBind(ids.save_oid, "int", ids.save_value)], deadline)
        except SnmpError as exc:
            raise CommitError(f"{what}: applied but not saved ({exc})") from None
        return sent

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
