"""SMTP providers: native direct-to-MX ("missioninbox") and a generic smarthost.

Both open one connection per chunk of envelopes and run one transaction per envelope on
it (RFC 5321 §3.3; aiosmtplib sends RSET after a refused transaction), so several messages
to the same destination share a connection.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib
import aiosmtplib.protocol
import aiosmtplib.smtp
from django.conf import settings

from mailplane.delivery.config import conf
from mailplane.delivery.mx import RouteError, host_addresses, mx_hosts
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


async def deliver_over_one_connection(
    *, address: str, remote_host: str, options: SmtpOptions, envelopes: Sequence[Envelope]
) -> tuple[list[SendResult | None], SendResult | None]:
    """Send what this host will take. Returns per-envelope results (None: not tried, so
    another host may) and, when the connection failed, the failure to report if no other
    host does better. Replies come back as given, 4xx included: whether a 4xx is final
    (one smarthost) or sends the envelope on to the next MX is the caller's choice."""
    results: list[SendResult | None] = [None] * len(envelopes)
    try:
        client = await _connect(address, remote_host, options)
    except aiosmtplib.SMTPResponseException as exc:
        # A 4xx/5xx greeting or AUTH refusal: RFC 5321 §5.1 says try the next MX; only
        # an AUTH 5xx at a smarthost (535) is final for the whole batch.
        refusal = SendResult.from_smtp(exc.code, exc.message, remote_host)
        if exc.code >= 500 and options.username:
            return [refusal] * len(envelopes), refusal
        return results, SendResult.temporary(refusal.reply, remote_host, exc.code)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return results, SendResult.temporary(
            f"451 4.4.1 connection to {remote_host} [{address}] failed: {exc}", remote_host
        )
    try:
        for i, envelope in enumerate(envelopes):
            try:
                _, reply = await client.sendmail(
                    envelope.mail_from, [envelope.rcpt_to], envelope.data
                )
                results[i] = SendResult.delivered(f"250 {reply}".strip(), remote_host)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                refused = exc.recipients[0]
                results[i] = SendResult.from_smtp(refused.code, refused.message, remote_host)
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
                # The rest go to the next host (or are deferred): RFC 5321 §6.1 prefers a
                # possible duplicate to a lost message if the drop came after the final dot.
                return results, SendResult.temporary(
                    f"451 4.4.2 lost connection with {remote_host} [{address}]: {exc}",
                    remote_host,
                )
            except aiosmtplib.SMTPResponseException as exc:
                results[i] = SendResult.from_smtp(exc.code, exc.message, remote_host)
    finally:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()
    return results, None


@dataclass(slots=True)
class NativeMxProvider:
    """Direct to the recipient domain's MX hosts, in preference order (RFC 5321 §5.1).

    Each envelope moves on to the next address or host until one gives a final answer
    (2xx or 5xx); a 4xx only stands if no later host does better.
    """

    options: SmtpOptions
    max_connections_per_domain: int
    # One resolver (and its TTL-respecting cache) per provider: a batch's MX and address
    # lookups for a destination are asked once, not once per connection.
    resolver: AsyncResolver = field(default_factory=caching_async_resolver_from_settings)

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
        resolver = self.resolver
        try:
            hosts = await mx_hosts(resolver, domain)
        except RouteError as exc:
            return [exc.result] * len(envelopes)
        count = len(envelopes)
        final: list[SendResult | None] = [None] * count  # 2xx or 5xx: the answer
        tentative: list[SendResult | None] = [None] * count  # latest 4xx a server gave it
        pending = list(range(count))  # no final answer yet: the next address/host tries
        last: SendResult | None = None  # latest failure of a whole host (DNS, connection)
        for mx in hosts:
            try:
                addresses = await host_addresses(resolver, mx.name)
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
            for address in addresses:
                got, error = await deliver_over_one_connection(
                    address=address,
                    remote_host=mx.name,
                    options=self.options,
                    envelopes=[envelopes[i] for i in pending],
                )
                for i, result in zip(pending, got, strict=True):
                    if result is None:
                        continue
                    if result.status is Status.TEMPORARY:
                        # A 4xx is this host's answer for now (greylisting, a full queue),
                        # not the domain's: the next MX may take it, as Postfix does with
                        # soft errors. 2xx and 5xx (RFC 5321 §4.2.1: permanent) are final.
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


@dataclass(slots=True)
class SmarthostProvider:
    """A fixed next hop (host, port, TLS mode, optional AUTH): the ISP relay case."""

    host: str
    options: SmtpOptions
    max_connections_per_domain: int

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
            ),
            max_connections_per_domain=_max_connections(configuration),
        )

    async def send(self, envelopes: Sequence[Envelope]) -> list[SendResult]:
        if not envelopes:
            return []
        got, error = await deliver_over_one_connection(
            address=self.host, remote_host=self.host, options=self.options, envelopes=envelopes
        )
        fallback = error or SendResult.temporary(f"451 4.4.1 {self.host} did not answer")
        return [r if r is not None else fallback for r in got]
