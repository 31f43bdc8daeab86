"""The cleanup stage (message/cleanup.py) on its own: no SMTP server, no database."""

from __future__ import annotations

import email.utils
from email import message_from_bytes

from mailplane.message.cleanup import message_cleanup
from mailplane.message.headers import header_section, headers_of
from tests.core.test_import_graph import SRC, import_graph

BARE = b"From: Alice <alice@acme.test>\r\nTo: x@example.org\r\nSubject: Hi\r\n\r\nBody\r\n"


def test_a_bare_message_gets_trace_date_message_id_and_reply_to():
    raw = message_cleanup(
        BARE,
        sender="alice@acme.test",
        received="by smtp.example with ESMTPSA",
        reply_to="replies@acme.test",
    )
    first = raw.split(b"\r\n", 1)[0].decode()
    # RFC 5321 §4.4: the trace field on top, with the time of receipt.
    assert first.startswith("Received: by smtp.example with ESMTPSA; ")
    assert email.utils.parsedate_to_datetime(first.partition("; ")[2]) is not None
    parsed = message_from_bytes(raw)
    assert parsed["Reply-To"] == "replies@acme.test"
    assert email.utils.parsedate_to_datetime(parsed["Date"]) is not None
    assert parsed["Message-ID"].startswith("<") and parsed["Message-ID"].endswith("@acme.test>")
    # What the client sent follows, byte for byte.
    assert raw.endswith(BARE)


def test_fields_the_client_set_are_kept_and_not_doubled():
    own = (
        b"Reply-To: mine@example.org\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        b"Message-ID: <own@acme.test>\r\n" + BARE
    )
    raw = message_cleanup(
        own, sender="alice@acme.test", received="by h with ESMTPSA", reply_to="r@acme.test"
    )
    headers = headers_of(raw)
    assert headers.get_all("Reply-To") == ["mine@example.org"]
    assert headers.get_all("Message-ID") == ["<own@acme.test>"]
    assert len(headers.get_all("Date") or []) == 1
    assert raw.endswith(own)
    assert len(header_section(raw).split(b"\r\n")) == len(header_section(own).split(b"\r\n")) + 1


def test_each_message_gets_its_own_message_id():
    ids = {
        headers_of(message_cleanup(BARE, sender="a@acme.test", received="by h"))["Message-ID"]
        for _ in range(3)
    }
    assert len(ids) == 3


def test_the_message_package_needs_no_protocol_server():
    # The send API will compose through this package: it must not drag in SMTP or IMAP.
    graph = import_graph(SRC)
    reached, todo = set(), ["mailplane.message.cleanup"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph.get(module, ()))
    assert not {m for m in reached if m.startswith(("mailplane.smtp", "mailplane.imap"))}
    assert "mailplane.message.headers" in reached
