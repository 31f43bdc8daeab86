"""Tracking: settings, the rewrite at composition, and recording hits.

Order of the toggles, most specific first: the send request's `track_opens` /
`track_links`, then the stream's, then the server's (Postmark's order). Nothing is
tracked without a verified tracking domain.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone

from mailplane.cells.routing import data_atomic
from mailplane.core.errors import ValidationFailed
from mailplane.dns.resolver import DnsError, RecordMissing, resolver_from_settings
from mailplane.queue.models import EventType, OutboundMessage, QueuedRecipient
from mailplane.queue.transitions import engagement_record
from mailplane.servers.models import EmailServer, MessageStream
from mailplane.tracking.machines import machine_reason
from mailplane.tracking.models import ServerTracking, StreamTracking, TrackedMessage
from mailplane.tracking.rewrite import html_rewrite
from mailplane.tracking.selectors import TrackingConfig, tracked_message_find
from mailplane.tracking.tokens import PIXEL_LINK, key_new, token_make, token_parse

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
WHOLE_MESSAGE = 0xFF  # the recipient index of a message with several recipients


def tracking_host() -> str:
    """The platform's name that tracking domains are CNAMEs to."""
    host = settings.MAILPLANE.get("TRACKING_HOST") or ""
    return str(host or f"track.{settings.MAILPLANE['PLATFORM_DOMAIN']}").lower().rstrip(".")


def _domain_clean(value: str) -> str:
    name = value.strip().lower().rstrip(".")
    if not name:
        return ""
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 3 or not all(_LABEL.fullmatch(x) for x in labels):
        raise ValidationFailed.on(
            "domain", "must be a host name under your domain, such as track.example.com"
        )
    if name == tracking_host():
        raise ValidationFailed.on("domain", "must be your own name, a CNAME to the platform's")
    return name


def server_tracking_update(
    *,
    server: EmailServer,
    domain: str | None = None,
    track_opens: bool | None = None,
    track_links: bool | None = None,
    streams: dict[str, dict[str, bool | None]] | None = None,
) -> ServerTracking:
    """Change the tracking domain (a new one must be verified again) and the toggles."""
    known = {s.stream_id: s for s in server.streams.all()}
    for stream_id in streams or {}:
        if stream_id not in known:
            raise ValidationFailed.on(f"streams.{stream_id}", "no such stream on this server")
    with data_atomic():
        row, _ = ServerTracking.objects.select_for_update().get_or_create(server=server)
        if domain is not None:
            name = _domain_clean(domain)
            if name != row.domain:
                row.domain, row.verified_at, row.checked_at, row.check_detail = name, None, None, ""
        if track_opens is not None:
            row.track_opens = track_opens
        if track_links is not None:
            row.track_links = track_links
        row.save()
        for stream_id, toggles in (streams or {}).items():
            override, _ = StreamTracking.objects.get_or_create(stream=known[stream_id])
            for name in ("track_opens", "track_links"):
                if name in toggles:
                    setattr(override, name, toggles[name])
            override.save()
    return row


def tracking_domain_verify(*, server: EmailServer) -> ServerTracking:
    """Look up the tracking domain's CNAME; verified when it names the tracking host."""
    row, _ = ServerTracking.objects.get_or_create(server=server)
    if not row.domain:
        raise ValidationFailed.on("domain", "set a tracking domain first")
    expected = tracking_host()
    try:
        answers = resolver_from_settings().resolve(row.domain, "CNAME")
        targets = [str(getattr(a, "target", a)).rstrip(".").lower() for a in answers]
    except RecordMissing:
        targets, detail = [], f"no CNAME record at {row.domain}; publish one to {expected}"
    except DnsError as exc:
        targets, detail = [], f"the lookup failed ({exc}); try again later"
    now = timezone.now()
    if expected in targets:
        row.verified_at = row.verified_at or now
        detail = f"CNAME to {expected} found"
    elif targets:
        row.verified_at = None
        detail = f"{row.domain} is a CNAME to {targets[0]}; expected {expected}"
    else:
        row.verified_at = None
    row.checked_at, row.check_detail = now, detail[:500]
    row.save()
    return row


@dataclass(frozen=True, slots=True)
class TrackingPlan:
    """What composition decided for one message: its key, links and whether the pixel
    was added (stored once the message has its row: tracked_messages_create)."""

    key: str
    links: list[str]
    opens: bool


def tracking_prepare(
    *,
    config: TrackingConfig,
    stream: MessageStream,
    html: str,
    recipients: int,
    track_opens: bool | None,
    track_links: bool | None,
) -> tuple[str, TrackingPlan | None]:
    """The HTML to compose (rewritten or as given) and the plan to store, if any."""
    if not config.domain or not html:
        return html, None
    stream_opens, stream_links = config.streams.get(stream.pk, (None, None))
    opens = _first(track_opens, stream_opens, config.opens)
    links = _first(track_links, stream_links, config.links)
    if not (opens or links):
        return html, None
    key = key_new()
    rcpt = 0 if recipients == 1 else WHOLE_MESSAGE
    base = f"https://{config.domain}"
    result = html_rewrite(
        html,
        click_url=(
            (lambda i: f"{base}/c/{token_make(key=key, recipient=rcpt, link=i)}") if links else None
        ),
        pixel_url=(
            f"{base}/o/{token_make(key=key, recipient=rcpt, link=PIXEL_LINK)}" if opens else None
        ),
    )
    return result.html, TrackingPlan(key=key, links=result.links, opens=opens)


def _first(*values: bool | None) -> bool:
    return next((v for v in values if v is not None), False)


def tracked_messages_create(
    pairs: Sequence[tuple[OutboundMessage, TrackingPlan | None]],
) -> None:
    """Store the plans of messages just enqueued (the caller's transaction)."""
    TrackedMessage.objects.bulk_create(
        TrackedMessage(message=m, key=p.key, links=p.links, opens=p.opens)
        for m, p in pairs
        if p is not None
    )


@dataclass(frozen=True, slots=True)
class Hit:
    user_agent: str
    ip: str


def _resolve(token_text: str) -> tuple[TrackedMessage, int | None, int] | None:
    token = token_parse(token_text)
    if token is None:
        return None
    tracked = tracked_message_find(key=token.key)
    if tracked is None:
        return None
    if token.recipient == WHOLE_MESSAGE:
        return tracked, None, token.link
    if token.recipient != 0:
        return None
    rcpt = (
        QueuedRecipient.objects.filter(message_id=tracked.message_id)
        .order_by("pk")
        .values_list("pk", flat=True)
        .first()
    )
    return tracked, rcpt, token.link


def open_record(*, token: str, hit: Hit) -> bool:
    """Record an `opened` event for the pixel's token; False when it is none of ours."""
    found = _resolve(token)
    if found is None or found[2] != PIXEL_LINK or not found[0].opens:
        return False
    tracked, rcpt, _ = found
    engagement_record(
        message=tracked.message,
        recipient_id=rcpt,
        event=EventType.OPENED,
        machine=machine_reason(user_agent=hit.user_agent, ip=hit.ip, opening=True),
    )
    return True


def click_record(*, token: str, hit: Hit) -> str | None:
    """Record a `clicked` event; the URL stored for the token, or None (no such link)."""
    found = _resolve(token)
    if found is None:
        return None
    tracked, rcpt, link = found
    links: list[Any] = tracked.links if isinstance(tracked.links, list) else []
    if link >= len(links) or not isinstance(links[link], str):
        return None
    url: str = links[link]
    engagement_record(
        message=tracked.message,
        recipient_id=rcpt,
        event=EventType.CLICKED,
        machine=machine_reason(user_agent=hit.user_agent, ip=hit.ip, opening=False),
        url=url,
    )
    return url
