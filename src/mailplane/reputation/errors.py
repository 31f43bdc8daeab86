"""The reputation checks' refusals, on top of core/errors.py's tree:

DomainError
├── Unavailable
│   └── RateLimited
│       └── OverCap    a refuse-mode key's message is over a cap this hour/day (HTTP 429)
└── NotAllowed
    └── SendingPaused  the server or key is paused (bounce or complaint rate)  (HTTP 403)
"""

from __future__ import annotations

import math
from datetime import datetime

from mailplane.core.errors import ImapStatus, NotAllowed, RateLimited, SmtpStatus


class OverCap(RateLimited):
    """429 (RFC 6585 §4) with Retry-After (RFC 9110 §10.2.3): the same request succeeds
    at `retry_at`, when the window that is full opens again (`OverCap.until`)."""

    code = "over_cap"
    # RFC 3463 §3.4: X.3.1 mail system full (temporary): a limit that resets.
    smtp_status = SmtpStatus(452, "4.3.1")
    # RFC 9051 §7.1: [LIMIT], an operation refused for a limit of the server's.
    imap_status = ImapStatus("NO", "LIMIT")
    retry_at: datetime | None = None

    @classmethod
    def until(cls, message: str, *, retry_at: datetime, now: datetime) -> OverCap:
        wait = max(1, math.ceil((retry_at - now).total_seconds()))
        refusal = cls(
            f"{message}; accepted from {retry_at.isoformat()}",
            details={"retry_at": [retry_at.isoformat()], "retry_after": [str(wait)]},
            retry_after=wait,  # DomainError.http_headers: Retry-After
        )
        refusal.retry_at = retry_at
        return refusal


class SendingPaused(NotAllowed):
    """403, not 423 or 429: retrying does not help (429/503 say it would, later), and 423
    is WebDAV's, for a resource under a lock token (RFC 4918 §11.3) no client here holds.
    The request is understood and refused until an operator resumes sending (RFC 9110
    §15.5.4), which is what SES answers too (AccountSendingPausedException)."""

    code = "sending_paused"
    # RFC 3463 §3.8: X.7.1 delivery not authorized, message refused.
    smtp_status = SmtpStatus(550, "5.7.1")
