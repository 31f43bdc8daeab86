"""`python -m mailplane.webhooks`: the webhook service (registered as "webhooks" in serve)."""

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
    from mailplane.webhooks.runner import WebhookWorker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await WebhookWorker().run_forever(stop)

    asyncio.run(run())
    exit_now(0)


if __name__ == "__main__":
    raise SystemExit(main())
