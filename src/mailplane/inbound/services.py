"""Writes for inbound streams: the server's inbound address and domain, and accepting a
received message (stored with its webhook deliveries in one transaction).

Routing (what the MX asks at RCPT, `inbound_route`): `<token>@<inbound host>` reaches the
server whose address it is; any address at a server's inbound domain reaches that server
once the domain's MX record is verified to point at the platform's MX host (checked like
the tracking domain's CNAME: tracking/services.py).

Durability (the MX's 250): `inbound_accept` commits the message row and one
WebhookDelivery per enabled endpoint subscribed to `inbound` together, so a crash
leaves both or neither, and the MX answers only after the commit. The deliveries go
through the webhook runner like every other event (signing, retries, 410, Retry-After).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError
from django.utils import timezone

from mailplane.cells.routing import data_atomic
from mailplane.core.errors import Conflict, ValidationFailed
from mailplane.dns.resolver import DnsError, RecordMissing, resolver_from_settings
from mailplane.domains.models import Domain
from mailplane.domains.services import platform_hosts
from mailplane.inbound.models import InboundMessage, ServerInbound
from mailplane.inbound.parse import Parsed, message_parse, text_clean
from mailplane.message.headers import address_domain
from mailplane.servers.models import EmailServer, MessageStream, StreamKind
from mailplane.smtp.authres import AuthOutcome
from mailplane.webhooks.consumer import webhook_id_new
from mailplane.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEventType

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
DKIM_ORDER = ("pass", "fail", "permerror", "temperror", "neutral", "policy", "none")


def inbound_host() -> str:
    """The platform's name under which servers' generated inbound addresses live."""
    conf = settings.MAILPLANE
    host = conf.get("INBOUND_HOST") or f"inbound.{conf['PLATFORM_DOMAIN']}"
    return str(host).lower().rstrip(".")


def mx_target() -> str:
    """What an inbound domain's MX record must name: the platform's MX host."""
    return platform_hosts()["mx"].lower().rstrip(".")


def inbound_address(row: ServerInbound) -> str:
    return f"{row.token}@{inbound_host()}"


def server_inbound_get(*, server: EmailServer) -> ServerInbound:
    """The server's inbound settings, made (with a new address) on first read."""
    row = ServerInbound.objects.filter(server=server).first()
    if row is not None:
        return row
    try:
        with data_atomic():
            return ServerInbound.objects.create(server=server, token=secrets.token_hex(16))
    except IntegrityError:  # a concurrent first read made it
        return ServerInbound.objects.get(server=server)


def _domain_clean(value: str) -> str:
    name = value.strip().lower().rstrip(".")
    if not name:
        return ""
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(x) for x in labels):
        raise ValidationFailed.on("domain", "must be a domain of yours, such as reply.example.com")
    if name in (inbound_host(), mx_target()) or name.endswith("." + inbound_host()):
        raise ValidationFailed.on("domain", "must be your own domain, not the platform's")
    if Domain.objects.filter(name=name).exists():
        # Its mail goes to hosted mailboxes (smtp/mx.py): one route per domain.
        raise ValidationFailed.on(
            "domain", "hosts mailboxes here; use a domain (or subdomain) of its own"
        )
    return name


def server_inbound_update(*, server: EmailServer, domain: str) -> ServerInbound:
    """Set (or, with "", clear) the inbound domain; a new one must be verified again.
    One server per domain: another's is a 409."""
    name = _domain_clean(domain)
    row = server_inbound_get(server=server)
    with data_atomic():
        row = ServerInbound.objects.select_for_update().get(pk=row.pk)
        if name == row.domain:
            return row
        if name and ServerInbound.objects.filter(domain=name).exclude(pk=row.pk).exists():
            raise Conflict(
                f"{name} is the inbound domain of another server",
                details={"domain": ["already the inbound domain of another server"]},
            )
        row.domain, row.verified_at, row.checked_at, row.check_detail = name, None, None, ""
        row.save()
    return row


def server_inbound_verify(*, server: EmailServer) -> ServerInbound:
    """Look up the inbound domain's MX records; verified when one names the platform's MX
    host (RFC 5321 §5.1: senders deliver to the domain's MX hosts)."""
    row = server_inbound_get(server=server)
    if not row.domain:
        raise ValidationFailed.on("domain", "set an inbound domain first")
    expected = mx_target()
    try:
        answers = resolver_from_settings().resolve(row.domain, "MX")
        hosts = [str(getattr(a, "exchange", a)).rstrip(".").lower() for a in answers]
        detail = ""
    except RecordMissing:
        hosts, detail = [], f"no MX record at {row.domain}; publish one to {expected}"
    except DnsError as exc:
        hosts, detail = [], f"the lookup failed ({exc}); try again later"
    now = timezone.now()
    if expected in hosts:
        row.verified_at = row.verified_at or now
        detail = f"MX {expected} found"
    else:
        row.verified_at = None
        if hosts:
            detail = (
                f"the MX records of {row.domain} name {', '.join(hosts[:3])}; expected {expected}"
            )
    row.checked_at, row.check_detail = now, detail[:500]
    row.save()
    return row


@dataclass(frozen=True, slots=True)
class InboundRoute:
    """An MX recipient that is a server's inbound address."""

    server_id: int
    organization_id: int
    address: str


def inbound_route(address: str) -> InboundRoute | None:
    """Blocking: the server `address` (lower-case, A-label domain) reaches, or None when it
    is no inbound address. Only verified inbound domains route."""
    local, _, domain = address.rpartition("@")
    if domain == inbound_host():
        # Plus addressing (Postmark's MailboxHash): <token>+<hash>@ reaches the same server.
        row = (
            ServerInbound.objects.filter(token=local.partition("+")[0])
            .values_list("server_id", "server__organization_id")
            .first()
        )
    else:
        row = (
            ServerInbound.objects.filter(domain=address_domain(address), verified_at__isnull=False)
            .values_list("server_id", "server__organization_id")
            .first()
        )
    if row is None:
        return None
    return InboundRoute(int(row[0]), int(row[1]), address)


def _dkim_summary(outcome: AuthOutcome) -> str:
    results = [d.result for d in outcome.dkim] or ["none"]
    return min(results, key=lambda r: DKIM_ORDER.index(r) if r in DKIM_ORDER else len(DKIM_ORDER))


def _auth(outcome: AuthOutcome, authserv_id: str) -> dict[str, Any]:
    return {
        "spf": outcome.spf,
        "spf_domain": outcome.spf_domain,
        "dkim": [
            {"result": d.result, "domain": d.domain, "selector": d.selector} for d in outcome.dkim
        ],
        "dmarc": outcome.dmarc,
        "dmarc_policy": outcome.dmarc_policy,
        "from_domain": outcome.from_domain,
        "authentication_results": outcome.header_value(authserv_id).replace("\r\n\t", " "),
    }


def _timestamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def raw_path(message_id: int) -> str:
    return f"/api/inbound-messages/{message_id}/raw/"


def payload_data(
    *, message: InboundMessage, parsed: Parsed, auth: dict[str, Any], stream: str
) -> dict[str, Any]:
    """What the webhook carries (Postmark's inbound fields, in this API's snake_case):
    attachments base64 while their total stays under the bound; past it `content` is
    null and `attachments_omitted` true (the raw message has them: `raw_url`)."""
    budget = int(settings.MAILPLANE.get("INBOUND_ATTACHMENTS_MAX_BYTES", 10 * 1024 * 1024))
    attachments, omitted = [], False
    for attachment in parsed.attachments:
        include = len(attachment.content) <= budget
        if include:
            budget -= len(attachment.content)
        else:
            omitted = True
        attachments.append(attachment.as_payload(include=include))
    return {
        "inbound_message_id": message.pk,
        "server_id": message.server_id,
        "stream": stream,
        "mail_from": message.mail_from,
        "rcpt_to": message.rcpt_to,
        # What followed a "+" in the address's local part ("" if none): a reply address
        # such as <token>+ticket-42@ carries the conversation it belongs to.
        "mailbox_hash": message.rcpt_to.rpartition("@")[0].partition("+")[2],
        "from": parsed.from_,
        "to": parsed.to,
        "cc": parsed.cc,
        "reply_to": parsed.reply_to,
        "subject": parsed.subject,
        "date": parsed.date,
        "message_id_header": parsed.message_id,
        "text": parsed.text,
        "html": parsed.html,
        "stripped_text_reply": parsed.stripped_text_reply,
        "headers": parsed.headers,
        "attachments": attachments,
        "attachments_omitted": omitted,
        "auth": auth,
        "size": message.size,
        "raw_url": raw_path(message.pk),
    }


def inbound_accept(
    *,
    routes: list[InboundRoute],
    raw: bytes,
    mail_from: str,
    outcome: AuthOutcome,
    authserv_id: str,
    parsed: Parsed | None = None,
) -> list[InboundMessage]:
    """Blocking: one stored message per server reached (several addresses of one server
    make one message), each with its webhook deliveries, all in one transaction.
    Raises MimeRefused (before anything is written) for a message we will not parse."""
    parsed = parsed or message_parse(raw)
    auth = _auth(outcome, authserv_id)
    by_server: dict[int, InboundRoute] = {}
    for route in routes:
        by_server.setdefault(route.server_id, route)
    now = timezone.now()
    stored: list[InboundMessage] = []
    with data_atomic():
        streams = {
            s.server_id: s
            for s in MessageStream.objects.filter(
                server_id__in=list(by_server), kind=StreamKind.INBOUND
            ).order_by("id")
        }
        endpoints: dict[int, list[WebhookEndpoint]] = {}
        for endpoint in WebhookEndpoint.objects.filter(server_id__in=list(by_server), enabled=True):
            if WebhookEventType.INBOUND in endpoint.event_types:
                endpoints.setdefault(endpoint.server_id, []).append(endpoint)
        deliveries: list[WebhookDelivery] = []
        for server_id, route in by_server.items():
            stream = streams[server_id]  # every server has one (servers.services)
            message = InboundMessage.objects.create(
                server_id=server_id,
                organization_id=route.organization_id,
                stream=stream,
                mail_from=text_clean(mail_from)[:320],
                rcpt_to=route.address[:320],
                from_header=text_clean(parsed.from_["email"])[:1000],
                subject=parsed.subject[:1000],
                message_id_header=parsed.message_id[:1000],
                spf=outcome.spf[:12],
                dkim=_dkim_summary(outcome)[:12],
                dmarc=outcome.dmarc[:12],
                size=len(raw),
                raw=raw,
                created_at=now,
            )
            stored.append(message)
            subscribed = endpoints.get(server_id, [])
            if not subscribed:
                continue
            body = json.dumps(
                {
                    "type": WebhookEventType.INBOUND.value,
                    "timestamp": _timestamp(now),
                    "data": payload_data(
                        message=message, parsed=parsed, auth=auth, stream=stream.stream_id
                    ),
                },
                separators=(",", ":"),
                ensure_ascii=False,
            )
            deliveries.extend(
                WebhookDelivery(
                    webhook_id=webhook_id_new(),
                    endpoint=endpoint,
                    organization_id=route.organization_id,
                    message=None,  # no queue message: ordered by nothing but its due time
                    event_seq=None,
                    type=WebhookEventType.INBOUND,
                    body=body,
                    event_at=now,
                    next_attempt_at=now,
                )
                for endpoint in subscribed
            )
        WebhookDelivery.objects.bulk_create(deliveries)
    return stored
