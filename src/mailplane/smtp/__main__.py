"""`python -m mailplane.smtp submission|mx`: one long-running listener process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from mailplane.core.process import exit_now


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in ("submission", "mx"):
        print("usage: python -m mailplane.smtp submission|mx", file=sys.stderr)
        return 2
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailplane.settings")
    import django

    django.setup()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # aiosmtpd logs every command line at INFO; our handlers log each decision instead.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    asyncio.run(serve(args[0]))
    exit_now(0)


async def serve(kind: str) -> None:
    from django.conf import settings

    from mailplane import tls
    from mailplane.smtp import server
    from mailplane.smtp.mx import MXHandler
    from mailplane.smtp.submission import SubmissionHandler

    conf = settings.MAILPLANE
    host = conf["SMTP_BIND"]
    context = tls.server_context()
    limits = server.limits_from_settings()
    handler: SubmissionHandler | None = None
    if kind == "submission":
        handler = SubmissionHandler(
            hostname=conf["SHARED_SMTP_HOST"], max_recipients=limits.max_recipients
        )
        servers = await server.submission_start(
            host=host,
            implicit_port=conf["SMTP_PORT"],
            starttls_port=conf["SUBMISSION_PORT"],
            tls_context=context,
            handler=handler,
            limits=limits,
        )
        print(
            f"mailplane: submission on {host}:{server.bound_port(servers[0])} (implicit TLS), "
            f"{host}:{server.bound_port(servers[1])} (STARTTLS)",
            flush=True,
        )
    else:
        mx = MXHandler(hostname=server.mx_hostname(), max_recipients=limits.max_recipients)
        servers = [
            await server.mx_start(
                host=host, port=conf["MX_PORT"], tls_context=context, handler=mx, limits=limits
            )
        ]
        print(f"mailplane: inbound MX on {host}:{server.bound_port(servers[0])}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()
    for s in servers:
        await s.wait_closed()
    if handler is not None:
        await handler.aclose()  # finish the batch in flight, close the writer's connection


if __name__ == "__main__":
    sys.exit(main())
