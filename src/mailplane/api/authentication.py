"""`Authorization: Api-Key <key>`, the scheme the seeds use; wrong keys are throttled per
client address (api/throttling.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from mailplane.api.throttling import auth_failure_limits, client_key, retry_after_seconds
from mailplane.cells.routing import route_set
from mailplane.cells.selectors import organization_route
from mailplane.tenancy.models import ApiKey, Organization
from mailplane.tenancy.services import api_key_authenticate

KEYWORD = "Api-Key"
K = TypeVar("K")


class AuthThrottled(exceptions.Throttled):
    """429: this client address sent too many wrong keys; Retry-After says for how long."""

    def __init__(self, wait: float) -> None:
        seconds = retry_after_seconds(wait)
        super().__init__(
            detail=(
                "too many wrong API keys from your address: "
                f"try again in {seconds} second{'s' if seconds != 1 else ''}"
            )
        )
        self.wait = seconds  # DRF's handler turns this into the Retry-After header


def key_checked(
    request: Request,
    secret: str,
    lookup: Callable[..., K | None],
    *,
    malformed: str,
    unknown: str,
) -> K:
    """The key `lookup(secret=…)` finds, for either kind of key (account or server): a
    client address over its wrong-key budget gets 429 before any lookup, and a malformed
    or unknown key counts against that budget and gets 401."""
    limits = auth_failure_limits()
    client = client_key(request.META)
    wait = limits.retry_after(client=client)
    if wait is not None:
        raise AuthThrottled(wait)
    secret = secret.strip()
    if not secret or " " in secret:
        limits.failed(client=client)
        raise exceptions.AuthenticationFailed(malformed)
    key = lookup(secret=secret)
    if key is None:
        limits.failed(client=client)
        raise exceptions.AuthenticationFailed(unknown)
    return key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        keyword, _, secret = header.partition(" ")
        if keyword.lower() != KEYWORD.lower():
            return None
        key = key_checked(
            request,
            secret,
            api_key_authenticate,
            malformed="malformed Api-Key header",
            unknown="invalid or revoked API key",
        )
        # From here on this request reads and writes the account's data in its cell.
        route_set(organization_route(organization=key.organization))
        return key.organization.owner, key

    def authenticate_header(self, request: Request) -> str:
        return KEYWORD


def organization_of(request: Request) -> Organization:
    key = request.auth
    assert isinstance(key, ApiKey)
    return key.organization
