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
