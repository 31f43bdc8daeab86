"""Local MX sinks (aiosmtpd) on their own 127.x addresses, told how to answer.

Modes: "accept" (250), "tempfail" (451 at RCPT), "reject" (550 5.1.1 at RCPT),
"hang" (never answers DATA until stopped), "drop" (closes the connection at RCPT).
Every sink listens on the same port (the one settings.MAILPLANE["DELIVERY_MX_PORT"] names),
so DNS alone decides which sink a domain's mail reaches, as with port 25 in production.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

# One /24 per test process, so parallel runs (and other suites' sinks) do not collide.
_NET = f"127.{80 + os.getpid() % 100}.{os.getpid() % 250}"
_HOSTS = itertools.count(2)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: Any


@dataclass
class SinkHandler:
    mode: str = "accept"
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    release: asyncio.Event | None = None

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.mode == "tempfail":
            return "451 4.7.1 greylisted, try again later"
        if self.mode == "reject":
            return "550 5.1.1 no such user here"
        if self.mode == "drop":
            assert server.transport is not None
            server.transport.close()
            return "421 4.4.2 closing"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.mode == "hang":
            self.release = self.release or asyncio.Event()
            await self.release.wait()
        data = envelope.original_content or b""
        self.received.append(
            Received(str(envelope.mail_from), list(envelope.rcpt_tos), data, session.peer)
        )
        return "250 2.0.0 queued as sink"


class Sink:
    def __init__(self, address: str, port: int, mode: str = "accept") -> None:
        self.address = address
        self.port = port
        self.handler = SinkHandler(mode=mode)
        self.controller = Controller(
            self.handler, hostname=address, port=port, ready_timeout=5, decode_data=False
        )

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def set_mode(self, mode: str) -> None:
        self.handler.mode = mode

    def start(self) -> Sink:
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller.server is None:
            return  # already stopped
        release = self.handler.release
        if release is not None:
            self.controller.loop.call_soon_threadsafe(release.set)
        self.controller.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def mx_port() -> int:
    return free_port()


@pytest.fixture
def mx_sinks(mx_port: int, settings: Any) -> Iterator[Any]:
    """Factory: `mx_sinks("accept")` starts a sink on a fresh 127.x address."""
    settings.MAILPLANE = {**settings.MAILPLANE, "DELIVERY_MX_PORT": mx_port}
    started: list[Sink] = []

    def make(mode: str = "accept") -> Sink:
        sink = Sink(f"{_NET}.{next(_HOSTS) % 250 + 2}", mx_port, mode).start()
        started.append(sink)
        return sink

    yield make
    for sink in started:
        sink.stop()
