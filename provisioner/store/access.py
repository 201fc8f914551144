"""The handle every layer reads the store through: settings, the database, the vault, and the
lookups all of them need. The orders service extends it with the writes (only the orders
layer and the adapters above it hold the service; rendering, serving and push take this)."""

from __future__ import annotations

import threading

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.documents.document import normalize_mac
from provisioner.errors import DeviceUnknown, OrderUnknown
from provisioner.settings import Settings
from provisioner.store.db import Database
from provisioner.store.models import Device, Order, SecretRow
from provisioner.store.vault import Vault


class Store:
    """Settings, database and vault of one store. One per process; thread-safe."""

    def __init__(self, settings: Settings, db: Database | None = None):
        self.settings = settings
        self.db = db or Database(settings)
        self._vault: Vault | None = None
        self._vault_lock = threading.Lock()

    @property
    def vault(self) -> Vault:
        # The key is read (or created) only when a secret is needed: validate never touches it.
        with self._vault_lock:
            if self._vault is None:
                self._vault = Vault(self.settings)
            return self._vault

    def get(self, session: Session, order_id: str) -> Order:
        order = session.scalar(select(Order).where(Order.order_id == order_id))
        if order is None:
            raise OrderUnknown(f"order {order_id}: not in the store")
        return order

    def find_device(self, session: Session, mac: str) -> Device:
        norm = normalize_mac(mac)
        dev = session.scalar(select(Device).where(Device.mac == norm))
        if dev is None:
            raise DeviceUnknown(f"MAC {norm}: no device with this MAC in the store")
        return dev

    def secret(self, session: Session, order: Order, owner: str, name: str) -> str:
        row = session.scalar(
            select(SecretRow).where(
                SecretRow.order_pk == order.id, SecretRow.owner == owner, SecretRow.name == name
            )
        )
        if row is None:
            raise DeviceUnknown(f"order {order.order_id}: no secret {name} for {owner}")
        return self.vault.decrypt(row.ciphertext)
