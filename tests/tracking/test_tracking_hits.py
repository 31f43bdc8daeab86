"""/o/ and /c/ against hostile and forged tokens: 404 in bounded time, never a redirect
anywhere but the stored URL, never another message's event; several recipients."""

from __future__ import annotations

import email
import re
import threading
import time
from email.policy import default as default_policy

import pytest
from django.db import connection, connections
from django.test import Client

from mailplane.queue.models import DeliveryEvent, MessageBody
from mailplane.tracking.models import TrackedMessage
from mailplane.tracking.tokens import PIXEL_LINK, token_make, token_parse
from tests.support.servers import send_body
from tests.support.tools import skip_for_mode
from tests.tracking.conftest import TRACK_DOMAIN

TRACKED = re.compile(rf"https://{re.escape(TRACK_DOMAIN)}/([oc])/([A-Za-z0-9_-]+)")
UA = {"HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"}


def send(tracked, html: str, **extra) -> tuple[int, list[tuple[str, str]]]:
    reply = tracked.client.post("/api/email/", send_body(html=html, **extra), format="json")
    assert reply.status_code == 200, reply.content
    message_id = reply.json()["id"]
    raw = bytes(MessageBody.objects.get(message_id=message_id).raw)
    part = email.message_from_bytes(raw, policy=default_policy).get_body(("html",))
    return message_id, TRACKED.findall(part.get_content())


def tokens_of(found, kind):
    return [token for k, token in found if k == kind]


@pytest.fixture
def two(tracked):
    a_id, a = send(tracked, '<a href="https://a.test/secret-a">a</a>')
    b_id, b = send(
        tracked, '<a href="https://b.test/secret-b">b</a><a href="https://b.test/2">2</a>'
    )
    return {"a": (a_id, a), "b": (b_id, b)}


def test_each_token_reaches_only_its_own_message_and_url(two):
    client = Client(**UA)
    (a_id, a), (b_id, b) = two["a"], two["b"]
    [a_click] = tokens_of(a, "c")
    assert client.get(f"/c/{a_click}")["Location"] == "https://a.test/secret-a"
    b_clicks = tokens_of(b, "c")
    assert [client.get(f"/c/{t}")["Location"] for t in b_clicks] == [
        "https://b.test/secret-b",
        "https://b.test/2",
    ]
    # A's key with B's link index 1: A has no link 1.
    parsed = token_parse(a_click)
    assert parsed is not None
    beyond = token_make(key=parsed.key, recipient=0, link=1)
    assert client.get(f"/c/{beyond}").status_code == 404
    clicks = DeliveryEvent.objects.filter(type="clicked")
    assert sorted(clicks.values_list("message_id", flat=True)) == [a_id, b_id, b_id]


def forged(two, route: str) -> list[str]:
    a_click = tokens_of(two["a"][1], "c")[0]
    key = token_parse(a_click).key
    flipped = ("B" if a_click[0] != "B" else "C") + a_click[1:]
    return [
        flipped,  # another key: no message
        token_make(key=key, recipient=1, link=0),  # a recipient index the message lacks
        # The other route's token: the pixel is no link, a link is no pixel.
        token_make(key=key, recipient=0, link=PIXEL_LINK if route == "c" else 0),
        a_click + "A",
        a_click[:-1],
        a_click[:-1] + "=",
        "A" * 26,
        "x" * 100_000,
        "%00" * 30,
        "..%2F..%2Fapi%2F",
    ]


@pytest.mark.parametrize("route", ["c", "o"])
def test_forged_bad_and_huge_tokens_are_404_quickly(two, route):
    client = Client(**UA)
    before = DeliveryEvent.objects.count()
    for token in forged(two, route):
        started = time.monotonic()
        reply = client.get(f"/{route}/{token}")
        assert reply.status_code == 404, (token[:40], reply.status_code)
        assert time.monotonic() - started < 1.0
        assert "Location" not in reply
    assert DeliveryEvent.objects.count() == before


def test_only_get_and_nothing_else_is_served(two):
    client = Client(**UA)
    [a_click] = tokens_of(two["a"][1], "c")
    for method in ("post", "put", "delete", "patch"):
        assert getattr(client, method)(f"/c/{a_click}").status_code == 405
    # Query strings and trailing paths change nothing: the redirect is the stored URL.
    reply = client.get(f"/c/{a_click}?url=https://evil.test/&next=//evil.test")
    assert reply["Location"] == "https://a.test/secret-a"
    assert client.get(f"/c/{a_click}/https://evil.test/").status_code == 404


def test_a_message_with_opens_off_has_no_live_pixel(tracked):
    message_id, found = send(tracked, '<a href="https://a.test/">a</a>', track_opens=False)
    assert tokens_of(found, "o") == []
    key = TrackedMessage.objects.get(message_id=message_id).key
    pixel = token_make(key=key, recipient=0, link=PIXEL_LINK)
    assert Client(**UA).get(f"/o/{pixel}").status_code == 404


def test_several_recipients_share_the_body_and_the_event_names_none(tracked):
    message_id, found = send(
        tracked, "<p>hi</p>", to=["carol@dest.test", "dave@dest.test"], track_links=False
    )
    [pixel] = tokens_of(found, "o")
    client = Client(**UA)
    assert client.get(f"/o/{pixel}").status_code == 200
    assert client.get(f"/o/{pixel}").status_code == 200
    opened = DeliveryEvent.objects.filter(message_id=message_id, type="opened").order_by("seq")
    assert [(e.detail, e.recipient_id) for e in opened] == [("first", None), ("repeat", None)]
    # The logs read such events too (schema-checked by the API clients).
    detail = tracked.account.client.get(f"/api/messages/{message_id}/")
    assert detail.status_code == 200, detail.content
    assert [e["type"] for e in detail.json()["events"]][-2:] == ["opened", "opened"]
    own = tracked.full_client.get(f"/api/server/messages/{message_id}/")
    assert own.status_code == 200, own.content


def test_scanners_clicking_are_flagged_and_do_not_make_the_first_click(two):
    [a_click] = tokens_of(two["a"][1], "c")
    scanner = Client(HTTP_USER_AGENT="Mozilla/5.0 (compatible; Barracuda Sentinel)")
    assert scanner.get(f"/c/{a_click}").status_code == 302
    assert Client(**UA).get(f"/c/{a_click}").status_code == 302
    details = list(
        DeliveryEvent.objects.filter(type="clicked")
        .order_by("seq")
        .values_list("detail", flat=True)
    )
    assert details == ["machine:bot https://a.test/secret-a", "first https://a.test/secret-a"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_opens_make_one_first(tracked):
    """Eight browsers open at once: one `first`, the rest `repeat` (the message row lock)."""
    if connection.vendor == "sqlite":
        skip_for_mode("SQLite has one writer at a time: nothing runs concurrently")
    message_id, found = send(tracked, "<p>hi</p>", track_links=False)
    [pixel] = tokens_of(found, "o")
    barrier = threading.Barrier(8)
    codes: list[int] = []

    def fetch() -> None:
        try:
            barrier.wait(timeout=30)
            codes.append(Client(**UA).get(f"/o/{pixel}").status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert codes == [200] * 8
    details = DeliveryEvent.objects.filter(message_id=message_id, type="opened")
    assert sorted(details.values_list("detail", flat=True)) == ["first"] + ["repeat"] * 7
