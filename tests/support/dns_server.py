"""A small authoritative DNS server for tests (dnslib), UDP and TCP on one loopback port.

Real queries, real sockets: code under test talks to it through the ordinary resolver
(`mailplane.dns`, dnspython), so timeouts, truncation and rcodes behave as on the wire.

Pytest: ask for the `dns_server` fixture. It starts one server per session (on 127.0.0.1,
an ephemeral port), empties it before each test, and points settings.MAILPLANE at it
(DNS_RESOLVER = its "host:port", DNS_TIMEOUT = 1 s)::

    def test_something(dns_server):
        dns_server.txt("acme.test", "v=spf1 include:_spf.mailplane.localhost ~all")
        dns_server.txt("sel._domainkey.acme.test", "v=DKIM1; p=", "MIIB...")  # 2 strings
        dns_server.mx("acme.test", "mx.mailplane.localhost", preference=10)
        dns_server.cname("bounces.acme.test", "rp.mailplane.localhost")
        dns_server.a("mx.acme.test", "127.0.0.1")
        dns_server.soa("acme.test", minimum=30)        # negative answers below carry it
        dns_server.add("acme.test", "AAAA", "::1")     # any type, zone-file rdata syntax
        dns_server.remove("acme.test", "TXT")          # all TXT at the name (or all types)
        dns_server.fail("acme.test", "servfail")       # or "refused", or "timeout" (silence)
        dns_server.fail("acme.test", "timeout", rdtype="MX")   # only MX queries
        dns_server.heal("acme.test")
        dns_server.queries                             # [Query(name, rdtype, protocol)]

Outside pytest: `with DnsServer() as server: ...` (`server.address` is "127.0.0.1:PORT").

What it answers (authoritatively, AA=1, for every name):
- records of the asked type at the name, following CNAMEs it holds (RFC 1034 §4.3.2);
- NOERROR with an empty answer (NODATA, RFC 2308 §2.2) when the name exists (has records,
  or names below it do: an empty non-terminal such as `_domainkey.acme.test`) but not with
  that type; NXDOMAIN (RFC 2308 §2.1) otherwise; either with the SOA of the closest
  enclosing zone in the authority section when `soa()` gave one (RFC 2308 §3), so
  resolvers may cache the negative answer for min(SOA TTL, MINIMUM) (§5), else none;
- over UDP, replies larger than 512 bytes, or the client's EDNS payload (RFC 6891 §6.2.5),
  come back empty with TC=1 so the client retries over TCP (RFC 7766 §5), as real servers do;
- names are case-insensitive (RFC 4343); a single TXT value longer than 255 bytes is split
  into 255-byte strings, as DNS hosting panels do.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

import pytest
from dnslib import AAAA, CNAME, MX, QTYPE, RCODE, RR, TXT, A, DNSError, DNSRecord

FailureMode = Literal["servfail", "refused", "timeout"]
DEFAULT_TTL = 60


class Query(NamedTuple):
    name: str
    rdtype: str
    protocol: str  # "udp" or "tcp"


def _key(name: str) -> str:
    return str(name).strip().rstrip(".").lower()


class _Handler(socketserver.BaseRequestHandler):
    server: Any

    def handle(self) -> None:
        owner: DnsServer = self.server.owner
        if self.server.socket_type == socket.SOCK_STREAM:
            # RFC 7766 §6.2.1: a TCP connection may carry several length-prefixed queries.
            while (data := self._read_tcp()) is not None:
                reply = owner._answer(data, "tcp")
                if reply is not None:
                    self.request.sendall(struct.pack("!H", len(reply)) + reply)
        else:
            data, sock = self.request
            reply = owner._answer(data, "udp")
            if reply is not None:
                sock.sendto(reply, self.client_address)

    def _read_tcp(self) -> bytes | None:
        header = self._read_exact(2)
        if header is None:
            return None
        return self._read_exact(struct.unpack("!H", header)[0])

    def _read_exact(self, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            try:
                chunk = self.request.recv(size - len(data))
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
        return data


class _UDPServer(socketserver.ThreadingUDPServer):
    owner: DnsServer
    daemon_threads = True
    allow_reuse_address = False


class _TCPServer(socketserver.ThreadingTCPServer):
    owner: DnsServer
    daemon_threads = True
    allow_reuse_address = True


class DnsServer:
    """Records and failure switches, editable from the test thread while serving."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self._lock = threading.Lock()
        self._records: dict[str, list[RR]] = {}
        self._failures: dict[tuple[str, str | None], FailureMode] = {}
        self.queries: list[Query] = []
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------
    @property
    def address(self) -> str:
        """'host:port', the form settings.MAILPLANE["DNS_RESOLVER"] takes."""
        return f"{self.host}:{self.port}"

    def start(self) -> DnsServer:
        # UDP first (it picks the ephemeral port), then TCP on the same number; retry if
        # that TCP port happens to be taken.
        for _ in range(20):
            udp = _UDPServer((self.host, self.port), _Handler)
            port = udp.server_address[1]
            try:
                tcp = _TCPServer((self.host, port), _Handler)
            except OSError:
                udp.server_close()
                if self.port:
                    raise
                continue
            break
        else:
            raise RuntimeError("no free port with both UDP and TCP available")
        self.port = port
        for server in (udp, tcp):
            server.owner = self
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"test-dns-{server.socket_type}",
                daemon=True,
            )
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- editing ---------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every record, failure switch and logged query."""
        with self._lock:
            self._records.clear()
            self._failures.clear()
            self.queries.clear()

    def add_rr(self, rr: RR) -> None:
        with self._lock:
            self._records.setdefault(_key(str(rr.rname)), []).append(rr)

    def add(self, name: str, rdtype: str, rdata: str, *, ttl: int = DEFAULT_TTL) -> None:
        """Any record dnslib can parse, rdata in zone-file syntax ('10 mx.example.')."""
        for rr in RR.fromZone(f"{_key(name)}. {ttl} IN {rdtype.upper()} {rdata}"):
            self.add_rr(rr)

    def txt(self, name: str, *strings: str, ttl: int = DEFAULT_TTL) -> None:
        """One TXT record; several arguments make a multi-string record."""
        parts = [s.encode() for s in strings]
        if len(parts) == 1 and len(parts[0]) > 255:
            parts = [parts[0][i : i + 255] for i in range(0, len(parts[0]), 255)]
        self.add_rr(RR(f"{_key(name)}.", QTYPE.TXT, ttl=ttl, rdata=TXT(parts)))

    def mx(self, name: str, host: str, *, preference: int = 10, ttl: int = DEFAULT_TTL) -> None:
        target = f"{_key(host)}." if host not in ("", ".") else "."
        self.add_rr(RR(f"{_key(name)}.", QTYPE.MX, ttl=ttl, rdata=MX(target, preference)))

    def cname(self, name: str, target: str, *, ttl: int = DEFAULT_TTL) -> None:
        rr = RR(f"{_key(name)}.", QTYPE.CNAME, ttl=ttl, rdata=CNAME(f"{_key(target)}."))
        self.add_rr(rr)

    def a(self, name: str, address: str, *, ttl: int = DEFAULT_TTL) -> None:
        self.add_rr(RR(f"{_key(name)}.", QTYPE.A, ttl=ttl, rdata=A(address)))

    def aaaa(self, name: str, address: str, *, ttl: int = DEFAULT_TTL) -> None:
        self.add_rr(RR(f"{_key(name)}.", QTYPE.AAAA, ttl=ttl, rdata=AAAA(address)))

    def soa(self, zone: str, *, minimum: int = DEFAULT_TTL, ttl: int = DEFAULT_TTL) -> None:
        """Make `zone` a zone apex: its SOA goes with negative answers for names in it."""
        self.add(
            zone,
            "SOA",
            f"ns.{_key(zone)}. hostmaster.{_key(zone)}. 1 3600 600 86400 {minimum}",
            ttl=ttl,
        )

    def remove(self, name: str, rdtype: str | None = None) -> int:
        """Drop the records of `rdtype` (all types if None) at `name`; returns how many."""
        key = _key(name)
        with self._lock:
            rrs = self._records.get(key, [])
            keep = [rr for rr in rrs if rdtype is not None and QTYPE[rr.rtype] != rdtype.upper()]
            if keep:
                self._records[key] = keep
            else:
                self._records.pop(key, None)
            return len(rrs) - len(keep)

    def fail(self, name: str, mode: FailureMode = "servfail", *, rdtype: str | None = None) -> None:
        """Make queries for `name` (of `rdtype`, or any type) fail: an rcode, or silence."""
        if mode not in ("servfail", "refused", "timeout"):
            raise ValueError(f"unknown failure mode {mode!r}")
        with self._lock:
            self._failures[(_key(name), rdtype.upper() if rdtype else None)] = mode

    def heal(self, name: str) -> None:
        """Undo every `fail()` for `name`."""
        key = _key(name)
        with self._lock:
            for failure in [f for f in self._failures if f[0] == key]:
                del self._failures[failure]

    def queried(self, name: str, rdtype: str | None = None) -> list[Query]:
        key = _key(name)
        with self._lock:
            return [
                q
                for q in self.queries
                if q.name == key and (rdtype is None or q.rdtype == rdtype.upper())
            ]

    # -- answering -------------------------------------------------------------------
    def _answer(self, data: bytes, protocol: str) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except DNSError:
            return None  # not DNS: say nothing, like a real server under attack
        qname, qtype = _key(str(request.q.qname)), QTYPE[request.q.qtype]
        with self._lock:
            self.queries.append(Query(qname, qtype, protocol))
            failure = self._failures.get((qname, qtype)) or self._failures.get((qname, None))
            reply = request.reply()  # QR, AA, RD copied, RA
            if failure == "timeout":
                return None
            if failure is not None:
                reply.header.rcode = RCODE.SERVFAIL if failure == "servfail" else RCODE.REFUSED
                return bytes(reply.pack())
            self._fill(reply, qname, request.q.qtype)
        packed = bytes(reply.pack())
        if protocol == "udp" and len(packed) > _udp_limit(request):
            reply.rr, reply.auth, reply.ar = [], [], []
            reply.header.tc = 1
            packed = bytes(reply.pack())
        return packed

    def _fill(self, reply: DNSRecord, qname: str, qtype: int) -> None:
        name, seen = qname, set()
        while name not in seen:
            seen.add(name)
            rrs = self._records.get(name, [])
            matching = [rr for rr in rrs if rr.rtype == qtype or qtype == QTYPE.ANY]
            if matching:
                reply.add_answer(*matching)
                return
            cnames = [rr for rr in rrs if rr.rtype == QTYPE.CNAME]
            if not cnames:
                break
            reply.add_answer(cnames[0])
            name = _key(str(cnames[0].rdata.label))
        if not self._exists(name):
            reply.header.rcode = RCODE.NXDOMAIN
        soa = self._zone_soa(name)
        if soa is not None:
            reply.add_auth(soa)

    def _zone_soa(self, name: str) -> RR | None:
        labels = name.split(".")
        for i in range(len(labels)):
            for rr in self._records.get(".".join(labels[i:]), []):
                if rr.rtype == QTYPE.SOA:
                    return rr
        return None

    def _exists(self, name: str) -> bool:
        suffix = "." + name
        return name in self._records or any(k.endswith(suffix) for k in self._records)


def _udp_limit(request: DNSRecord) -> int:
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return max(512, int(rr.rclass))  # the OPT record's CLASS is the payload size
    return 512


# -- pytest --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def dns_server_session() -> Iterator[DnsServer]:
    """The session's server, not yet wired into settings (prefer `dns_server`)."""
    with DnsServer() as server:
        yield server


@pytest.fixture
def dns_server(dns_server_session: DnsServer, settings: Any) -> Iterator[DnsServer]:
    """An empty server that settings.MAILPLANE's DNS resolver points at for this test."""
    dns_server_session.reset()
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "DNS_RESOLVER": dns_server_session.address,
        "DNS_TIMEOUT": 1.0,
    }
    yield dns_server_session
    with contextlib.suppress(Exception):
        dns_server_session.reset()
