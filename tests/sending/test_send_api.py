"""POST /api/email/ and /api/email/batch/ with a server key: what is queued, what is
refused (each refusal naming its field, nothing queued), sandbox servers."""

from __future__ import annotations

import email
from email.policy import default as default_policy

import pytest

from mailplane.queue.models import (
    DeliveryEvent,
    MessageBody,
    MessageSource,
    OutboundMessage,
    QueuedRecipient,
)
from mailplane.servers.models import MessageStream, ServerMessage
from tests.support.fixtures import verified_domain
from tests.support.servers import send_body, server_client, server_make


def _raw(message_id: int) -> email.message.EmailMessage:
    raw = bytes(MessageBody.objects.get(message_id=message_id).raw)
    return email.message_from_bytes(raw, policy=default_policy)  # type: ignore[return-value]


def test_a_message_is_queued_with_its_server_stream_tags_and_metadata(live):
    reply = live.client.post(
        "/api/email/",
        send_body(
            to=["Carol <carol@dest.test>", "dave@dest.test"],
            cc="Erin <erin@other.test>",
            bcc=["frank@other.test"],
            reply_to="support@acme.test",
            subject="Your receipt",
            html="<p>Thanks</p>",
            headers={"X-Order": "1234"},
            tags=["receipt"],
            metadata={"order_id": "1234"},
        ),
        format="json",
    )
    assert reply.status_code == 200, reply.json()
    body = reply.json()
    assert body["status"] == "queued"
    assert body["stream"] == "outbound"
    assert body["to"] == [
        "carol@dest.test",
        "dave@dest.test",
        "erin@other.test",
        "frank@other.test",
    ]
    message = OutboundMessage.objects.get(pk=body["id"])
    assert message.source == MessageSource.API
    assert message.mail_from == "alice@acme.test"
    assert message.message_id == body["message_id"]
    assert message.message_id.endswith("@acme.test>")
    assert message.domain is not None and message.domain.name == "acme.test"
    assert message.relay_server == live.account.relay
    rows = QueuedRecipient.objects.filter(message=message).order_by("pk")
    assert [(r.rcpt_to, r.status) for r in rows] == [(a, "queued") for a in body["to"]]
    assert (
        list(DeliveryEvent.objects.filter(message=message).values_list("type", flat=True))
        == ["queued"] * 4
    )
    link = ServerMessage.objects.get(message=message)
    assert (link.server, link.stream.stream_id, link.tags, link.metadata) == (
        live.server,
        "outbound",
        ["receipt"],
        {"order_id": "1234"},
    )
    parsed = _raw(message.pk)
    assert parsed["From"] == "Alice <alice@acme.test>"
    assert parsed["To"] == "Carol <carol@dest.test>, dave@dest.test"
    assert parsed["Cc"] == "Erin <erin@other.test>"
    assert "Bcc" not in parsed  # blind: only in the envelope
    assert parsed["Reply-To"] == "support@acme.test"
    assert parsed["X-Order"] == "1234"
    assert parsed["Date"] and parsed["Received"].startswith("by ")
    assert parsed.get_content_type() == "multipart/alternative"
    text, html = parsed.iter_parts()
    assert text.get_content().strip() == "Hi Carol."
    assert html.get_content_type() == "text/html" and "<p>Thanks</p>" in html.get_content()


def test_html_only_and_non_ascii_are_written_as_mime(live):
    reply = live.client.post(
        "/api/email/",
        send_body(
            **{"from": "Zoë Ünal <zoe@acme.test>"}, subject="Grüße", text=None, html="<b>ø</b>"
        ),
        format="json",
    )
    assert reply.status_code == 200, reply.json()
    raw = bytes(MessageBody.objects.get(message_id=reply.json()["id"]).raw)
    assert raw.isascii()  # encoded words and a transfer encoding: any relay takes it
    parsed = _raw(reply.json()["id"])
    assert parsed["Subject"] == "Grüße"
    assert parsed["From"].addresses[0].display_name == "Zoë Ünal"
    assert parsed.get_content_type() == "text/html" and "ø" in parsed.get_content()


def test_the_stream_is_chosen_by_name_or_by_the_default(live):
    first = live.client.post("/api/email/", send_body(stream="broadcast"), format="json")
    assert first.json()["stream"] == "broadcast"
    live.full_client.patch("/api/server/", {"default_stream": "broadcast"}, format="json")
    second = live.client.post("/api/email/", send_body(), format="json")
    assert second.json()["stream"] == "broadcast"
    streams = ServerMessage.objects.order_by("pk").values_list("stream__stream_id", flat=True)
    assert list(streams) == ["broadcast", "broadcast"]


def test_duplicate_recipients_are_sent_once(live):
    reply = live.client.post(
        "/api/email/",
        send_body(to=["carol@dest.test", "Carol@Dest.test"], cc="carol@dest.test"),
        format="json",
    )
    assert reply.json()["to"] == ["carol@dest.test"]


def _refused(live, body, status, field):
    reply = live.client.post("/api/email/", body, format="json")
    assert reply.status_code == status, reply.content
    error = reply.json()["error"]
    assert field in error["details"], error
    assert not OutboundMessage.objects.exists()  # nothing queued for it
    return error


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"from": None}, "from"),
        ({"from": "not an address"}, "from"),
        ({"from": "alice@acme.test, bob@acme.test"}, "from"),
        ({"from": "alice@acme.test\r\nBcc: victim@x.test"}, "from"),
        ({"to": None}, "to"),
        ({"to": []}, "to"),
        ({"to": "carol@"}, "to"),
        ({"to": ["carol@dest.test", "nobody"]}, "to[1]"),
        ({"to": [["nested@dest.test"]]}, "to[0]"),
        ({"to": {"a": "b"}}, "to"),
        ({"cc": "x@-bad-.test"}, "cc"),
        ({"bcc": 42}, "bcc"),
        ({"reply_to": "nope"}, "reply_to"),
        ({"text": None}, "text"),
        ({"text": ""}, "text"),
        ({"text": 7}, "text"),
        ({"html": ["x"]}, "html"),
        ({"subject": "two\r\nlines"}, "subject"),
        ({"subject": "x" * 999}, "subject"),
        ({"headers": {"From": "ceo@acme.test"}}, "headers.From"),
        ({"headers": {"sender": "x@acme.test"}}, "headers.sender"),
        ({"headers": {"DKIM-Signature": "v=1"}}, "headers.DKIM-Signature"),
        ({"headers": {"Return-Path": "<x@evil.test>"}}, "headers.Return-Path"),
        ({"headers": {"Message-ID": "<x@evil.test>"}}, "headers.Message-ID"),
        ({"headers": {"X-Ok": "a\r\nBcc: victim@x.test"}}, "headers.X-Ok"),
        ({"headers": {"Bad Name": "x"}}, "headers"),
        ({"headers": {"X-Num": 5}}, "headers.X-Num"),
        ({"headers": ["X-A: b"]}, "headers"),
        ({"tags": "receipt"}, "tags"),
        ({"tags": [1]}, "tags"),
        ({"tags": ["x"] * 11}, "tags"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"metadata": {"k": {"nested": "x"}}}, "metadata.k"),
        ({"metadata": []}, "metadata"),
        ({"stream": "nope"}, "stream"),
        ({"stream": 5}, "stream"),
        ({"html_body": "<p>typo</p>"}, "html_body"),
    ],
)
def test_bad_fields_are_400_naming_the_field(live, fields, field):
    error = _refused(live, send_body(**fields), 400, field)
    assert error["code"] == "validation_error"


def test_more_than_50_recipients_is_refused(live):
    to = [f"r{i}@dest.test" for i in range(30)]
    cc = [f"c{i}@dest.test" for i in range(21)]
    error = _refused(live, send_body(to=to, cc=cc), 400, "to")
    assert "51 recipients" in error["message"]
    fifty = live.client.post("/api/email/", send_body(to=to, cc=cc[:20]), format="json")
    assert fifty.status_code == 200


def test_a_sender_without_a_verified_domain_is_422_naming_the_identity(live, other_account):
    verified_domain(other_account, "other.test")  # another account's: not ours to send from
    for sender in ("alice@unknown.test", "alice@other.test", "alice@sub.acme.test"):
        error = _refused(live, send_body(**{"from": sender}), 422, "from")
        assert error["code"] == "sender_not_verified"
        domain = sender.partition("@")[2]
        assert domain in error["message"] and domain in error["details"]["from"][0]


def test_a_pending_domain_is_no_identity(live):
    from mailplane.domains.services import domain_create

    domain_create(
        organization=live.account.org, name="pending.test", relay_server=live.account.relay
    )
    _refused(live, send_body(**{"from": "a@pending.test"}), 422, "from")


def test_a_message_over_10_mb_is_413_naming_the_body_field(live):
    error = _refused(live, send_body(text=None, html="x" * (10 * 1024 * 1024 + 1)), 413, "html")
    assert error["code"] == "message_too_large"


def test_a_request_body_over_the_send_limit_is_413_before_reading(live):
    reply = live.client.post(
        "/api/email/",
        b'{"text": "' + b"x" * (21 * 1024 * 1024) + b'"}',
        content_type="application/json",
    )
    assert reply.status_code == 413
    assert "body" in reply.json()["error"]["details"]


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b'"a string"',
        b"42",
        b"null",
        b"{",
        b"[" * 5000 + b"]" * 5000,
        b'{"from": "a\\u0000@acme.test"}',
        b'{"text": "\\ud800"}',
        b'{"to": NaN}',
        b"\xff\xfe",
        b'{"' + b"k" * 100_000 + b'": 1}',
    ],
    ids=lambda r: r[:20].decode("latin-1"),
)
def test_hostile_bodies_are_4xx_in_the_error_shape(live, raw):
    reply = live.client.post("/api/email/", raw, content_type="application/json")
    assert 400 <= reply.status_code < 500, reply.content
    assert set(reply.json()["error"]) == {"code", "message", "details"}
    assert reply.json()["error"]["details"]
    assert not OutboundMessage.objects.exists()


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_other_body_types_are_415(live, content_type):
    reply = live.client.post("/api/email/", b"from=a@acme.test", content_type=content_type)
    assert reply.status_code == 415


def test_a_sandbox_server_records_delivery_and_sends_nothing(account):
    verified_domain(account, "acme.test")
    sandbox = server_make(account, "staging", sandbox=True)
    reply = sandbox.client.post(
        "/api/email/", send_body(to="a@dest.test, b@dest.test"), format="json"
    )
    assert reply.status_code == 200, reply.json()
    assert reply.json()["status"] == "delivered"
    rows = QueuedRecipient.objects.filter(message_id=reply.json()["id"])
    assert {r.status for r in rows} == {"delivered"}
    assert all("sandbox" in r.last_reply for r in rows)
    events = DeliveryEvent.objects.filter(message_id=reply.json()["id"]).order_by("seq")
    assert [e.type for e in events] == ["queued", "queued", "delivered", "delivered"]
    # Nothing is left for a delivery worker to claim.
    assert not QueuedRecipient.objects.filter(status__in=["queued", "deferred"]).exists()


# --- batch ----------------------------------------------------------------------------


def test_a_batch_answers_each_message_in_order(live):
    items = [
        send_body(subject="one"),
        send_body(**{"from": "x@unknown.test"}),
        send_body(subject="three", stream="broadcast"),
        send_body(to="bad"),
        "not an object",
    ]
    reply = live.client.post("/api/email/batch/", items, format="json")
    assert reply.status_code == 200, reply.json()
    results = reply.json()
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["status"] for r in results] == ["queued", "error", "queued", "error", "error"]
    assert results[1]["error"]["code"] == "sender_not_verified"
    assert "from" in results[1]["error"]["details"]
    assert "to" in results[3]["error"]["details"]
    assert "body" in results[4]["error"]["details"]
    assert results[2]["stream"] == "broadcast"
    subjects = OutboundMessage.objects.order_by("pk").values_list("subject", flat=True)
    assert list(subjects) == ["one", "three"]
    assert [results[0]["id"], results[2]["id"]] == list(
        OutboundMessage.objects.order_by("pk").values_list("pk", flat=True)
    )


def test_a_batch_of_500_is_taken_and_501_refused(live):
    reply = live.client.post("/api/email/batch/", [send_body()] * 501, format="json")
    assert reply.status_code == 400
    assert "501" in reply.json()["error"]["details"]["body"][0]
    assert not OutboundMessage.objects.exists()
    reply = live.client.post("/api/email/batch/", [send_body()] * 500, format="json")
    assert reply.status_code == 200
    assert {r["status"] for r in reply.json()} == {"queued"}
    assert OutboundMessage.objects.count() == 500


@pytest.mark.parametrize("body", [{}, {"messages": []}, [], "x", None, 5])
def test_a_batch_that_is_no_list_of_messages_is_400(live, body):
    reply = live.client.post("/api/email/batch/", body, format="json")
    assert reply.status_code == 400, reply.content
    assert "body" in reply.json()["error"]["details"]


# --- keys -----------------------------------------------------------------------------


def test_sending_needs_a_live_server_key(live, account):
    body = send_body()
    assert (
        server_client("mps_" + "x" * 43).post("/api/email/", body, format="json").status_code == 401
    )
    assert account.client.post("/api/email/", body, format="json").status_code == 401
    from rest_framework.test import APIClient

    assert APIClient().post("/api/email/", body, format="json").status_code == 401
    token = APIClient()
    token.credentials(HTTP_X_SERVER_TOKEN=live.key)
    assert token.post("/api/email/", body, format="json").status_code == 200
    from mailplane.servers.services import server_key_revoke

    key = live.server.keys.get(name="send")
    server_key_revoke(organization=live.account.org, key_id=key.pk)
    assert live.client.post("/api/email/", body, format="json").status_code == 401


def test_text_and_html_together_over_10_mb_are_413(live):
    body = send_body(text="x" * (5 * 1024 * 1024), html="y" * (5 * 1024 * 1024 + 10))
    error = _refused(live, body, 413, "html")
    assert error["code"] == "message_too_large"


# --- reading back with the server key --------------------------------------------------


def test_a_server_key_reads_its_servers_messages_by_recipient_status_tag_and_stream(live):
    other = server_make(live.account, "other-app")
    a = live.client.post(
        "/api/email/", send_body(to="a@dest.test", tags=["welcome"]), format="json"
    )
    b = live.client.post(
        "/api/email/",
        send_body(to="B@dest.test", stream="broadcast", metadata={"k": "v"}),
        format="json",
    )
    theirs = other.client.post("/api/email/", send_body(to="a@dest.test"), format="json")
    listed = live.client.get("/api/server/messages/").json()
    assert [m["id"] for m in listed["results"]] == [b.json()["id"], a.json()["id"]]
    assert listed["results"][1]["tags"] == ["welcome"]
    assert listed["results"][0]["metadata"] == {"k": "v"}

    def ids(query: str) -> list[int]:
        reply = live.client.get(f"/api/server/messages/?{query}")
        assert reply.status_code == 200, reply.content
        return [m["id"] for m in reply.json()["results"]]

    assert ids("recipient=A@DEST.TEST") == [a.json()["id"]]
    assert ids("recipient=b@dest.test") == [b.json()["id"]]
    assert ids("tag=welcome") == [a.json()["id"]]
    assert ids("stream=broadcast") == [b.json()["id"]]
    assert ids("status=queued") == [b.json()["id"], a.json()["id"]]
    assert ids("status=delivered") == []
    detail = live.client.get(f"/api/server/messages/{a.json()['id']}/").json()
    assert [e["type"] for e in detail["events"]] == ["queued"]
    assert detail["stream"] == "outbound"
    # Another server's message, of the same account: not found.
    assert live.client.get(f"/api/server/messages/{theirs.json()['id']}/").status_code == 404
    assert live.account.client.get("/api/server/messages/").status_code == 401


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("status=nope", "status"),
        ("status=queued&status=bounced", "status"),
        ("recipient=" + "x" * 321, "recipient"),
        ("tag=" + "t" * 101, "tag"),
        ("stream=" + "s" * 51, "stream"),
        ("limit=abc", "limit"),
        ("offset=-1", "offset"),
    ],
)
def test_bad_log_queries_are_400_naming_the_parameter(live, query, name):
    reply = live.client.get(f"/api/server/messages/?{query}")
    assert reply.status_code == 400, reply.content
    assert list(reply.json()["error"]["details"]) == [name]


# --- suppressions ----------------------------------------------------------------------


def test_suppressed_recipients_are_answered_at_once_and_sent_nothing(live):
    from mailplane.queue.models import Suppression

    Suppression.objects.create(
        organization=live.account.org, address="gone@dest.test", reason="hard_bounce"
    )
    reply = live.client.post(
        "/api/email/", send_body(to="Gone@dest.test, carol@dest.test"), format="json"
    )
    assert reply.status_code == 200, reply.json()
    body = reply.json()
    assert (body["status"], body["suppressed"]) == ("queued", ["Gone@dest.test"])
    rows = dict(
        QueuedRecipient.objects.filter(message_id=body["id"]).values_list("rcpt_to", "status")
    )
    assert rows == {"Gone@dest.test": "suppressed", "carol@dest.test": "queued"}
    events = DeliveryEvent.objects.filter(message_id=body["id"]).order_by("seq")
    assert [e.type for e in events] == ["queued", "queued", "suppressed"]
    only = live.client.post("/api/email/", send_body(to="gone@dest.test"), format="json").json()
    assert (only["status"], only["suppressed"]) == ("suppressed", ["gone@dest.test"])
    # Another account's list says nothing about ours.
    assert not QueuedRecipient.objects.filter(status="queued", rcpt_to="gone@dest.test").exists()


def test_a_batch_reads_every_suppression_in_one_query_and_applies_each_by_stream(
    live, django_assert_max_num_queries
):
    """A batch looks its recipients up together (a query per message was a quarter of a
    batch's time), and still tells a stream's list from the account-wide one."""
    from mailplane.queue.models import Suppression

    broadcast = MessageStream.objects.get(server=live.server, stream_id="broadcast")
    Suppression.objects.create(
        organization=live.account.org, address="everywhere@dest.test", reason="hard_bounce"
    )
    Suppression.objects.create(
        organization=live.account.org,
        address="bulk-only@dest.test",
        reason="unsubscribe",
        stream=broadcast,
    )
    people = ["everywhere@dest.test", "Bulk-Only@dest.test", "carol@dest.test"]
    items = [send_body(to=to) for to in people] + [
        send_body(to=to, stream="broadcast") for to in people
    ] * 100
    with django_assert_max_num_queries(60):  # not one per message (303 messages)
        reply = live.client.post("/api/email/batch/", items, format="json")
    assert reply.status_code == 200, reply.content
    answered = [(item["to"], item["suppressed"]) for item in reply.json()]
    assert answered[:6] == [
        (["everywhere@dest.test"], ["everywhere@dest.test"]),
        (["Bulk-Only@dest.test"], []),  # transactional: the broadcast list says nothing
        (["carol@dest.test"], []),
        (["everywhere@dest.test"], ["everywhere@dest.test"]),
        (["Bulk-Only@dest.test"], ["Bulk-Only@dest.test"]),
        (["carol@dest.test"], []),
    ]
    assert answered[6:] == answered[3:6] * 99


def test_another_accounts_suppression_does_not_apply(live, other_account):
    from mailplane.queue.models import Suppression

    Suppression.objects.create(
        organization=other_account.org, address="carol@dest.test", reason="complaint"
    )
    body = live.client.post("/api/email/", send_body(), format="json").json()
    assert (body["status"], body["suppressed"]) == ("queued", [])


def test_test_mode_on_a_live_server_records_and_sends_nothing(live):
    dry = live.client.post("/api/email/", send_body(test_mode=True), format="json").json()
    assert dry["status"] == "delivered"
    real = live.client.post("/api/email/", send_body(test_mode=False), format="json").json()
    assert real["status"] == "queued"
    statuses = dict(QueuedRecipient.objects.values_list("message_id", "status"))
    assert statuses == {dry["id"]: "delivered", real["id"]: "queued"}
    assert ServerMessage.objects.get(message_id=dry["id"]).sandbox is True
    listed = live.client.get("/api/server/messages/").json()["results"]
    assert [m["sandbox"] for m in listed] == [False, True]
    for bad in ("yes", 1, None, []):
        reply = live.client.post("/api/email/", send_body(test_mode=bad), format="json")
        if bad is None:  # left out by send_body
            assert reply.status_code == 200
        else:
            assert reply.status_code == 400 and "test_mode" in reply.json()["error"]["details"]


# --- attachments -----------------------------------------------------------------------


def test_attachments_are_written_as_mime_parts(live):
    import base64

    pdf = b"%PDF-1.4 fake \x00\xff bytes"
    reply = live.client.post(
        "/api/email/",
        send_body(
            html="<p>See attached</p>",
            attachments=[
                {
                    "filename": "invoice 42.pdf",
                    "content": base64.b64encode(pdf).decode(),
                    "content_type": "application/pdf",
                },
                {"filename": "résumé.txt", "content": base64.b64encode(b"hi").decode()},
            ],
        ),
        format="json",
    )
    assert reply.status_code == 200, reply.json()
    parsed = _raw(reply.json()["id"])
    assert parsed.get_content_type() == "multipart/mixed"
    body, first, second = parsed.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert (first.get_content_type(), first.get_filename()) == ("application/pdf", "invoice 42.pdf")
    assert first.get_content() == pdf
    assert (second.get_content_type(), second.get_filename()) == (
        "application/octet-stream",
        "résumé.txt",
    )
    raw = bytes(MessageBody.objects.get(message_id=reply.json()["id"]).raw)
    assert raw.isascii()


@pytest.mark.parametrize(
    ("attachments", "field"),
    [
        ("file", "attachments"),
        ({"filename": "a"}, "attachments"),
        (["x"], "attachments[0]"),
        ([{"content": "aGk="}], "attachments[0].filename"),
        ([{"filename": "", "content": "aGk="}], "attachments[0].filename"),
        ([{"filename": "a\r\nb", "content": "aGk="}], "attachments[0].filename"),
        ([{"filename": "x" * 256, "content": "aGk="}], "attachments[0].filename"),
        ([{"filename": "a.txt"}], "attachments[0].content"),
        ([{"filename": "a.txt", "content": "not base64!"}], "attachments[0].content"),
        ([{"filename": "a.txt", "content": "aGk"}], "attachments[0].content"),
        ([{"filename": "a.txt", "content": "é"}], "attachments[0].content"),
        ([{"filename": "a.txt", "content": 5}], "attachments[0].content"),
        (
            [{"filename": "a", "content": "aGk=", "content_type": "pdf"}],
            "attachments[0].content_type",
        ),
        (
            [{"filename": "a", "content": "aGk=", "content_type": "multipart/mixed"}],
            "attachments[0].content_type",
        ),
        (
            [{"filename": "a", "content": "aGk=", "content_type": "text/plain\r\nX: y"}],
            "attachments[0].content_type",
        ),
        ([{"filename": "a", "content": "aGk=", "extra": 1}], "attachments[0].extra"),
        ([{"filename": f"{i}", "content": "aGk="} for i in range(11)], "attachments"),
    ],
)
def test_bad_attachments_are_400_naming_the_field(live, attachments, field):
    _refused(live, send_body(attachments=attachments), 400, field)


def test_attachments_over_10_mb_are_413(live):
    import base64

    big = base64.b64encode(b"\0" * (10 * 1024 * 1024 + 1)).decode()
    error = _refused(
        live, send_body(attachments=[{"filename": "big.bin", "content": big}]), 413, "attachments"
    )
    assert error["code"] == "message_too_large"
    # Two halves under the limit each, over it once base64-encoded in the message.
    half = base64.b64encode(b"\0" * (4 * 1024 * 1024)).decode()
    two = [{"filename": "a.bin", "content": half}, {"filename": "b.bin", "content": half}]
    error = _refused(live, send_body(attachments=two), 413, "attachments")
