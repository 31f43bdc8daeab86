"""Live SMTP listeners for tests: a background thread with its own event loop.

The listeners reach the database from their worker threads, so tests use transactional_db
(rows committed, visible to other connections). Limits are small so that the bad-input
tests run in milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mailplane import tls
from mailplane.domains.models import Domain
from mailplane.mailboxes.models import Mailbox
from mailplane.mailboxes.services import mailbox_create, mailbox_validate
from mailplane.smtp import server
from mailplane.smtp.__main__ import loop_factory
from mailplane.smtp.logins import CredentialCache, LoginGuard
from mailplane.smtp.mx import MXHandler
from mailplane.smtp.submission import SubmissionHandler
from mailplane.storage.maildir import mailbox_storage_path
from tests.support.fixtures import Account, verified_domain

HOST = "127.0.0.1"
PASSWORD = "Sup3r-Secret-pw!"
# idle_timeout: short enough for the idle test, long enough that 12 concurrent TLS clients on
# a loaded 2-core CI machine never sit idle that long between their own commands.
LIMITS = server.Limits(max_message_bytes=200_000, max_recipients=5, idle_timeout=5.0)


@dataclass
class Listeners:
    host: str
    smtps: int  # implicit TLS
    submission: int  # STARTTLS
    mx: int
    submission_handler: SubmissionHandler
    mx_handler: MXHandler


@pytest.fixture(scope="session")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tls.self_signed_ensure(directory=tmp_path_factory.mktemp("tls"))


@pytest.fixture
def listeners(
    transactional_db: Any, settings: Any, tmp_path: Path, tls_pair: tuple[Path, Path]
) -> Iterator[Listeners]:
    settings.MAILPLANE = {**settings.MAILPLANE, "STORAGE_ROOT": str(tmp_path / "storage")}
    context = tls.server_context(cert=tls_pair[0], key=tls_pair[1])
    sub = SubmissionHandler(
        hostname="smtp.mailplane.test",
        max_recipients=LIMITS.max_recipients,
        guard=LoginGuard(per_pair=3, per_ip=6, window=60, delay_base=0),
        cache=CredentialCache(),
        failure_delay=0.01,
    )
    mx = MXHandler(hostname="mx.mailplane.test", max_recipients=LIMITS.max_recipients)
    # The service's own event loop (uvloop unless MAILPLANE_SMTP_EVENT_LOOP=asyncio).
    factory = loop_factory()
    loop = factory() if factory is not None else asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="smtp-test-loop", daemon=True)
    thread.start()

    async def start() -> list[asyncio.Server]:
        subs = await server.submission_start(
            host=HOST,
            implicit_port=0,
            starttls_port=0,
            tls_context=context,
            handler=sub,
            limits=LIMITS,
        )
        mxs = await server.mx_start(
            host=HOST, port=0, tls_context=context, handler=mx, limits=LIMITS
        )
        return [*subs, mxs]

    servers = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    try:
        yield Listeners(
            HOST,
            server.bound_port(servers[0]),
            server.bound_port(servers[1]),
            server.bound_port(servers[2]),
            sub,
            mx,
        )
    finally:

        async def stop() -> None:
            for s in servers:
                s.close()
            for s in servers:
                await s.wait_closed()
            await sub.aclose()
            await mx.aclose()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def make_mailbox(account: Account, domain: Domain, local: str, **extra: Any) -> Mailbox:
    data = {"email": local, "domain": domain.pk, "password": PASSWORD, **extra}
    spec = mailbox_validate(organization=account.org, data=data)
    return mailbox_create(organization=account.org, spec=spec)


_CLIENT_TLS = tls.client_context_insecure()  # building one loads the CA store: ~0.1 s


def client_tls() -> ssl.SSLContext:
    return _CLIENT_TLS


def smtps(listeners: Listeners, source: str = HOST) -> smtplib.SMTP_SSL:
    return smtplib.SMTP_SSL(
        listeners.host,
        listeners.smtps,
        context=client_tls(),
        timeout=10,
        source_address=(source, 0),
        local_hostname="client.test",
    )


def starttls(listeners: Listeners) -> smtplib.SMTP:
    client = smtplib.SMTP(
        listeners.host, listeners.submission, timeout=10, local_hostname="client.test"
    )
    client.ehlo("client.test")
    client.starttls(context=client_tls())
    client.ehlo("client.test")
    return client


def maildir_files(mailbox: Mailbox, folder: str = "INBOX") -> list[Path]:
    root = mailbox_storage_path(organization_id=mailbox.organization_id, address=mailbox.address)
    target = root if folder == "INBOX" else root / f".{folder}"
    return sorted((target / "new").glob("*"))


def message(sender: str, to: str, subject: str = "Hello", body: str = "Hi there.\r\n") -> bytes:
    return (f"From: Sender <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}").encode()


@pytest.fixture
def quiet_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails the test if anything logged an error or a traceback meanwhile."""
    caplog.set_level(logging.INFO)
    yield
    records = caplog.get_records("setup") + caplog.get_records("call")  # teardown: its own
    loud = [r for r in records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, [f"{r.name}: {r.getMessage()}" for r in loud]


@pytest.fixture
def alice(account: Account) -> Mailbox:
    """A mailbox on a verified domain: the sender most SMTP tests log in as."""
    return make_mailbox(account, verified_domain(account, "acme.test"), "alice")
