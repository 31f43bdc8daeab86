"""Building and running the listeners (used by the services and by tests).

Submission listens twice: implicit TLS (RFC 8314 §3.3, port 465) and plain-then-STARTTLS
with STARTTLS required before AUTH or mail (RFC 3207 §4, port 587). The MX listens in
the clear and offers STARTTLS opportunistically (RFC 3207: a public MX must not require it).
Both offer SMTPUTF8 (RFC 6531), as Postfix with smtputf8_enable does: UTF-8 addresses with
the MAIL parameter, UTF-8 header fields (RFC 6532) passed on byte for byte.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from mailplane.smtp.mx import MXHandler
from mailplane.smtp.protocol import MailplaneSMTP
from mailplane.smtp.submission import SubmissionHandler

log = logging.getLogger("mailplane.smtp")
IDENT = "Mailplane ESMTP"


@dataclass(slots=True)
class Limits:
    max_message_bytes: int = 25 * 1024 * 1024
    max_recipients: int = 100
    idle_timeout: float = 300.0  # RFC 5321 §4.5.3.2.7: the server waits 5 minutes


def limits_from_settings() -> Limits:
    conf = settings.MAILPLANE
    return Limits(
        max_message_bytes=conf.get("SMTP_MAX_MESSAGE_BYTES", 25 * 1024 * 1024),
        max_recipients=conf.get("SMTP_MAX_RECIPIENTS", 100),
    )


def _factory(
    handler: Any,
    *,
    hostname: str,
    limits: Limits,
    tls_context: ssl.SSLContext | None,
    require_starttls: bool,
    auth_required: bool,
) -> Callable[[], MailplaneSMTP]:
    def make() -> MailplaneSMTP:
        return MailplaneSMTP(
            handler,
            hostname=hostname,
            ident=IDENT,
            data_size_limit=limits.max_message_bytes,
            tls_context=tls_context,
            require_starttls=require_starttls,
            auth_required=auth_required,
            auth_require_tls=True,
            auth_exclude_mechanism=None if auth_required else ["PLAIN", "LOGIN"],
            timeout=limits.idle_timeout,
            enable_SMTPUTF8=True,  # the address checks are MailplaneSMTP's (protocol.py)
            loop=asyncio.get_running_loop(),
        )

    return make


async def submission_start(
    *,
    host: str,
    implicit_port: int,
    starttls_port: int,
    tls_context: ssl.SSLContext,
    handler: SubmissionHandler,
    limits: Limits,
    reuse_port: bool = False,
) -> list[asyncio.Server]:
    loop = asyncio.get_running_loop()
    implicit = await loop.create_server(
        _factory(
            handler,
            hostname=handler.hostname,
            limits=limits,
            tls_context=None,
            require_starttls=False,
            auth_required=True,
        ),
        host,
        implicit_port,
        ssl=tls_context,
        reuse_address=True,
        reuse_port=reuse_port,  # several listener processes (smtp/__main__.py)
        backlog=512,
    )
    starttls = await loop.create_server(
        _factory(
            handler,
            hostname=handler.hostname,
            limits=limits,
            tls_context=tls_context,
            require_starttls=True,
            auth_required=True,
        ),
        host,
        starttls_port,
        reuse_address=True,
        reuse_port=reuse_port,  # several listener processes (smtp/__main__.py)
        backlog=512,
    )
    return [implicit, starttls]


async def mx_start(
    *,
    host: str,
    port: int,
    tls_context: ssl.SSLContext | None,
    handler: MXHandler,
    limits: Limits,
    reuse_port: bool = False,
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        _factory(
            handler,
            hostname=handler.hostname,
            limits=limits,
            tls_context=tls_context,
            require_starttls=False,
            auth_required=False,
        ),
        host,
        port,
        reuse_address=True,
        reuse_port=reuse_port,  # several listener processes (smtp/__main__.py)
        backlog=512,
    )


def bound_port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


def mx_hostname() -> str:
    return settings.MAILPLANE.get("MX_HOST") or socket.getfqdn()
