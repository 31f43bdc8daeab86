from __future__ import annotations

import pytest

from mailplane.tracking.services import tracking_host
from tests.support.fixtures import verified_domain
from tests.support.servers import ServerAccess, server_make

TRACK_DOMAIN = "track.acme.test"


@pytest.fixture
def tracked(account, dns_server) -> ServerAccess:
    """A live server of acme.test whose tracking domain is published, verified (through
    the API, against the local DNS server) and has opens and links on."""
    verified_domain(account, "acme.test")
    access = server_make(account, "production")
    dns_server.cname(TRACK_DOMAIN, tracking_host())
    pk = access.server.pk
    reply = account.client.patch(
        f"/api/servers/{pk}/tracking/",
        {"domain": TRACK_DOMAIN, "track_opens": True, "track_links": True},
        format="json",
    )
    assert reply.status_code == 200, reply.content
    reply = account.client.post(f"/api/servers/{pk}/tracking/verify/")
    assert reply.status_code == 200 and reply.json()["verified"], reply.content
    return access
