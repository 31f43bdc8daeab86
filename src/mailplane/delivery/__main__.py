"""`python -m mailplane.delivery`: the delivery service (registered as "delivery" in serve)."""

from __future__ import annotations

from typing import Any

from mailplane.core.process import service_main


def _worker() -> Any:
    from mailplane.delivery.worker import DeliveryWorker

    return DeliveryWorker()


if __name__ == "__main__":
    service_main(_worker)
