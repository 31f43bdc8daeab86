"""Telling machine fetches from people (documented heuristics, not proof).

- Apple Mail Privacy Protection (iOS 15+, macOS 12+) fetches every remote image when the
  message arrives, opened or not, through Apple's proxies: from Apple's own network,
  17.0.0.0/8 (ARIN: Apple Inc.), with the bare user agent `Mozilla/5.0`. ESPs (SendGrid,
  Mailchimp, Litmus) flag these as machine opens; so do we.
- Link scanners of mail security gateways and chat previews announce themselves in the
  user agent (Barracuda, Mimecast, Proofpoint, Slackbot…), as do HTTP libraries and
  crawlers; a request without a user agent is no browser.
- Image proxies that fetch on the reader's open (GoogleImageProxy, YahooMailProxy) are
  opens by a person and are NOT flagged.
"""

from __future__ import annotations

import ipaddress
import re

APPLE_NETWORKS = (ipaddress.ip_network("17.0.0.0/8"),)
APPLE_MPP = "apple_mpp"
BOT = "bot"
_BOTS = re.compile(
    r"bot\b|bot/|crawler|spider|curl/|wget/|python-requests|python-urllib|aiohttp|httpx|"
    r"go-http-client|java/|okhttp|libwww-perl|httpclient|headlesschrome|phantomjs|"
    r"barracuda|mimecast|proofpoint|messagelabs|symantec|trendmicro|forcepoint|"
    r"microsoft office existence discovery|facebookexternalhit|linkexpanding|preview",
    re.IGNORECASE,
)
UA_MAX = 1000  # longer user agents are read this far


def _apple(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in net for net in APPLE_NETWORKS)


def machine_reason(*, user_agent: str, ip: str, opening: bool) -> str:
    """ "" for a person, else why not: `apple_mpp` (opens only) or `bot`."""
    agent = user_agent[:UA_MAX].strip()
    if opening and _apple(ip) and agent in ("", "Mozilla/5.0"):
        return APPLE_MPP
    if not agent or _BOTS.search(agent):
        return BOT
    return ""
