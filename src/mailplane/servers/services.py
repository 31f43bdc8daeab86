"""Writes for email servers, their streams and their keys (keyword-only, typed)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError
from django.utils import timezone

from mailplane.cells.routing import data_atomic
from mailplane.core import crypto
from mailplane.core.errors import Conflict, LimitReached, NotAllowed, NotFound, ValidationFailed
from mailplane.queue.models import BounceClass, OutboundMessage, Suppression, SuppressionReason
from mailplane.queue.transitions import SuppressionEntry, suppressions_add, suppressions_remove
from mailplane.servers.models import (
    BounceRule,
    CapMode,
    ContentFilter,
    EmailServer,
    MessageStream,
    ServerKey,
    ServerKeyKind,
    StreamKind,
)
from mailplane.tenancy.models import Organization
from mailplane.tenancy.plans import PlanName

# Seed 004's limits ("Free 1, Pro 5, Enterprise unlimited"); our starter plan is the free
# tier. Seed 002 makes API sending a Pro feature, so a starter account's one server is a
# sandbox: it can try the whole API, and nothing it sends leaves.
SERVERS_ALLOWED: dict[PlanName, int | None] = {
    PlanName.STARTER: 1,
    PlanName.PRO: 5,
    PlanName.ENTERPRISE: None,
}
# The streams every server starts with, under Postmark's default ids.
DEFAULT_STREAMS = (
    ("outbound", "Default Transactional Stream", StreamKind.TRANSACTIONAL),
    ("broadcast", "Default Broadcast Stream", StreamKind.BROADCAST),
    ("inbound", "Default Inbound Stream", StreamKind.INBOUND),
)
# Streams a message can be sent on (and so a server's default): not the inbound one.
SENDING_STREAMS = tuple(sid for sid, _, kind in DEFAULT_STREAMS if kind != StreamKind.INBOUND)
KEY_PREFIX = "mps_"  # account keys are mp_…: the prefix tells a server key at a glance
LAST_USED_RESOLUTION = timedelta(minutes=1)
_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
# A reply code ("550") or an RFC 3463 status prefix ("5.7", "5.7.1").
_RULE_STATUS = re.compile(r"[245]\d\d|[245]\.\d{1,3}(\.\d{1,3})?")
BOUNCE_RULES_PER_SERVER = 100  # each is checked against every failed reply
UPDATABLE = frozenset(
    {"name", "color", "default_stream", "auto_suppress_bounces", "auto_suppress_complaints",
     "sandbox", "content_filter", "content_threshold", "hourly_cap", "daily_cap"}
)  # fmt: skip
KEY_UPDATABLE = frozenset({"name", "hourly_cap", "daily_cap", "cap_mode"})
CAP_MAX = 1_000_000_000  # recipients; more is no cap at all: leave it null


@dataclass(frozen=True, slots=True)
class IssuedServerKey:
    server_key: ServerKey
    secret: str  # the only time the clear key exists


def servers_allowed(organization: Organization) -> int | None:
    return SERVERS_ALLOWED[PlanName(organization.plan)]


def _sandbox_check(organization: Organization, sandbox: bool) -> None:
    if not sandbox and not organization.plan_limits.api_sending:
        raise NotAllowed(
            "sandbox: API sending is a Pro feature; on the starter plan a server runs in "
            "sandbox mode (messages are validated and recorded, never delivered)",
            details={"sandbox": ["must be true on the starter plan"]},
        )


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    """Field checks the serializer cannot make alone (shape is checked there)."""
    if "name" in fields:
        fields["name"] = str(fields["name"]).strip()
        if not fields["name"]:
            raise ValidationFailed.on("name", "must not be blank")
    color = fields.get("color")
    if color and not _COLOR.fullmatch(color):
        raise ValidationFailed.on("color", 'must be "#rrggbb" (hex) or ""')
    if "content_filter" in fields and fields["content_filter"] not in ContentFilter.values:
        raise ValidationFailed.on(
            "content_filter", f"must be one of {', '.join(ContentFilter.values)}"
        )
    threshold = fields.get("content_threshold")
    if threshold is not None and not 0 < float(threshold) <= 1000:
        raise ValidationFailed.on("content_threshold", "must be over 0 and at most 1000")
    return fields


def caps_clean(fields: dict[str, Any], *, current: Any = None) -> dict[str, Any]:
    """Volume caps (reputation/caps.py): whole numbers of recipients from 1 to CAP_MAX or
    null, the hourly one not over the daily one (with `current`'s for the one not given)."""
    for name in ("hourly_cap", "daily_cap"):
        value = fields.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= CAP_MAX:
            raise ValidationFailed.on(name, f"must be a whole number from 1 to {CAP_MAX}, or null")
    hourly = fields.get("hourly_cap", getattr(current, "hourly_cap", None))
    daily = fields.get("daily_cap", getattr(current, "daily_cap", None))
    if hourly is not None and daily is not None and hourly > daily:
        field = "hourly_cap" if "hourly_cap" in fields else "daily_cap"
        raise ValidationFailed.on(
            field, f"the hourly cap ({hourly}) is over the daily one ({daily})"
        )
    if "cap_mode" in fields and fields["cap_mode"] not in CapMode.values:
        raise ValidationFailed.on("cap_mode", f"must be one of {', '.join(CapMode.values)}")
    return fields


def email_server_create(
    *,
    organization: Organization,
    name: str,
    color: str = "",
    default_stream: str = "outbound",
    auto_suppress_bounces: bool = True,
    auto_suppress_complaints: bool = True,
    sandbox: bool | None = None,
    content_filter: str = ContentFilter.REJECT,
    content_threshold: float = 10.0,
    hourly_cap: int | None = None,
    daily_cap: int | None = None,
) -> EmailServer:
    """A server with its transactional and broadcast streams, within the plan's limit.

    sandbox None: the plan decides (starter: sandbox; plans with API sending: live)."""
    if sandbox is None:
        sandbox = not organization.plan_limits.api_sending
    _sandbox_check(organization, sandbox)
    fields = _clean(
        {
            "name": name,
            "color": color,
            "content_filter": content_filter,
            "content_threshold": content_threshold,
        }
    )
    caps_clean({"hourly_cap": hourly_cap, "daily_cap": daily_cap})
    if default_stream not in SENDING_STREAMS:
        raise ValidationFailed.on("default_stream", f"must be one of {', '.join(SENDING_STREAMS)}")
    with data_atomic():
        # Lock the account row: two concurrent creates cannot both pass the count.
        Organization.objects.select_for_update().filter(pk=organization.pk).first()
        limit = servers_allowed(organization)
        if limit is not None and organization.email_servers.count() >= limit:
            raise LimitReached(
                f"the {organization.plan} plan allows {limit} email server"
                f"{'s' if limit != 1 else ''}",
                details={"servers": [f"limit of {limit} reached"]},
            )
        if organization.email_servers.filter(name=fields["name"]).exists():
            raise Conflict(
                f"a server named {fields['name']!r} exists",
                details={"name": ["a server with this name exists"]},
            )
        server = EmailServer.objects.create(
            organization=organization,
            name=fields["name"],
            color=fields["color"],
            auto_suppress_bounces=auto_suppress_bounces,
            auto_suppress_complaints=auto_suppress_complaints,
            sandbox=sandbox,
            content_filter=fields["content_filter"],
            content_threshold=fields["content_threshold"],
            hourly_cap=hourly_cap,
            daily_cap=daily_cap,
        )
        streams = MessageStream.objects.bulk_create(
            MessageStream(server=server, stream_id=sid, name=title, kind=kind)
            for sid, title, kind in DEFAULT_STREAMS
        )
        server.default_stream = next(s for s in streams if s.stream_id == default_stream)
        server.save(update_fields=["default_stream"])
    return server


def email_server_update(*, server: EmailServer, fields: dict[str, Any]) -> EmailServer:
    """Change any of UPDATABLE; `default_stream` names one of the server's stream ids."""
    unknown = set(fields) - UPDATABLE
    if unknown:
        raise ValidationFailed.on(sorted(unknown)[0], "cannot be changed")
    fields = caps_clean(_clean(dict(fields)), current=server)
    if "sandbox" in fields:
        _sandbox_check(server.organization, bool(fields["sandbox"]))
    if "default_stream" in fields:
        stream = server.streams.filter(stream_id=fields["default_stream"]).first()
        if stream is None:
            raise ValidationFailed.on("default_stream", "no such stream on this server")
        if stream.kind == StreamKind.INBOUND:
            raise ValidationFailed.on(
                "default_stream", "the inbound stream receives, it cannot send"
            )
        fields["default_stream"] = stream
    for name, value in fields.items():
        setattr(server, name, value)
    try:
        with data_atomic():
            server.save(update_fields=list(fields))
    except IntegrityError as exc:
        raise Conflict(
            "a server with this name exists", details={"name": ["a server with this name exists"]}
        ) from exc
    return server


def email_server_delete(*, organization: Organization, server_id: int) -> None:
    """Seed 004: the server's streams, keys and logs (its messages and their events) go
    with it; nothing of any other server does."""
    with data_atomic():
        server = EmailServer.objects.filter(organization=organization, pk=server_id).first()
        if server is None:
            raise NotFound("server not found")
        OutboundMessage.objects.filter(
            organization=organization, server_link__server=server
        ).delete()
        server.delete()


def server_key_create(
    *,
    server: EmailServer,
    name: str = "default",
    kind: str = ServerKeyKind.SEND_ONLY,
    hourly_cap: int | None = None,
    daily_cap: int | None = None,
    cap_mode: str = CapMode.HOLD,
) -> IssuedServerKey:
    if kind not in ServerKeyKind.values:
        raise ValidationFailed.on("kind", f"must be one of {', '.join(ServerKeyKind.values)}")
    caps_clean({"hourly_cap": hourly_cap, "daily_cap": daily_cap, "cap_mode": cap_mode})
    secret = f"{KEY_PREFIX}{secrets.token_urlsafe(32)}"
    key = ServerKey.objects.create(
        server=server,
        name=name,
        kind=kind,
        prefix=secret[: len(KEY_PREFIX) + 6],
        key_digest=crypto.digest(secret),
        hourly_cap=hourly_cap,
        daily_cap=daily_cap,
        cap_mode=cap_mode,
    )
    return IssuedServerKey(server_key=key, secret=secret)


def server_key_update(
    *, organization: Organization, key_id: int, fields: dict[str, Any]
) -> ServerKey:
    """Change a live key's name, caps or cap mode (any of KEY_UPDATABLE)."""
    unknown = set(fields) - KEY_UPDATABLE
    if unknown:
        raise ValidationFailed.on(sorted(unknown)[0], "cannot be changed")
    with data_atomic():
        # Under the key's lock: caps_reserve reads the caps under it too.
        key = (
            ServerKey.objects.select_for_update()
            .filter(server__organization=organization, pk=key_id, revoked_at=None)
            .first()
        )
        if key is None:
            raise NotFound("server key not found")
        fields = caps_clean(dict(fields), current=key)
        if "name" in fields:
            fields["name"] = str(fields["name"]).strip()
            if not fields["name"]:
                raise ValidationFailed.on("name", "must not be blank")
        for name, value in fields.items():
            setattr(key, name, value)
        key.save(update_fields=list(fields))
    return key


def server_key_revoke(*, organization: Organization, key_id: int) -> ServerKey:
    key = ServerKey.objects.filter(
        server__organization=organization, pk=key_id, revoked_at=None
    ).first()
    if key is None:
        raise NotFound("server key not found")
    key.revoked_at = timezone.now()
    key.save(update_fields=["revoked_at"])
    return key


def server_key_authenticate(*, secret: str) -> ServerKey | None:
    """The live key with this secret's digest (crypto.digest, as account keys), or None."""
    if not secret.startswith(KEY_PREFIX):
        return None  # not a server key: no query
    key = (
        ServerKey.objects.select_related("server", "server__organization__owner")
        .filter(
            key_digest=crypto.digest(secret),
            revoked_at=None,
            server__organization__is_active=True,
        )
        .first()
    )
    if key is None:
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ServerKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def suppression_add(
    *, server: EmailServer, stream: MessageStream, address: str, detail: str = ""
) -> Suppression:
    """Suppress an address on one stream by hand (Postmark's ManualSuppression). An
    address listed already is a Conflict: it keeps its entry and first reason."""
    address = address.strip().lower()
    if not address or len(address) > 320 or "@" not in address or not address.isprintable():
        raise ValidationFailed.on("address", "must be an email address")
    with data_atomic():
        existing = Suppression.objects.filter(stream=stream, address=address).first()
        if existing is not None:
            raise Conflict(
                f"{address} is on the {stream.stream_id} stream's suppression list already "
                f"({existing.reason})",
                details={"address": ["on this stream's suppression list already"]},
            )
        suppressions_add(
            [
                SuppressionEntry(
                    organization_id=server.organization_id,
                    address=address,
                    reason=SuppressionReason.MANUAL,
                    stream_id=stream.pk,
                    detail=detail,
                )
            ]
        )
        return Suppression.objects.get(stream=stream, address=address)


def suppression_remove(*, server: EmailServer, suppression_id: int) -> None:
    """Reactivate an address on its stream: mail to it is sent again."""
    found = Suppression.objects.filter(
        organization_id=server.organization_id, stream__server=server, pk=suppression_id
    ).exists()
    if not found:
        raise NotFound("suppression not found")
    suppressions_remove(organization_id=server.organization_id, ids=[suppression_id])


def bounce_rule_create(
    *, server: EmailServer, contains: str = "", status: str = "", bounce_class: str
) -> BounceRule:
    """An override of the bounce class for this server's mail (delivery/bounce_classes.py)."""
    contains, status = contains.strip(), status.strip()
    if not contains and not status:
        raise ValidationFailed(
            "a rule needs `contains`, `status` or both",
            details={"contains": ["give a text, a status or both"]},
        )
    if status and not _RULE_STATUS.fullmatch(status):
        raise ValidationFailed.on(
            "status", 'a reply code ("550") or an enhanced status prefix ("5.7" or "5.7.1")'
        )
    if bounce_class not in BounceClass.values:
        raise ValidationFailed.on("bounce_class", f"must be one of {', '.join(BounceClass.values)}")
    with data_atomic():
        # Counted under the server's row lock: two concurrent creates cannot pass the cap.
        EmailServer.objects.select_for_update().filter(pk=server.pk).first()
        if BounceRule.objects.filter(server=server).count() >= BOUNCE_RULES_PER_SERVER:
            raise LimitReached(f"a server has at most {BOUNCE_RULES_PER_SERVER} bounce rules")
        return BounceRule.objects.create(
            server=server, contains=contains, status=status, bounce_class=bounce_class
        )


def bounce_rule_delete(*, organization: Organization, rule_id: int) -> None:
    deleted, _ = BounceRule.objects.filter(server__organization=organization, pk=rule_id).delete()
    if not deleted:
        raise NotFound("bounce rule not found")
