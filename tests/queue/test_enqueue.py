from mailplane.queue.models import DeliveryEvent, MessageBody, OutboundMessage, QueuedRecipient
from mailplane.queue.services import message_enqueue
from tests.support.fixtures import verified_domain

RAW = (
    b"From: John <john@acme.test>\r\nTo: a@one.test, b@two.test\r\n"
    b"Subject: Hello there\r\nMessage-ID: <abc@acme.test>\r\n\r\nBody line\r\n"
)


def test_enqueue_writes_message_body_recipients_and_events(account):
    domain = verified_domain(account)
    message = message_enqueue(
        organization=account.org,
        mail_from="john@acme.test",
        recipients=["a@one.test", "B@Two.Test"],
        raw=RAW,
        domain=domain,
        relay_server=account.relay,
    )
    stored = OutboundMessage.objects.get(pk=message.pk)
    assert (stored.subject, stored.message_id, stored.size) == (
        "Hello there",
        "<abc@acme.test>",
        len(RAW),
    )
    assert bytes(MessageBody.objects.get(message=stored).raw) == RAW
    rows = QueuedRecipient.objects.filter(message=stored).order_by("rcpt_to")
    assert [(r.rcpt_to, r.rcpt_domain, r.status) for r in rows] == [
        ("B@Two.Test", "two.test", "queued"),
        ("a@one.test", "one.test", "queued"),
    ]
    assert all(r.expires_at > r.next_attempt_at for r in rows)
    assert DeliveryEvent.objects.filter(message=stored, type="queued").count() == 2
