"""`python -m mailplane.webhooks`: the webhook service (registered as "webhooks" in serve)."""

from __future__ import annotations

from typing import Any

from mailplane.core.process import service_main


def _worker() -> Any:
    from mailplane.webhooks.runner import WebhookWorker

    return WebhookWorker()


if __name__ == "__main__":
    service_main(_worker)
