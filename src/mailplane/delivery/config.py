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
    # Destination politeness (politeness.py), per MX group (google, microsoft, yahoo, apple,
    # else the primary MX's registered domain) and source address, shared through Redis.
    "DELIVERY_POLITENESS": True,  # False: only the per-domain cap above applies
    # Connections at once per group and source address: the ceiling the limit returns to
    # (Postfix's default_destination_concurrency_limit is 20 per destination).
    "DELIVERY_POLITENESS_MAX_CONNECTIONS": 20,
    # Messages per minute per group and source: the ceiling; 0: none until a receiver
    # throttles (then half of the rate sent in the last minute is the limit).
    "DELIVERY_POLITENESS_MAX_RATE": 0.0,
    "DELIVERY_POLITENESS_MIN_RATE": 10.0,  # messages/min a throttle never goes below
    "DELIVERY_POLITENESS_BURST_SECONDS": 6.0,  # the rate's bucket holds this many seconds
    # After a throttle reply (Gmail 4.7.28, Microsoft 4.7.5xx/6xx, Yahoo TSS04...): no new
    # connection to the group from that address for this long; the limits are halved at
    # most once per hold.
    "DELIVERY_THROTTLE_HOLD_SECONDS": 60.0,
    # Each quiet period without a throttle gives back one connection and RATE_STEP of the
    # ceiling rate (additive increase), until the ceilings are reached.
    "DELIVERY_POLITENESS_QUIET_SECONDS": 300.0,
    "DELIVERY_POLITENESS_RATE_STEP": 0.1,
    # Also: DELIVERY_POLITENESS_GROUPS {"mx suffix": "group"} (added to politeness.MX_GROUPS)
    # and DELIVERY_THROTTLE_PATTERNS [regex, ...] (more replies that mean "slow down").
    # Idle SMTP connections kept for the next chunk to the same MX host (Postfix's
    # connection cache: smtp_connection_cache_time_limit 2 s and a reuse count limit).
    "DELIVERY_CONNECTION_IDLE_SECONDS": 5.0,  # QUIT after this long unused; 0: no reuse
    "DELIVERY_CONNECTION_MAX_MESSAGES": 100,  # transactions, then QUIT instead of reuse
    "DELIVERY_CONNECTION_POOL_SIZE": 32,  # idle connections per provider, at most
}


def conf(name: str) -> Any:
    """A knob of this service (core/process.py setting_knob: settings, environment, default)."""
    return setting_knob(name, DEFAULTS)
