"""IMAP extensions over real TLS connections with Python's imaplib (issue 16).

ENABLE (RFC 5161), ESEARCH (RFC 4731), SORT and THREAD (RFC 5256),
LIST-EXTENDED (RFC 5258) with LIST-STATUS (RFC 5819); then hostile input for each: a
malformed or unsupported argument is a tagged BAD or NO, never BYE or a server traceback.
"""

from __future__ import annotations

import imaplib
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.imap.conftest import PASSWORD
from tests.imap.hostile import HostileClient

pytestmark = pytest.mark.timeout(90)

EXTENSIONS = [
    b"ENABLE",
    b"CONDSTORE",
    b"QRESYNC",
    b"ESEARCH",
    b"SORT",
    b"THREAD=ORDEREDSUBJECT",
    b"THREAD=REFERENCES",
    b"LIST-EXTENDED",
    b"LIST-STATUS",
    b"SPECIAL-USE",
    b"MOVE",
    b"UIDPLUS",
    b"BINARY",
    b"ID",
    b"IDLE",
]


def _message(*, sender: str, subject: str, date: str | None, cc: str = "c@x.test") -> bytes:
    lines = [f"From: {sender}", "To: rcpt@example.test", f"Cc: {cc}", f"Subject: {subject}"]
    if date is not None:
        lines.append(f"Date: {date}")
    return ("\r\n".join(lines) + "\r\n\r\nbody of " + subject + "\r\n").encode()


# seq: (from, subject, Date header, internal date).
MESSAGES = [
    ("zed@a.test", "Re: beta", "Mon, 03 Mar 2025 10:00:00 +0000", "02-Mar-2025 09:00:00 +0000"),
    ("amy@b.test", "alpha", "Sat, 01 Mar 2025 10:00:00 +0000", "03-Mar-2025 09:00:00 +0000"),
    ("Bob@c.test", "Fwd: [list] Beta (fwd)", None, "01-Mar-2025 09:00:00 +0000"),
    ("carl@d.test", "gamma and a much longer subject", "bogus date", "04-Mar-2025 09:00:00 +0000"),
]


def _fill(imap: imaplib.IMAP4, folder: str = "INBOX") -> None:
    for sender, subject, date, internal in MESSAGES:
        raw = _message(sender=sender, subject=subject, date=date)
        typ, _ = imap.append(folder, None, f'"{internal}"', raw)
        assert typ == "OK"


@pytest.fixture
def session(imap_server: Any, make_mailbox: Any) -> Iterator[tuple[imaplib.IMAP4, Any]]:
    mailbox = make_mailbox()
    with imap_server.client() as imap:
        imap.login(mailbox.address, PASSWORD)
        yield imap, mailbox


@pytest.fixture
def server_errors(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """Errors and tracebacks the server logged (its loop runs in this process)."""
    caplog.set_level(logging.INFO)

    def errors() -> list[str]:
        return [
            f"{r.name}: {r.getMessage()}"
            for r in caplog.records
            if r.levelno >= logging.ERROR or r.exc_info
        ]

    return errors


def _untagged(imap: imaplib.IMAP4, *words: str) -> tuple[str, list[Any], list[Any]]:
    """Run a raw command; (status, tagged data, untagged lines of every kind it answered)."""
    imap.untagged_responses.clear()
    typ, data = imap._simple_command(*words)
    untagged = {name: list(values) for name, values in imap.untagged_responses.items()}
    imap.untagged_responses.clear()
    return typ, data, untagged  # type: ignore[return-value]


def test_capabilities_after_login_list_the_extensions(session):
    imap, _mailbox = session
    typ, data = imap.capability()
    offered = data[0].split()
    assert typ == "OK"
    for name in EXTENSIONS:
        assert name in offered, name


def test_enable_answers_enabled_and_only_before_select(session):
    imap, _mailbox = session
    typ, _data, untagged = _untagged(imap, "ENABLE", "X-UNKNOWN", "IMAP4rev1")
    # Names it cannot enable are ignored: the ENABLED response names nothing.
    assert typ == "OK" and untagged["ENABLED"] == [b""]
    typ, _data, untagged = _untagged(imap, "ENABLE", "CONDSTORE", "X-UNKNOWN")
    assert typ == "OK" and untagged["ENABLED"] == [b"CONDSTORE"]
    # After SELECT it is BAD (imaplib refuses to send it: see the hostile test).


def test_esearch_min_max_count_all_for_sequence_numbers_and_uids(session):
    imap, _mailbox = session
    _fill(imap)
    imap.select("INBOX")
    imap.store("2,3", "+FLAGS", "(\\Seen)")
    typ, _data, untagged = _untagged(imap, "SEARCH", "RETURN", "(MIN MAX COUNT ALL)", "SEEN")
    assert typ == "OK"
    esearch = untagged["ESEARCH"][0]
    assert re.fullmatch(rb'\(TAG "[A-Z0-9]+"\) (.*)', esearch)
    items = dict(re.findall(rb"(MIN|MAX|COUNT|ALL) (\S+)", esearch))
    assert items == {b"MIN": b"2", b"MAX": b"3", b"COUNT": b"2", b"ALL": b"2:3"}
    assert "SEARCH" not in untagged  # ESEARCH replaces SEARCH (RFC 4731 §3.1)
    # UIDs, "RETURN ()" meaning ALL, and the keyword in lower case.
    imap.store("2", "+FLAGS", "(\\Deleted)")
    imap.expunge()
    typ, _data, untagged = _untagged(imap, "UID", "SEARCH", "return", "()", "ALL")
    assert typ == "OK"
    assert untagged["ESEARCH"][0].endswith(b" UID ALL 1,3:4")


def test_esearch_and_sort_see_another_sessions_changes(imap_server, session):
    """Two sessions on one mailbox: flags stored and messages expunged by the other are
    in the next ESEARCH and SORT of this one (each command re-reads the mailbox)."""
    imap, mailbox = session
    _fill(imap)
    imap.select("INBOX")
    _typ, _data, untagged = _untagged(imap, "SEARCH", "RETURN", "(COUNT)", "FLAGGED")
    assert untagged["ESEARCH"][0].endswith(b"COUNT 0")
    with imap_server.client() as other:
        other.login(mailbox.address, PASSWORD)
        other.select("INBOX")
        other.store("1,4", "+FLAGS", "(\\Flagged)")
        other.store("2", "+FLAGS", "(\\Deleted)")
        other.expunge()
    typ, _data, untagged = _untagged(imap, "UID", "SEARCH", "RETURN", "(ALL COUNT)", "FLAGGED")
    assert typ == "OK"
    assert untagged["ESEARCH"][0].endswith(b"UID ALL 1,4 COUNT 2")
    assert untagged["EXPUNGE"] == [b"2"]  # UID commands may announce the expunge
    typ, data = imap.uid("SORT", "(ARRIVAL)", "UTF-8", "ALL")
    assert typ == "OK" and data == [b"3 1 4"]


def test_esearch_without_matches_has_count_zero_only(session):
    imap, _mailbox = session
    _fill(imap)
    imap.select("INBOX")
    typ, _data, untagged = _untagged(imap, "SEARCH", "RETURN", "(MIN MAX COUNT)", "FLAGGED")
    assert typ == "OK"
    assert untagged["ESEARCH"][0].endswith(b") COUNT 0")
    _typ, _data, untagged = _untagged(imap, "UID", "SEARCH", "RETURN", "(MIN)", "FLAGGED")
    assert untagged["ESEARCH"][0].endswith(b") UID")


def test_sort_orders_by_each_key_reverse_and_ties_in_mailbox_order(session):
    imap, _mailbox = session
    _fill(imap)
    imap.select("INBOX")

    def sort(criteria: str, *keys: str, uid: bool = False) -> list[int]:
        if uid:
            typ, data = imap.uid("SORT", criteria, "UTF-8", *(keys or ("ALL",)))
        else:
            typ, data = imap.sort(criteria, "UTF-8", *(keys or ("ALL",)))
        assert typ == "OK", data
        return [int(n) for n in data[0].split()]

    assert sort("(ARRIVAL)") == [3, 1, 2, 4]
    assert sort("(REVERSE ARRIVAL)") == [4, 2, 1, 3]
    # DATE: the Date header; missing (3) or unparseable (4): INTERNALDATE instead.
    assert sort("(DATE)") == [3, 2, 1, 4]
    assert sort("(FROM)") == [2, 3, 4, 1]  # addr-mailbox, case-insensitive: amy bob carl zed
    assert sort("(SIZE)") == [3, 2, 1, 4]  # 122, 127, 133, 159 bytes
    # Base subjects (RFC 5256 §2.1): "beta" twice (1, 3), then "alpha", "gamma…".
    assert sort("(SUBJECT)") == [2, 1, 3, 4]
    assert sort("(SUBJECT REVERSE ARRIVAL)") == [2, 1, 3, 4]
    assert sort("(SUBJECT ARRIVAL)") == [2, 3, 1, 4]
    assert sort("(CC)") == [1, 2, 3, 4]  # all equal: mailbox order
    assert sort("(REVERSE CC)") == [1, 2, 3, 4]
    assert sort("(SUBJECT)", "SUBJECT", "beta") == [1, 3]
    # UID SORT answers UIDs: after an expunge they differ from sequence numbers.
    imap.store("2", "+FLAGS", "(\\Deleted)")
    imap.expunge()
    assert sort("(REVERSE SIZE)", uid=True) == [4, 1, 3]
    assert sort("(REVERSE SIZE)") == [3, 1, 2]


def test_sort_with_a_non_ascii_search_string_in_utf8(session):
    imap, _mailbox = session
    raw = _message(sender="x@y.test", subject="=?utf-8?q?caf=C3=A9?=", date=None)
    imap.append("INBOX", None, None, raw)
    imap.append("INBOX", None, None, _message(sender="x@y.test", subject="tea", date=None))
    imap.select("INBOX")
    imap.literal = "café".encode()
    typ, data = imap.sort("(SUBJECT)", "UTF-8", "SUBJECT")
    assert typ == "OK" and data == [b"1"]


def test_thread_orderedsubject_groups_by_base_subject(session):
    imap, _mailbox = session
    _fill(imap)
    imap.append("INBOX", None, None, _message(sender="q@q.test", subject="RE: Beta", date=None))
    imap.select("INBOX")
    typ, data = imap.thread("ORDEREDSUBJECT", "UTF-8", "ALL")
    assert typ == "OK"
    # beta: 3 (sent 1 Mar, from INTERNALDATE) is the parent of 1 and 5; then alpha (2,
    # 1 Mar 10:00), gamma (4). Threads in the sent-date order of their first message.
    assert data == [b"(3 (1)(5))(2)(4)"]
    typ, data = imap.uid("THREAD", "ORDEREDSUBJECT", "UTF-8", "SUBJECT", "alpha")
    assert typ == "OK" and data == [b"(2)"]


def test_thread_references_follows_references_and_in_reply_to(session):
    imap, _mailbox = session
    mails = [
        b"Message-ID: <root@x>\r\nSubject: plan\r\nDate: Mon, 03 Mar 2025 10:00:00 +0000",
        b"Message-ID: <other@x>\r\nSubject: lunch\r\nDate: Mon, 03 Mar 2025 11:00:00 +0000",
        b"Message-ID: <r1@x>\r\nReferences: <root@x>\r\nSubject: Re: plan\r\n"
        b"Date: Mon, 03 Mar 2025 12:00:00 +0000",
        # In-Reply-To only (no References), to a reply.
        b"Message-ID: <r2@x>\r\nIn-Reply-To: <r1@x>\r\nSubject: Re: plan\r\n"
        b"Date: Mon, 03 Mar 2025 13:00:00 +0000",
        # A second reply to the root, sent before r2: siblings are ordered by sent date.
        b"Message-ID: <r3@x>\r\nReferences: <root@x>\r\nSubject: Re: plan\r\n"
        b"Date: Mon, 03 Mar 2025 12:30:00 +0000",
        # No references, but "Re: lunch": merged into lunch's thread by subject (step 6).
        b"Message-ID: <r4@x>\r\nSubject: Re: lunch\r\nDate: Mon, 03 Mar 2025 14:00:00 +0000",
    ]
    for mail in mails:
        assert imap.append("INBOX", None, None, mail + b"\r\n\r\nbody\r\n")[0] == "OK"
    imap.select("INBOX")
    typ, data = imap.thread("REFERENCES", "US-ASCII", "ALL")
    assert typ == "OK"
    assert data == [b"(1 (3 4)(5))(2 6)"]
    # Expunging the root leaves its replies as one thread under a dummy (RFC 5256 §4).
    imap.store("1", "+FLAGS", "(\\Deleted)")
    imap.expunge()
    typ, data = imap.thread("REFERENCES", "US-ASCII", "ALL")
    assert data == [b"(1 5)((2 3)(4))"]
    typ, data = imap.uid("THREAD", "REFERENCES", "US-ASCII", "ALL")
    assert data == [b"(2 6)((3 4)(5))"]


def _list(imap: imaplib.IMAP4, *words: str) -> tuple[dict[str, bytes], list[bytes]]:
    """LIST-EXTENDED: {name: response line} and the STATUS lines."""
    typ, _data, untagged = _untagged(imap, "LIST", *words)
    assert typ == "OK"
    listed = {}
    for line in untagged.get("LIST", []):
        name = line.rsplit(b" ", 1)[-1] if b'"CHILDINFO"' not in line else line.split(b" ")[2]
        listed[name.strip(b'"').decode()] = line
    return listed, untagged.get("STATUS", [])


def test_list_extended_selection_return_options_and_status(session):
    imap, _mailbox = session
    for name in ("Work", "Work/2025", "Work/2026", "Old"):
        assert imap.create(name)[0] == "OK"
    imap.subscribe("Work/2025")
    imap.subscribe("Old")
    imap.delete("Old")  # still subscribed: \NonExistent (RFC 5258 §3.1)
    _fill(imap, "Work/2025")
    listed, _status = _list(imap, "(SUBSCRIBED)", '""', "*")
    assert b"(\\Subscribed)" in listed["Work/2025"]
    assert b"(\\NonExistent \\Subscribed)" in listed["Old"]
    assert "Work" not in listed and "INBOX" in listed  # INBOX is subscribed by default
    # RECURSIVEMATCH: Work matches "%" but is not subscribed; its subscribed child does not
    # match "%": Work is listed with CHILDINFO (RFC 5258 §3.5).
    listed, _status = _list(imap, "(SUBSCRIBED RECURSIVEMATCH)", '""', "%")
    assert listed["Work"] == b'() "/" Work ("CHILDINFO" ("SUBSCRIBED"))'
    assert b"\\Subscribed" not in listed["Work"]
    # Several patterns, RETURN (CHILDREN SUBSCRIBED) on the plain selection.
    listed, _status = _list(imap, '""', "(Work Work/2026)", "RETURN", "(CHILDREN SUBSCRIBED)")
    assert set(listed) == {"Work", "Work/2026"}
    assert b"(\\HasChildren)" in listed["Work"]
    assert b"(\\HasNoChildren)" in listed["Work/2026"]
    # LIST-STATUS: a STATUS response after each selectable mailbox's LIST response.
    listed, status = _list(imap, '""', "Work/%", "RETURN", "(STATUS (MESSAGES UNSEEN UIDNEXT))")
    assert set(listed) == {"Work/2025", "Work/2026"}
    assert b"Work/2025 (MESSAGES 4 UNSEEN 4 UIDNEXT 5)" in status
    assert b"Work/2026 (MESSAGES 0 UNSEEN 0 UIDNEXT 1)" in status
    # SPECIAL-USE (RFC 6154 §3): the selection option lists only special-use folders.
    listed, _status = _list(imap, "(SPECIAL-USE)", '""', "*")
    assert "Work" not in listed and "INBOX" not in listed
    assert b"\\Sent" in listed["Sent"]
    # The plain form is unchanged (pymap's, with \HasChildren/\HasNoChildren, RFC 3348).
    typ, data = imap.list('""', "Work")
    assert typ == "OK" and b"\\HasChildren" in data[0]


def test_list_status_follows_another_sessions_append(imap_server, session):
    imap, mailbox = session
    imap.create("Shared")
    with imap_server.client() as other:
        other.login(mailbox.address, PASSWORD)
        other.append("Shared", None, None, _message(sender="a@b.test", subject="s", date=None))
    _listed, status = _list(imap, '""', "Shared", "RETURN", "(STATUS (MESSAGES))")
    assert status == [b"Shared (MESSAGES 1)"]


# -- hostile input -------------------------------------------------------------------------

HOSTILE_SELECTED = [
    # SORT: criteria missing, empty, unknown, REVERSE without a key, not parenthesised.
    (b"SORT", b"BAD"),
    (b"SORT () UTF-8 ALL", b"BAD"),
    (b"SORT (BOGUS) UTF-8 ALL", b"BAD"),
    (b"SORT (REVERSE) UTF-8 ALL", b"BAD"),
    (b"SORT (REVERSE REVERSE SIZE) UTF-8 ALL", b"BAD"),
    (b"SORT SUBJECT UTF-8 ALL", b"BAD"),
    (b"SORT (SUBJECT) UTF-8", b"BAD"),
    (b"SORT (SUBJECT", b"BAD"),
    (b"SORT (" + b" ".join([b"REVERSE SIZE"] * 5000) + b") UTF-8 ALL", b"OK"),
    (b"SORT (SIZE ) UTF-8 ALL", b"BAD"),
    (b"UID SORT (SUBJECT) UTF-8 1:*:*", b"BAD"),
    # Unknown charsets: NO [BADCHARSET], for SORT, THREAD and SEARCH alike.
    (b"SORT (SUBJECT) X-NO-SUCH-CHARSET ALL", b"NO"),
    (b"SORT (SUBJECT) rot13 ALL", b"NO"),
    (b'SORT (SUBJECT) "" ALL', b"NO"),
    (b"THREAD ORDEREDSUBJECT X-NO-SUCH-CHARSET ALL", b"NO"),
    (b"SEARCH CHARSET X-NO-SUCH-CHARSET ALL", b"NO"),
    # THREAD: algorithms not offered, missing parts.
    (b"THREAD X-UNKNOWN UTF-8 ALL", b"BAD"),
    (b"THREAD (REFERENCES) UTF-8 ALL", b"BAD"),
    (b"THREAD", b"BAD"),
    (b"THREAD ORDEREDSUBJECT", b"BAD"),
    # ESEARCH: options outside RFC 4731 (SAVE is SEARCHRES, not offered), bad syntax.
    (b"SEARCH RETURN (SAVE) ALL", b"BAD"),
    (b"SEARCH RETURN (PARTIAL 1:10) ALL", b"BAD"),
    (b"SEARCH RETURN (MIN ALL", b"BAD"),
    (b"SEARCH RETURN MIN ALL", b"BAD"),
    (b"SEARCH RETURN (MIN)", b"BAD"),
    (b"SEARCH RETURN (" + b" ".join([b"MIN"] * 5000) + b") ALL", b"OK"),
    # CONDSTORE (RFC 7162): values beyond 2^63 - 1, negative or not numbers, modifiers
    # and parameters of extensions not offered (QRESYNC's VANISHED, SELECT QRESYNC).
    (b"FETCH 1:* (FLAGS) (CHANGEDSINCE 99999999999999999999999999)", b"BAD"),
    (b"FETCH 1:* (FLAGS) (CHANGEDSINCE 9223372036854775808)", b"BAD"),
    (b"FETCH 1:* (FLAGS) (CHANGEDSINCE -1)", b"BAD"),
    (b"FETCH 1:* (FLAGS) (CHANGEDSINCE abc)", b"BAD"),
    (b"FETCH 1:* (FLAGS) (CHANGEDSINCE)", b"BAD"),
    (b"FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)", b"BAD"),
    (b"UID FETCH 1:* (FLAGS) (X-BOGUS 1)", b"BAD"),
    (b"SEARCH MODSEQ 18446744073709551616", b"BAD"),
    (b"SEARCH MODSEQ", b"BAD"),
    (b'SEARCH MODSEQ "/flags/\\\\seen" bogus 5', b"BAD"),
    (b"STORE 1 (UNCHANGEDSINCE 99999999999999999999) +FLAGS (\\Seen)", b"BAD"),
    (b"STORE 1 (UNCHANGEDSINCE x) +FLAGS (\\Seen)", b"BAD"),
    (b"STORE 1 (X-BOGUS 1) +FLAGS (\\Seen)", b"BAD"),
    (b"SELECT INBOX (QRESYNC (1 2))", b"BAD"),
    (b"FETCH 1 (FLAGS)", b"OK"),  # still selected after the BAD SELECT
    # CHANGEDSINCE on a connection that never enabled CONDSTORE enables it (§3.1).
    (b"FETCH 1:* (FLAGS) (CHANGEDSINCE 1)", b"OK"),
    (b"STORE 1 (UNCHANGEDSINCE 0) +FLAGS (\\Seen)", b"OK"),  # [MODIFIED 1]
    (b"SEARCH MODSEQ 9223372036854775807", b"OK"),
    (b"STATUS INBOX (HIGHESTMODSEQ MESSAGES)", b"OK"),
    # ENABLE is refused once a mailbox is selected (RFC 5161 §3.1).
    (b"ENABLE CONDSTORE", b"BAD"),
]

HOSTILE_AUTHENTICATED = [
    (b"ENABLE", b"BAD"),
    (b"ENABLE (CONDSTORE)", b"BAD"),
    (b"ENABLE " + b"X " * 5000, b"OK"),
    (b"SORT (SUBJECT) UTF-8 ALL", b"BAD"),  # no mailbox selected
    (b"THREAD ORDEREDSUBJECT UTF-8 ALL", b"BAD"),
    (b'LIST (RECURSIVEMATCH) "" *', b"BAD"),
    (b'LIST (RECURSIVEMATCH REMOTE) "" *', b"BAD"),
    (b'LIST (BOGUS) "" *', b"BAD"),
    (b'LIST "" "" RETURN (BOGUS)', b"BAD"),
    (b'LIST "" * RETURN (STATUS)', b"BAD"),
    (b'LIST "" * RETURN (STATUS ())', b"BAD"),
    (b'LIST "" * RETURN (STATUS (BOGUS))', b"BAD"),
    (b'LIST "" * RETURN (STATUS (MESSAGES)', b"BAD"),
    (b'LIST "" (', b"BAD"),
    (b'LIST "" ()', b"BAD"),
    (b'LIST "" (' + b"a " * 100 + b")", b"BAD"),
    (b'LIST "" (' + b"%" * 2000 + b" *)", b"NO"),
    (b'LIST () "" (INBOX)', b"OK"),
    (b'LIST (REMOTE) "" ""', b"OK"),
    (b'LIST "" ("&Jjo" "&Jjo-")', b"OK"),
    (b'LIST (SUBSCRIBED) "" * RETURN (STATUS (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN))', b"OK"),
]


@pytest.fixture
def hostile(imap_server: Any, make_mailbox: Any) -> Iterator[HostileClient]:
    mailbox = make_mailbox()
    client = HostileClient(imap_server.host, imap_server.tls_port)
    status, _ = client.command(b'LOGIN "%b" "%b"' % (mailbox.address.encode(), PASSWORD.encode()))
    assert status == b"OK"
    yield client
    client.close()


def _answers(client: HostileClient, line: bytes) -> tuple[bytes, list[bytes]]:
    """The command's answer; a NOOP after it, since 5 BADs in a row end a session."""
    status, lines = client.command(line)
    assert client.command(b"NOOP")[0] == b"OK"
    return status, lines


def test_hostile_extension_arguments_answer_bad_or_no(hostile, server_errors):
    for line, expected in HOSTILE_AUTHENTICATED:
        status, lines = _answers(hostile, line)
        assert status == expected, (line[:80], lines[-1:])
    raw = _message(sender="a@b.test", subject="x", date=None)
    status, _ = hostile.command(b"APPEND INBOX {%d+}\r\n%b" % (len(raw), raw))
    assert status == b"OK"
    assert hostile.command(b"SELECT INBOX")[0] == b"OK"
    for line, expected in HOSTILE_SELECTED:
        status, lines = _answers(hostile, line)
        assert status in expected.split(), (line[:80], lines[-1:])
        if line.startswith(b"SORT (SUBJECT) X-NO"):
            assert b"[BADCHARSET (US-ASCII UTF-8)]" in lines[-1]
    assert hostile.command(b"NOOP")[0] == b"OK"  # the connection is still in service
    assert server_errors() == []


def test_sort_and_thread_survive_malformed_headers(session, server_errors):
    imap, _mailbox = session
    broken = [
        b'From: "unterminated <a@b\r\nSubject: =?x-unknown?q?abc?=\r\nDate: 99 Foo 99999\r\n\r\nx',
        b"From: ;;;,,,@@@\r\nCc: group: ;\r\nSubject: \xff\xfe bytes\r\n\r\ny",
        b"Subject: [fwd: [fwd: [fwd: ]]]\r\nDate: Thu, 01 Jan 1970 00:00:00 -2400\r\n\r\nz",
        b"no header at all",
    ]
    for raw in broken:
        assert imap.append("INBOX", None, None, raw)[0] == "OK"
    imap.select("INBOX")
    for criteria in ("(FROM)", "(TO)", "(CC)", "(SUBJECT)", "(DATE)", "(REVERSE DATE SIZE)"):
        typ, data = imap.sort(criteria, "US-ASCII", "ALL")
        assert typ == "OK" and sorted(data[0].split()) == [b"1", b"2", b"3", b"4"]
    typ, data = imap.thread("ORDEREDSUBJECT", "US-ASCII", "ALL")
    assert typ == "OK" and data[0].startswith(b"(")
    assert server_errors() == []
