"""IMAP listeners: implicit TLS (993) and STARTTLS (143), both served by pymap.

pymap runs the protocol (`IMAPServer`, `IMAPConnection`, `ConnectionState`); the subclasses
here add only what a public server needs and pymap leaves open:
- implicit TLS: the listener is wrapped in an SSL context and the connection starts in the
  "TLS already negotiated" state (no STARTTLS offered, LOGIN allowed);
- no plaintext passwords before TLS, even from localhost (RFC 9051 §6.2.3);
- read timeouts: short before login, 30 minutes after (RFC 9051 §5.4 autologout), ended
  with an untagged BYE;
- a cap on non-synchronizing literals ({n+}, RFC 7888) that pymap would otherwise read
  whole into memory before parsing, and on line length.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from asyncio import StreamReader, StreamWriter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, closing
from dataclasses import dataclass
from typing import Any, cast

from proxyprotocol.reader import ProxyProtocolReader
from proxyprotocol.sock import SocketInfo
from pymap.backend import backends
from pymap.context import connection_exit, socket_info
from pymap.imap import IMAPConnection, IMAPServer
from pymap.imap.state import ConnectionState
from pymap.parsing.response import ResponseBye, ResponseCode, ResponseOk

from mailplane.imap.backend import Login, MailplaneBackend, MailplaneConfig

log = logging.getLogger("mailplane.imap")

# pymap's plug-in registry; `pymap mailplane` would find the backend here.
backends.add("mailplane", MailplaneBackend)

# Before login only LOGIN/AUTHENTICATE arguments can arrive as literals: a few KB at most.
PRE_AUTH_LITERAL_MAX = 4096
TLS_HANDSHAKE_TIMEOUT = 10.0


class _ByeSent(EOFError):
    """The connection was ended with an untagged BYE; pymap's loop just stops."""


class MailplaneConnectionState(ConnectionState):
    """pymap's state machine, aware of implicit TLS and strict about plaintext logins."""

    def __init__(self, login: Login, config: MailplaneConfig, *, implicit_tls: bool) -> None:
        super().__init__(login, config)
        self.implicit_tls = implicit_tls
        if implicit_tls:
            # RFC 8314 §3: on an implicit-TLS port the session is already protected.
            self.auth = config.tls_auth
            self._capability.remove(b"STARTTLS")

    @property
    def authenticated(self) -> bool:
        return self._session is not None

    async def do_greeting(self) -> ResponseOk:
        # pymap lets localhost clients log in without TLS; we do not (RFC 9051 §6.2.3).
        return ResponseOk(b"*", self.config.greeting, self.capability)


class MailplaneConnection(IMAPConnection):
    """pymap's connection loop with timeouts and input limits."""

    __slots__ = ["_bye_sent", "_state"]

    def __init__(self, *args: object, state: MailplaneConnectionState) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self._state = state
        self._bye_sent = False

    @property
    def _config(self) -> MailplaneConfig:
        assert isinstance(self.config, MailplaneConfig)
        return self.config

    def _timeout(self) -> float:
        if self._state.authenticated:
            return self._config.authenticated_timeout
        return self._config.unauthenticated_timeout

    def _literal_max(self) -> int:
        if self._state.authenticated:
            return self._config.parsing_params.max_append_len or PRE_AUTH_LITERAL_MAX
        return PRE_AUTH_LITERAL_MAX

    async def _bye(self, text: bytes, code: bytes | None = None) -> _ByeSent:
        self._bye_sent = True
        await self.write_response(ResponseBye(text, ResponseCode.of(code) if code else None))
        return _ByeSent()

    async def readline(self) -> memoryview:
        try:
            async with asyncio.timeout(self._timeout()):
                return await self._readline()
        except TimeoutError:
            raise await self._bye(b"Autologout; idle for too long.") from None
        except ValueError:  # StreamReader's line limit (64 KiB) was exceeded
            raise await self._bye(b"Line too long.", b"TOOBIG") from None

    async def _readline(self) -> memoryview:
        # pymap's readline, plus a size check before reading a {n+} literal.
        buf = bytearray(await self.reader.readline())
        while True:
            if not buf.endswith(b"\n"):
                raise EOFError()
            lit_plus = (
                self._literal_plus.search(buf) if buf.endswith((b"+}\n", b"+}\r\n")) else None
            )
            if lit_plus is None:
                self._print("%s -->| %s", cast(bytes, buf))  # logged only in debug
                return memoryview(buf)
            length = int(lit_plus.group(1))
            if length > self._literal_max():
                # RFC 7888 §4: a non-synchronizing literal cannot be refused before its bytes
                # arrive, so the server ends the connection (TOOBIG, RFC 4469 §4).
                raise await self._bye(b"Literal too large.", b"TOOBIG")
            buf += await self.reader.readexactly(length)
            buf += await self.reader.readline()

    async def read_continuation(self, literal_length: int) -> memoryview:
        try:
            async with asyncio.timeout(self._timeout()):
                return await super().read_continuation(literal_length)
        except TimeoutError:
            # A literal that promised more bytes than it sent ends here.
            raise await self._bye(b"Autologout; idle for too long.") from None

    async def send_error_disconnect(self) -> None:
        if not self._bye_sent:
            await super().send_error_disconnect()


class MailplaneIMAPServer(IMAPServer):
    """pymap's connection factory, building our connection and state classes."""

    __slots__ = ["implicit_tls"]

    def __init__(self, login: Login, config: MailplaneConfig, *, implicit_tls: bool) -> None:
        super().__init__(login, config)
        self.implicit_tls = implicit_tls

    async def __call__(
        self, reader: StreamReader, writer: StreamWriter, sock_info: SocketInfo
    ) -> None:
        assert isinstance(self._login, Login) and isinstance(self._config, MailplaneConfig)
        state = MailplaneConnectionState(self._login, self._config, implicit_tls=self.implicit_tls)
        conn = MailplaneConnection(
            self.commands, self._config, reader, writer, sock_info, state=state
        )
        async with AsyncExitStack() as stack:
            connection_exit.set(stack)
            stack.enter_context(closing(conn))
            try:
                await conn.run(state)
            except Exception:
                # pymap already said BYE [SERVERBUG]; keep serving everyone else.
                log.exception("imap connection %s failed", socket_info.get())


@dataclass(slots=True)
class Listening:
    """Where the listeners ended up (port 0 in tests picks a free port)."""

    tls_address: tuple[str, int] | None
    starttls_address: tuple[str, int] | None
    backend: MailplaneBackend


@asynccontextmanager
async def imap_listen(
    *,
    host: str,
    tls_port: int | None,
    starttls_port: int | None,
    ssl_context: ssl.SSLContext,
    storage_root: str,
    **config_overrides: Any,
) -> AsyncIterator[Listening]:
    """Start the IMAP listeners on the running loop; stop them on exit."""
    config = MailplaneConfig.build(
        storage_root=storage_root, host=host, ssl_context=ssl_context, **config_overrides
    )
    config.apply_context()  # pymap's subsystem context variable, inherited by connections
    backend = MailplaneBackend(Login(config), config)
    servers: list[asyncio.Server] = []
    tls_address = starttls_address = None
    async with AsyncExitStack() as stack:
        await backend.start(stack)
        pp_reader = ProxyProtocolReader(config.proxy_protocol)
        if tls_port is not None:
            callback = pp_reader.get_callback(
                MailplaneIMAPServer(backend.login, config, implicit_tls=True)
            )
            server: asyncio.Server = await asyncio.start_server(
                callback,
                host=host,
                port=tls_port,
                ssl=ssl_context,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
                backlog=1024,
            )
            servers.append(server)
            tls_address = server.sockets[0].getsockname()[:2]
        if starttls_port is not None:
            callback = pp_reader.get_callback(
                MailplaneIMAPServer(backend.login, config, implicit_tls=False)
            )
            server = await asyncio.start_server(
                callback, host=host, port=starttls_port, backlog=1024
            )
            servers.append(server)
            starttls_address = server.sockets[0].getsockname()[:2]
        try:
            yield Listening(tls_address, starttls_address, backend)
        finally:
            for server in servers:
                server.close()
