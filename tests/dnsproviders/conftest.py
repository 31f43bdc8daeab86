"""One view of either stand-in, so publishing tests run against both providers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from mailplane.dnsproviders.cloudflare import txt_unquote
from mailplane.dnsproviders.models import DnsProviderConnection
from mailplane.dnsproviders.services import dns_provider_create
from mailplane.domains.models import Domain
from mailplane.domains.services import domain_create
from tests.support.dns_providers import CF_TOKEN, GD_KEY, GD_SECRET, FakeCloudflare, FakeGoDaddy

ZONE = "acme.test"


@dataclass
class Provider:
    """A provider account holding the zone acme.test, and a connection to it."""

    kind: str
    fake: FakeCloudflare | FakeGoDaddy
    zone_id: str
    connection: DnsProviderConnection

    def add_foreign(self, rtype: str, name: str, content: str, priority: int | None = None) -> None:
        """A record someone other than Mailplane made (`name` fully qualified)."""
        extra = {"priority": priority} if priority is not None else {}
        if isinstance(self.fake, FakeCloudflare):
            self.fake.add_record(self.zone_id, type=rtype, name=name, content=content, **extra)
        else:
            relative = "@" if name == ZONE else name.removesuffix("." + ZONE)
            self.fake.add_record(ZONE, type=rtype, name=relative, data=content, **extra)

    def records(self) -> set[tuple[str, str, str, int | None]]:
        """(type, name, content as served, priority) of every record in the zone."""
        found = set()
        if isinstance(self.fake, FakeCloudflare):
            for r in self.fake.zone_records(self.zone_id):
                content = txt_unquote(r["content"]) if r["type"] == "TXT" else r["content"]
                found.add((r["type"], r["name"], content, r.get("priority")))
        else:
            for r in self.fake.zone_records(ZONE):
                name = ZONE if r["name"] == "@" else f"{r['name']}.{ZONE}"
                found.add((r["type"], name, r["data"], r.get("priority")))
        return found

    def raw(self) -> list[dict[str, Any]]:
        if isinstance(self.fake, FakeCloudflare):
            return self.fake.zone_records(self.zone_id)
        return self.fake.zone_records(ZONE)

    def edit(self, rtype: str, name: str, content: str) -> None:
        """Someone changes a record in the provider's dashboard (first of `rtype` at `name`)."""
        with self.fake.lock:
            if isinstance(self.fake, FakeCloudflare):
                for record in self.fake.records[self.zone_id].values():
                    if record["type"] == rtype and record["name"] == name:
                        record["content"] = content
                        self.fake._sync(self.zone_id, name)
                        return
            else:
                relative = "@" if name == ZONE else name.removesuffix("." + ZONE)
                for record in self.fake.domains[ZONE]:
                    if record["type"] == rtype and record["name"] == relative:
                        record["data"] = content
                        self.fake._sync(ZONE, relative)
                        return
        raise AssertionError(f"no {rtype} record at {name}")

    def remove(self, rtype: str, name: str) -> None:
        """Someone deletes records in the provider's dashboard."""
        with self.fake.lock:
            if isinstance(self.fake, FakeCloudflare):
                zone = self.fake.records[self.zone_id]
                for rid in [k for k, r in zone.items() if r["type"] == rtype and r["name"] == name]:
                    del zone[rid]
                self.fake._sync(self.zone_id, name)
            else:
                relative = "@" if name == ZONE else name.removesuffix("." + ZONE)
                kept = [
                    r
                    for r in self.fake.domains[ZONE]
                    if not (r["type"] == rtype and r["name"] == relative)
                ]
                self.fake.domains[ZONE] = kept
                self.fake._sync(ZONE, relative)


@pytest.fixture(params=["cloudflare", "godaddy"])
def provider(request, account, dns_server) -> Provider:
    if request.param == "cloudflare":
        fake = request.getfixturevalue("fake_cloudflare")
        zone_id = fake.add_zone(ZONE)
        credentials = {"api_token": CF_TOKEN}
    else:
        fake = request.getfixturevalue("fake_godaddy")
        fake.add_domain(ZONE)
        zone_id = ZONE
        credentials = {"api_key": GD_KEY, "api_secret": GD_SECRET}
    connection = dns_provider_create(
        organization=account.org,
        name=f"my {request.param}",
        provider=request.param,
        credentials=credentials,
    )
    return Provider(request.param, fake, zone_id, connection)


@pytest.fixture
def domain(account) -> Domain:
    return domain_create(organization=account.org, name=ZONE, relay_server=account.relay)
