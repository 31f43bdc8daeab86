"""Who may read /metrics: a rule of the monitoring package, raised as domain errors
(api/monitoring.py only connects it to the request)."""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings

from mailplane import config
from mailplane.core.errors import NotAllowed, NotAuthenticated

CHALLENGE = 'Bearer realm="metrics"'


def _loopback(address: str) -> bool:
    if not address:
        return False
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 (Python < 3.13 calls it not loopback)
    return ip.is_loopback


def metrics_access_check(*, authorization: str, client_ip: str) -> None:
    """The bearer of MAILPLANE_METRICS_TOKEN may scrape (else NotAuthenticated, 401 with
    the Bearer challenge); without a token, a loopback client of an embedded install (else
    NotAllowed, 403). A production install without a token refuses everyone: behind a
    reverse proxy every client would look like loopback."""
    token = settings.MAILPLANE["METRICS_TOKEN"]
    if token:
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credential.strip().encode("utf-8", "replace"), token.encode()
        ):
            return
        raise NotAuthenticated("a valid bearer token is required", challenge=CHALLENGE)
    if not config.embedded_mode():
        raise NotAllowed("set MAILPLANE_METRICS_TOKEN to enable /metrics")
    if not _loopback(client_ip):
        raise NotAllowed("/metrics answers loopback clients only without MAILPLANE_METRICS_TOKEN")
