"""Message commands over imaplib (APPEND, SEARCH, FETCH, STORE, COPY, MOVE, EXPUNGE) and IDLE
notification of a delivery made by another writer (`maildir_deliver`)."""

from __future__ import annotations

import time

import pytest

from mailplane.storage import maildir_deliver
from tests.imap.conftest import PASSWORD

pytestmark = pytest.mark.timeout(60)

MESSAGE = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: %s\r\n\r\nHello %s\r\n"


def _msg(subject: str) -> bytes:
    return MESSAGE % (subject.encode(), subject.encode())


def test_append_search_fetch_store_copy_move_expunge(imap_server, make_mailbox):
    mailbox = make_mailbox()
    with imap_server.client() as imap:
        imap.login(mailbox.address, PASSWORD)
        for subject in ("one", "two", "three"):
            typ, data = imap.append("INBOX", None, None, _msg(subject))
            assert typ == "OK" and b"APPENDUID" in data[0]
        typ, data = imap.select("INBOX")
        assert typ == "OK" and data == [b"3"]
        typ, data = imap.search(None, "SUBJECT", "two")
        assert data == [b"2"]
        typ, data = imap.uid("FETCH", "1:*", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = [part[1].strip() for part in data if isinstance(part, tuple)]
        assert subjects == [b"Subject: one", b"Subject: two", b"Subject: three"]
        typ, data = imap.fetch("1", "(BODY[TEXT])")
        assert data[0][1] == b"Hello one\r\n"
        typ, data = imap.store("1", "+FLAGS", "(\\Flagged)")
        assert typ == "OK" and b"\\Flagged" in data[0]
        assert imap.search(None, "FLAGGED")[1] == [b"1"]
        assert imap.search(None, "SEEN")[1] == [b"1"]  # BODY[TEXT] set \Seen
        typ, data = imap.copy("1", "Sent")
        assert typ == "OK" and b"COPYUID" in data[0]
        typ, data = imap._simple_command("MOVE", "2", "Trash")  # RFC 6851
        assert typ == "OK"
        assert imap.response("EXPUNGE") == ("EXPUNGE", [b"2"])  # MOVE reports the removal
        assert imap.search(None, "ALL")[1] == [b"1 2"]
        imap.store("1", "+FLAGS", "(\\Deleted)")
        typ, data = imap.expunge()
        assert typ == "OK" and data == [b"1"]
        assert imap.search(None, "ALL")[1] == [b"1"]
        for folder, expected in (("Sent", b"one"), ("Trash", b"two")):
            imap.select(folder)
            typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            assert expected in data[0][1]
        imap.select("INBOX")
        typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"three" in data[0][1]


def test_message_delivered_externally_is_visible_with_a_uid(imap_server, make_mailbox):
    mailbox = make_mailbox()
    maildir_deliver(
        organization_id=mailbox.organization_id, address=mailbox.address, raw=_msg("mx")
    )
    with imap_server.client() as imap:
        imap.login(mailbox.address, PASSWORD)
        assert imap.select("INBOX")[1] == [b"1"]
        _typ, data = imap.uid("FETCH", "1", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"UID 1" in data[0][0] and b"Subject: mx" in data[0][1]


def test_idle_sees_delivery_from_another_writer(imap_server, make_mailbox):
    mailbox = make_mailbox()
    with imap_server.client() as imap:
        imap.login(mailbox.address, PASSWORD)
        assert imap.select("INBOX")[1] == [b"0"]
        imap.send(b"I1 IDLE\r\n")
        assert imap.readline().startswith(b"+")
        started = time.monotonic()
        maildir_deliver(
            organization_id=mailbox.organization_id, address=mailbox.address, raw=_msg("new")
        )
        # One timeout for the whole wait: after a timed-out read, imaplib's socket file
        # refuses every later read ("cannot read from timed out object").
        imap.sock.settimeout(10)
        lines: list[bytes] = []
        try:
            while b"* 1 EXISTS\r\n" not in lines:
                lines.append(imap.readline())
        except TimeoutError:
            pass
        assert b"* 1 EXISTS\r\n" in lines, f"no EXISTS within 10 s: {lines!r}"
        latency = time.monotonic() - started
        imap.sock.settimeout(10)
        imap.send(b"DONE\r\n")
        while not (line := imap.readline()).startswith(b"I1 "):
            pass
        assert line.startswith(b"I1 OK")
        assert latency < 5
        _typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"Subject: new" in data[0][1]
