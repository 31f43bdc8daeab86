"""Local MX sinks (aiosmtpd) on their own 127.x addresses, told how to answer.

Modes: "accept" (250), "tempfail" (451 at RCPT), "reject" (550 5.1.1 at RCPT),
"hang" (never answers DATA until stopped), "drop" (closes the connection at RCPT).
`sink.handler.rcpt_replies[address] = "452 4.2.2 full"` answers one recipient so, whatever
the mode; `sink.handler.tempfail_reply` is the "tempfail" mode's reply.
Every sink listens on the same port (the one settings.MAILPLANE["DELIVERY_MX_PORT"] names),
so DNS alone decides which sink a domain's mail reaches, as with port 25 in production.
`sink.connections` counts the sessions it served (EHLOs) and `sink.quits` the QUITs it got;
`sink.drop_connections()` closes every open one without a word, as a server whose idle
timer fires (or a NAT that forgets the flow) does.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import threading
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
    helo: str = ""  # the name the client gave in EHLO/HELO


@dataclass
class SinkHandler:
    mode: str = "accept"
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    release: asyncio.Event | None = None
    quits: int = 0
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # address → reply
    tempfail_reply: str = "451 4.7.1 greylisted, try again later"
    open: set[SMTP] = field(default_factory=set)  # sessions (past EHLO) connected now

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        # One EHLO per connection here (no STARTTLS): counting them counts connections
        # without the controller's own readiness probe, which says nothing.
        self.connections += 1
        self.open.add(server)
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        if self.mode == "tempfail":
            return self.tempfail_reply
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
            Received(
                str(envelope.mail_from),
                list(envelope.rcpt_tos),
                data,
                session.peer,
                str(session.host_name or ""),
            )
        )
        return "250 2.0.0 queued as sink"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.quits += 1
        return "221 Bye"


class _SinkSMTP(SMTP):
    """Forgets a session in SinkHandler.open when its connection goes."""

    event_handler: SinkHandler

    def connection_lost(self, error: Exception | None) -> None:
        self.event_handler.open.discard(self)
        super().connection_lost(error)


class _SinkController(Controller):
    def factory(self) -> SMTP:
        return _SinkSMTP(self.handler, **self.SMTP_kwargs)


class Sink:
    def __init__(
        self, address: str, port: int, mode: str = "accept", *, smtputf8: bool = False
    ) -> None:
        self.address = address
        self.port = port
        self.handler = SinkHandler(mode=mode)
        self.controller = _SinkController(
            self.handler,
            hostname=address,
            port=port,
            ready_timeout=5,
            decode_data=False,
            enable_SMTPUTF8=smtputf8,  # RFC 6531: offered only when asked for
        )

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    @property
    def connections(self) -> int:
        return self.handler.connections

    @property
    def quits(self) -> int:
        return self.handler.quits

    @property
    def open_connections(self) -> int:
        return len(self.handler.open)

    def drop_connections(self) -> int:
        """Close every open connection (no 421, no FIN wait); returns how many."""
        done = threading.Event()
        dropped: list[int] = []

        def drop() -> None:
            sessions = list(self.handler.open)
            for session in sessions:
                if session.transport is not None:
                    session.transport.abort()
            dropped.append(len(sessions))
            done.set()

        self.controller.loop.call_soon_threadsafe(drop)
        assert done.wait(5)
        return dropped[0]

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

    def make(mode: str = "accept", *, smtputf8: bool = False) -> Sink:
        sink = Sink(f"{_NET}.{next(_HOSTS) % 250 + 2}", mx_port, mode, smtputf8=smtputf8).start()
        started.append(sink)
        return sink

    yield make
    for sink in started:
        sink.stop()


@pytest.fixture
def dest(dns_server: Any, mx_sinks: Any) -> Any:
    """An accepting sink published as the MX of dest.test (the usual recipient domain)."""
    sink = mx_sinks("accept")
    dns_server.mx("dest.test", "mx1.dest.test", preference=10)
    dns_server.a("mx1.dest.test", sink.address)
    return sink
