from email.parser import BytesHeaderParser
from email.policy import SMTP

import pytest
from django.db import DatabaseError
from hypothesis import given, settings
from hypothesis import strategies as st

from mailplane.message.headers import header_section
from mailplane.queue.models import DeliveryEvent, MessageBody, OutboundMessage, QueuedRecipient
from mailplane.queue.services import (
    EnqueueRequest,
    _headers,
    message_enqueue,
    message_enqueue_many,
)
from tests.queue.dbfail import POISON_DOMAIN, recipients_refused_by_database
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


def _request(account, subject: str, recipients: list[str]) -> EnqueueRequest:
    raw = RAW.replace(b"Hello there", subject.encode())
    return EnqueueRequest(
        organization=account.org,
        mail_from="john@acme.test",
        recipients=recipients,
        raw=raw,
        relay_server=account.relay,
    )


def test_enqueue_many_stores_every_message_once_in_one_call(account):
    requests = [
        _request(account, "first", ["a@one.test"]),
        _request(account, "second", ["b@two.test", "c@three.test", "d@two.test"]),
        _request(account, "third", []),
    ]
    messages = message_enqueue_many(requests)
    assert [m.subject for m in messages] == ["first", "second", "third"]
    assert len({m.pk for m in messages}) == 3 and all(m.pk for m in messages)
    assert OutboundMessage.objects.count() == 3
    for message, request in zip(messages, requests, strict=True):
        assert bytes(MessageBody.objects.get(message=message).raw) == request.raw
        rows = QueuedRecipient.objects.filter(message=message)
        assert sorted(r.rcpt_to for r in rows) == sorted(request.recipients)
        events = DeliveryEvent.objects.filter(message=message, type="queued")
        assert sorted(e.recipient_id for e in events) == sorted(r.pk for r in rows)
        assert all(e.organization_id == account.org.pk for e in events)


def test_enqueue_many_of_nothing_stores_nothing(account):
    assert message_enqueue_many([]) == []
    assert OutboundMessage.objects.count() == 0


def test_enqueue_many_is_all_or_nothing_when_the_database_refuses_a_row(account):
    requests = [
        _request(account, "good", ["a@one.test"]),
        _request(account, "bad", ["b@two.test", f"x@{POISON_DOMAIN}"]),
        _request(account, "also good", ["c@three.test"]),
    ]
    with recipients_refused_by_database(), pytest.raises(DatabaseError):
        message_enqueue_many(requests)
    assert OutboundMessage.objects.count() == 0
    assert MessageBody.objects.count() == 0
    assert QueuedRecipient.objects.count() == 0
    assert DeliveryEvent.objects.count() == 0
    # The same batch without the refused recipient goes through afterwards.
    requests[1] = _request(account, "bad", ["b@two.test"])
    assert len(message_enqueue_many(requests)) == 3


def _subject_by_the_registry(raw: bytes) -> str:
    """What _headers' fast path must equal: the SMTP policy's parse, always."""
    parsed = BytesHeaderParser(policy=SMTP).parsebytes(header_section(raw), headersonly=True)
    return str(parsed.get("Subject", ""))[:998]


# Pieces that matter to a header value: folds, encoded-word markers, non-ASCII, blanks.
_PIECES = [*" \t=?abcQB_é\u2603\x7f<>@.", "\r\n ", "\r\n\t", "=?utf-8?q?", "?=", "<x@y>"]
_VALUE = st.lists(st.sampled_from(_PIECES), max_size=20).map("".join)


@settings(max_examples=1000, deadline=None)
@given(subject=_VALUE, message_id=_VALUE, missing=st.sampled_from(["", "Subject", "Message-ID"]))
def test_the_fast_subject_read_equals_the_registrys(subject, message_id, missing):
    fields = [("Subject", subject), ("Message-ID", message_id)]
    head = "".join(f"{n}: {v}\r\n" for n, v in fields if n != missing)
    raw = f"From: a@acme.test\r\n{head}\r\nbody\r\n".encode()
    found_id, found_subject = _headers(raw)  # never raises, whatever the Message-ID
    assert found_subject == _subject_by_the_registry(raw)
    written = "" if missing == "Message-ID" else message_id.replace("\r\n", "").strip(" \t")
    assert found_id == written


def test_a_malformed_message_id_is_kept_as_written_not_a_crash():
    raw = b"Subject: hi\r\nMessage-ID: <\r\n\r\nbody\r\n"
    with pytest.raises(IndexError):  # what enqueueing used to do with it
        str(BytesHeaderParser(policy=SMTP).parsebytes(raw, headersonly=True)["Message-ID"])
    assert _headers(raw) == ("<", "hi")
    long = f"Subject: {'x' * 1200}\r\nMessage-ID: <{'y' * 1200}@z>\r\n\r\n".encode()
    assert _headers(long) == ("<" + "y" * 997, "x" * 998)
