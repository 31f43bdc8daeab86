"""Sending back ends behind one Protocol, chosen by the message's relay server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from mailplane.delivery.providers.base import Envelope, Provider
from mailplane.delivery.providers.mailgun import MailgunProvider
from mailplane.delivery.providers.sendgrid import SendGridProvider
from mailplane.delivery.providers.smtp import NativeMxProvider, SmarthostProvider
from mailplane.relays.providers import Provider as ProviderName

__all__ = ["SENDERS", "Envelope", "Provider", "provider_for", "providers_close"]


# Each provider's sender, built from a relay server's (configuration, credentials).
SENDERS: dict[ProviderName, Callable[[dict[str, Any], dict[str, Any]], Provider]] = {
    ProviderName.MISSIONINBOX: lambda configuration, _: NativeMxProvider.from_config(configuration),
    ProviderName.SMTP: SmarthostProvider.from_config,
    ProviderName.MAILGUN: MailgunProvider.from_config,
    ProviderName.SENDGRID: SendGridProvider.from_config,
}


def provider_for(*, provider: str, configuration: dict[str, Any], credentials: Any) -> Provider:
    """Build the provider a relay server names (raises ValueError for an unknown one)."""
    creds = credentials if isinstance(credentials, dict) else {}
    if provider not in ProviderName.values:
        raise ValueError(f"unknown provider {provider!r}")
    return SENDERS[ProviderName(provider)](configuration, creds)


async def providers_close(providers: Iterable[Provider]) -> None:
    """Close every provider (QUIT idle connections) at once."""
    await asyncio.gather(*(p.aclose() for p in providers))
