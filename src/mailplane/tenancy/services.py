"""Writes for tenants and keys."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.text import slugify

from mailplane.cells.routing import data_atomic
from mailplane.core import crypto
from mailplane.core.errors import Conflict, NotFound, ValidationFailed
from mailplane.relays.providers import DEFAULT_PROVIDER
from mailplane.relays.services import relay_server_create
from mailplane.tenancy.models import ApiKey, Organization
from mailplane.tenancy.plans import PlanName

KEY_PREFIX = "mp_"
# last_used_at is a hint, not an audit log: one write per key per minute at most.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    api_key: ApiKey
    secret: str  # the only time the clear key exists


def organization_create(
    *, name: str, owner_email: str, plan: str = PlanName.STARTER, slug: str | None = None
) -> Organization:
    if plan not in PlanName.__members__.values():
        raise ValidationFailed.on("plan", f"must be one of {', '.join(PlanName)}")
    slug = slug or slugify(name)[:63]
    if not slug:
        raise ValidationFailed.on("name", "must contain letters or digits")
    user_model = get_user_model()
    with data_atomic():
        if Organization.objects.filter(slug=slug).exists():
            raise Conflict(f"organization {slug!r} already exists")
        owner, _ = user_model.objects.get_or_create(
            username=owner_email.lower(), defaults={"email": owner_email.lower()}
        )
        org = Organization.objects.create(name=name, slug=slug, plan=plan, owner=owner)
        # The service assigns every new account a native relay server (seed 000).
        relay_server_create(organization=org, name=f"{slug}-native", provider=DEFAULT_PROVIDER)
    return org


def api_key_create(*, organization: Organization, name: str = "default") -> IssuedKey:
    secret = f"{KEY_PREFIX}{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(
        organization=organization,
        name=name,
        prefix=secret[: len(KEY_PREFIX) + 6],
        key_digest=crypto.digest(secret),
    )
    return IssuedKey(api_key=key, secret=secret)


def api_key_revoke(*, organization: Organization, key_id: int) -> ApiKey:
    key = ApiKey.objects.filter(organization=organization, pk=key_id, revoked_at=None).first()
    if key is None:
        raise NotFound("API key not found")
    key.revoked_at = timezone.now()
    key.save(update_fields=["revoked_at"])
    return key


def api_key_authenticate(*, secret: str) -> ApiKey | None:
    """The live key whose digest `secret` has, or None.

    Keys made before the unkeyed digest (crypto.digest) carry an HMAC under some secret
    key: they match under any configured key, and are upgraded in place on that first use,
    so once every key has been used the secret keys can rotate and retire freely."""
    current = crypto.digest(secret)
    key = (
        ApiKey.objects.select_related("organization", "organization__owner")
        .filter(
            key_digest__in=[current, *crypto.legacy_digests(secret)],
            revoked_at=None,
            organization__is_active=True,
        )
        .first()
    )
    if key is None:
        return None
    if key.key_digest != current:
        # Conditional: a concurrent request doing the same upgrade changes nothing twice.
        ApiKey.objects.filter(pk=key.pk, key_digest=key.key_digest).update(key_digest=current)
        key.key_digest = current
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key
