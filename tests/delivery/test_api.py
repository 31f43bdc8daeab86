"""/api/messages/: per mailbox and per message, scoped to the caller's organization."""

from __future__ import annotations

from mailplane.delivery.worker import DeliveryWorker


def test_messages_with_recipients_and_events(sender, other_account):
    message = sender.send(sender.bob.address, subject="Local hop")
    DeliveryWorker().run_once()
    client = sender.account.client

    listed = client.get(f"/api/messages/?mailbox={sender.alice.pk}").json()
    assert listed["count"] == 1
    assert listed["results"][0]["id"] == message.pk
    assert listed["results"][0]["recipients"][0]["status"] == "delivered"
    # Lists carry each recipient's status; the event history is the detail's (README).
    assert "events" not in listed["results"][0]
    assert client.get(f"/api/messages/?mailbox={sender.bob.pk}").json()["count"] == 0

    detail = client.get(f"/api/messages/{message.pk}/").json()
    assert detail["subject"] == "Local hop"
    assert [e["type"] for e in detail["events"]] == ["queued", "delivered"]
    assert detail["events"][1]["remote_host"] == "local"

    assert other_account.client.get(f"/api/messages/{message.pk}/").status_code == 404
    assert other_account.client.get("/api/messages/").json()["count"] == 0
