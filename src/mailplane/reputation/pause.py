"""The automatic pause: a server or key whose recent hard-bounce or complaint rate is
over the mailbox providers' limits stops sending until an operator resumes it.

What the providers publish (the defaults follow them; settings REPUTATION_PAUSE_*):
- Amazon SES (Developer Guide, "Sending review process FAQs"): a bounce rate of 5 % puts
  an account under review and 10 % or more may pause its sending; a complaint rate of
  0.1 % puts it under review and 0.5 % or more may pause it.
- Gmail (Email sender guidelines, 2024): keep the spam rate reported in Postmaster Tools
  below 0.1 % and never let it reach 0.3 %.
So a pause at 10 % hard bounces (SES's pause line) and 0.3 % complaints (Gmail's line, under
SES's 0.5 %), over the last 24 hours, judged only with at least MIN_VOLUME recipients: at
0.3 % a dozen sends with one complaint would be 8 %, and say nothing.

Rates come from the queue's events (one aggregate over the window, by the index on
DeliveryEvent.created_at, joined to ServerMessage for the server and key): hard bounces
(`bounced` with class `hard`) over recipients attempted (`delivered` + `bounced`),
complaints over recipients delivered. A resumed owner is judged only on what happened
after its resume, or it would be paused again at once by the same events. The window is
read through the index on (created_at, type) of DeliveryEvent.

Resume: the operator's CLI (`mailplane server resume`), or the account itself through the
API (`POST /api/servers/{id}/resume/`, `/api/server-keys/{id}/resume/`) where the install
allows it (REPUTATION_ACCOUNT_RESUME, default on: a self-hosted install's account owner
is its operator).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, F, Q

from mailplane.cells.routing import data_atomic
from mailplane.core.errors import NotAllowed, NotFound
from mailplane.queue.models import BounceClass, DeliveryEvent, EventType
from mailplane.reputation.errors import SendingPaused
from mailplane.reputation.models import NoticeKind, ReputationNotice
from mailplane.servers.models import EmailServer, Reputation, ServerKey
from mailplane.tenancy.models import Organization

DEFAULT_BOUNCE_RATE = 0.10
DEFAULT_COMPLAINT_RATE = 0.003
DEFAULT_MIN_VOLUME = 1000
DEFAULT_WINDOW_HOURS = 24


@dataclass(frozen=True, slots=True)
class Thresholds:
    bounce_rate: float
    complaint_rate: float
    min_volume: int
    window: timedelta

    @classmethod
    def configured(cls) -> Thresholds:
        conf = settings.MAILPLANE
        return cls(
            bounce_rate=float(conf.get("REPUTATION_PAUSE_BOUNCE_RATE", DEFAULT_BOUNCE_RATE)),
            complaint_rate=float(
                conf.get("REPUTATION_PAUSE_COMPLAINT_RATE", DEFAULT_COMPLAINT_RATE)
            ),
            min_volume=int(conf.get("REPUTATION_PAUSE_MIN_VOLUME", DEFAULT_MIN_VOLUME)),
            window=timedelta(
                hours=int(conf.get("REPUTATION_PAUSE_WINDOW_HOURS", DEFAULT_WINDOW_HOURS))
            ),
        )


@dataclass(frozen=True, slots=True)
class Rates:
    attempted: int = 0
    hard_bounced: int = 0
    delivered: int = 0
    complained: int = 0

    def reason(self, t: Thresholds) -> str | None:
        """Why these figures pause their owner, or None."""
        if self.attempted < t.min_volume:
            return None
        hours = int(t.window.total_seconds() // 3600)
        bounce = self.hard_bounced / self.attempted
        if bounce >= t.bounce_rate:
            return (
                f"hard-bounce rate {bounce:.1%} over the last {hours} h "
                f"({self.hard_bounced} of {self.attempted}; limit {t.bounce_rate:.1%})"
            )
        complaint = self.complained / self.delivered if self.delivered else 0.0
        if complaint >= t.complaint_rate:
            return (
                f"complaint rate {complaint:.2%} over the last {hours} h "
                f"({self.complained} of {self.delivered}; limit {t.complaint_rate:.2%})"
            )
        return None


def sending_pause_check(*, server: EmailServer, server_key: ServerKey | None) -> None:
    """Refuse a send of a paused server or key, naming which and why."""
    for owner in (server_key, server):
        if owner is not None and owner.paused_at is not None:
            what = "server key" if isinstance(owner, ServerKey) else "server"
            raise SendingPaused(
                f"sending is paused for this {what} since {owner.paused_at.isoformat()}: "
                f"{owner.paused_reason}; an operator resumes it",
                details={"paused_reason": [owner.paused_reason]},
            )


_COUNTS = {
    "attempted": Count("pk", filter=Q(type__in=[EventType.DELIVERED, EventType.BOUNCED])),
    "hard_bounced": Count("pk", filter=Q(type=EventType.BOUNCED, bounce_class=BounceClass.HARD)),
    "delivered": Count("pk", filter=Q(type=EventType.DELIVERED)),
    "complained": Count("pk", filter=Q(type=EventType.COMPLAINED)),
}
_JUDGED = [EventType.DELIVERED, EventType.BOUNCED, EventType.COMPLAINED]


def _groups(since: datetime, until: datetime, **scope: int) -> list[dict[str, Any]]:
    """The events' counts by (server, key) between `since` and `until`: one query."""
    events = DeliveryEvent.objects.filter(
        created_at__gte=since,
        created_at__lt=until,
        type__in=_JUDGED,
        message__server_link__isnull=False,
        **{f"message__server_link__{k}": v for k, v in scope.items()},
    )
    grouped = events.values(
        server=F("message__server_link__server_id"),
        key=F("message__server_link__server_key_id"),
    )
    return [dict(g) for g in grouped.annotate(**_COUNTS).order_by()]


def _sum(groups: Iterable[dict[str, Any]]) -> Rates:
    totals = dict.fromkeys(_COUNTS, 0)
    for group in groups:
        for name in _COUNTS:
            totals[name] += group[name]
    return Rates(**totals)


def reputation_rates(
    *, now: datetime, window: timedelta
) -> tuple[dict[int, Rates], dict[int, Rates]]:
    """The window's figures by server and by key."""
    by_server: dict[int, list[dict[str, Any]]] = defaultdict(list)
    by_key: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for group in _groups(now - window, now):
        by_server[group["server"]].append(group)
        if group["key"] is not None:
            by_key[group["key"]].append(group)
    return (
        {pk: _sum(g) for pk, g in by_server.items()},
        {pk: _sum(g) for pk, g in by_key.items()},
    )


def _owner_name(owner: Reputation) -> str:
    return f"server key {owner.pk}" if isinstance(owner, ServerKey) else f"server {owner.pk}"


def _notice(owner: Reputation, kind: str, message: str, *, now: datetime) -> None:
    server = owner.server if isinstance(owner, ServerKey) else owner
    assert isinstance(server, EmailServer)
    ReputationNotice.objects.create(
        organization_id=server.organization_id,
        server=server,
        server_key=owner if isinstance(owner, ServerKey) else None,
        kind=kind,
        message=message[:500],
        created_at=now,
    )


def owner_pause(*, owner: Reputation, reason: str, now: datetime) -> bool:
    """Pause `owner` (a server or key) and tell the account; False if it already was."""
    model = type(owner)
    with data_atomic():
        changed = model._default_manager.filter(pk=owner.pk, paused_at__isnull=True).update(
            paused_at=now, paused_reason=reason[:300]
        )
        if changed:
            owner.paused_at, owner.paused_reason = now, reason[:300]
            _notice(owner, NoticeKind.PAUSED, f"{_owner_name(owner)} paused: {reason}", now=now)
    return bool(changed)


def owner_resume(*, owner: Reputation, now: datetime) -> bool:
    """An operator's resume: sends accepted again, judged afresh from now."""
    model = type(owner)
    with data_atomic():
        changed = model._default_manager.filter(pk=owner.pk, paused_at__isnull=False).update(
            paused_at=None, paused_reason="", resumed_at=now
        )
        if changed:
            owner.paused_at, owner.paused_reason, owner.resumed_at = None, "", now
            _notice(owner, NoticeKind.RESUMED, f"{_owner_name(owner)} resumed", now=now)
    return bool(changed)


def _account_resume_check(organization: Organization | None) -> None:
    """An account resumes its own only where the install allows it (settings
    REPUTATION_ACCOUNT_RESUME); the operator (organization None: the CLI) always may."""
    if organization is not None and not settings.MAILPLANE.get("REPUTATION_ACCOUNT_RESUME", True):
        raise NotAllowed(
            "this install leaves resuming a paused server or key to its operator "
            "(mailplane server resume)"
        )


def server_resume(
    *, server_id: int, now: datetime, organization: Organization | None = None
) -> EmailServer:
    """Resume a server: the operator's (organization None), or an account's own server
    (another account's is not found)."""
    servers = EmailServer.objects.filter(pk=server_id)
    if organization is not None:
        servers = servers.filter(organization=organization)
    server = servers.first()
    if server is None:
        raise NotFound(f"no server {server_id}" if organization is None else "server not found")
    _account_resume_check(organization)
    owner_resume(owner=server, now=now)
    return server


def server_key_resume(
    *, key_id: int, now: datetime, organization: Organization | None = None
) -> ServerKey:
    """Resume a key, as `server_resume`; a revoked key is not found to an account."""
    keys = ServerKey.objects.select_related("server").filter(pk=key_id)
    if organization is not None:
        keys = keys.filter(server__organization=organization, revoked_at=None)
    key = keys.first()
    if key is None:
        raise NotFound(
            f"no server key {key_id}" if organization is None else "server key not found"
        )
    _account_resume_check(organization)
    owner_resume(owner=key, now=now)
    return key


def reputation_evaluate(*, now: datetime) -> list[Reputation]:
    """Pause every live server and key whose figures over the window cross a threshold;
    returns those paused now. One aggregate over the window, and one more per candidate
    resumed within it (judged from its resume on)."""
    t = Thresholds.configured()
    since = now - t.window
    by_server, by_key = reputation_rates(now=now, window=t.window)
    candidates: list[tuple[Reputation, Rates]] = []
    servers = EmailServer.objects.filter(pk__in=list(by_server), paused_at__isnull=True)
    keys = ServerKey.objects.select_related("server").filter(
        pk__in=list(by_key), paused_at__isnull=True, revoked_at__isnull=True
    )
    candidates += [(s, by_server[s.pk]) for s in servers]
    candidates += [(k, by_key[k.pk]) for k in keys]
    paused: list[Reputation] = []
    for owner, rates in candidates:
        if rates.reason(t) is None:
            continue
        if owner.resumed_at is not None and owner.resumed_at > since:
            scope = {"server_key_id" if isinstance(owner, ServerKey) else "server_id": owner.pk}
            rates = _sum(_groups(owner.resumed_at, now, **scope))
        reason = rates.reason(t)
        if reason is not None and owner_pause(owner=owner, reason=reason, now=now):
            paused.append(owner)
    return paused
