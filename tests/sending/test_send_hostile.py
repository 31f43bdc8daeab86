"""Hostile clients of the send API over real HTTP (Django's live server, http.client):
Hypothesis-made bodies, headers and keys against /api/email/ and /api/email/batch/ with a
valid server key. Every reply is below 500, in the error shape when a 4xx, and a refused
message leaves nothing in the queue."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailplane.queue.models import OutboundMessage
from tests.support.fixtures import verified_domain
from tests.support.http_client import Reply, http_call
from tests.support.servers import send_body, server_make

pytestmark = pytest.mark.timeout(300)

FIELDS = ["from", "to", "cc", "bcc", "reply_to", "subject", "text", "html", "headers",
          "tags", "metadata", "stream", "test_mode", "attachments", "filename", "content",
          "content_type"]  # fmt: skip
hostile_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "", "\x00", "\ud800", "\r\nBcc: victim@evil.test", "a@b", "@", "<>", "a@b.test>",
            '"a,b" <c@d.test>', "x" * 5000, "a@" + "b" * 300 + ".test", "é@acme.test",
            "alice@acme.test", "Alice <alice@acme.test>", "a@xn--.test", "a@-b.test",
            "outbound", "broadcast", "From", "DKIM-Signature", "9223372036854775808",
        ]
    ),
)  # fmt: skip
leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), hostile_text
)
hostile_value = st.recursive(
    leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(FIELDS) | hostile_text, children, max_size=4),
    ),
    max_leaves=10,
)


@st.composite
def hostile_message(draw: Any) -> Any:
    """Mostly a valid message with some fields made hostile (so each check is reached);
    sometimes anything at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(hostile_value)
    body: dict[str, Any] = dict(send_body())
    for name in draw(st.lists(st.sampled_from([*FIELDS, "extra"]), min_size=1, max_size=3)):
        body[name] = draw(hostile_value)
    return body


def _check(reply: Reply, what: Any) -> None:
    assert reply.status < 500, (str(what)[:300], reply.status, reply.body[:500])
    if reply.status >= 400:
        body = reply.json()
        assert set(body) == {"error"}, (str(what)[:300], body)
        assert set(body["error"]) == {"code", "message", "details"}, body
        if reply.status in (400, 409, 413, 422):
            assert body["error"]["details"], body  # names the field (or the body)


@pytest.fixture
def target(transactional_db, live_server, account):
    verified_domain(account, "acme.test")
    return live_server.url, server_make(account)


def test_generated_single_messages(target):
    base, access = target

    @settings(
        max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(body=hostile_message())
    def attack(body: Any) -> None:
        before = OutboundMessage.objects.count()
        reply = http_call(
            base, "POST", "/api/email/", headers={"Authorization": f"Bearer {access.key}"},
            body=json.dumps(body), content_type="application/json",
        )  # fmt: skip
        _check(reply, body)
        queued = OutboundMessage.objects.count() - before
        assert queued == (1 if reply.status == 200 else 0), (body, reply.status)

    attack()


def test_generated_batches(target):
    base, access = target

    @settings(
        max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(items=st.one_of(st.lists(hostile_message(), max_size=6), hostile_value))
    def attack(items: Any) -> None:
        before = OutboundMessage.objects.count()
        reply = http_call(
            base, "POST", "/api/email/batch/", headers={"X-Server-Token": access.key},
            body=json.dumps(items), content_type="application/json",
        )  # fmt: skip
        _check(reply, items)
        queued = OutboundMessage.objects.count() - before
        if reply.status == 200:
            results = reply.json()
            assert [r["index"] for r in results] == list(range(len(items)))
            assert queued == sum(r["status"] != "error" for r in results)
        else:
            assert queued == 0

    attack()


def test_generated_keys_and_headers(target):
    base, access = target
    header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=300)

    @settings(
        max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(
        auth=st.one_of(
            header_text, st.sampled_from([f"Bearer {access.key}", "Bearer", "Bearer  x"])
        ),
        token=st.one_of(st.none(), header_text),
        idempotency=st.one_of(st.none(), header_text),
    )
    def attack(auth: str, token: str | None, idempotency: str | None) -> None:
        headers = {"Authorization": auth}
        if token is not None:
            headers["X-Server-Token"] = token
        if idempotency is not None:
            headers["Idempotency-Key"] = idempotency
        try:
            reply = http_call(
                base, "POST", "/api/email/", headers=headers, json_body=send_body(), timeout=15
            )
        except UnicodeEncodeError:
            return  # http.client refuses to send it: not a request the server can see
        _check(reply, headers)

    attack()
