"""The runner's HTTP/1.1 client: h11 (python-hyper's protocol state machine, what httpcore
itself runs on) over asyncio streams, with keep-alive connections per target.

Why not httpx here: a webhook is one small POST whose answer we only excerpt, thousands
a second, and httpx's layers (client, transport, httpcore's pool, anyio's cancel scopes)
cost about 0.6 ms of CPU per request even with connections kept (1.8 ms with httpcore's
pool, which walks every connection twice per request); h11 alone costs about 0.12 ms
(bench/webhooks.py profile). The HTTP semantics stay h11's: framing, chunked answers,
`Connection: close`, keep-alive only when both sides are done (RFC 9112 §9.3).

A connection is kept per (scheme, address, port, TLS name): the guard pins the address
(guard.py), so a connection is never reused for another one. One that sat idle and was
closed by the server (its keep-alive ran out) is seen at EOF and dropped, not reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import zlib
from dataclasses import dataclass

import h11

Key = tuple[str, str, int, str]  # scheme, address, port, TLS server name
MAX_IDLE_PER_TARGET = 256
READ_SIZE = 65536


class ProtocolFailure(Exception):
    """The server broke HTTP/1.1, or closed the connection mid-answer."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    excerpt: bytes  # the first bytes of the body, decoded if it was gzip/deflate coded
    retry_after: str | None


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(h11.CLIENT)

    def usable(self) -> bool:
        """Idle and not closed by the other side (EOF, or bytes nobody asked for)."""
        return (
            not self.writer.is_closing()
            and not self.reader.at_eof()
            and not self.reader._buffer  # type: ignore[attr-defined]
            and self.h11.our_state is h11.IDLE
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Http1Client:
    def __init__(
        self,
        *,
        socket_options: list[tuple[int, int, int]] | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self._idle: dict[Key, list[_Connection]] = {}
        self._socket_options = socket_options or []
        self._tls = tls_context  # tests give one trusting their own CA

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()  # verified, with the system's CAs
        return self._tls

    async def _connect(self, key: Key) -> _Connection:
        scheme, address, port, server_name = key
        tls = self._tls_context() if scheme == "https" else None
        reader, writer = await asyncio.open_connection(
            address,
            port,
            ssl=tls,
            server_hostname=server_name if tls is not None else None,
            limit=READ_SIZE,
        )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            for level, option, value in self._socket_options:
                sock.setsockopt(level, option, value)
        return _Connection(reader, writer)

    async def _acquire(self, key: Key) -> _Connection:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.usable():
                return connection
            connection.close()
        return await self._connect(key)

    def _release(self, key: Key, connection: _Connection) -> None:
        h = connection.h11
        if h.our_state is h11.DONE and h.their_state is h11.DONE:
            h.start_next_cycle()
            idle = self._idle.setdefault(key, [])
            if len(idle) < MAX_IDLE_PER_TARGET:
                idle.append(connection)
                return
        connection.close()

    async def post(
        self,
        *,
        key: Key,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        excerpt: int,
    ) -> Answer:
        """POST `body`; the answer's status, its first `excerpt` bytes, Retry-After.
        The caller bounds the time (asyncio.timeout); a connection in use when that runs
        out is closed, never reused."""
        connection = await self._acquire(key)
        try:
            answer = await self._exchange(connection, target, headers, body, excerpt)
        except _Cut as cut:
            connection.close()
            return cut.answer
        except BaseException:  # a failure, a timeout's cancellation: the state is unknown
            connection.close()
            raise
        self._release(key, connection)
        return answer

    async def _exchange(
        self,
        connection: _Connection,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        excerpt: int,
    ) -> Answer:
        h = connection.h11
        head = [*headers, ("content-length", str(len(body)))]
        data = h.send(h11.Request(method="POST", target=target, headers=head))
        data += h.send(h11.Data(data=body))
        data += h.send(h11.EndOfMessage())
        connection.writer.write(data)  # one write: head and body in one segment
        await connection.writer.drain()
        status = 0
        retry_after: str | None = None
        decoder = None
        kept = bytearray()
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise ProtocolFailure(f"invalid answer: {exc}") from None
            if event is h11.NEED_DATA:
                # b"" at EOF: h11 says whether that ends the answer (a body delimited
                # by the close) or breaks it (RemoteProtocolError above).
                h.receive_data(await connection.reader.read(READ_SIZE))
                continue
            if isinstance(event, h11.InformationalResponse):
                continue  # 100 Continue and the like: the answer is still to come
            if isinstance(event, h11.Response):
                status = event.status_code
                for name, value in event.headers:
                    if name == b"retry-after":
                        retry_after = value.decode("latin-1")
                    elif name == b"content-encoding" and value.lower() in (b"gzip", b"deflate"):
                        decoder = zlib.decompressobj(wbits=47)  # gzip or zlib, by header
            elif isinstance(event, h11.Data):
                piece = bytes(event.data)
                if decoder is not None:
                    with contextlib.suppress(zlib.error):
                        piece = decoder.decompress(piece, excerpt - len(kept))
                kept += piece
                if len(kept) >= excerpt:
                    # Enough: the rest is not read (the connection is then closed).
                    raise _Cut(Answer(status, bytes(kept[:excerpt]), retry_after))
            elif isinstance(event, h11.EndOfMessage):
                return Answer(status, bytes(kept[:excerpt]), retry_after)
            elif isinstance(event, h11.ConnectionClosed):
                raise ProtocolFailure("the server closed the connection without an answer")

    def idle_count(self) -> int:
        return sum(len(v) for v in self._idle.values())

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    async def __aenter__(self) -> Http1Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _Cut(Exception):
    """The excerpt is full before the answer ends: the answer, and a connection to drop."""

    def __init__(self, answer: Answer) -> None:
        super().__init__()
        self.answer = answer
