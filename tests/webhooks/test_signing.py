"""Signatures as Standard Webhooks specifies, checked by its reference libraries: the
Python package `standardwebhooks` and the npm package of the same name."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from mailplane.webhooks import signing
from mailplane.webhooks.runner import WebhookWorker
from mailplane.webhooks.services import webhook_secret_rotate
from tests.webhooks.conftest import Hooked, node_verified, send


def test_secrets_look_as_the_spec_says():
    secret = signing.secret_generate()
    assert secret.startswith("whsec_")
    assert 24 <= len(signing._key(secret)) <= 64
    assert secret != signing.secret_generate()


def test_the_reference_library_verifies_our_signature():
    secret = signing.secret_generate()
    body = b'{"type":"delivered","timestamp":"2026-12-04T00:00:00Z","data":{"x":"\xc3\xa9"}}'
    now = int(time.time())
    headers = signing.headers(secrets_=[secret], webhook_id="msg_1", timestamp=now, body=body)
    assert Webhook(secret).verify(body, headers)["type"] == "delivered"
    # The reference library's own signature is byte for byte ours.
    assert Webhook(secret).sign("msg_1", _dt(now), body.decode()) == headers["webhook-signature"]
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)  # a changed body
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.secret_generate()).verify(body, headers)  # another secret


def _dt(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def test_the_js_reference_library_verifies_what_the_receiver_got(hooked: Hooked, node_verify):
    """Real deliveries, before and during a rotation, verified as a Node receiver would."""
    send(hooked)
    WebhookWorker().run_until_idle(timeout=20)
    new = webhook_secret_rotate(endpoint=hooked.endpoint).secret
    send(hooked, to="dave@dest.test")
    WebhookWorker().run_until_idle(timeout=20)
    got = hooked.receiver.accepted()
    assert len(got) == 2
    items = [{"secret": hooked.secret, "body": r.body.decode(), "headers": r.headers} for r in got]
    items.append({"secret": new, "body": got[1].body.decode(), "headers": got[1].headers})
    # Tampered: must fail, or the check proves nothing.
    items.append({"secret": new, "body": got[1].body.decode() + " ", "headers": got[1].headers})
    items.append({"secret": new, "body": got[0].body.decode(), "headers": got[0].headers})
    results = node_verified(node_verify, items)
    assert [r["ok"] for r in results] == [True, True, True, False, False]
    assert results[0]["type"] == "queued"
