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
    _keep_sqlite_connections()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # aiosmtpd logs every command line at INFO; our handlers log each decision instead.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    asyncio.run(serve(args[0]))
    exit_now(0)


def _keep_sqlite_connections() -> None:
    """Let this process's worker threads keep their SQLite connections open.

    settings.py closes SQLite connections after every request (CONN_MAX_AGE 0); here every
    RCPT would then open one (PRAGMAs and SQL function registration, about as costly as
    the lookup itself). This process has a fixed pool of threads (smtp/db.py and the
    writer), so at most that many connections stay open; WAL readers in autocommit see
    each commit at once, so nothing read is staler than with a new connection.
    """
    from django.db import connections

    db = connections.settings["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3" and not db.get("CONN_MAX_AGE"):
        db["CONN_MAX_AGE"] = 600


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
    handler: SubmissionHandler | MXHandler
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
        handler = MXHandler(hostname=server.mx_hostname(), max_recipients=limits.max_recipients)
        servers = [
            await server.mx_start(
                host=host, port=conf["MX_PORT"], tls_context=context, handler=handler, limits=limits
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
    await handler.aclose()  # finish the batch in flight, close the writer's connection


if __name__ == "__main__":
    sys.exit(main())
