"""Helpers for domain verification tests: publish a domain's records in the test DNS."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mailplane.domains.models import Domain, RecordPurpose
from mailplane.domains.services import domain_create


def publish(dns_server, domain: Domain, *, skip: tuple[str, ...] = ()) -> None:
    """Publish every record `domain` asks for, exactly as shown to the customer."""
    for record in domain.dns_records.all():
        if record.purpose in skip:
            continue
        if record.type == "MX":
            dns_server.mx(record.name, record.value, preference=record.priority or 10)
        elif record.type == "TXT":
            dns_server.txt(record.name, record.value)
        elif record.type == "CNAME":
            dns_server.cname(record.name, record.value)


@pytest.fixture
def new_domain(account) -> Callable[..., Domain]:
    def make(name: str = "acme.test") -> Domain:
        return domain_create(organization=account.org, name=name, relay_server=account.relay)

    return make


@pytest.fixture
def published(dns_server, new_domain) -> Domain:
    """acme.test with every record correctly published."""
    domain = new_domain()
    publish(dns_server, domain)
    return domain


PURPOSES = [p.value for p in RecordPurpose]
