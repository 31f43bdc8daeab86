"""Analytics settings: settings.MAILPLANE, then MAILPLANE_<NAME> in the environment, then
the defaults below (as webhooks/config.py)."""

from __future__ import annotations

from typing import Any

from mailplane.core.process import setting_knob

DEFAULTS: dict[str, Any] = {
    "ANALYTICS_BATCH_SIZE": 1000,  # events per transaction (queue/events.MAX_BATCH at most)
    # Seconds between looks at the stream once caught up: the lag of a count, at most.
    "ANALYTICS_POLL_INTERVAL": 0.25,
}


def conf(name: str) -> Any:
    return setting_knob(name, DEFAULTS)
