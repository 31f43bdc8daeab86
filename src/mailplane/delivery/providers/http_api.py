"""HTTP API providers: Mailgun (raw MIME send) and SendGrid (v3 mail send).

Requests go through urllib in a worker thread: no HTTP client dependency, and the API
call is one round trip per envelope, so a thread per in-flight request is cheap enough.
A 2xx here means "accepted by the provider", which is what the event records. What happens
next (delivered, bounced, deferred) the provider reports to its webhook; every send is
tagged with our queue row id (RECIPIENT_VARIABLE) so that delivery/provider_webhooks.py can
put the report on the right row.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import getaddresses
from typing import Any
from urllib.parse import quote, urlparse

from mailplane.delivery.config import conf
from mailplane.delivery.providers.base import Envelope, KeepsNothingOpen
from mailplane.delivery.results import SendResult

MAILGUN_REGIONS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
SENDGRID_BASE = "https://api.sendgrid.com"

# The name under which each send carries its QueuedRecipient id: a Mailgun custom variable
# (`v:<name>`, echoed in webhooks as event-data["user-variables"][<name>]) and a SendGrid
# custom arg (echoed as a top-level field of each Event Webhook event).
RECIPIENT_VARIABLE = "mailplane_recipient_id"


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    body: str
    headers: dict[str, str]


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> HttpReply:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpReply(
                response.status, response.read().decode("utf-8", "replace"), dict(response.headers)
            )
    except urllib.error.HTTPError as exc:
        return HttpReply(exc.code, exc.read().decode("utf-8", "replace"), dict(exc.headers))


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


async def _post_classified(
    *,
    url: str,
    body: bytes,
    headers: dict[str, str],
    ok: set[int],
    permanent: set[int] | None,
    provider: str,
) -> SendResult:
    host = urlparse(url).hostname or url
    try:
        reply = await asyncio.to_thread(_post, url, body, headers, conf("DELIVERY_HTTP_TIMEOUT"))
    except (OSError, urllib.error.URLError) as exc:
        return SendResult.temporary(f"451 4.4.1 {provider} API unreachable: {exc}", host)
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


async def _send_sequentially(envelopes: Sequence[Envelope], send_one: Any) -> list[SendResult]:
    return [await send_one(envelope) for envelope in envelopes]


@dataclass(slots=True)
class MailgunProvider(KeepsNothingOpen):
    """POST {base}/v3/{domain}/messages.mime, multipart `to` + `v:<RECIPIENT_VARIABLE>` +
    `message` (the raw MIME), HTTP basic auth api:<key>. 200 accepted; 4xx except 429
    permanent; 429/5xx temporary."""

    base_url: str
    domain: str
    api_key: str
    max_connections_per_domain: int

    @classmethod
    def from_config(
        cls, configuration: dict[str, Any], credentials: dict[str, Any]
    ) -> MailgunProvider:
        region = str(configuration.get("region") or "us")
        return cls(
            base_url=str(configuration.get("base_url") or MAILGUN_REGIONS[region]).rstrip("/"),
            domain=str(configuration["domain"]),
            api_key=str(credentials.get("api_key", "")),
            max_connections_per_domain=int(
                configuration.get("max_connections_per_domain")
                or conf("DELIVERY_MAX_CONNECTIONS_PER_DOMAIN")
            ),
        )

    def _form(self, envelope: Envelope) -> tuple[bytes, str]:
        boundary = f"mailplane-{secrets.token_hex(12)}"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="to"\r\n\r\n'
            f"{envelope.rcpt_to}\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="v:{RECIPIENT_VARIABLE}"'
            f"\r\n\r\n{envelope.recipient_id}\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="message"; '
            f'filename="message.mime"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        body = head + envelope.data + f"\r\n--{boundary}--\r\n".encode()
        return body, f"multipart/form-data; boundary={boundary}"

    async def _send_one(self, envelope: Envelope) -> SendResult:
        body, content_type = self._form(envelope)
        token = base64.b64encode(f"api:{self.api_key}".encode()).decode()
        return await _post_classified(
            url=f"{self.base_url}/v3/{quote(self.domain)}/messages.mime",
            body=body,
            headers={"Authorization": f"Basic {token}", "Content-Type": content_type},
            ok={200},
            permanent=None,
            provider="Mailgun",
        )

    async def send(self, envelopes: Sequence[Envelope]) -> list[SendResult]:
        return await _send_sequentially(envelopes, self._send_one)


def _address(value: str) -> dict[str, str]:
    name, email = getaddresses([value])[0] if value else ("", "")
    return {"email": email, "name": name} if name else {"email": email}


# SendGrid builds these itself and rejects them in "headers".
_SENDGRID_RESERVED = {
    "dkim-signature",
    "received",
    "content-type",
    "content-transfer-encoding",
    "to",
    "from",
    "subject",
    "reply-to",
    "cc",
    "bcc",
    "mime-version",
    "date",
    "x-sg-id",
    "x-sg-eid",
}


def sendgrid_payload(*, raw: bytes, rcpt_to: str) -> dict[str, Any]:
    """The v3 /mail/send JSON for one recipient, built from the parsed message."""
    message = message_from_bytes(raw, _class=EmailMessage, policy=default_policy)
    assert isinstance(message, EmailMessage)
    content: list[dict[str, str]] = []
    attachments: list[dict[str, str]] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        disposition = part.get_content_disposition()
        ctype = part.get_content_type()
        if disposition is None and ctype in ("text/plain", "text/html"):
            value = str(part.get_content()).replace("\r\n", "\n")  # JSON text, not wire form
            content.append({"type": ctype, "value": value})
        else:
            decoded = part.get_payload(decode=True)
            data = decoded if isinstance(decoded, bytes) else b""
            item = {
                "content": base64.b64encode(data).decode(),
                "type": ctype,
                "filename": part.get_filename() or "attachment",
                "disposition": "inline" if disposition == "inline" else "attachment",
            }
            if part.get("Content-ID"):
                item["content_id"] = str(part["Content-ID"]).strip("<>")
            attachments.append(item)
    # SendGrid requires text/plain before text/html, and at least one content entry.
    content.sort(key=lambda c: c["type"] != "text/plain")
    payload: dict[str, Any] = {
        "personalizations": [{"to": [{"email": rcpt_to}]}],
        "from": _address(str(message.get("From", ""))),
        "subject": str(message.get("Subject", "")) or " ",
        "content": content or [{"type": "text/plain", "value": " "}],
    }
    if message.get("Reply-To"):
        payload["reply_to"] = _address(str(message["Reply-To"]))
    headers = {
        k: str(v)
        for k, v in message.items()
        if k.lower() not in _SENDGRID_RESERVED and not k.lower().startswith("content-")
    }
    if headers:
        payload["headers"] = headers
    if attachments:
        payload["attachments"] = attachments
    return payload


@dataclass(slots=True)
class SendGridProvider(KeepsNothingOpen):
    """POST {base}/v3/mail/send with a Bearer key, custom_args carrying RECIPIENT_VARIABLE.
    202 accepted; 400/401/403/413 permanent; 429 and 5xx temporary."""

    base_url: str
    api_key: str
    max_connections_per_domain: int

    @classmethod
    def from_config(
        cls, configuration: dict[str, Any], credentials: dict[str, Any]
    ) -> SendGridProvider:
        return cls(
            base_url=str(configuration.get("base_url") or SENDGRID_BASE).rstrip("/"),
            api_key=str(credentials.get("api_key", "")),
            max_connections_per_domain=int(
                configuration.get("max_connections_per_domain")
                or conf("DELIVERY_MAX_CONNECTIONS_PER_DOMAIN")
            ),
        )

    async def _send_one(self, envelope: Envelope) -> SendResult:
        payload = sendgrid_payload(raw=envelope.data, rcpt_to=envelope.rcpt_to)
        # custom_args values must be strings; SendGrid adds them to every webhook event.
        payload["custom_args"] = {RECIPIENT_VARIABLE: str(envelope.recipient_id)}
        body = json.dumps(payload)
        return await _post_classified(
            url=f"{self.base_url}/v3/mail/send",
            body=body.encode(),
            headers={
                "Authorization": f"Bearer {self.api_key}",
                "Content-Type": "application/json",
            },
            ok={200, 202},
            permanent={400, 401, 403, 404, 413},
            provider="SendGrid",
        )

    async def send(self, envelopes: Sequence[Envelope]) -> list[SendResult]:
        return await _send_sequentially(envelopes, self._send_one)
