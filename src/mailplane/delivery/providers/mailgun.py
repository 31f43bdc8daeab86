"""Mailgun: sending (the raw-MIME messages API) and its event webhook, side by side.

Sending: POST {base}/v3/{domain}/messages.mime; every send carries our queue row id as the
custom variable RECIPIENT_VARIABLE, which Mailgun echoes in each event it reports.
Webhook: JSON events signed with the account's HTTP webhook signing key (HMAC-SHA256 over
timestamp + token), put on the rows by webhooks.reports_record.
(https://documentation.mailgun.com/docs/mailgun/user-manual/tracking-messages/)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from mailplane.core.errors import ValidationFailed
from mailplane.delivery.config import conf
from mailplane.delivery.providers.base import Envelope
from mailplane.delivery.providers.http_api import (
    RECIPIENT_VARIABLE,
    HttpSession,
    post_classified,
    send_sequentially,
)
from mailplane.delivery.providers.webhooks import (
    ProviderReport,
    SignatureExpired,
    SignatureMissing,
    SignatureRejected,
    WebhookReceipt,
    as_int,
    failure_result,
    json_body,
    recipient_id_of,
    recipient_result,
    relay_and_key,
    reply_text,
    report_key,
    reports_record,
)
from mailplane.delivery.results import SendResult
from mailplane.queue.models import EventType
from mailplane.relays.providers import Provider

MAILGUN_REGIONS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}


@dataclass(slots=True)
class MailgunProvider:
    """POST {base}/v3/{domain}/messages.mime, multipart `to` + `v:<RECIPIENT_VARIABLE>` +
    `message` (the raw MIME), HTTP basic auth api:<key>. 200 accepted; 4xx except 429
    permanent; 429/5xx temporary."""

    base_url: str
    domain: str
    api_key: str
    max_connections_per_domain: int
    http: HttpSession = field(default_factory=HttpSession)

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
        return await post_classified(
            session=self.http,
            url=f"{self.base_url}/v3/{quote(self.domain)}/messages.mime",
            body=body,
            headers={"Authorization": f"Basic {token}", "Content-Type": content_type},
            ok={200},
            permanent=None,
            provider="Mailgun",
        )

    async def send(self, envelopes: Sequence[Envelope]) -> list[SendResult]:
        return await send_sequentially(envelopes, self._send_one)

    async def aclose(self) -> None:
        await self.http.aclose()


# Mailgun's advice: a genuine call is recent (each retry is signed anew); older is a replay.
MAILGUN_MAX_AGE = timedelta(minutes=15)

# What the recipient did with a delivered message (a feedback loop's spam report, the
# provider's unsubscribe link or List-Unsubscribe): late.py suppresses the address.
MAILGUN_RECIPIENT_EVENTS = {
    "complained": EventType.COMPLAINED,
    "unsubscribed": EventType.UNSUBSCRIBED,
}


def mailgun_signature_check(*, signing_key: str, signature: Any, now: datetime) -> None:
    """Mailgun signs every call: hex HMAC-SHA256 of timestamp + token under the domain's
    webhook signing key. A genuine call is also recent (MAILGUN_MAX_AGE either way)."""
    fields = signature if isinstance(signature, dict) else {}
    timestamp, token, digest = (fields.get(k) for k in ("timestamp", "token", "signature"))
    if not (
        isinstance(timestamp, str | int) and isinstance(token, str) and isinstance(digest, str)
    ):
        raise SignatureMissing("no Mailgun signature (signature.timestamp, token, signature)")
    expected = hmac.new(
        signing_key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, digest.strip().lower()):
        raise SignatureRejected("Mailgun signature does not match this relay server's key")
    try:
        signed_at = int(timestamp)
    except ValueError as exc:
        raise SignatureRejected("Mailgun signature timestamp is not a number") from exc
    if abs(now.timestamp() - signed_at) > MAILGUN_MAX_AGE.total_seconds():
        raise SignatureExpired("Mailgun signature timestamp is too old (or too far ahead)")


def mailgun_report(data: dict[str, Any]) -> ProviderReport | None:
    """event-data of one Mailgun webhook, or None when it is no outcome of ours."""
    variables = data.get("user-variables")
    recipient_id = recipient_id_of(
        variables.get(RECIPIENT_VARIABLE) if isinstance(variables, dict) else None
    )
    event = str(data.get("event") or "")  # a string: it is looked up in a dict
    if recipient_id is None or not (
        event in ("delivered", "failed", "rejected") or event in MAILGUN_RECIPIENT_EVENTS
    ):
        return None  # accepted, opened, clicked...: not an outcome of ours
    status = data.get("delivery-status")
    status = status if isinstance(status, dict) else {}
    code = as_int(status.get("code"))
    host = str(status.get("mx-host") or "")[:253]
    reply = reply_text(
        str(status.get("message") or status.get("description") or ""),
        code=code,
        enhanced=status.get("enhanced-code"),
    )
    severity = data.get("severity")
    reason = str(data.get("reason") or "")
    kind: EventType
    if event in MAILGUN_RECIPIENT_EVENTS:
        kind = MAILGUN_RECIPIENT_EVENTS[event]
        result = recipient_result(kind, "Mailgun")
    elif event == "delivered":
        kind, result = (
            EventType.DELIVERED,
            SendResult.delivered(reply or "250 delivered", host, code),
        )
    elif event == "rejected":  # Mailgun refused to send it at all
        reject = data.get("reject")
        why = reject.get("reason") if isinstance(reject, dict) else ""
        kind = EventType.FAILED
        result = SendResult.permanent(f"550 5.0.0 rejected by Mailgun: {why or reason}".strip())
    elif severity == "temporary":
        kind, result = EventType.DEFERRED, SendResult.temporary(reply, host, code)
    elif severity == "permanent" and reason.startswith("suppress-"):
        # Not attempted: the address is on Mailgun's bounce/unsubscribe/complaint list.
        kind = EventType.SUPPRESSED
        result = SendResult.permanent(f"{reply} (Mailgun {reason})".strip(), host, code)
    elif severity == "permanent":
        kind, result = EventType.BOUNCED, failure_result(reply or "550 5.0.0 failed", host, code)
    else:
        return None
    return ProviderReport(
        recipient_id=recipient_id,
        recipient=str(data.get("recipient") or ""),
        event_key=report_key(Provider.MAILGUN.value, data.get("id"), data),
        kind=kind,
        result=result,
    )


def mailgun_webhook_receive(*, relay_server_id: int, body: bytes, now: datetime) -> WebhookReceipt:
    """Authenticate one Mailgun webhook call for a relay server and record what it reports.

    Shape: {"signature": {"timestamp", "token", "signature"}, "event-data": {...}}."""
    relay, key = relay_and_key(relay_server_id, Provider.MAILGUN, "webhook_signing_key")
    payload = json_body(body)
    if not isinstance(payload, dict):
        raise ValidationFailed.on("body", "must be a JSON object")
    mailgun_signature_check(signing_key=key, signature=payload.get("signature"), now=now)
    data = payload.get("event-data")
    if not isinstance(data, dict):
        raise ValidationFailed.on("event-data", "must be an object")
    report = mailgun_report(data)
    return reports_record(relay=relay, reports=[report] if report else [], received=1, now=now)
