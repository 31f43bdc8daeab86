"""/api/servers/{id}/tracking/: the tracking domain, its CNAME check and the toggles;
the send request's track_opens / track_links, and which one wins."""

from __future__ import annotations

import email
import re
from email.policy import default as default_policy

import pytest

from mailplane.queue.models import MessageBody
from mailplane.tracking.models import TrackedMessage
from mailplane.tracking.services import tracking_host
from tests.support.servers import send_body, server_make
from tests.tracking.conftest import TRACK_DOMAIN

HTML = '<p>Hi <a href="https://shop.acme.test/order/42">your order</a></p>'


def html_of(message_id: int) -> str:
    raw = bytes(MessageBody.objects.get(message_id=message_id).raw)
    parsed = email.message_from_bytes(raw, policy=default_policy)
    part = parsed.get_body(preferencelist=("html",))
    assert part is not None
    return part.get_content()


def test_a_new_server_tracks_nothing_and_shows_where_to_point(account):
    server = server_make(account).server
    body = account.client.get(f"/api/servers/{server.pk}/tracking/").json()
    assert body == {
        "domain": "",
        "cname_target": tracking_host(),
        "verified": False,
        "verified_at": None,
        "checked_at": None,
        "check_detail": "",
        "track_opens": False,
        "track_links": False,
        "streams": {},
    }


def test_verification_follows_the_published_cname(account, dns_server):
    pk = server_make(account).server.pk
    client = account.client
    assert client.patch(f"/api/servers/{pk}/tracking/", {"domain": "Track.Acme.test."},
                        format="json").json()["domain"] == TRACK_DOMAIN  # fmt: skip
    missing = client.post(f"/api/servers/{pk}/tracking/verify/").json()
    assert not missing["verified"] and "no CNAME record" in missing["check_detail"]
    dns_server.cname(TRACK_DOMAIN, "elsewhere.example.net")
    wrong = client.post(f"/api/servers/{pk}/tracking/verify/").json()
    assert not wrong["verified"] and "elsewhere.example.net" in wrong["check_detail"]
    dns_server.remove(TRACK_DOMAIN)
    dns_server.cname(TRACK_DOMAIN, tracking_host())
    good = client.post(f"/api/servers/{pk}/tracking/verify/").json()
    assert good["verified"] and good["verified_at"]
    # A new domain must be verified again.
    again = client.patch(f"/api/servers/{pk}/tracking/", {"domain": "t2.acme.test"},
                         format="json").json()  # fmt: skip
    assert not again["verified"]
    dns_server.fail("t2.acme.test", "servfail")
    failed = client.post(f"/api/servers/{pk}/tracking/verify/").json()
    assert not failed["verified"] and "try again" in failed["check_detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"domain": "acme"}, "domain"),
        ({"domain": "acme.test"}, "domain"),  # the bare domain: not a tracking host name
        ({"domain": "-x.acme.test"}, "domain"),
        ({"domain": "a" * 300}, "domain"),
        ({"domain": "x y.acme.test"}, "domain"),
        ({"track_opens": "sometimes"}, "track_opens"),
        ({"streams": {"nope": {"track_opens": True}}}, "streams.nope"),
        ({"streams": {"outbound": {"track_opens": "x"}}}, "streams"),
        ({"streams": ["outbound"]}, "streams"),
    ],
)
def test_bad_settings_name_the_field(account, body, field):
    pk = server_make(account).server.pk
    reply = account.client.patch(f"/api/servers/{pk}/tracking/", body, format="json")
    assert reply.status_code == 400, reply.content
    details = reply.json()["error"]["details"]
    assert field in details or any(name.startswith(field + ".") for name in details), details


def test_verify_without_a_domain_is_a_400(account):
    pk = server_make(account).server.pk
    reply = account.client.post(f"/api/servers/{pk}/tracking/verify/")
    assert reply.status_code == 400 and "domain" in reply.json()["error"]["details"]


def test_message_over_stream_over_server(account, tracked):
    client = account.client
    pk = tracked.server.pk
    # broadcast: opens off, links as the server (on).
    toggles = {"streams": {"broadcast": {"track_opens": False}}}
    reply = client.patch(f"/api/servers/{pk}/tracking/", toggles, format="json")
    assert reply.json()["streams"] == {"broadcast": {"track_opens": False, "track_links": None}}

    def send(**extra):
        reply = tracked.client.post("/api/email/", send_body(html=HTML, **extra), format="json")
        assert reply.status_code == 200, reply.content
        return reply.json()["id"]

    plain = html_of(send())
    assert f"https://{TRACK_DOMAIN}/c/" in plain and f"https://{TRACK_DOMAIN}/o/" in plain
    assert "shop.acme.test" not in plain
    broadcast = html_of(send(stream="broadcast"))
    assert "/c/" in broadcast and "/o/" not in broadcast
    forced = html_of(send(stream="broadcast", track_opens=True, track_links=False))
    assert "/o/" in forced and "shop.acme.test/order/42" in forced
    off = send(track_opens=False, track_links=False)
    assert html_of(off).rstrip() == HTML and not TrackedMessage.objects.filter(message_id=off)
    reply = tracked.client.post("/api/email/", send_body(text="only text"), format="json")
    text_only = reply.json()["id"]
    assert not TrackedMessage.objects.filter(message_id=text_only)


def test_nothing_is_tracked_before_the_domain_is_verified(account, dns_server):
    from tests.support.fixtures import verified_domain

    verified_domain(account, "acme.test")
    access = server_make(account, "p")
    account.client.patch(f"/api/servers/{access.server.pk}/tracking/",
                         {"domain": TRACK_DOMAIN, "track_opens": True, "track_links": True},
                         format="json")  # fmt: skip
    reply = access.client.post("/api/email/", send_body(html=HTML), format="json")
    assert html_of(reply.json()["id"]).rstrip() == HTML


@pytest.mark.parametrize("field", ["track_opens", "track_links"])
@pytest.mark.parametrize("value", ["yes", 1, [], {}])
def test_send_request_toggles_must_be_booleans(tracked, field, value):
    reply = tracked.client.post(
        "/api/email/", send_body(html=HTML, **{field: value}), format="json"
    )
    assert reply.status_code == 400 and field in reply.json()["error"]["details"], reply.content


@pytest.mark.parametrize(
    "html",
    [
        "<div>" * 10_000 + '<a href="https://deep.acme.test/">deep</a>' + "end-of-text",
        '<p><a href="https://x.acme.test/" title="' + "x" * 300_000 + '">end-of-text',
        "<<a href='https://x.acme.test/'>>end-of-text</b></i><p<p><!--",
        "<table><tr><td><a href=https://x.acme.test/>x</td></table></a>end-of-text",
    ],
    ids=["nested-10k", "huge-unclosed-attr", "garbage", "misnested"],
)
def test_hostile_html_is_sent_tracked_and_intact(tracked, html):
    reply = tracked.client.post("/api/email/", send_body(html=html), format="json")
    assert reply.status_code == 200, reply.content
    got = html_of(reply.json()["id"])
    assert "end-of-text" in got
    assert f"https://{TRACK_DOMAIN}/o/" in got
    # Take away what tracking added: the sender's characters are all still there.
    stripped = re.sub(r'<img src="https://[^"]+/o/[^"]+"[^>]*/>', "", got)
    for piece in re.split(r'<a [^>]*href="https://track\.acme\.test/c/[^"]+"[^>]*>', stripped):
        assert piece.rstrip("\r\n") in html or piece.strip() == ""
