"""The plug-in point every DNS-provider client implements, and the values it trades in.

Records are exchanged as the DNS serves them, whatever the provider's own spelling: names
fully qualified, lower-case, without the trailing dot; host targets (MX, CNAME) the same;
TXT content as one string, its character-strings joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2),
never quoted. Each client converts to and from its API's form (Cloudflare's quoted TXT
strings, GoDaddy's zone-relative names).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

HOST_TYPES = frozenset({"MX", "CNAME", "NS"})


def host_normalise(host: str) -> str:
    return host.strip().rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class Zone:
    id: str  # the provider's zone identifier (Cloudflare zone id; GoDaddy: the domain)
    name: str
    status: str = "active"


@dataclass(frozen=True, slots=True)
class RecordSpec:
    """A record to publish."""

    type: str
    name: str
    content: str
    priority: int | None = None  # MX preference


@dataclass(frozen=True, slots=True)
class ProviderRecord:
    """A record as found in a zone."""

    type: str
    name: str
    content: str
    priority: int | None = None
    id: str = ""  # Cloudflare's record id; GoDaddy records have none
    comment: str = ""  # Cloudflare's record comment; GoDaddy records have none
    # The provider's own representation, kept so a rewrite preserves what we do not model
    # (GoDaddy TTLs, SRV fields) for records that are not ours.
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def matches(self, spec: RecordSpec) -> bool:
        """Would the DNS serve `spec` for this record? (Host names compare case-insensitively.)"""
        if self.type != spec.type or self.name != host_normalise(spec.name):
            return False
        if self.type == "MX" and self.priority != spec.priority:
            return False
        if self.type in HOST_TYPES:
            return self.content == host_normalise(spec.content)
        return self.content == spec.content


def zone_candidates(domain: str) -> list[str]:
    """The names a domain's zone may have, longest first, never a bare TLD:
    mail.acme.co.uk -> mail.acme.co.uk, acme.co.uk, co.uk."""
    labels = host_normalise(domain).split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


class DnsProviderClient(Protocol):
    """One provider account's DNS API. Methods raise the errors in `errors.py`."""

    kind: str

    def verify_credentials(self) -> str:
        """Check that the credentials work; returns a sentence saying what was found."""
        ...

    def find_zone(self, domain: str) -> Zone:
        """The account's zone that holds `domain` (the domain itself or a parent)."""
        ...

    def list_records(
        self, zone: Zone, *, name: str, type: str | None = None
    ) -> list[ProviderRecord]:
        """Every record at `name` (of `type`, or of any type), all pages."""
        ...

    def create_record(self, zone: Zone, spec: RecordSpec, *, comment: str) -> ProviderRecord: ...

    def update_record(
        self, zone: Zone, record: ProviderRecord, spec: RecordSpec, *, comment: str | None
    ) -> ProviderRecord:
        """Rewrite `record` to `spec`; `comment=None` leaves the record's comment as it is."""
        ...

    def delete_record(self, zone: Zone, record: ProviderRecord) -> None: ...

    def close(self) -> None: ...
