"""A live IMAP server (both listeners) in a thread with its own event loop."""

from __future__ import annotations

import asyncio
import imaplib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mailplane.imap.server import imap_listen
from mailplane.mailboxes.logins import LoginGuard
from mailplane.mailboxes.models import Mailbox
from mailplane.mailboxes.passwords import password_hash
from mailplane.tls import client_context_insecure, self_signed_ensure, server_context
from tests.support.fixtures import Account, verified_domain

PASSWORD = "Correct-Horse-42!"


@dataclass
class LiveImap:
    host: str
    tls_port: int
    starttls_port: int
    storage_root: Path
    guard: LoginGuard

    def client(self, source_ip: str | None = None) -> imaplib.IMAP4_SSL:
        """An implicit-TLS client; `source_ip` (e.g. 127.0.0.2) poses as another host."""
        cls = imaplib.IMAP4_SSL if source_ip is None else _from_source(source_ip)
        return cls(self.host, self.tls_port, ssl_context=client_context_insecure(), timeout=10)

    def starttls_client(self) -> imaplib.IMAP4:
        return imaplib.IMAP4(self.host, self.starttls_port, timeout=10)


def _from_source(source_ip: str) -> type[imaplib.IMAP4_SSL]:
    class SourcedIMAP4SSL(imaplib.IMAP4_SSL):
        def _create_socket(self, timeout: float | None) -> socket.socket:
            sock = socket.create_connection(
                (self.host, self.port), timeout, source_address=(source_ip, 0)
            )
            return self.ssl_context.wrap_socket(sock, server_hostname=self.host)

    return SourcedIMAP4SSL


@pytest.fixture
def imap_server(transactional_db: Any, settings: Any, tmp_path: Path) -> Iterator[LiveImap]:
    storage = tmp_path / "storage"
    settings.MAILPLANE = {**settings.MAILPLANE, "STORAGE_ROOT": str(storage)}
    cert, key = self_signed_ensure(directory=tmp_path / "tls")
    ctx = server_context(cert=cert, key=key)
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        try:
            async with imap_listen(
                host="127.0.0.1",
                tls_port=0,
                starttls_port=0,
                ssl_context=ctx,
                storage_root=str(storage),
                unauthenticated_timeout=3.0,
                authenticated_timeout=30.0,
                invalid_user_sleep=0.0,
                idle_poll_interval=0.1,
                # This test's own counters: with REDIS_URL set (the production-mode run) the
                # default guard is shared, and one test's failures would block the next.
                login_guard=LoginGuard(),
            ) as listening:
                ready["listening"] = listening
                started.set()
                await stop.wait()
            # Connections still open (IDLE, hostile clients) end with the server.
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        except BaseException as exc:  # surface start-up errors in the test thread
            ready["error"] = exc
            started.set()
            raise

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10), "IMAP server did not start"
    if "error" in ready:
        raise ready["error"]
    listening = ready["listening"]
    yield LiveImap(
        "127.0.0.1",
        listening.tls_address[1],
        listening.starttls_address[1],
        storage,
        listening.backend.config.login_guard,
    )
    assert stop is not None
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    loop.close()


@pytest.fixture
def make_mailbox(make_account: Callable[..., Account]) -> Callable[..., Mailbox]:
    """An active mailbox with PASSWORD, created directly (mailbox creation has its own tests)."""
    counter = iter(range(1, 1000))

    def make(account: Account | None = None, local_part: str | None = None) -> Mailbox:
        n = next(counter)
        account = account or make_account()
        domain = account.org.domains.first() or verified_domain(
            account, f"d{n}-{account.org.pk}.test"
        )
        local = local_part or f"user{n}"
        return Mailbox.objects.create(
            organization=account.org,
            domain=domain,
            relay_server=account.relay,
            local_part=local,
            address=f"{local}@{domain.name}",
            password=PASSWORD,
            password_hash=password_hash(PASSWORD),
        )

    return make
