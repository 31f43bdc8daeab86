"""Webhook tests: a live server (acme.test verified), a local receiver on 127.0.0.2, an
endpoint of the server's pointing at it, and a retry schedule in tenths of a second."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailplane.queue.models import QueuedRecipient
from mailplane.webhooks.models import WebhookEndpoint, WebhookEventType
from mailplane.webhooks.services import webhook_endpoint_create
from tests.support.fixtures import Account, verified_domain
from tests.support.servers import ServerAccess, queued_rows, server_make
from tests.support.servers import step as step  # re-exported for the tests here
from tests.support.tools import require_tool
from tests.support.webhook_receiver import Receiver, receiver  # noqa: F401 (fixture)

FAST_SCHEDULE = "0.05,0.05,0.05,0.05,0.05,0.05,0.05,0.05"


@pytest.fixture(autouse=True)
def _fast_retries(settings):
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "WEBHOOKS_RETRY_SCHEDULE": FAST_SCHEDULE,
        "WEBHOOKS_TIMEOUT": 5.0,
        "WEBHOOKS_POLL_INTERVAL": 0.02,
        "WEBHOOKS_ALLOW_PRIVATE": True,
    }


@dataclass
class Hooked:
    live: ServerAccess
    endpoint: WebhookEndpoint
    secret: str
    receiver: Receiver


@pytest.fixture
def hooked(account: Account, receiver: Receiver) -> Hooked:  # noqa: F811
    verified_domain(account, "acme.test")
    live = server_make(account)
    issued = webhook_endpoint_create(
        server=live.server, url=receiver.url(), event_types=WebhookEventType.values
    )
    return Hooked(live, issued.endpoint, issued.secret, receiver)


def send(hooked: Hooked, **fields: object) -> list[QueuedRecipient]:
    return queued_rows(hooked.live.server, **fields)


NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="module")
def node_verify() -> Path:
    require_tool("node")
    require_tool("npm")
    if not (NODE_DIR / "node_modules" / "standardwebhooks").exists():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            check=True,
            timeout=100,
            capture_output=True,
        )
    return NODE_DIR / "verify.js"


def node_verified(script: Path, items: list[dict[str, object]]) -> list[dict[str, object]]:
    """Each {secret, body, headers} verified by the npm reference library (node/verify.js)."""
    done = subprocess.run(
        ["node", str(script)],
        input=json.dumps(items),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
