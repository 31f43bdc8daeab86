"""SendGrid: sending (v3 mail send) and its Signed Event Webhook, side by side.

Sending: POST {base}/v3/mail/send with the message as JSON; every send carries our queue
row id as the custom arg RECIPIENT_VARIABLE, which SendGrid echoes in each event.
Webhook: batches of JSON events signed with ECDSA P-256 over timestamp + body, put on the
rows by webhooks.reports_record.
(https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event)
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.errors import HeaderParseError
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import getaddresses
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

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
    ENHANCED_STATUS,
    ProviderReport,
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
from mailplane.message.headers import unfold
from mailplane.queue.models import EventType
from mailplane.relays.providers import Provider
from mailplane.relays.schemas import p256_public_key

SENDGRID_BASE = "https://api.sendgrid.com"


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


def _header_text(message: EmailMessage, name: str, raw_value: str) -> str:
    """A header's decoded text; as written (unfolded) where the header registry's parse
    raises, as it does on a malformed Message-ID such as `<` (IndexError): one odd field
    must not stop the message from going out."""
    try:
        return str(message.policy.header_fetch_parse(name, raw_value))
    except (IndexError, ValueError, TypeError, HeaderParseError):
        return unfold(raw_value).strip()


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
        k: _header_text(message, k, v)
        for k, v in message.raw_items()
        if k.lower() not in _SENDGRID_RESERVED and not k.lower().startswith("content-")
    }
    if headers:
        payload["headers"] = headers
    if attachments:
        payload["attachments"] = attachments
    return payload


@dataclass(slots=True)
class SendGridProvider:
    """POST {base}/v3/mail/send with a Bearer key, custom_args carrying RECIPIENT_VARIABLE.
    202 accepted; 400/401/403/413 permanent; 429 and 5xx temporary."""

    base_url: str
    api_key: str
    max_connections_per_domain: int
    http: HttpSession = field(default_factory=HttpSession)

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
        return await post_classified(
            session=self.http,
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
        return await send_sequentially(envelopes, self._send_one)

    async def aclose(self) -> None:
        await self.http.aclose()


# SendGrid "dropped" reasons that mean "on SendGrid's suppression list".
SENDGRID_SUPPRESSION_REASONS = frozenset(
    {"bounced address", "unsubscribed address", "spam reporting address"}
)

SENDGRID_RECIPIENT_EVENTS = {
    "spamreport": EventType.COMPLAINED,
    "unsubscribe": EventType.UNSUBSCRIBED,  # global: every mail from this SendGrid account
    # From one unsubscribe group only, but we keep no groups: the address is unsubscribed.
    "group_unsubscribe": EventType.UNSUBSCRIBED,
}


def sendgrid_signature_check(
    *, verification_key: str, body: bytes, signature: str, timestamp: str
) -> None:
    """Signed Event Webhook: a base64 DER ECDSA (P-256, SHA-256) signature of the timestamp
    header followed by the raw body. (No freshness check: SendGrid documents none, and a
    replayed body only repeats events already recorded.)"""
    if not signature or not timestamp:
        raise SignatureMissing(
            "no SendGrid signature (X-Twilio-Email-Event-Webhook-Signature and -Timestamp)"
        )
    try:
        raw_signature = base64.b64decode(signature, validate=True)
        key: ec.EllipticCurvePublicKey = p256_public_key(verification_key)
        key.verify(raw_signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature) as exc:
        raise SignatureRejected(
            "SendGrid signature does not match this relay server's verification key"
        ) from exc


def sendgrid_report(event: dict[str, Any]) -> ProviderReport | None:
    """One Event Webhook event, or None when it is no outcome of ours."""
    recipient_id = recipient_id_of(event.get(RECIPIENT_VARIABLE))
    name = str(event.get("event") or "")  # a string: it is looked up in a dict
    if recipient_id is None or not (
        name in ("delivered", "deferred", "bounce", "dropped") or name in SENDGRID_RECIPIENT_EVENTS
    ):
        return None  # processed, open, click, group_resubscribe...
    response = str(event.get("response") or "")
    reason = str(event.get("reason") or "")
    status = event.get("status")
    kind: EventType
    if name in SENDGRID_RECIPIENT_EVENTS:
        kind = SENDGRID_RECIPIENT_EVENTS[name]
        group = as_int(event.get("asm_group_id"))
        how = f" (unsubscribe group {group})" if name == "group_unsubscribe" and group else ""
        result = recipient_result(kind, "SendGrid", how)
    elif name == "delivered":
        kind, result = (
            EventType.DELIVERED,
            SendResult.delivered(reply_text(response) or "250 OK", ""),
        )
    elif name == "deferred":
        kind, result = EventType.DEFERRED, SendResult.temporary(reply_text(response or reason), "")
    elif name == "bounce":
        # type "bounce" or "blocked": SendGrid gives up on both. status is the 5.x.x / 4.x.x,
        # missing for some blocks (a domain without MX): final all the same.
        kind = EventType.BOUNCED
        result = failure_result(
            reply_text(reason, enhanced=status) or "550 5.0.0 bounced", "", None
        )
    elif reason.strip().lower() in SENDGRID_SUPPRESSION_REASONS:
        kind = EventType.SUPPRESSED
        result = SendResult.permanent(f"550 5.7.1 dropped by SendGrid: {reason}")
    else:  # dropped for the message itself (invalid address, spam content, quota...)
        kind = EventType.FAILED
        code = status if isinstance(status, str) and ENHANCED_STATUS.match(status) else "5.0.0"
        result = SendResult.permanent(f"550 {code} dropped by SendGrid: {reason}".strip())
    return ProviderReport(
        recipient_id=recipient_id,
        recipient=str(event.get("email") or ""),
        event_key=report_key(Provider.SENDGRID.value, event.get("sg_event_id"), event),
        kind=kind,
        result=result,
    )


def sendgrid_webhook_receive(
    *, relay_server_id: int, body: bytes, signature: str, timestamp: str, now: datetime
) -> WebhookReceipt:
    """Authenticate one SendGrid Event Webhook call (a JSON array of events, batched) for a
    relay server and record what it reports."""
    relay, key = relay_and_key(relay_server_id, Provider.SENDGRID, "webhook_verification_key")
    sendgrid_signature_check(
        verification_key=key, body=body, signature=signature, timestamp=timestamp
    )
    events = json_body(body)
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise ValidationFailed.on("body", "must be a JSON array of event objects")
    reports = [r for r in map(sendgrid_report, events) if r is not None]
    return reports_record(relay=relay, reports=reports, received=len(events), now=now)
