"""`python -m mailplane.imap`: the IMAP service, as started by `mailplane serve`."""

from __future__ import annotations

import asyncio
import logging
import signal

import django

from mailplane.core.process import exit_now


async def serve() -> None:
    """Listen on the configured ports until SIGTERM or SIGINT."""
    from django.conf import settings

    from mailplane.imap.server import imap_listen
    from mailplane.tls import server_context

    conf = settings.MAILPLANE
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with imap_listen(
        host=conf["IMAP_BIND"],
        tls_port=conf["IMAP_PORT"],
        starttls_port=conf["IMAP_STARTTLS_PORT"],
        ssl_context=server_context(),
        storage_root=conf["STORAGE_ROOT"],
    ) as listening:
        print(
            f"mailplane: IMAP on {listening.tls_address} (implicit TLS) and "
            f"{listening.starttls_address} (STARTTLS)",
            flush=True,
        )
        await stop.wait()


def main() -> None:
    django.setup()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve())
    exit_now(0)


if __name__ == "__main__":
    main()
