"""Delivery settings: settings.MAILPLANE, then MAILPLANE_<NAME> in the environment, then the
defaults below (all overridable in tests)."""

from __future__ import annotations

from typing import Any

from mailplane.core.process import setting_knob

DEFAULTS: dict[str, Any] = {
    # RFC 5321 §4.5.3.2 suggests minutes per command; one minute keeps hung MXs from
    # pinning connection slots while still being generous to slow receivers.
    "DELIVERY_SMTP_TIMEOUT": 60.0,
    "DELIVERY_MX_PORT": 25,  # tests point this at local sinks
    "DELIVERY_HELO_NAME": "",  # default: the relay's helo_name, else the platform domain
    "DELIVERY_BATCH_SIZE": 1000,  # rows per claim: enough to batch per destination
    "DELIVERY_CONCURRENCY": 100,  # connections/requests in flight per worker
    # A claim's lease, renewed every third of it while the worker holds the rows: a dead
    # worker's rows are due again within one lease (claims.py).
    "DELIVERY_LEASE_SECONDS": 30.0,
    "DELIVERY_POLL_INTERVAL": 0.2,
    "DELIVERY_RETRY_MIN_SECONDS": 60,
    "DELIVERY_RETRY_MAX_SECONDS": 3600,
    "DELIVERY_MAX_CONNECTIONS_PER_DOMAIN": 5,
    # Lease on a shared per-destination slot (Redis), renewed while held: how long a
    # crashed worker's connections still count against the destination's cap.
    "DELIVERY_SLOT_LEASE_SECONDS": 30.0,
    "DELIVERY_HTTP_TIMEOUT": 30.0,
    # Idle SMTP connections kept for the next chunk to the same MX host (Postfix's
    # connection cache: smtp_connection_cache_time_limit 2 s and a reuse count limit).
    "DELIVERY_CONNECTION_IDLE_SECONDS": 5.0,  # QUIT after this long unused; 0: no reuse
    "DELIVERY_CONNECTION_MAX_MESSAGES": 100,  # transactions, then QUIT instead of reuse
    "DELIVERY_CONNECTION_POOL_SIZE": 32,  # idle connections per provider, at most
}


def conf(name: str) -> Any:
    """A knob of this service (core/process.py setting_knob: settings, environment, default)."""
    return setting_knob(name, DEFAULTS)
