"""SMTP providers: native direct-to-MX ("missioninbox") and a generic smarthost.

Both carry a chunk of envelopes over one connection, one transaction per envelope (RFC
5321 §3.3; aiosmtplib sends RSET after a refused transaction), so several messages to the
same destination share a connection. The native provider also keeps idle connections a
few seconds (`ConnectionPool`), so the next chunk for the same MX host skips the TCP,
greeting, EHLO and STARTTLS round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib
import aiosmtplib.protocol
import aiosmtplib.smtp
from django.conf import settings

from mailplane.delivery.config import conf
from mailplane.delivery.mx import RouteError, Routes
from mailplane.delivery.politeness import mx_group, throttle_reply, throttle_stops_connection
from mailplane.delivery.providers.base import Envelope
from mailplane.delivery.results import SendResult, Status
from mailplane.dns import AsyncResolver, caching_async_resolver_from_settings

_normalize = aiosmtplib.protocol.normalize_message_line_endings


def _normalize_fast(message: bytes) -> bytes:
    """aiosmtplib rewrites every line ending of every message with a regex on the event
    loop; queued messages (CRLF already, and DKIM-signed as such) need no rewrite: check
    that with three C-speed counts and skip it."""
    crlfs = message.count(b"\r\n")
    if (
        message.endswith(b"\r\n")
        and message.count(b"\n") == crlfs
        and message.count(b"\r") == crlfs
    ):
        return message
    return _normalize(message)


aiosmtplib.protocol.normalize_message_line_endings = _normalize_fast
aiosmtplib.smtp.normalize_message_line_endings = _normalize_fast  # SIZE= computation


@dataclass(slots=True)
class SmtpOptions:
    port: int
    helo_name: str
    timeout: float
    source_address: str | None = None
    tls_mode: str = "opportunistic"  # opportunistic | none | starttls | implicit
    validate_certs: bool = False
    username: str = ""
    password: str = ""


def _max_connections(configuration: dict[str, Any]) -> int:
    """The relay's per-destination connection cap, else the deployment default."""
    return int(
        configuration.get("max_connections_per_domain")
        or conf("DELIVERY_MAX_CONNECTIONS_PER_DOMAIN")
    )


def _default_helo(configuration: dict[str, Any]) -> str:
    return str(
        configuration.get("helo_name")
        or conf("DELIVERY_HELO_NAME")
        or settings.MAILPLANE.get("MX_HOST")
        or settings.MAILPLANE["PLATFORM_DOMAIN"]
    )


def _client(address: str, options: SmtpOptions, *, start_tls: bool | None) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(
        hostname=address,
        port=options.port,
        local_hostname=options.helo_name,
        source_address=(options.source_address, 0) if options.source_address else None,
        timeout=options.timeout,
        use_tls=options.tls_mode == "implicit",
        start_tls=start_tls,
        validate_certs=options.validate_certs,
    )


async def _connect(address: str, remote_host: str, options: SmtpOptions) -> aiosmtplib.SMTP:
    if options.tls_mode == "opportunistic":
        # RFC 3207 + RFC 7435: use STARTTLS when offered, without certificate checks (MX
        # certificates are rarely valid for the MX name); if the handshake itself fails,
        # deliver in clear rather than not at all, as Postfix's "may" level does.
        client = _client(address, options, start_tls=None)
        try:
            await client.connect()
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPTimeoutError, OSError):
            raise  # unreachable or refused greeting: not a TLS problem
        except (ssl.SSLError, aiosmtplib.SMTPException):
            client.close()
            client = _client(address, options, start_tls=False)
            await client.connect()
    else:
        client = _client(address, options, start_tls=options.tls_mode == "starttls")
        await client.connect()
    if options.username:
        await client.login(options.username, options.password)
    return client


# RSET before reuse and QUIT of an idle session: a healthy server answers at once, and a
# silent one is not worth a message's whole command timeout (a new connection is cheaper).
IDLE_COMMAND_TIMEOUT = 5.0


async def _quit(client: aiosmtplib.SMTP, timeout: float) -> None:
    """QUIT politely (RFC 5321 §4.1.1.10); a peer that is gone or mute is just closed."""
    try:
        await client.quit(timeout=timeout)
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        client.close()


@dataclass(frozen=True, slots=True)
class PoolKey:
    """What makes two connections interchangeable: the same peer, reached the same way."""

    address: str
    port: int
    tls_mode: str
    source_address: str | None
    helo_name: str

    @classmethod
    def of(cls, address: str, options: SmtpOptions) -> PoolKey:
        return cls(
            address, options.port, options.tls_mode, options.source_address, options.helo_name
        )


@dataclass(eq=False, slots=True)
class Connection:
    """An open SMTP session and how many transactions it has carried."""

    client: aiosmtplib.SMTP
    key: PoolKey
    messages: int = 0
    expiry: asyncio.TimerHandle | None = None  # set while idle in a pool


class ConnectionPool:
    """Idle, healthy SMTP sessions kept between chunks, by `PoolKey` (Postfix's
    connection cache, smtp_connection_cache_on_demand).

    A session idle for `idle_seconds` is QUIT by a timer, giving the server's slot back;
    one that has carried `max_messages` transactions is not kept (Postfix's reuse limit);
    at most `max_idle` sessions wait, and never more for one peer than `max_idle_per_key`
    (the destination's connection cap: a chunk takes an idle session before opening one,
    so pooling never holds more connections to a host than were busy at once). Each
    session is checked with RSET before reuse: one the server closed or stopped answering
    while idle is dropped and the caller connects afresh, so staleness never costs a
    message. Sessions belong to the event loop that opened them.
    """

    def __init__(
        self, *, idle_seconds: float, max_messages: int, max_idle: int, max_idle_per_key: int
    ) -> None:
        self.idle_seconds = idle_seconds
        self.max_messages = max_messages
        self.max_idle = max_idle
        self.max_idle_per_key = max_idle_per_key
        self._idle: dict[PoolKey, list[Connection]] = {}
        self._count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._quitting: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, *, max_idle_per_key: int) -> ConnectionPool:
        return cls(
            idle_seconds=float(conf("DELIVERY_CONNECTION_IDLE_SECONDS")),
            max_messages=int(conf("DELIVERY_CONNECTION_MAX_MESSAGES")),
            max_idle=int(conf("DELIVERY_CONNECTION_POOL_SIZE")),
            max_idle_per_key=max_idle_per_key,
        )

    def __len__(self) -> int:
        return self._count

    def has_idle(self, key: PoolKey) -> bool:
        return bool(self._idle.get(key))

    async def take(self, key: PoolKey) -> Connection | None:
        """An idle session to `key` that still answers, or None."""
        self._follow_loop()
        while (connection := self._pop(key)) is not None:
            try:
                # RFC 5321 §4.1.1.5: RSET is harmless, and proves the session is alive.
                await connection.client.rset(timeout=IDLE_COMMAND_TIMEOUT)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                connection.client.close()
                continue
            return connection
        return None

    def put(self, connection: Connection) -> bool:
        """Keep `connection` for reuse; False when it should be QUIT instead."""
        if (
            self.idle_seconds <= 0
            or not connection.client.is_connected
            or connection.messages >= self.max_messages
            or self._count >= self.max_idle
            or len(self._idle.get(connection.key, ())) >= self.max_idle_per_key
        ):
            return False
        self._follow_loop()
        loop = asyncio.get_running_loop()
        connection.expiry = loop.call_later(self.idle_seconds, self._expire, connection)
        self._idle.setdefault(connection.key, []).append(connection)
        self._count += 1
        return True

    async def aclose(self) -> None:
        """QUIT every idle session and wait for those already quitting."""
        self._follow_loop()
        idle = self._drain()
        await asyncio.gather(
            *(_quit(c.client, IDLE_COMMAND_TIMEOUT) for c in idle), *self._quitting
        )

    def _pop(self, key: PoolKey) -> Connection | None:
        stack = self._idle.get(key)
        if not stack:
            return None
        connection = stack.pop()  # the most recently used: the least likely to be stale
        if not stack:
            del self._idle[key]
        self._count -= 1
        if connection.expiry is not None:
            connection.expiry.cancel()
            connection.expiry = None
        return connection

    def _expire(self, connection: Connection) -> None:
        stack = self._idle.get(connection.key, [])
        if connection not in stack:
            return  # taken meanwhile
        stack.remove(connection)
        if not stack:
            del self._idle[connection.key]
        self._count -= 1
        task = asyncio.get_running_loop().create_task(
            _quit(connection.client, IDLE_COMMAND_TIMEOUT)
        )
        self._quitting.add(task)
        task.add_done_callback(self._quitting.discard)

    def _drain(self) -> list[Connection]:
        idle = [c for stack in self._idle.values() for c in stack]
        self._idle.clear()
        self._count = 0
        for connection in idle:
            if connection.expiry is not None:
                connection.expiry.cancel()
        return idle

    def _follow_loop(self) -> None:
        """Forget the sessions of a loop that is gone (each run_once pass has its own;
        it closes the pool before it ends, so this is a safety net)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        for connection in self._drain():
            with contextlib.suppress(RuntimeError):  # "Event loop is closed"
                connection.client.close()
        self._quitting.clear()
        self._loop = loop


async def deliver_over_one_connection(
    *,
    address: str,
    remote_host: str,
    options: SmtpOptions,
    envelopes: Sequence[Envelope],
    pool: ConnectionPool | None = None,
) -> tuple[list[SendResult | None], SendResult | None]:
    """Send what this host will take, over an idle session from `pool` when it has one
    (a new connection otherwise), and give the session back to the pool afterwards.

    Returns per-envelope results (None: not tried, so another host may) and, when the
    connection failed, the failure to report if no other host does better. Replies come
    back as given, 4xx included: whether a 4xx is final (one smarthost) or sends the
    envelope on to the next MX is the caller's choice."""
    results: list[SendResult | None] = [None] * len(envelopes)
    key = PoolKey.of(address, options)
    connection = await pool.take(key) if pool is not None else None
    if connection is None:
        try:
            connection = Connection(await _connect(address, remote_host, options), key)
        except aiosmtplib.SMTPResponseException as exc:
            # A 4xx/5xx greeting or AUTH refusal: RFC 5321 §5.1 says try the next MX;
            # only an AUTH 5xx at a smarthost (535) is final for the whole batch.
            refusal = SendResult.from_smtp(exc.code, exc.message, remote_host)
            if exc.code >= 500 and options.username:
                return [refusal] * len(envelopes), refusal
            return results, SendResult.temporary(refusal.reply, remote_host, exc.code)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return results, SendResult.temporary(
                f"451 4.4.1 connection to {remote_host} [{address}] failed: {exc}", remote_host
            )
    client = connection.client
    try:
        for i, envelope in enumerate(envelopes):
            connection.messages += 1
            utf8 = not (envelope.mail_from.isascii() and envelope.rcpt_to.isascii())
            try:
                _, reply = await client.sendmail(
                    envelope.mail_from,
                    [envelope.rcpt_to],
                    envelope.data,
                    mail_options=["SMTPUTF8"] if utf8 else None,
                )
                results[i] = SendResult.delivered(f"250 {reply}".strip(), remote_host)
            except aiosmtplib.SMTPNotSupported:
                # RFC 6531 §3.2: an address that needs SMTPUTF8 cannot go to a server
                # without it, and no downgrade is defined: a permanent failure (X.6.7).
                needs = envelope.mail_from if envelope.rcpt_to.isascii() else envelope.rcpt_to
                results[i] = SendResult.permanent(
                    f"553 5.6.7 {remote_host} does not support SMTPUTF8, which {needs} needs",
                    remote_host,
                    553,
                )
            except ValueError as exc:
                # aiosmtplib refused an address before sending it (e.g. a line break in
                # it): nothing of this transaction reached the server.
                results[i] = SendResult.permanent(
                    f"553 5.1.3 address not sendable: {exc}", remote_host, 553
                )
            except aiosmtplib.SMTPRecipientsRefused as exc:
                refused = exc.recipients[0]
                results[i] = SendResult.from_smtp(refused.code, refused.message, remote_host)
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
                # The rest go to the next host (or are deferred): RFC 5321 §6.1 prefers a
                # possible duplicate to a lost message if the drop came after the final dot.
                client.close()
                return results, SendResult.temporary(
                    f"451 4.4.2 lost connection with {remote_host} [{address}]: {exc}",
                    remote_host,
                )
            except aiosmtplib.SMTPResponseException as exc:
                results[i] = SendResult.from_smtp(exc.code, exc.message, remote_host)
            answer = results[i]
            if answer is not None and throttle_stops_connection(answer):
                # The receiver asked us to slow down: the rest of the chunk is not offered
                # to it (nor to its other hosts, the same receiver's); they wait, unsent.
                held = SendResult.not_attempted(
                    f"451 4.7.0 not attempted: {remote_host} asked to slow down", remote_host
                )
                for j in range(i + 1, len(envelopes)):
                    results[j] = held
                await _quit(client, IDLE_COMMAND_TIMEOUT)
                return results, None
    except BaseException:
        client.close()  # cancelled mid-command: the session's state is unknown
        raise
    if pool is None or not pool.put(connection):
        await _quit(client, options.timeout)
    return results, None


@dataclass(slots=True)
class NativeMxProvider:
    """Direct to the recipient domain's MX hosts, in preference order (RFC 5321 §5.1).

    Each envelope moves on to the next address or host until one gives a final answer
    (2xx or 5xx); a 4xx only stands if no later host does better. Idle connections wait
    in `pool` for the next chunk to the same MX host; `aclose()` QUITs them.
    """

    options: SmtpOptions
    max_connections_per_domain: int
    # One resolver (and its TTL-respecting cache) per provider: a batch's MX and address
    # lookups for a destination are asked once, not once per connection.
    resolver: AsyncResolver = field(default_factory=caching_async_resolver_from_settings)
    pool: ConnectionPool = field(init=False)
    routes: Routes = field(init=False)

    def __post_init__(self) -> None:
        self.pool = ConnectionPool.from_settings(max_idle_per_key=self.max_connections_per_domain)
        self.routes = Routes(self.resolver)

    @classmethod
    def from_config(cls, configuration: dict[str, Any]) -> NativeMxProvider:
        return cls(
            options=SmtpOptions(
                port=int(conf("DELIVERY_MX_PORT")),
                helo_name=_default_helo(configuration),
                timeout=float(conf("DELIVERY_SMTP_TIMEOUT")),
                source_address=configuration.get("source_address") or None,
            ),
            max_connections_per_domain=_max_connections(configuration),
        )

    async def send(self, envelopes: Sequence[Envelope]) -> list[SendResult]:
        if not envelopes:
            return []
        domain = envelopes[0].rcpt_domain
        try:
            hosts = await self.routes.hosts(domain)
        except RouteError as exc:
            return [exc.result] * len(envelopes)
        count = len(envelopes)
        final: list[SendResult | None] = [None] * count  # 2xx or 5xx: the answer
        tentative: list[SendResult | None] = [None] * count  # latest 4xx a server gave it
        pending = list(range(count))  # no final answer yet: the next address/host tries
        last: SendResult | None = None  # latest failure of a whole host (DNS, connection)
        for mx in hosts:
            try:
                addresses = await self.routes.addresses(mx.name)
            except RouteError as exc:
                last = exc.result
                continue
            if not addresses:
                if mx.implicit:
                    # Implicit MX (no MX records) and no address either: nowhere to go.
                    return [
                        SendResult.permanent(f"550 5.1.2 {domain} has no MX and no address")
                    ] * count
                last = SendResult.temporary(f"451 4.4.3 MX {mx.name} has no address", mx.name)
                continue
            for address in self._warm_first(addresses):
                got, error = await deliver_over_one_connection(
                    address=address,
                    remote_host=mx.name,
                    options=self.options,
                    envelopes=[envelopes[i] for i in pending],
                    pool=self.pool,
                )
                for i, result in zip(pending, got, strict=True):
                    if result is None:
                        continue
                    if result.status is Status.TEMPORARY and not (
                        not result.attempted or throttle_reply(result)
                    ):
                        # A 4xx is this host's answer for now (greylisting, a full queue),
                        # not the domain's: the next MX may take it, as Postfix does with
                        # soft errors. A 2xx is done and a 5xx permanent (RFC 5321 §4.2.1); a
                        # throttle stands too: the other hosts are the same receiver's.
                        tentative[i] = result
                    else:
                        final[i] = result
                pending = [i for i in pending if final[i] is None]
                if not pending:
                    return [r for r in final if r is not None]
                last = error or last
        # No host did better: a server's own 4xx for the envelope says more than a
        # connection failure elsewhere.
        fallback = last or SendResult.temporary(f"451 4.4.4 no reachable MX for {domain}")
        return [final[i] or tentative[i] or fallback for i in range(count)]

    async def destination_group(self, domain: str) -> str | None:
        """The MX group whose politeness limits `domain`'s mail shares (politeness.py);
        None when its MX cannot be found (the send then says why)."""
        try:
            return mx_group(await self.routes.hosts(domain))
        except RouteError:
            return None

    @property
    def source_name(self) -> str:
        return self.options.source_address or "default"

    async def aclose(self) -> None:
        """QUIT the idle connections (the worker calls this when it stops)."""
        await self.pool.aclose()

    def _warm_first(self, addresses: list[str]) -> list[str]:
        """A host's addresses with an idle connection first, otherwise as given: a reused
        session beats a new one to a sibling address."""
        return sorted(addresses, key=lambda a: not self.pool.has_idle(PoolKey.of(a, self.options)))


@dataclass(slots=True)
class SmarthostProvider:
    """A fixed next hop (host, port, TLS mode, optional AUTH): the ISP relay case.

    Every destination goes to the same host, so an idle session (TLS and AUTH done) is
    reused by the next chunk whatever its domain; `aclose()` QUITs them.
    """

    host: str
    options: SmtpOptions
    max_connections_per_domain: int
    pool: ConnectionPool = field(init=False)

    def __post_init__(self) -> None:
        # One host for all domains: keep as many idle sessions as the pool allows.
        self.pool = ConnectionPool.from_settings(
            max_idle_per_key=int(conf("DELIVERY_CONNECTION_POOL_SIZE"))
        )

    @classmethod
    def from_config(
        cls, configuration: dict[str, Any], credentials: dict[str, Any]
    ) -> SmarthostProvider:
        tls = str(configuration.get("tls_mode") or "starttls")
        return cls(
            host=str(configuration["host"]),
            options=SmtpOptions(
                port=int(configuration.get("port") or 587),
                helo_name=_default_helo(configuration),
                timeout=float(conf("DELIVERY_SMTP_TIMEOUT")),
                tls_mode=tls,
                validate_certs=bool(configuration.get("tls_verify", True)),
                username=str(credentials.get("username") or ""),
                password=str(credentials.get("password") or ""),
                source_address=configuration.get("source_address") or None,
            ),
            max_connections_per_domain=_max_connections(configuration),
        )

    async def send(self, envelopes: Sequence[Envelope]) -> list[SendResult]:
        if not envelopes:
            return []
        got, error = await deliver_over_one_connection(
            address=self.host,
            remote_host=self.host,
            options=self.options,
            envelopes=envelopes,
            pool=self.pool,
        )
        fallback = error or SendResult.temporary(f"451 4.4.1 {self.host} did not answer")
        return [r if r is not None else fallback for r in got]

    async def aclose(self) -> None:
        await self.pool.aclose()
