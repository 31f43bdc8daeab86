"""Every periodic job in one place (Celery beat schedule)."""

from __future__ import annotations

from typing import Any

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "jobs-requeue-stale": {
        "task": "mailplane.jobs.tasks.job_requeue_stale",
        "schedule": 60.0,
    },
    "domains-verify-pending": {
        "task": "mailplane.domains.tasks.domain_verify_pending",
        "schedule": 300.0,
    },
    # Message logs and bodies past the account's retention (queue/retention.py): hourly,
    # so each run deletes about an hour's worth of mail, in bounded batches.
    "queue-message-logs-prune": {
        "task": "mailplane.queue.tasks.message_logs_prune",
        "schedule": 3600.0,
    },
    # Received messages (inbound/retention.py) after the same retention as the logs.
    "inbound-messages-prune": {
        "task": "mailplane.inbound.tasks.inbound_messages_prune",
        "schedule": 3600.0,
    },
    "pools-warmup-advance": {
        "task": "mailplane.pools.tasks.warmup_advance_daily",
        "schedule": 3600.0,
    },
    # The caps' and the warm-up's hour rows past what any window decision reads
    # (core/windows.py window_horizon): hourly, in bounded batches.
    "reputation-cap-usage-prune": {
        "task": "mailplane.reputation.tasks.cap_usage_prune",
        "schedule": 3600.0,
    },
    "pools-address-usage-prune": {
        "task": "mailplane.pools.tasks.address_usage_prune",
        "schedule": 3600.0,
    },
    # Bounce and complaint rates over the last day (reputation/pause.py).
    "reputation-evaluate": {
        "task": "mailplane.reputation.tasks.reputation_evaluate_recent",
        "schedule": 300.0,
    },
}
