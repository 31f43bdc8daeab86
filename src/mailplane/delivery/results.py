"""Typed outcomes of one delivery attempt, temporary and permanent failures kept apart."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    DELIVERED = "delivered"  # accepted by the next hop (MX, smarthost, provider API)
    TEMPORARY = "temporary"  # 4xx, connection failure, timeout: retry later
    PERMANENT = "permanent"  # 5xx: bounce now


_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True, slots=True)
class SendResult:
    status: Status
    reply: str = ""  # the remote reply, e.g. "550 5.1.1 no such user"
    remote_host: str = ""  # MX host name, smarthost or provider API host
    code: int | None = None  # the SMTP (or HTTP) status code when there was one
    # False: never sent, because the receiver had just asked us to slow down (politeness.py);
    # the message is held, not retried with backoff, and the attempt is not counted.
    attempted: bool = True

    @classmethod
    def delivered(cls, reply: str, remote_host: str, code: int | None = 250) -> SendResult:
        return cls(Status.DELIVERED, reply, remote_host, code)

    @classmethod
    def temporary(cls, reply: str, remote_host: str = "", code: int | None = None) -> SendResult:
        return cls(Status.TEMPORARY, reply, remote_host, code)

    @classmethod
    def permanent(cls, reply: str, remote_host: str = "", code: int | None = None) -> SendResult:
        return cls(Status.PERMANENT, reply, remote_host, code)

    @classmethod
    def not_attempted(cls, reply: str, remote_host: str = "") -> SendResult:
        return cls(Status.TEMPORARY, reply, remote_host, None, attempted=False)

    @classmethod
    def from_smtp(cls, code: int, message: str, remote_host: str) -> SendResult:
        """RFC 5321 §4.2.1: 2yz success, 4yz transient, 5yz permanent; anything else is odd
        enough to retry rather than bounce."""
        reply = f"{code} {message}".strip()
        if 200 <= code < 300:
            return cls.delivered(reply, remote_host, code)
        if 500 <= code < 600:
            return cls.permanent(reply, remote_host, code)
        return cls.temporary(reply, remote_host, code)

    @property
    def enhanced_status(self) -> str:
        """The RFC 3463 status for a DSN: the reply's own if it has one, else derived."""
        found = _ENHANCED.search(self.reply)
        if found:
            return found.group(0)
        if self.status is Status.DELIVERED:
            return "2.0.0"
        return "5.0.0" if self.status is Status.PERMANENT else "4.0.0"
