"""Sending back ends behind one Protocol, chosen by the message's relay server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from mailplane.delivery.providers.base import Envelope, Provider
from mailplane.delivery.providers.http_api import MailgunProvider, SendGridProvider
from mailplane.delivery.providers.smtp import NativeMxProvider, SmarthostProvider

__all__ = ["Envelope", "Provider", "provider_for", "providers_close"]


def provider_for(*, provider: str, configuration: dict[str, Any], credentials: Any) -> Provider:
    """Build the provider a relay server names (raises ValueError for an unknown one)."""
    creds = credentials if isinstance(credentials, dict) else {}
    if provider == "missioninbox":
        return NativeMxProvider.from_config(configuration)
    if provider == "smtp":
        return SmarthostProvider.from_config(configuration, creds)
    if provider == "mailgun":
        return MailgunProvider.from_config(configuration, creds)
    if provider == "sendgrid":
        return SendGridProvider.from_config(configuration, creds)
    raise ValueError(f"unknown provider {provider!r}")


async def providers_close(providers: Iterable[Provider]) -> None:
    """Close every provider (QUIT idle connections) at once."""
    await asyncio.gather(*(p.aclose() for p in providers))
