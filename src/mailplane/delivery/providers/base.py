"""The provider contract: send envelopes for one destination domain, get one SendResult each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mailplane.delivery.results import SendResult


@dataclass(frozen=True, slots=True)
class Envelope:
    recipient_id: int  # QueuedRecipient pk
    mail_from: str  # VERP return path, or "" for the null sender
    rcpt_to: str
    rcpt_domain: str
    data: bytes  # signed message


class Provider(Protocol):
    # How many connections (or concurrent requests) this provider may open per
    # destination domain; the worker splits a domain's envelopes into at most this many.
    max_connections_per_domain: int

    async def send(self, envelopes: Sequence[Envelope]) -> list[SendResult]:
        """Deliver envelopes that share rcpt_domain, in order; one result per envelope.

        Never raises for delivery problems: every failure is a TEMPORARY or PERMANENT result.
        """
        ...

    async def aclose(self) -> None:
        """Let go of what is kept between sends (idle connections); the worker calls it
        when it stops, and at the end of each run_once pass (whose event loop it was)."""
        ...


class KeepsNothingOpen:
    """For providers whose sends leave nothing open in between: closing is a no-op."""

    __slots__ = ()

    async def aclose(self) -> None:
        return None
