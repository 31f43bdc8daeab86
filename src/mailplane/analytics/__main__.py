"""`python -m mailplane.analytics`: the analytics consumer (registered as "analytics" in
serve)."""

from __future__ import annotations

from typing import Any

from mailplane.core.process import service_main


def _worker() -> Any:
    from mailplane.analytics.runner import AnalyticsWorker

    return AnalyticsWorker()


if __name__ == "__main__":
    service_main(_worker)
