"""`python -m mailplane.delivery`: the delivery service (registered as "delivery" in serve)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from mailplane.core.process import exit_now


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailplane.settings")
    import django

    django.setup()
    from mailplane.delivery.worker import DeliveryWorker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await DeliveryWorker().run_forever(stop)

    asyncio.run(run())
    exit_now(0)


if __name__ == "__main__":
    raise SystemExit(main())
