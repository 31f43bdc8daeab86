"""The SSRF guard: a webhook URL is the customer's, the request is ours, so it must not
reach our own network (metadata services, databases, the admin port).

Every address the host resolves to is checked, not the first only (a name may mix a
public and a private address), and the connection goes to the checked address (the URL's
host becomes the address; `Host` and TLS SNI keep the name), so a second resolution
cannot swap in another (DNS rebinding). Refused unless WEBHOOKS_ALLOW_PRIVATE is on:
private (RFC 1918, RFC 4193), loopback, link-local, multicast, reserved, unspecified and
every other non-global range of the IANA special-purpose registries (RFC 6890).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from mailplane.core.errors import ValidationFailed
from mailplane.webhooks.config import conf

URL_MAX = 2000
SCHEMES = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(Exception):
    """The host is, or resolves to, an address webhooks may not call."""


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str  # as written, lower-case, without brackets
    port: int
    literal: IPAddress | None  # the host is an address


def private_allowed() -> bool:
    return bool(conf("WEBHOOKS_ALLOW_PRIVATE"))


def address_forbidden(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def url_check(url: str) -> Target:
    """What a URL must be to be stored: http(s), a host, no credentials, a valid port;
    an address as the host is checked here already (a name when it is called)."""
    if len(url) > URL_MAX:
        raise ValidationFailed.on("url", f"must be at most {URL_MAX} characters")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise ValidationFailed.on("url", "must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationFailed.on("url", f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValidationFailed.on("url", "must be an http:// or https:// URL")
    host = (parts.hostname or "").lower()
    if not host:
        raise ValidationFailed.on("url", "must name a host")
    if parts.username is not None or parts.password is not None:
        raise ValidationFailed.on("url", "must not carry credentials (user:password@)")
    if port == 0:
        raise ValidationFailed.on("url", "port must be between 1 and 65535")
    literal: IPAddress | None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
        labels = host.rstrip(".").split(".")
        if len(host) > 253 or not all(0 < len(label) <= 63 for label in labels):
            raise ValidationFailed.on("url", "host is not a valid domain name") from None
        try:
            host.encode("idna")
        except UnicodeError:
            raise ValidationFailed.on("url", "host is not a valid domain name") from None
    if literal is not None and address_forbidden(literal) and not private_allowed():
        raise ValidationFailed.on(
            "url", "must not point to a private, loopback, link-local or reserved address"
        )
    return Target(scheme=scheme, host=host, port=port or SCHEMES[scheme], literal=literal)


async def target_resolve(target: Target) -> IPAddress:
    """The address to connect to, after checking every address the host has."""
    if target.literal is not None:
        addresses: list[IPAddress] = [target.literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except (OSError, UnicodeError) as exc:
            raise AddressRefused(f"cannot resolve {target.host}: {exc}") from None
        addresses = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise AddressRefused(f"{target.host} has no address")
    if not private_allowed():
        bad = [a for a in addresses if address_forbidden(a)]
        if bad:
            raise AddressRefused(
                f"{target.host} resolves to a non-public address ({bad[0]}): refused"
            )
    return addresses[0]
