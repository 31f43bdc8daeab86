"""`Idempotency-Key` on /api/email/ and /api/email/batch/ (sending/idempotency.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from mailplane.queue.models import OutboundMessage
from mailplane.servers.models import IdempotencyKey, IdempotencyStatus
from tests.support.fixtures import verified_domain
from tests.support.servers import send_body, server_make


def _post(access, body, key, path="/api/email/"):
    return access.client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_the_same_key_and_body_answer_as_the_first_time(live):
    first = _post(live, send_body(), "order-42")
    assert first.status_code == 200
    again = _post(live, {"text": "Hi Carol.", **send_body()}, "order-42")  # other key order
    assert again.status_code == 200
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert OutboundMessage.objects.count() == 1


def test_the_same_key_with_another_body_is_409(live):
    assert _post(live, send_body(), "k1").status_code == 200
    other = _post(live, send_body(subject="Something else"), "k1")
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_conflict"
    assert "Idempotency-Key" in other.json()["error"]["details"]
    assert OutboundMessage.objects.count() == 1


def test_a_key_still_in_progress_is_409_and_an_abandoned_one_is_taken_over(live):
    from mailplane.sending.idempotency import request_digest

    digest = request_digest(path="/api/email/", data=send_body())
    claim = IdempotencyKey.objects.create(
        server=live.server,
        key="busy",
        request_digest=digest,
        status=IdempotencyStatus.PROCESSING,
        created_at=timezone.now(),
    )
    busy = _post(live, send_body(), "busy")
    assert busy.status_code == 409
    assert "in progress" in busy.json()["error"]["details"]["Idempotency-Key"][0]
    assert not OutboundMessage.objects.exists()
    # A claim older than any request can run belongs to one that died before its commit.
    IdempotencyKey.objects.filter(pk=claim.pk).update(
        created_at=timezone.now() - timedelta(minutes=3)
    )
    assert _post(live, send_body(), "busy").status_code == 200
    assert OutboundMessage.objects.count() == 1


def test_a_key_is_kept_24_hours(live):
    first = _post(live, send_body(), "daily").json()
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=24, minutes=1))
    second = _post(live, send_body(), "daily")
    assert second.status_code == 200 and second.json()["id"] != first["id"]
    assert OutboundMessage.objects.count() == 2


def test_client_errors_are_remembered(live):
    body = send_body(**{"from": "a@later.test"})
    assert _post(live, body, "k").status_code == 422
    verified_domain(live.account, "later.test")
    replay = _post(live, body, "k")
    assert replay.status_code == 422  # the first answer, as the convention has it
    assert replay["Idempotent-Replayed"] == "true"
    assert _post(live, body, "k2").status_code == 200  # a new key runs again


def test_keys_belong_to_one_server(live):
    other = server_make(live.account, "other")
    assert _post(live, send_body(), "shared").status_code == 200
    assert _post(other, send_body(subject="different"), "shared").status_code == 200
    assert OutboundMessage.objects.count() == 2


def test_a_batch_is_answered_once(live):
    items = [send_body(subject="a"), send_body(to="bad"), send_body(subject="c")]
    first = _post(live, items, "batch-1", "/api/email/batch/")
    again = _post(live, items, "batch-1", "/api/email/batch/")
    assert again.json() == first.json()
    assert OutboundMessage.objects.count() == 2
    assert _post(live, items[:1], "batch-1", "/api/email/batch/").status_code == 409


@pytest.mark.parametrize("key", ["", " ", "x" * 257, "clé", "a b", "tab\there"])
def test_a_bad_key_is_400_naming_the_header(live, key):
    reply = _post(live, send_body(), key)
    assert reply.status_code == 400, reply.content
    assert "Idempotency-Key" in reply.json()["error"]["details"]
    assert not OutboundMessage.objects.exists()


def test_a_key_of_256_characters_is_taken(live):
    assert _post(live, send_body(), "k" * 256).status_code == 200
