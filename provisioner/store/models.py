"""The store's tables (SQLAlchemy 2.x). Schema changes go through Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from provisioner.store.types import UtcDateTime


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    # Every datetime column is a UtcDateTime: aware UTC in and out, on SQLite as on PostgreSQL.
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime}


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    vat: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(200))


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    plan: Mapped[str] = mapped_column(String(32))
    lines: Mapped[int] = mapped_column(Integer)
    options: Mapped[str] = mapped_column(Text)  # canonical JSON of the document's options
    state: Mapped[str] = mapped_column(String(16), default="active")  # active | cancelled
    source: Mapped[str] = mapped_column(String(500), default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The store generation of the order's last change (see store.changes): serving reloads
    # every order whose generation passed the last one it saw.
    generation: Mapped[int] = mapped_column(Integer, default=0, index=True)

    customer: Mapped[Customer] = relationship()
    sites: Mapped[list[Site]] = relationship(
        back_populates="order", cascade="all, delete-orphan", order_by="Site.position"
    )
    extensions: Mapped[list[Extension]] = relationship(
        back_populates="order", cascade="all, delete-orphan", order_by="Extension.position"
    )
    devices: Mapped[list[Device]] = relationship(
        back_populates="order",
        cascade="all, delete-orphan",
        order_by="Device.position",
        foreign_keys="Device.order_pk",
    )
    numbers: Mapped[list[Number]] = relationship(
        back_populates="order", cascade="all, delete-orphan", order_by="Number.position"
    )


class Number(Base):
    """A fixed number the customer holds: single, a GNR range (number..last), or ISDN member."""

    __tablename__ = "numbers"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_pk: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8))  # single | gnr | isdn
    grp: Mapped[int] = mapped_column(Integer, default=0)  # ISDN group index
    position: Mapped[int] = mapped_column(Integer)
    number: Mapped[str] = mapped_column(String(16))
    last: Mapped[str | None] = mapped_column(String(16), nullable=True)  # GNR range end

    order: Mapped[Order] = relationship(back_populates="numbers")


class Site(Base):
    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("order_pk", "site_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    order_pk: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    site_id: Mapped[str] = mapped_column(String(40))
    position: Mapped[int] = mapped_column(Integer)
    address: Mapped[str] = mapped_column(String(200))
    connectivity: Mapped[str] = mapped_column(String(8))
    pppoe_username: Mapped[str] = mapped_column(String(128))

    order: Mapped[Order] = relationship(back_populates="sites")


class Extension(Base):
    __tablename__ = "extensions"
    __table_args__ = (
        UniqueConstraint("order_pk", "short"),
        UniqueConstraint("order_pk", "number"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    order_pk: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    site_pk: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    position: Mapped[int] = mapped_column(Integer)
    number: Mapped[str] = mapped_column(String(16))
    short: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(200), nullable=True)
    mobile: Mapped[str | None] = mapped_column(String(16), nullable=True)
    conference: Mapped[str] = mapped_column(String(64), default="")  # comma-separated

    order: Mapped[Order] = relationship(back_populates="extensions")
    site: Mapped[Site] = relationship()


class Device(Base):
    """A box of the order. ``mac``/``serial`` empty means planned: not bound to a box yet."""

    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("order_pk", "device_id"),
        UniqueConstraint("switch_pk", "port"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    order_pk: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    device_id: Mapped[str] = mapped_column(String(40))
    position: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(40))
    site_pk: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), nullable=True)
    # One box, one device, across every order.
    mac: Mapped[str | None] = mapped_column(String(17), unique=True, nullable=True)
    serial: Mapped[str | None] = mapped_column(String(12), unique=True, nullable=True)
    # Where the MAC/serial came from: the order document, or a technician's bind.
    identity_source: Mapped[str] = mapped_column(String(8), default="document")
    # Whether the device itself came from the document or from a bind.
    origin: Mapped[str] = mapped_column(String(8), default="document")
    switch_pk: Mapped[int | None] = mapped_column(
        ForeignKey("devices.id", ondelete="SET NULL"), nullable=True
    )
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    fax_pos: Mapped[str | None] = mapped_column(String(32), nullable=True)  # comma-separated

    order: Mapped[Order] = relationship(back_populates="devices", foreign_keys=[order_pk])
    site: Mapped[Site | None] = relationship()
    switch: Mapped[Device | None] = relationship(remote_side=[id], foreign_keys=[switch_pk])
    terminals: Mapped[list[Terminal]] = relationship(
        back_populates="device", cascade="all, delete-orphan", order_by="Terminal.slot"
    )


class Terminal(Base):
    """A terminal bound to one extension: a desk phone (slot 0) or a DECT handset slot (1..n).

    ``extension_pk`` is unique: the store itself refuses a second terminal on an extension.
    """

    __tablename__ = "terminals"
    __table_args__ = (UniqueConstraint("device_pk", "slot"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    order_pk: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    slot: Mapped[int] = mapped_column(Integer, default=0)
    extension_pk: Mapped[int] = mapped_column(
        ForeignKey("extensions.id", ondelete="CASCADE"), unique=True
    )
    model: Mapped[str] = mapped_column(String(40))

    device: Mapped[Device] = relationship(back_populates="terminals")
    extension: Mapped[Extension] = relationship()


class SecretRow(Base):
    """One credential, encrypted with the key kept outside the database."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("order_pk", "owner", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    order_pk: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    owner: Mapped[str] = mapped_column(String(64))  # "extension:201", "device:iad-milano", ...
    name: Mapped[str] = mapped_column(String(32))  # "sip_password", "admin_password", ...
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    source: Mapped[str] = mapped_column(String(10))  # generated | document | rotated
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """Who did what, when, to which order or device. Never holds a secret."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_order", "order_id"),
        Index("ix_audit_device", "device"),
        Index("ix_audit_at", "at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(40))
    order_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    device: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")  # canonical JSON


class Enrollment(Base):
    """A time-boxed window in which a device (or every device of an order) may fetch its files
    without credentials. Arming clears the device's bound source address."""

    __tablename__ = "enrollments"
    __table_args__ = (Index("ix_enrollment_order", "order_pk"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    order_pk: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    device_pk: Mapped[int | None] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), nullable=True, unique=True
    )
    armed_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    armed_by: Mapped[str] = mapped_column(String(100))


class PublishedFile(Base):
    """A file as every server serves it, published by the write that changed it.

    One row per served file of a device of an active order; written in the same transaction
    as the change (a failed render refuses the change), deleted with it (a cancelled order,
    an unbound or swapped-out box). ``ciphertext`` is the body encrypted with the vault key:
    device files hold passwords. ``generation`` is the order's when it was published.
    """

    __tablename__ = "published_files"
    __table_args__ = (Index("ix_published_order", "order_pk"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    order_pk: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255), unique=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    generation: Mapped[int] = mapped_column(Integer)
    published_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeviceState(Base):
    """What a device did last: the source it is bound to and the file it fetched."""

    __tablename__ = "device_state"
    device_pk: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    bound_source: Mapped[str | None] = mapped_column(String(45), nullable=True)
    bound_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_file: Mapped[str | None] = mapped_column(String(255), nullable=True)
    last_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_source: Mapped[str | None] = mapped_column(String(45), nullable=True)
    last_protocol: Mapped[str | None] = mapped_column(String(8), nullable=True)
    last_user_agent: Mapped[str | None] = mapped_column(String(200), nullable=True)
    fetches: Mapped[int] = mapped_column(Integer, default=0)
    # Fetches of this device's files that were refused (window closed, another source).
    refusals: Mapped[int] = mapped_column(Integer, default=0)
    last_refused_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_refused_source: Mapped[str | None] = mapped_column(String(45), nullable=True)


# Rows an order's published files or its fetch decisions are made from.
CONTENT: tuple[type[Any], ...] = (
    Order,
    Customer,
    Site,
    Extension,
    Number,
    Device,
    Terminal,
    SecretRow,
    Enrollment,
)


class Counter(Base):
    """A named counter of the store; ``generation`` orders every change to an order."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class SourceBlock(Base):
    """A source address blocked for sweeping device names (DESIGN.md §5), or lifted."""

    __tablename__ = "source_blocks"
    __table_args__ = (Index("ix_source_blocks_source", "source"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(45))
    blocked_at: Mapped[datetime] = mapped_column(default=utcnow)
    until: Mapped[datetime] = mapped_column()
    protocol: Mapped[str] = mapped_column(String(8), default="")
    names: Mapped[int] = mapped_column(Integer, default=0)  # distinct unknown identities seen
    lifted_at: Mapped[datetime | None] = mapped_column(nullable=True)
    lifted_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
