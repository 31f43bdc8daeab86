"""rspamd's scanning API: POST /checkv2 with the message, the envelope in headers.

https://rspamd.com/doc/developers/protocol.html: the reply has the `score`, the
`required_score` of the reject action, the `action` and each `symbols` entry with its score
(and a description when rspamd has one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from mailplane.shield.checks import Symbol


class RspamdUnavailable(Exception):
    """No usable answer (down, slow, or not rspamd): the caller goes on without it."""


@dataclass(frozen=True, slots=True)
class RspamdVerdict:
    score: float
    action: str  # "no action", "add header", "rewrite subject", "greylist", "reject"
    symbols: list[Symbol]


def rspamd_check(
    url: str,
    raw: bytes,
    *,
    sender: str,
    recipients: Sequence[str],
    timeout: float,
    client: httpx.Client | None = None,
) -> RspamdVerdict:
    headers = {"From": sender, "Pass": "all"}  # Pass: run every rule, no early exit
    # One Rcpt header per recipient, as rspamd's protocol expects.
    header_list = [*headers.items(), *(("Rcpt", r) for r in recipients[:50])]
    try:
        http = client or httpx.Client(timeout=timeout)
        try:
            reply = http.post(f"{url.rstrip('/')}/checkv2", content=raw, headers=header_list)
        finally:
            if client is None:
                http.close()
        reply.raise_for_status()
        body = reply.json()
        symbols = [
            Symbol(
                str(name),
                float(entry.get("score", 0.0)),
                str(entry.get("description") or ""),
            )
            for name, entry in (body.get("symbols") or {}).items()
        ]
        return RspamdVerdict(float(body["score"]), str(body["action"]), symbols)
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RspamdUnavailable(f"{type(exc).__name__}: {exc}"[:200]) from exc
