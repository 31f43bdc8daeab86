from __future__ import annotations

import pytest

from tests.support.fixtures import Account, verified_domain
from tests.support.servers import ServerAccess, server_make


@pytest.fixture
def live(account: Account) -> ServerAccess:
    """A pro account with the verified domain acme.test and a live (non-sandbox) server."""
    verified_domain(account, "acme.test")
    return server_make(account)
