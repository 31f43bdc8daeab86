"""What the HTTP API providers share (mailgun.py, sendgrid.py): the POST, and reading its
answer as a SendResult.

Requests go through httpx (HttpSession: one pooled client per provider, on the event loop,
with the configured timeout).
A 2xx here means "accepted by the provider", which is what the event records. What happens
next (delivered, bounced, deferred) the provider reports to its webhook; every send is
tagged with our queue row id (RECIPIENT_VARIABLE) so that the provider's webhook can
put the report on the right row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import httpx

from mailplane.delivery.config import conf
from mailplane.delivery.providers.base import Envelope
from mailplane.delivery.results import SendResult

# The name under which each send carries its QueuedRecipient id: a Mailgun custom variable
# (`v:<name>`, echoed in webhooks as event-data["user-variables"][<name>]) and a SendGrid
# custom arg (echoed as a top-level field of each Event Webhook event).
RECIPIENT_VARIABLE = "mailplane_recipient_id"


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    body: str
    headers: dict[str, str]


class HttpSession:
    """A provider's pooled HTTP client (httpx): connections are kept between sends, and
    every request has the configured timeout. Opened on first use, on the loop that sends
    (run_once runs a loop per pass and closes its providers at the end of it), and closed
    by aclose()."""

    __slots__ = ("_client",)

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    def _open(self) -> httpx.AsyncClient:
        if self._client is None:
            timeout = float(conf("DELIVERY_HTTP_TIMEOUT"))
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                headers={"User-Agent": "Mailplane"},
                follow_redirects=False,  # a send API that redirects is misconfigured
            )
        return self._client

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> HttpReply:
        response = await self._open().post(url, content=body, headers=headers)
        return HttpReply(
            response.status_code,
            response.content.decode("utf-8", "replace"),
            dict(response.headers),
        )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _error_text(reply: HttpReply) -> str:
    """The provider's own explanation: Mailgun {"message"}, SendGrid {"errors":[{"message"}]}."""
    try:
        data = json.loads(reply.body)
    except ValueError:
        return " ".join(reply.body.split())[:300]
    if isinstance(data, dict):
        if isinstance(data.get("errors"), list):
            return "; ".join(str(e.get("message", e)) for e in data["errors"])[:300]
        if "message" in data:
            return str(data["message"])[:300]
    return " ".join(reply.body.split())[:300]


async def post_classified(
    *,
    session: HttpSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    ok: set[int],
    permanent: set[int] | None,
    provider: str,
) -> SendResult:
    host = urlparse(url).hostname or url
    try:
        reply = await session.post(url, body, headers)
    except httpx.HTTPError as exc:  # transport: refused, reset, timed out, bad reply
        why = str(exc) or type(exc).__name__  # httpx timeouts can carry no message
        return SendResult.temporary(f"451 4.4.1 {provider} API unreachable: {why}", host)
    text = f"HTTP {reply.status} {_error_text(reply)}".strip()
    if reply.status in ok:
        return SendResult.delivered(text, host, reply.status)
    is_permanent = (
        reply.status in permanent
        if permanent is not None
        else 400 <= reply.status < 500 and reply.status != 429
    )
    # 429 (rate limited) and 5xx are the provider's temporary trouble, not the recipient's.
    if is_permanent:
        return SendResult.permanent(f"550 5.0.0 {provider} refused: {text}", host, reply.status)
    return SendResult.temporary(f"451 4.0.0 {provider}: {text}", host, reply.status)


async def send_sequentially(envelopes: Sequence[Envelope], send_one: Any) -> list[SendResult]:
    return [await send_one(envelope) for envelope in envelopes]
