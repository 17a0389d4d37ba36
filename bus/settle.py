"""The one rule that says what happens to a bus message when handling it raised.

- :class:`Permanent` (bad payload, impossible request): ``term`` it and dead-letter it; a retry
  cannot help.
- :class:`Transient` and anything unexpected (a server briefly down, a timeout): ``nak`` it with a
  delay so another delivery tries again, up to the consumer's MaxDeliver.
- No exception: ``ack`` it.
"""

from __future__ import annotations

import enum


class CodeRunnerError(Exception):
    """Base of every error raised by Code Runner's plumbing."""


class Permanent(CodeRunnerError):
    """Retrying cannot fix this message."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class Transient(CodeRunnerError):
    """Retrying later may succeed."""


class Disposition(enum.Enum):
    ACK = "ack"
    NAK = "nak"
    TERM = "term"


def disposition(exc: BaseException | None) -> Disposition:
    if exc is None:
        return Disposition.ACK
    if isinstance(exc, Permanent):
        return Disposition.TERM
    return Disposition.NAK


# Delay before a nak'd message is redelivered, by delivery attempt (1-based).
NAK_DELAYS_SECONDS = (0.5, 2.0, 5.0, 15.0)


def nak_delay(num_delivered: int) -> float:
    return NAK_DELAYS_SECONDS[min(max(num_delivered, 1), len(NAK_DELAYS_SECONDS)) - 1]
