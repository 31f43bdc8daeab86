"""Where mail for a domain goes: RFC 5321 §5.1 MX resolution over dnspython.

The resolver is the one configured by settings.MAILPLANE["DNS_RESOLVER"] ("host:port"),
so tests (and operators with a local unbound) choose who answers.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver
from django.conf import settings

from mailplane.delivery.results import SendResult


class RouteError(Exception):
    """No usable route; carries the SendResult (temporary or permanent) to record."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.reply)
        self.result = result


def make_resolver() -> dns.asyncresolver.Resolver:
    conf = settings.MAILPLANE
    spec = conf.get("DNS_RESOLVER", "")
    if spec:
        # Same "host:port[,host:port]" syntax as mailplane.dns (domain verification).
        from mailplane.dns import nameservers_parse

        servers = nameservers_parse(spec)
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host for host, _ in servers]
        resolver.nameserver_ports = {host: port for host, port in servers}
        resolver.port = servers[0][1]
    else:
        resolver = dns.asyncresolver.Resolver()
    resolver.lifetime = float(conf.get("DNS_TIMEOUT", 3))
    resolver.timeout = resolver.lifetime
    resolver.cache = dns.resolver.LRUCache()  # TTL-respecting; MX answers repeat per batch
    return resolver


@dataclass(frozen=True, slots=True)
class MxHost:
    preference: int
    name: str


async def mx_hosts(resolver: dns.asyncresolver.Resolver, domain: str) -> list[MxHost]:
    """MX hosts in the order to try them, or RouteError."""
    try:
        answer = await resolver.resolve(domain, "MX")
    except dns.resolver.NXDOMAIN as exc:
        raise RouteError(
            SendResult.permanent(f"550 5.1.2 domain {domain} does not exist (NXDOMAIN)")
        ) from exc
    except dns.resolver.NoAnswer:
        # RFC 5321 §5.1: no MX records → the domain itself is the implicit MX (pref 0),
        # provided it has an address record; host_addresses() checks that.
        return [MxHost(0, domain)]
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        raise RouteError(
            SendResult.temporary(f"451 4.4.3 DNS lookup for {domain} failed: {exc}")
        ) from exc
    records = [(r.preference, r.exchange.to_text(omit_final_dot=True)) for r in answer]
    # RFC 7505: a single "MX 0 ." is a null MX: the domain accepts no mail.
    if len(records) == 1 and records[0][1] in ("", "."):
        raise RouteError(SendResult.permanent(f"556 5.1.10 {domain} publishes a null MX"))
    # RFC 5321 §5.1: lowest preference first; equal preferences in random order.
    shuffled = random.sample(records, len(records))
    shuffled.sort(key=lambda r: r[0])
    return [MxHost(pref, name) for pref, name in shuffled if name not in ("", ".")]


async def host_addresses(resolver: dns.asyncresolver.Resolver, host: str) -> list[str]:
    """IPv4 then IPv6 addresses of an MX host (empty if it has none)."""
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    addresses: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(host, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            if not addresses:
                raise RouteError(
                    SendResult.temporary(f"451 4.4.3 DNS lookup for {host} failed: {exc}")
                ) from exc
            continue
        addresses.extend(r.address for r in answer)
    return addresses
