"""Broadcast streams: List-Unsubscribe (RFC 2369) with one-click (RFC 8058), DKIM-signed,
a token per message bound to its server, stream and one recipient; the one-click POST
and the confirmation page over a real HTTP client; the suppression per stream."""

from __future__ import annotations

import email
import re
import smtplib
from email.policy import default as default_policy

import dkim
import pytest
from rest_framework.test import APIClient

from mailplane.delivery.signing import dkim_sign
from mailplane.delivery.worker import DeliveryWorker
from mailplane.queue.models import (
    DeliveryEvent,
    MessageBody,
    QueuedRecipient,
    RecipientStatus,
    Suppression,
    SuppressionReason,
)
from mailplane.servers.models import MessageStream, ServerMessage, StreamKind
from tests.smtp.conftest import listeners, tls_pair  # noqa: F401
from tests.support.fixtures import verified_domain
from tests.support.http_client import http_call
from tests.support.servers import ServerAccess, send_body, server_make
from tests.support.smtp_sink import mx_port, mx_sinks  # noqa: F401

pytestmark = pytest.mark.timeout(60)
_LINK = re.compile(rb"<https?://[^/]+(/unsubscribe/([a-z2-7]{26})/)>")


def _raw(message_id: int) -> bytes:
    return bytes(MessageBody.objects.get(message_id=message_id).raw)


def _broadcast(live: ServerAccess, to: str = "carol@dest.test", **fields: object) -> dict:
    reply = live.client.post(
        "/api/email/", send_body(to=to, stream="broadcast", **fields), format="json"
    )
    assert reply.status_code == 200, reply.json()
    return reply.json()


def _link(message_id: int) -> tuple[str, str]:
    """(path, token) of a queued message's List-Unsubscribe HTTPS URI."""
    found = _LINK.search(_raw(message_id).replace(b"\r\n ", b" "))
    assert found is not None
    return found[1].decode(), found[2].decode()


def _events(message_id: int) -> list[str]:
    return list(DeliveryEvent.objects.filter(message_id=message_id).values_list("type", flat=True))


ONE_CLICK = "List-Unsubscribe=One-Click"
FORM = "application/x-www-form-urlencoded"


def test_broadcast_messages_carry_one_click_unsubscribe_and_transactional_do_not(live, settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "PUBLIC_URL": "https://mail.example.test"}
    sent = _broadcast(live)
    parsed = email.message_from_bytes(_raw(sent["id"]), policy=default_policy)
    [value] = parsed.get_all("List-Unsubscribe")
    domain = live.server.organization.domains.get(name="acme.test")
    host = re.escape(domain.return_path_host)
    assert re.fullmatch(
        r"<https://mail\.example\.test/unsubscribe/([a-z2-7]{26})/>, "
        rf"<mailto:unsubscribe\+\1@{host}>",
        str(value),
    ), value
    assert parsed.get_all("List-Unsubscribe-Post") == [ONE_CLICK]
    # The token is opaque: no address in it, and only its digest is stored.
    path, token = _link(sent["id"])
    assert "carol" not in path
    link = ServerMessage.objects.get(message_id=sent["id"])
    assert link.unsubscribe_digest and token not in link.unsubscribe_digest
    # Each message its own token.
    assert _link(_broadcast(live)["id"])[1] != token

    plain = live.client.post("/api/email/", send_body(), format="json").json()
    parsed = email.message_from_bytes(_raw(plain["id"]), policy=default_policy)
    assert parsed["List-Unsubscribe"] is None and parsed["List-Unsubscribe-Post"] is None
    assert ServerMessage.objects.get(message_id=plain["id"]).unsubscribe_digest is None


def test_the_unsubscribe_fields_are_covered_by_the_dkim_signature(live):
    """RFC 8058 §4: both fields signed (and over-signed: a second one cannot be added)."""
    sent = _broadcast(live)
    domain = live.server.organization.domains.get(name="acme.test")
    signed = dkim_sign(
        raw=_raw(sent["id"]),
        domain="acme.test",
        selector=domain.dkim_selector,
        private_pem=domain.dkim_private_key,
    )

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return f"v=DKIM1; k=rsa; p={domain.dkim_public_key}".encode()

    assert dkim.verify(signed, dnsfunc=dnsfunc)
    header = signed.split(b"\r\n\r\n")[0].replace(b"\r\n ", b" ").split(b" b=")[0]
    h_tag = re.search(rb"[; ]h=([^;]+);", header)
    assert h_tag is not None
    names = h_tag[1].replace(b" ", b"").split(b":")
    assert names.count(b"list-unsubscribe") == 2  # the field, and one over-signed
    assert names.count(b"list-unsubscribe-post") == 2
    # Changing the link, or adding another, breaks the signature.
    forged = re.sub(rb"/unsubscribe/[a-z2-7]{26}/", b"/unsubscribe/" + b"a" * 26 + b"/", signed)
    assert forged != signed and not dkim.verify(forged, dnsfunc=dnsfunc)
    head, _, body = signed.partition(b"\r\n\r\n")
    added = head + b"\r\nList-Unsubscribe: <https://evil.test/x>\r\n\r\n" + body
    assert not dkim.verify(added, dnsfunc=dnsfunc)
    # A transactional message lists neither (a mailing list may add its own later).
    plain = live.client.post("/api/email/", send_body(), format="json").json()
    signed_plain = dkim_sign(
        raw=_raw(plain["id"]),
        domain="acme.test",
        selector=domain.dkim_selector,
        private_pem=domain.dkim_private_key,
    )
    assert b"list-unsubscribe" not in signed_plain.split(b"\r\n\r\n")[0]


def test_one_click_post_suppresses_for_the_stream_only_and_is_idempotent(
    live, live_server, transactional_db
):
    sent = _broadcast(live)
    path, _ = _link(sent["id"])
    reply = http_call(live_server.url, "POST", path, body=ONE_CLICK, content_type=FORM)
    assert reply.status == 200, reply.body
    assert reply.json()["status"] == "unsubscribed"
    broadcast = MessageStream.objects.get(server=live.server, stream_id="broadcast")
    [suppression] = Suppression.objects.filter(organization=live.account.org)
    assert (suppression.address, suppression.stream_id, suppression.reason) == (
        "carol@dest.test",
        broadcast.pk,
        SuppressionReason.UNSUBSCRIBED,
    )
    assert _events(sent["id"]) == ["queued", "unsubscribed"]
    # A replay (providers may POST twice): the same 200, nothing new.
    again = http_call(live_server.url, "POST", path, body=ONE_CLICK, content_type=FORM)
    assert (again.status, again.json()) == (200, reply.json())
    assert Suppression.objects.count() == 1 and _events(sent["id"]) == ["queued", "unsubscribed"]

    # The broadcast stream answers suppressed at once; the transactional one still sends.
    later = _broadcast(live)
    assert (later["status"], later["suppressed"]) == ("suppressed", ["carol@dest.test"])
    plain = live.client.post("/api/email/", send_body(), format="json").json()
    assert (plain["status"], plain["suppressed"]) == ("queued", [])
    # multipart/form-data is RFC 8058's other encoding.
    other = _broadcast(live, to="dave@dest.test")
    boundary = "xYzZY"
    multipart = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        f"One-Click\r\n--{boundary}--\r\n"
    )
    reply = http_call(
        live_server.url,
        "POST",
        _link(other["id"])[0],
        body=multipart,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    assert reply.status == 200, reply.body
    assert Suppression.objects.filter(address="dave@dest.test", stream=broadcast).exists()


def test_the_confirmation_page_changes_nothing_and_its_form_unsubscribes(
    live, live_server, transactional_db
):
    sent = _broadcast(live)
    path, _ = _link(sent["id"])
    page = http_call(live_server.url, "GET", path, headers={"Accept": "text/html"})
    assert page.status == 200
    assert page.headers["content-type"].startswith("text/html")
    assert b'<form method="post">' in page.body
    assert b'name="List-Unsubscribe" value="One-Click"' in page.body
    assert b"carol" not in page.body  # the page does not show the address
    assert not Suppression.objects.exists()  # a GET (link scanners, prefetch) is no click
    # The page's button: a browser's form POST, no CSRF token, answered with a page.
    done = http_call(
        live_server.url,
        "POST",
        path,
        body="List-Unsubscribe=One-Click",
        content_type=FORM,
        headers={"Accept": "text/html,application/xhtml+xml"},
    )
    assert done.status == 200 and b"no longer receive" in done.body
    assert done.headers["content-type"].startswith("text/html")
    assert Suppression.objects.filter(address="carol@dest.test").count() == 1


def test_delivery_holds_a_queued_broadcast_after_an_unsubscribe(
    live,
    dns_server,
    mx_sinks,  # noqa: F811
    settings,
    tmp_path,
):
    """Unsubscribed after it was queued: delivery's checklist suppresses it (that stream
    only; the transactional message to the same address is delivered)."""
    settings.MAILPLANE = {**settings.MAILPLANE, "STORAGE_ROOT": str(tmp_path / "storage")}
    sink = mx_sinks("accept")
    dns_server.mx("dest.test", "mx1.dest.test", preference=10)
    dns_server.a("mx1.dest.test", sink.address)
    first = _broadcast(live)
    second = _broadcast(live)
    plain = live.client.post("/api/email/", send_body(), format="json").json()
    reply = live.client.post(_link(first["id"])[0], ONE_CLICK, content_type=FORM)
    assert reply.status_code == 200
    DeliveryWorker(rng=lambda: 0.5).run_once()
    assert [r.rcpt_tos for r in sink.received] == [["carol@dest.test"]]
    assert b"List-Unsubscribe" not in sink.received[0].data  # the transactional one
    status = dict(QueuedRecipient.objects.values_list("message_id", "status"))
    assert status[first["id"]] == status[second["id"]] == RecipientStatus.SUPPRESSED
    assert status[plain["id"]] == RecipientStatus.DELIVERED


def test_a_token_reaches_only_its_own_stream(live):
    """Two broadcast streams: one's link unsubscribes from that one only."""
    news = MessageStream.objects.create(
        server=live.server, stream_id="newsletter", name="News", kind=StreamKind.BROADCAST
    )
    a = _broadcast(live)
    b = live.client.post("/api/email/", send_body(stream="newsletter"), format="json").json()
    assert live.client.post(_link(a["id"])[0], ONE_CLICK, content_type=FORM).status_code == 200
    assert not Suppression.objects.filter(stream=news).exists()
    again = live.client.post("/api/email/", send_body(stream="newsletter"), format="json")
    assert again.json()["status"] == "queued"
    assert _events(b["id"]) == ["queued"]


def test_a_custom_list_unsubscribe_is_refused_on_broadcast_and_kept_on_transactional(live):
    for name in ("List-Unsubscribe", "list-unsubscribe-post"):
        reply = live.client.post(
            "/api/email/",
            send_body(stream="broadcast", headers={name: "<https://mine.test/u>"}),
            format="json",
        )
        assert reply.status_code == 422, reply.json()
        assert reply.json()["error"]["details"] == {
            f"headers.{name}": ["set by broadcast streams: leave it out"]
        }
    mine = "<https://mine.test/u?id=7>, <mailto:unsub@mine.test>"
    reply = live.client.post(
        "/api/email/", send_body(headers={"List-Unsubscribe": mine}), format="json"
    )
    assert reply.status_code == 200
    parsed = email.message_from_bytes(_raw(reply.json()["id"]), policy=default_policy)
    assert parsed.get_all("List-Unsubscribe") == [mine]


def test_a_broadcast_message_goes_to_one_recipient(live):
    for fields in ({"to": ["a@dest.test", "b@dest.test"]}, {"cc": "b@dest.test"}):
        reply = live.client.post(
            "/api/email/", send_body(stream="broadcast", **fields), format="json"
        )
        assert reply.status_code == 422
        assert list(reply.json()["error"]["details"]) == ["to"]
    batch = live.client.post(
        "/api/email/batch/",
        [send_body(stream="broadcast", to=f"r{i}@dest.test") for i in range(3)]
        + [send_body(stream="broadcast", to="x@dest.test", bcc="y@dest.test")],
        format="json",
    ).json()
    assert [item["status"] for item in batch] == ["queued", "queued", "queued", "error"]
    tokens = {_link(item["id"])[1] for item in batch[:3]}
    assert len(tokens) == 3


@pytest.mark.parametrize(
    "token",
    [
        "a" * 26,  # well formed, unknown
        "A" * 26,  # upper case: not ours
        "a" * 25,
        "a" * 27,
        "1" * 26,  # not base32
        "x" * 5000,
        "%00" * 9,
        "..%2F..%2Fetc",
        "ünïcode",
        "sha256:abc",  # a digest is no token
    ],
)
def test_malformed_and_unknown_tokens_are_404(live, token):
    _broadcast(live)
    client = APIClient()  # no key: the link is public
    for reply in (
        client.get(f"/unsubscribe/{token}/"),
        client.post(f"/unsubscribe/{token}/", ONE_CLICK, content_type=FORM),
    ):
        assert reply.status_code == 404, (token, reply.content[:200])
        assert reply.json()["error"]["code"] == "not_found"
    page = client.get(f"/unsubscribe/{token}/", HTTP_ACCEPT="text/html")
    assert page.status_code == 404
    if "%2F" not in token:  # a "/" in it matches no route at all: the JSON 404
        assert page["Content-Type"].startswith("text/html")
    assert not Suppression.objects.exists()


def test_the_stored_digest_is_not_a_token(live):
    client = APIClient()
    sent = _broadcast(live)
    digest = ServerMessage.objects.get(message_id=sent["id"]).unsubscribe_digest
    assert client.post(f"/unsubscribe/{digest}/", ONE_CLICK, content_type=FORM).status_code == 404


@pytest.mark.parametrize(
    ("body", "content_type", "status", "field"),
    [
        ("", FORM, 400, "List-Unsubscribe"),
        ("List-Unsubscribe=Yes", FORM, 400, "List-Unsubscribe"),
        ("unsubscribe=One-Click", FORM, 400, "List-Unsubscribe"),
        ("List-Unsubscribe=One-Click&" + "x" * 2000, FORM, 413, "body"),
        ("\xff\xfe", FORM, 400, "List-Unsubscribe"),
        ('{"List-Unsubscribe": "One-Click"}', "application/json", 415, None),
        (ONE_CLICK, "text/plain", 415, None),
    ],
)
def test_bad_one_click_bodies_are_refused_and_change_nothing(
    live, body, content_type, status, field
):
    client = APIClient()
    path, _ = _link(_broadcast(live)["id"])
    reply = client.post(path, body, content_type=content_type)
    assert reply.status_code == status, reply.content
    if field:
        assert field in reply.json()["error"]["details"]
    assert not Suppression.objects.exists()


def test_a_huge_declared_body_is_refused_before_it_is_read(live, live_server, transactional_db):
    path, _ = _link(_broadcast(live)["id"])
    reply = http_call(
        live_server.url,
        "POST",
        path,
        body=ONE_CLICK,
        content_type=FORM,
        headers={"Content-Length": str(50 * 1024 * 1024)},
        timeout=10,
    )
    assert reply.status == 413
    assert not Suppression.objects.exists()


def _mailto(message_id: int) -> str:
    found = re.search(rb"<mailto:([^>]+)>", _raw(message_id).replace(b"\r\n ", b" "))
    assert found is not None
    return found[1].decode()


def test_mail_to_the_mailto_uri_unsubscribes_through_the_mx(listeners, account):  # noqa: F811
    """RFC 2369 §3.2: a message to the mailto URI, over SMTP to our MX (which serves the
    return path host for bounces already), unsubscribes like the one-click POST."""
    verified_domain(account, "acme.test")
    live = server_make(account)
    sent = _broadcast(live)
    address = _mailto(sent["id"])
    with smtplib.SMTP(listeners.host, listeners.mx, timeout=10) as client:
        client.ehlo("mx.dest.test")
        message = f"From: carol@dest.test\r\nTo: {address}\r\nSubject: unsubscribe\r\n\r\n."
        assert client.sendmail("carol@dest.test", [address], message) == {}
        # Mail clients may upper-case it; a replay changes nothing.
        assert client.sendmail("carol@dest.test", [address.upper()], message) == {}
        # A token that is not ours, at the same host: 550 5.1.1, at RCPT.
        host = address.rpartition("@")[2]
        code, reply = client.ehlo()
        client.mail("carol@dest.test")
        code, reply = client.rcpt(f"unsubscribe+{'a' * 26}@{host}")
        assert (code, reply[:5]) == (550, b"5.1.1")
        client.rset()
    [suppression] = Suppression.objects.all()
    assert (suppression.address, suppression.stream_id) == ("carol@dest.test", sent_stream(sent))
    assert _events(sent["id"]) == ["queued", "unsubscribed"]
    detail = DeliveryEvent.objects.get(message_id=sent["id"], type="unsubscribed").detail
    assert detail.startswith("mailto")


def sent_stream(sent: dict) -> int:
    return ServerMessage.objects.get(message_id=sent["id"]).stream_id
