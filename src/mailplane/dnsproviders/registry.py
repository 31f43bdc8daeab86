"""Provider kinds: what credentials each takes and how its client is built.

Adding a provider is one entry here plus its client module (a `DnsProviderClient`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from mailplane.core.errors import ValidationFailed
from mailplane.dnsproviders.cloudflare import CloudflareClient
from mailplane.dnsproviders.godaddy import GoDaddyClient
from mailplane.dnsproviders.http import JOB_POLICY, RetryPolicy
from mailplane.dnsproviders.interface import DnsProviderClient

# Secrets go into an HTTP header: printable token characters only (no spaces, no colon in
# GoDaddy's pair, no CR/LF), and short enough to be a credential rather than a payload.
_CLOUDFLARE_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{20,200}")
_GODADDY_PART = re.compile(r"[A-Za-z0-9_-]{8,200}")

ClientFactory = Callable[[Mapping[str, str], RetryPolicy], DnsProviderClient]


@dataclass(frozen=True)
class ProviderKind:
    name: str
    credentials: Mapping[str, re.Pattern[str]]  # field -> accepted form
    hint: str  # what each field is, for error messages
    client: ClientFactory


def _timeout() -> float:
    return float(settings.MAILPLANE["DNS_PROVIDER_TIMEOUT"])


def _cloudflare(credentials: Mapping[str, str], policy: RetryPolicy) -> DnsProviderClient:
    return CloudflareClient(
        api_token=credentials["api_token"],
        base_url=settings.MAILPLANE["CLOUDFLARE_API_URL"],
        policy=policy,
        timeout=_timeout(),
    )


def _godaddy(credentials: Mapping[str, str], policy: RetryPolicy) -> DnsProviderClient:
    return GoDaddyClient(
        api_key=credentials["api_key"],
        api_secret=credentials["api_secret"],
        base_url=settings.MAILPLANE["GODADDY_API_URL"],
        policy=policy,
        timeout=_timeout(),
    )


PROVIDERS: dict[str, ProviderKind] = {
    "cloudflare": ProviderKind(
        name="Cloudflare",
        credentials={"api_token": _CLOUDFLARE_TOKEN},
        hint="a Cloudflare API token (20-200 characters) with Zone:Read and DNS:Edit",
        client=_cloudflare,
    ),
    "godaddy": ProviderKind(
        name="GoDaddy",
        credentials={"api_key": _GODADDY_PART, "api_secret": _GODADDY_PART},
        hint="a GoDaddy API key and its secret (8-200 letters, digits, _ or -)",
        client=_godaddy,
    ),
}


def credentials_validate(provider: str, credentials: Any) -> dict[str, str]:
    """The credentials exactly as the provider kind takes them, or ValidationFailed
    naming the field (never echoing the value)."""
    kind = PROVIDERS.get(provider)
    if kind is None:
        raise ValidationFailed.on("provider", f"must be one of {', '.join(PROVIDERS)}")
    if not isinstance(credentials, Mapping):
        raise ValidationFailed.on("credentials", "must be an object")
    if len(credentials) > 2 * len(kind.credentials):
        raise ValidationFailed.on(
            "credentials", f"{kind.name} takes {', '.join(kind.credentials)}; got too many fields"
        )
    errors: dict[str, list[str]] = {}
    for key in credentials:
        if key not in kind.credentials:
            errors[f"credentials.{str(key)[:50]}"] = [f"unknown field for {kind.name}"]
    for field, pattern in kind.credentials.items():
        value = credentials.get(field)
        if value is None or value == "":
            errors[f"credentials.{field}"] = ["is required"]
        elif not isinstance(value, str) or not pattern.fullmatch(value):
            errors[f"credentials.{field}"] = [f"is not {kind.hint}"]
    if errors:
        raise ValidationFailed(f"invalid {kind.name} credentials", details=errors)
    return {field: str(credentials[field]) for field in kind.credentials}


def client_for(
    provider: str, credentials: Mapping[str, str], *, policy: RetryPolicy = JOB_POLICY
) -> DnsProviderClient:
    return PROVIDERS[provider].client(credentials, policy)
