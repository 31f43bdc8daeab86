"""The runner's HTTP transport: keep-alive HTTP/1.1 connections kept per origin.

httpx's default pool (httpcore's `AsyncConnectionPool`) walks every connection it holds,
twice per request, asking each whether it has expired (a socket poll and a peer lookup
each) and counting the idle ones inside that walk: quadratic in the pool's size. With
the worker's 200 connections that cost about 1.5 ms of CPU per webhook, most of the
worker's time (bench/webhooks.py profile). Here each origin has a stack of idle
connections; a request pops one (checking only that one), or opens a new one, and the
response's close pushes it back. How many requests run at once is not this pool's
business: the claim caps it per endpoint (outbox.py), the worker in all.

The rest is httpx's own transport (the request and response mapping, the exception
mapping to httpx's tree, TLS settings): only the pool behind it is swapped, through
the one method httpcore's pools have
(`handle_async_request`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpcore
import httpx

# Idle connections kept per origin beyond which a returned one is closed: an endpoint's
# max_concurrency is a small number (a PositiveSmallIntegerField; 5 by default).
MAX_IDLE_PER_ORIGIN = 256


def _key(origin: httpcore.Origin) -> tuple[bytes, bytes, int]:
    return (origin.scheme, origin.host, origin.port)


class _ReturningStream:
    """A response body that gives its connection back to the pool once closed (and
    fully read: httpcore marks it idle only then, otherwise it closes it)."""

    def __init__(
        self, pool: OriginPool, connection: httpcore.AsyncHTTPConnection, stream: Any
    ) -> None:
        self._pool, self._connection, self._stream = pool, connection, stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            if hasattr(self._stream, "aclose"):
                await self._stream.aclose()
        finally:
            self._pool._release(self._connection)


class OriginPool:
    """Idle HTTP/1.1 connections per origin, newest first (the warmest socket)."""

    def __init__(
        self,
        *,
        ssl_context: Any,
        keepalive_expiry: float | None,
        socket_options: Iterable[Any] | None,
    ) -> None:
        self._ssl_context = ssl_context
        self._keepalive_expiry = keepalive_expiry
        self._socket_options = socket_options
        # (scheme, host, port): httpcore's Origin compares equal but is not hashable.
        self._idle: dict[tuple[bytes, bytes, int], list[httpcore.AsyncHTTPConnection]] = {}
        self._closed = False

    def _new(self, origin: httpcore.Origin) -> httpcore.AsyncHTTPConnection:
        return httpcore.AsyncHTTPConnection(
            origin=origin,
            ssl_context=self._ssl_context,
            keepalive_expiry=self._keepalive_expiry,
            http1=True,
            http2=False,
            socket_options=self._socket_options,
        )

    async def _acquire(self, origin: httpcore.Origin) -> httpcore.AsyncHTTPConnection:
        idle = self._idle.get(_key(origin))
        while idle:
            connection = idle.pop()
            # An idle socket that is readable has been closed by the server (or its
            # keep-alive ran out): RFC 9112 §9.3, either side may close an idle one.
            if connection.is_available() and not connection.has_expired():
                return connection
            await connection.aclose()
        return self._new(origin)

    def _release(self, connection: httpcore.AsyncHTTPConnection) -> None:
        if self._closed or not connection.is_idle():
            return  # closed by httpcore (a body not read to its end, an error): dropped
        idle = self._idle.setdefault(_key(connection._origin), [])
        if len(idle) < MAX_IDLE_PER_ORIGIN:
            idle.append(connection)

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        if self._closed:
            raise httpcore.ConnectionNotAvailable("the pool is closed")
        connection = await self._acquire(request.url.origin)
        try:
            response = await connection.handle_async_request(request)
        except BaseException:
            await connection.aclose()
            raise
        return httpcore.Response(
            status=response.status,
            headers=response.headers,
            content=_ReturningStream(self, connection, response.stream),
            extensions=response.extensions,
        )

    def idle_count(self) -> int:
        return sum(len(v) for v in self._idle.values())

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                await connection.aclose()

    async def __aenter__(self) -> OriginPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class PooledTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with the per-origin pool above behind it."""

    def __init__(
        self,
        *,
        verify: Any = True,
        keepalive_expiry: float | None = 5.0,
        socket_options: Iterable[Any] | None = None,
    ) -> None:
        super().__init__(verify=verify, trust_env=False, socket_options=socket_options)
        self.pool = OriginPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            keepalive_expiry=keepalive_expiry,
            socket_options=socket_options,
        )
        self._pool = self.pool  # type: ignore[assignment]
