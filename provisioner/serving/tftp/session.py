"""One read transfer as a state machine over blocks (RFC 1350 lock-step, RFC 7440 windows).

Pure: it says which packets to send; the server owns the socket and the timer. Blocks are
numbered from 1 on the wire modulo 65,536 (a file past 32 MiB at 512-byte blocks rolls
over); the session keeps absolute numbers and maps each ACK back into its window. A window
of N blocks goes out at once; the client acknowledges the last block it got in order, and
the next window starts after it (a partial ACK means the rest of the window is sent again).
Retransmission is driven by the timer alone: duplicate ACKs never multiply DATA packets (no
Sorcerer's Apprentice).
"""

from __future__ import annotations

from provisioner.serving.tftp import codec


class Transfer:
    """Sending ``payload`` with the negotiated ``terms``."""

    __slots__ = ("acked", "blksize", "blocks", "oack", "payload", "sent", "window")

    def __init__(self, payload: bytes, terms: codec.Terms):
        self.payload = memoryview(payload)
        self.blksize = terms.blksize
        self.window = terms.windowsize
        # The last block is shorter than blksize (empty when the size is a multiple of it).
        self.blocks = len(payload) // terms.blksize + 1
        self.oack = codec.oack(terms.oack) if terms.oack else b""
        self.acked = 0  # every block up to this one was acknowledged (0: none, or the OACK)
        self.sent = 0  # the highest block sent so far

    @property
    def done(self) -> bool:
        return self.acked >= self.blocks

    def start(self) -> list[bytes]:
        """The first packets: the OACK (the client ACKs it as block 0), or the first window."""
        if self.oack:
            return [self.oack]
        return self._window()

    def on_ack(self, number: int) -> list[bytes] | None:
        """Packets to send after ACK ``number``; None when it made no progress (a duplicate,
        or a number outside the window: ignored, the timer decides)."""
        if self.sent == 0:  # waiting for the OACK's acknowledgement (block 0)
            return self._window() if number == 0 else None
        block = self._absolute(number)
        if block is None or block <= self.acked:
            return None
        self.acked = block
        return [] if self.done else self._window()

    def resend(self) -> list[bytes]:
        """What the timer sends again: the OACK if it is not acknowledged, else the window."""
        if self.oack and self.sent == 0:
            return [self.oack]
        return self._window()

    def _window(self) -> list[bytes]:
        first = self.acked + 1
        last = min(self.acked + self.window, self.blocks)
        self.sent = max(self.sent, last)
        size = self.blksize
        return [
            codec.data(b, self.payload[(b - 1) * size : b * size]) for b in range(first, last + 1)
        ]

    def _absolute(self, number: int) -> int | None:
        """The absolute block an ACK's 16-bit number stands for, within what was sent."""
        lowest = self.acked
        for block in range(self.sent, lowest - 1, -1):
            if block & 0xFFFF == number:
                return block
        return None
