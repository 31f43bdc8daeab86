"""Webhook settings: settings.MAILPLANE, then MAILPLANE_<NAME> in the environment, then the
defaults below (as delivery/config.py; all overridable in tests)."""

from __future__ import annotations

from typing import Any

from mailplane.core.process import setting_knob

DEFAULTS: dict[str, Any] = {
    # Standard Webhooks suggests 15 to 30 s; a receiver should answer fast and work later.
    "WEBHOOKS_TIMEOUT": 15.0,
    # Seconds after each failed attempt (the first is immediate): about a day in all,
    # as Standard Webhooks' suggested schedule; then the delivery is given up.
    "WEBHOOKS_RETRY_SCHEDULE": "5,60,600,3600,10800,21600,43200",
    # Longest Retry-After (429/503) honoured; a longer one is cut to this.
    "WEBHOOKS_RETRY_AFTER_MAX": 86400.0,
    # An endpoint that has failed every attempt for this long is disabled (Svix: 5 days).
    "WEBHOOKS_DISABLE_AFTER": 5 * 86400.0,
    "WEBHOOKS_LEASE_SECONDS": 60.0,  # a claimed delivery is due again after this
    "WEBHOOKS_BATCH_SIZE": 500,  # deliveries per claim
    "WEBHOOKS_CONCURRENCY": 200,  # requests in flight per worker, all endpoints
    "WEBHOOKS_POLL_INTERVAL": 0.1,
    "WEBHOOKS_RESPONSE_EXCERPT": 1024,  # bytes of a receiver's answer kept per attempt
    "WEBHOOKS_ROTATION_OVERLAP": 86400.0,  # the old secret signs too, this long
    # Private, loopback, link-local, multicast and reserved addresses: refused unless on
    # (settings.py: on in embedded mode and test runs, off in production).
    "WEBHOOKS_ALLOW_PRIVATE": False,
}


def conf(name: str) -> Any:
    """A knob of this service (core/process.py setting_knob: settings, environment, default)."""
    return setting_knob(name, DEFAULTS)


def retry_schedule() -> list[float]:
    """Delays after attempts 1, 2, …; its length + 1 is the number of attempts."""
    raw = conf("WEBHOOKS_RETRY_SCHEDULE")
    if isinstance(raw, list | tuple):
        return [float(x) for x in raw]
    return [float(x) for x in str(raw).split(",") if x.strip()]
