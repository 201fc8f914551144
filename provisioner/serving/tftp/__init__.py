"""The TFTP server: packet codec, transfer state machine, and the server loop."""

from provisioner.serving.tftp.codec import ERR_ACCESS, ERR_BUSY, ERR_NOT_FOUND, ERR_UNKNOWN_TID
from provisioner.serving.tftp.server import Resolver, TftpEvent, TftpService, bind_udp

__all__ = [
    "ERR_ACCESS",
    "ERR_BUSY",
    "ERR_NOT_FOUND",
    "ERR_UNKNOWN_TID",
    "Resolver",
    "TftpEvent",
    "TftpService",
    "bind_udp",
]
