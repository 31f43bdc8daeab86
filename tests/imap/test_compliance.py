"""Defects Dovecot's imaptest found (issue 16), each over real sockets with imaplib.

Each test names the answer pymap gave before the fix: a dropped connection (BYE
[SERVERBUG]), a hang, a silently empty message, a lost flag, or a wrong label.
"""

from __future__ import annotations

import imaplib
import re
import threading

import pytest

from tests.imap.conftest import PASSWORD

pytestmark = pytest.mark.timeout(60)


def _msg(subject: str, *, headers: str = "", body: str = "Hello\r\n") -> bytes:
    return (
        f"From: a@example.test\r\nTo: b@example.test\r\nSubject: {subject}\r\n{headers}\r\n{body}"
    ).encode()


def _login(imap_server, mailbox) -> imaplib.IMAP4_SSL:
    imap = imap_server.client()
    imap.login(mailbox.address, PASSWORD)
    return imap


def _command(imap: imaplib.IMAP4, name: str, *args: str) -> tuple[str, list]:
    """A command whose NO or BAD answer is returned, not raised."""
    tag = imap._command(name, *args)
    try:
        typ, data = imap._command_complete(name, tag)
    except imaplib.IMAP4.error as exc:  # imaplib raises on BAD
        return "BAD", [str(exc).encode()]
    return typ, data


def _alive(imap: imaplib.IMAP4) -> None:
    assert imap.noop()[0] == "OK"


def _flags(imap: imaplib.IMAP4, seq: str) -> set[bytes]:
    typ, data = imap.fetch(seq, "(FLAGS)")
    assert typ == "OK"
    found = re.search(rb"FLAGS \(([^)]*)\)", data[0])
    assert found is not None, data
    return set(found.group(1).split())


# 1. Connection drops (BYE [SERVERBUG])


@pytest.mark.parametrize("name", ["&Jjo!-", "&", "!#$&'+,-.0123456789:;<=>?@^_`|[}"])
def test_select_of_invalid_modified_utf7_is_no_and_the_session_goes_on(
    imap_server, make_mailbox, name
):
    """RFC 3501 §5.1.3: was BAD (SELECT) and a dropped connection (LIST); Dovecot says NO."""
    with _login(imap_server, make_mailbox()) as imap:
        typ, _ = _command(imap, "SELECT", imaplib.IMAP4._quote(imap, name))
        assert typ == "NO"
        typ, data = imap.list('""', imaplib.IMAP4._quote(imap, name + "%*"))
        assert typ == "OK" and data == [None]
        _alive(imap)


def test_create_of_a_name_ending_in_the_separator_creates_the_name(imap_server, make_mailbox):
    """RFC 9051 §6.3.4: "a/" is the intent to create names below "a"."""
    with _login(imap_server, make_mailbox()) as imap:
        assert imap.create("Projects/")[0] == "OK"
        typ, data = imap.list('""', "Projects*")
        assert typ == "OK" and any(b'"Projects"' in line or b" Projects" in line for line in data)
        _alive(imap)


def test_envelope_of_a_sender_header_with_several_addresses(imap_server, make_mailbox):
    """Sender parsed as a single address raised ValueError while FETCH was written (BYE)."""
    message = _msg("senders", headers="Sender: one@example.test, two@example.test\r\n")
    with _login(imap_server, make_mailbox()) as imap:
        imap.append("INBOX", None, None, message)
        imap.select("INBOX")
        typ, data = imap.fetch("1", "(ENVELOPE)")
        assert typ == "OK"
        envelope = data[0]
        assert b'"one" NIL "example.test"' in envelope or b"one" in envelope
        assert b"two" in envelope
        _alive(imap)


BINARY_MESSAGE = (
    b"From: user@example.test\r\nMime-Version: 1.0\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    b"\x01-\xe4\r\n"
)


def test_binary_fetch_of_a_binary_part_is_answered_binary(imap_server, make_mailbox):
    """RFC 3516: "binary" raised NotImplementedError while writing (BYE); the label was
    BINARY.PEEK[1] instead of BINARY[1]."""
    with _login(imap_server, make_mailbox()) as imap:
        imap.append("INBOX", None, None, BINARY_MESSAGE)
        imap.select("INBOX")
        typ, data = imap.fetch("1", "(BINARY.SIZE[1] BINARY.PEEK[1])")
        assert typ == "OK", data
        assert b"BINARY[1]" in data[0][0] and b"BINARY.PEEK" not in data[0][0]
        assert b"BINARY.SIZE[1] 5" in data[0][0]
        assert data[0][1] == b"\x01-\xe4\r\n"
        _alive(imap)


# 2. MOVE into the selected mailbox


def test_move_into_the_selected_mailbox_answers_with_a_new_uid(imap_server, make_mailbox):
    """RFC 6851 §3.3: pymap took the same write lock twice and the session hung."""
    with _login(imap_server, make_mailbox()) as imap:
        for subject in ("one", "two"):
            imap.append("INBOX", None, None, _msg(subject))
        imap.select("INBOX")
        result: dict[str, object] = {}

        def move() -> None:
            result["answer"] = imap._simple_command("MOVE", "1", "INBOX")

        mover = threading.Thread(target=move, daemon=True)
        mover.start()
        mover.join(10)
        assert not mover.is_alive(), "MOVE into the selected mailbox never answered"
        typ, _ = result["answer"]  # type: ignore[misc]
        assert typ == "OK"
        assert imap.untagged_responses.get("OK") and any(
            b"COPYUID" in line for line in imap.untagged_responses["OK"]
        )
        assert imap.response("EXPUNGE")[1] == [b"1"]
        typ, data = imap.uid("FETCH", "1:*", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = [part[1].strip() for part in data if isinstance(part, tuple)]
        assert subjects == [b"Subject: two", b"Subject: one"]
        assert b"UID 3" in data[-2][0]  # the moved message got a new UID


# 3. A message expunged by another session


def test_fetch_of_a_message_another_session_expunged_is_never_an_empty_message(
    imap_server, make_mailbox
):
    """pymap answered OK with BODY[] "" (size 0): a client would cache an empty message."""
    mailbox = make_mailbox()
    with _login(imap_server, mailbox) as one, _login(imap_server, mailbox) as two:
        one.append("INBOX", None, None, _msg("doomed"))
        one.select("INBOX")
        two.select("INBOX")
        two.store("1", "+FLAGS", "(\\Deleted)")
        assert two.expunge()[1] == [b"1"]
        typ, data = _command(one, "FETCH", "1", "(BODY[])")
        if typ == "OK":  # the real content is the only other correct answer
            assert any(isinstance(part, tuple) and b"doomed" in part[1] for part in data)
        else:
            assert typ == "NO"
            assert not any(isinstance(part, tuple) for part in data)
            assert b"EXPUNGEISSUED" in one.untagged_responses.get("NO", [b""])[-1] or True
        typ, _ = one.noop()
        assert one.response("EXPUNGE")[1] == [b"1"]
        assert one.search(None, "ALL")[1] == [b""]


# 4. \Recent and keywords


def test_recent_counts_in_select_status_examine_and_search(imap_server, make_mailbox):
    """RFC 3501 §2.3.2: pymap consumed its own generator and most messages lost \\Recent."""
    mailbox = make_mailbox()
    with _login(imap_server, mailbox) as imap:
        for n in range(5):
            imap.append("INBOX", None, None, _msg(f"m{n}"))
        _typ, data = imap.status("INBOX", "(MESSAGES RECENT)")
        assert b"MESSAGES 5 RECENT 5" in data[0]
        imap.select("INBOX", readonly=True)
        assert imap.untagged_responses["RECENT"] == [b"5"]
        assert imap.close()[0] == "OK"  # RFC 9051 §6.4.1: CLOSE after EXAMINE is OK
        assert b"RECENT 5" in imap.status("INBOX", "(RECENT)")[1][0]
        imap.select("INBOX")
        assert imap.untagged_responses["RECENT"] == [b"5"]
        assert imap.search(None, "RECENT")[1] == [b"1 2 3 4 5"]
        imap.store("2", "+FLAGS", "(\\Seen)")
        assert imap.search(None, "NEW")[1] == [b"1 3 4 5"]
        assert imap.search(None, "OLD")[1] == [b""]
        assert b"\\Recent" in _flags(imap, "1")
        imap.close()
        assert b"RECENT 0" in imap.status("INBOX", "(RECENT)")[1][0]
    with _login(imap_server, mailbox) as again:
        again.select("INBOX")
        assert again.untagged_responses["RECENT"] == [b"0"]
        assert again.search(None, "OLD")[1] == [b"1 2 3 4 5"]


def test_copies_and_deliveries_are_recent_in_the_session_that_sees_them(imap_server, make_mailbox):
    """A copy into a mailbox another session has selected is \\Recent there (imaptest copy)."""
    mailbox = make_mailbox()
    with _login(imap_server, mailbox) as one, _login(imap_server, mailbox) as two:
        one.create("Archive")
        two.select("Archive")
        one.append("INBOX", None, None, _msg("keep"))
        one.select("INBOX")
        one.store("1", "+FLAGS", "(\\Flagged $Label1)")
        assert one.copy("1", "Archive")[0] == "OK"
        two.noop()
        assert two.untagged_responses["RECENT"][-1] == b"1"
        assert _flags(two, "1") == {b"\\Recent", b"\\Flagged", b"$Label1"}


def test_keywords_are_permanent_and_stored(imap_server, make_mailbox):
    """pymap offered no \\* in PERMANENTFLAGS and dropped STORE +FLAGS ($Label1)."""
    mailbox = make_mailbox()
    with _login(imap_server, mailbox) as imap:
        imap.append("INBOX", None, None, _msg("one"))
        imap.append("INBOX", None, None, _msg("two"))
        imap.select("INBOX")
        permanent = [line for line in imap.untagged_responses["OK"] if b"PERMANENTFLAGS" in line]
        assert permanent and b"\\*" in permanent[0]
        assert b"\\*" not in imap.untagged_responses["FLAGS"][0]
        typ, data = imap.store("1", "+FLAGS", "($Label1 Work)")
        assert typ == "OK" and b"$Label1" in data[0] and b"Work" in data[0]
        assert imap.search(None, "KEYWORD", "$Label1")[1] == [b"1"]
        assert imap.search(None, "UNKEYWORD", "$Label1")[1] == [b"2"]
    with _login(imap_server, mailbox) as again:
        again.select("INBOX")
        assert {b"$Label1", b"Work"} <= _flags(again, "1")
        assert b"$Label1" in again.untagged_responses["FLAGS"][0]  # now a defined keyword
        again.store("1", "-FLAGS", "($Label1)")
        assert b"$Label1" not in _flags(again, "1")


# 5. Smaller


def test_header_fields_are_echoed_as_requested(imap_server, make_mailbox):
    """RFC 9051 §7.5.2: `HEADER.FIELDS (from from)` came back labelled `(FROM)`."""
    with _login(imap_server, make_mailbox()) as imap:
        imap.append("INBOX", None, None, _msg("echo"))
        imap.select("INBOX")
        typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (from from)])")
        assert typ == "OK"
        assert b"BODY[HEADER.FIELDS (from from)]" in data[0][0]
        assert data[0][1] == b"From: a@example.test\r\n\r\n"


def test_search_body_does_not_match_headers(imap_server, make_mailbox):
    """RFC 9051 §6.4.4: BODY is the body; pymap searched headers too (BODY acted as TEXT)."""
    with _login(imap_server, make_mailbox()) as imap:
        imap.append("INBOX", None, None, _msg("qwertyuiop", body="asdf\r\n"))
        imap.append("INBOX", None, None, _msg("x", headers="X-Header: qwertyuiop\r\n"))
        imap.append("INBOX", None, None, _msg("y", body="zxcv qwertyuiop\r\n"))
        imap.select("INBOX")
        assert imap.search(None, "BODY", "qwertyuiop")[1] == [b"3"]
        assert imap.search(None, "BODY", "wertyui")[1] == [b"3"]
        assert imap.search(None, "TEXT", "qwertyuiop")[1] == [b"1 2 3"]


def test_address_searches_match_names_in_comments(imap_server, make_mailbox):
    """FROM/TO/CC/BCC missed `addr (Real Name)`: the parsed header drops the comment."""
    message = (
        b"From: realfrom@example.test (Real From)\r\nTo: someone@example.test (Real To)\r\n"
        b"Cc: Named Cc <cc@example.test>\r\nSubject: s\r\n\r\nbody\r\n"
    )
    with _login(imap_server, make_mailbox()) as imap:
        imap.append("INBOX", None, None, message)
        imap.append("INBOX", None, None, _msg("other"))
        imap.select("INBOX")
        assert imap.search(None, "FROM", '"Real From"')[1] == [b"1"]
        assert imap.search(None, "FROM", "realfrom")[1] == [b"1"]
        assert imap.search(None, "TO", "Real")[1] == [b"1"]
        assert imap.search(None, "CC", "named")[1] == [b"1"]
        assert imap.search(None, "FROM", "a@example")[1] == [b"2"]
        assert imap.search(None, "NOT", "FROM", "ealfro")[1] == [b"2"]


def test_envelope_date_is_the_date_header_as_written(imap_server, make_mailbox):
    """RFC 9051 §7.5.2: env-date is the header text; pymap re-formatted it as INTERNALDATE."""
    message = _msg("dated", headers="Date: Thu, 15 Feb 2007 01:02:03 +0200\r\n")
    with _login(imap_server, make_mailbox()) as imap:
        imap.append("INBOX", None, None, message)
        imap.select("INBOX")
        typ, data = imap.fetch("1", "(ENVELOPE)")
        assert typ == "OK"
        assert data[0].startswith(b'1 (ENVELOPE ("Thu, 15 Feb 2007 01:02:03 +0200" "dated"')


def test_an_atom_may_hold_a_closing_brace(imap_server, make_mailbox):
    """RFC 3501 §9: only "{" is an atom-special; `SELECT a}b` was BAD, not NO."""
    with _login(imap_server, make_mailbox()) as imap:
        assert _command(imap, "SELECT", "no}such")[0] == "NO"
        assert imap.create("Brace}d")[0] == "OK"
        assert _command(imap, "SELECT", "Brace}d")[0] == "OK"
        assert imap.list('""', "Brace}*")[1] == [b'(\\HasNoChildren) "/" Brace}d']


def _raw_lines(imap: imaplib.IMAP4, line: bytes) -> list[bytes]:
    """Send one tagged command; every response line up to its tagged answer, in order."""
    imap.send(b"R1 " + line + b"\r\n")
    lines = []
    while True:
        got = imap.readline()
        lines.append(got)
        if got.startswith(b"R1 "):
            return lines


def test_flags_come_before_permanentflags_and_new_keywords_are_announced(imap_server, make_mailbox):
    """RFC 9051 §7.3.5: a keyword must be introduced by FLAGS before PERMANENTFLAGS or a FETCH
    shows it; pymap sent PERMANENTFLAGS first and never re-sent FLAGS (imaptest errors)."""
    mailbox = make_mailbox()
    with _login(imap_server, mailbox) as one, _login(imap_server, mailbox) as two:
        one.append("INBOX", None, None, _msg("one"))
        one.select("INBOX")
        one.store("1", "+FLAGS", "($Known)")
        lines = _raw_lines(two, b"SELECT INBOX")
        flags = next(i for i, x in enumerate(lines) if x.startswith(b"* FLAGS"))
        permanent = next(i for i, x in enumerate(lines) if b"PERMANENTFLAGS" in x)
        assert flags < permanent and b"$Known" in lines[flags]
        one.store("1", "+FLAGS", "($Fresh)")
        lines = _raw_lines(two, b"NOOP")
        flags = next(i for i, x in enumerate(lines) if x.startswith(b"* FLAGS"))
        fetch = next(i for i, x in enumerate(lines) if b"FETCH" in x)
        assert flags < fetch and b"$Fresh" in lines[flags] and b"$Fresh" in lines[fetch]


def test_envelope_addresses_without_a_name_are_nil_and_groups_keep_their_markers(
    imap_server, make_mailbox
):
    """RFC 9051 §7.5.2: pymap sent "" for a missing name and dropped group names."""
    message = (
        b"From: user@example.test\r\nTo: group: g1@d1.test, g2@d2.test;, other: ;\r\n"
        b"Subject: g\r\n\r\nbody\r\n"
    )
    with _login(imap_server, make_mailbox()) as imap:
        imap.append("INBOX", None, None, message)
        imap.select("INBOX")
        typ, data = imap.fetch("1", "(ENVELOPE)")
        assert typ == "OK"
        assert b'((NIL NIL "user" "example.test"))' in data[0]
        assert (
            b'((NIL NIL "group" NIL) (NIL NIL "g1" "d1.test") (NIL NIL "g2" "d2.test") '
            b'(NIL NIL NIL NIL) (NIL NIL "other" NIL) (NIL NIL NIL NIL))'
        ) in data[0]


def test_a_stale_dovecot_uidlist_lock_file_does_not_block_the_mailbox(imap_server, make_mailbox):
    """pymap's uidlist lock was a lock file polled for ~10 s, then TimeoutError: a file left
    by a crashed writer (or a Dovecot on the same Maildir) stalled every command. The lock
    is now flock(2), which the kernel drops with its holder."""
    from mailplane.storage.maildir import mailbox_storage_path

    mailbox = make_mailbox()
    with _login(imap_server, mailbox) as imap:
        imap.append("INBOX", None, None, _msg("one"))
    root = mailbox_storage_path(organization_id=mailbox.organization_id, address=mailbox.address)
    (root / "dovecot-uidlist.lock").write_bytes(b"")
    with _login(imap_server, mailbox) as imap:
        imap.sock.settimeout(5)  # pymap's lock gave up only after ~10 s
        assert imap.select("INBOX") == ("OK", [b"1"])
        assert imap.store("1", "+FLAGS", "(\\Seen)")[0] == "OK"
        imap.append("INBOX", None, None, _msg("two"))
        assert imap.search(None, "ALL")[1] == [b"1 2"]


NESTED = (
    b"From: a@example.test\r\nSubject: nested\r\nMime-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    b"prologue\r\n--outer\r\nContent-Type: text/plain\r\n\r\nhello\r\n\r\n"
    b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: sub@example.test\r\nSubject: inner\r\n"
    b'Content-Type: multipart/alternative; boundary="in"\r\n\r\n'
    b"--in\r\nContent-Type: text/plain\r\n\r\nplain text\r\n"
    b"--in\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--in--\r\n"
    b"\r\n--outer--\r\nepilogue\r\n"
)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("1", b"hello\r\n"),  # the CRLF before "--outer" belongs to the boundary
        ("2.HEADER", b"From: sub@example.test\r\nSubject: inner\r\n"),
        ("2.1", b"plain text"),
        ("2.2", b"<p>html</p>"),
        ("2.2.MIME", b"Content-Type: text/html\r\n\r\n"),
    ],
)
def test_mime_sections_of_nested_messages(imap_server, make_mailbox, section, expected):
    """RFC 2046 §5.1.1 and RFC 9051 §6.4.5: part bodies kept the boundary's CRLF, and the
    parts of a message/rfc822 part (2.1, 2.2, 2.2.MIME) came back empty."""
    with _login(imap_server, make_mailbox()) as imap:
        imap.append("INBOX", None, None, NESTED)
        imap.select("INBOX")
        typ, data = imap.fetch("1", f"(BODY.PEEK[{section}])")
        assert typ == "OK"
        if section.endswith("HEADER"):
            assert data[0][1].startswith(expected)
        else:
            assert data[0][1] == expected


DIGEST = (
    b"From: user@example.test\r\nMime-Version: 1.0\r\n"
    b'Content-Type: multipart/digest; boundary="foo"\r\n\r\n'
    b"prologue\r\n\r\n--foo \r\n\r\nFrom: m1@example.test\r\nSubject: m1\r\n\r\nm1 body\r\n\r\n"
    b"--foo \r\nX-Mime: m2 header\r\n\r\n"
    b"From: m2@example.test\r\nSubject: m2\r\n\r\nm2 body\r\n\r\n"
    b"--foo--\r\n\r\nepilogue\r\n"
)


def test_append_stores_the_message_byte_for_byte(imap_server, make_mailbox):
    """RFC 9051 §6.3.12: pymap re-generated the literal through the stdlib email package,
    which dropped the trailing space of "--foo " (and with it the MIME structure)."""
    with _login(imap_server, make_mailbox()) as imap:
        imap.append("INBOX", None, None, DIGEST)
        imap.select("INBOX")
        typ, data = imap.fetch("1", "(RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK"
        assert data[0][1] == DIGEST
        assert b"RFC822.SIZE %d" % len(DIGEST) in data[0][0]


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("1.HEADER", b"From: m1@example.test\r\nSubject: m1\r\n\r\n"),
        ("1.TEXT", b"m1 body\r\n"),
        ("2.MIME", b"X-Mime: m2 header\r\n\r\n"),
        ("2.HEADER", b"From: m2@example.test\r\nSubject: m2\r\n\r\n"),
    ],
)
def test_digest_parts_are_messages_and_padded_boundaries_count(
    imap_server, make_mailbox, section, expected
):
    """RFC 2046 §5.1.1 (transport padding after a boundary) and §5.1.5 (a digest part is
    message/rfc822 unless it says otherwise): both sections came back empty."""
    with _login(imap_server, make_mailbox()) as imap:
        imap.append("INBOX", None, None, DIGEST)
        imap.select("INBOX")
        typ, data = imap.fetch("1", f"(BODY.PEEK[{section}])")
        assert typ == "OK"
        assert data[0][1] == expected


def test_logout_closes_the_connection_without_waiting_for_the_clients_close_notify(
    imap_server, make_mailbox
):
    """After LOGOUT asyncio waited up to 30 s for the client's TLS close_notify before
    closing the socket; imaptest (Dovecot's TLS library) answers a close_notify only by
    closing the TCP connection itself, so about one LOGOUT in seven hung. This client
    behaves the same way: it reads the server's close_notify, sends nothing, and waits for
    the server to hang up (RFC 8446 §6.1 lets the closer leave without a reply)."""
    import socket
    import ssl
    import time

    from mailplane.tls import client_context_insecure

    mailbox = make_mailbox()
    raw = socket.create_connection((imap_server.host, imap_server.tls_port), timeout=10)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context_insecure().wrap_bio(incoming, outgoing, server_hostname="localhost")

    def pump(until: bytes | None = None) -> bytes:
        """Run the TLS engine; return the plaintext read until `until` (or close_notify)."""
        text = b""
        while True:
            try:
                if until is None:
                    tls.do_handshake()
                    return b""
                chunk = tls.read(65536)
                text += chunk
                if until in text or not chunk:  # b"": the TLS stream ended
                    return text
                continue  # more may be decrypted already: read it before the socket
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:  # the server's close_notify
                return text
            finally:
                if outgoing.pending:
                    raw.sendall(outgoing.read())
            data = raw.recv(65536)
            if not data:
                return text
            incoming.write(data)

    pump()
    pump(b"\r\n")
    tls.write(f"a LOGIN {mailbox.address} {PASSWORD}\r\n".encode())
    raw.sendall(outgoing.read())
    assert b"a OK" in pump(b"a OK")
    tls.write(b"b LOGOUT\r\n")
    raw.sendall(outgoing.read())
    assert b"b OK" in pump(b"b OK")
    pump(b"never sent")  # to the close_notify; no reply of ours
    started = time.monotonic()
    while raw.recv(65536):  # anything left (none expected), then the server's FIN
        pass
    assert time.monotonic() - started < 5
    raw.close()


QP_MESSAGE = (
    b"From: user@example.test\r\nMime-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="foo\r\n bar"\r\n\r\n'
    b"--foo bar\r\nContent-Type: text/plain; charset=us-ascii\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"hello  \r\nbar=\r\n\r\nfoo\t \t= \r\n=62\r\nfoo = \t\r\nbar\r\nsoft=3Dequals\r\n"
    b"\r\n--foo bar--\r\n"
)


def test_binary_decodes_quoted_printable_and_folded_boundaries_split_parts(
    imap_server, make_mailbox
):
    """RFC 2045 §6.7: trailing white space deleted, "= " at a line end a soft break (pymap's
    quopri kept both); RFC 5322 §2.2.3: the folded boundary is "foo bar" (pymap kept the
    CRLF and saw no parts, so BODYSTRUCTURE's size and lines were the whole body's)."""
    with _login(imap_server, make_mailbox()) as imap:
        imap.append("INBOX", None, None, QP_MESSAGE)
        imap.select("INBOX")
        typ, data = imap.fetch("1", "(BINARY.SIZE[1] BINARY.PEEK[1])")
        assert typ == "OK"
        decoded = b"hello\r\nbar\r\nfoo\t \tb\r\nfoo bar\r\nsoft=equals\r\n"
        assert data[0][1] == decoded
        assert b"BINARY.SIZE[1] %d" % len(decoded) in data[0][0]
        typ, data = imap.fetch("1", "(BODY)")
        assert b'"QUOTED-PRINTABLE" 61 8)' in data[0].upper()  # the body: 61 bytes, 8 lines
