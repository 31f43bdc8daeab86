"""A domain error raised in a service reaches an IMAP client as its own rendering
(core/errors.py `imap_response`, through imap/errors.py): a tagged NO with the RFC 5530
response code, the same error that is a 403 to the API and a 550 5.7.1 to SMTP.

The live path: a mailbox suspended or deleted after its login opens no folder
(mailboxes.services.mailbox_access_check, checked at SELECT and EXAMINE), over real
imaplib and a raw TLS client on the live server.
"""

from __future__ import annotations

import imaplib

import pytest
from pymap.parsing.response import UntaggedResponse

from mailplane.core.errors import (
    Conflict,
    DomainError,
    LimitReached,
    NotAllowed,
    NotFound,
    TooLarge,
    Unavailable,
    ValidationFailed,
)
from mailplane.imap.errors import DomainErrorResponse
from mailplane.mailboxes.models import Mailbox, MailboxStatus
from mailplane.mailboxes.services import mailbox_access_check, mailbox_delete, mailbox_update
from tests.imap.conftest import PASSWORD
from tests.imap.hostile import HostileClient

pytestmark = pytest.mark.timeout(60)


def _raised(call, **kwargs) -> DomainError:
    with pytest.raises(DomainError) as caught:
        call(**kwargs)
    return caught.value


@pytest.mark.parametrize(
    ("cls", "line"),
    [
        (NotAllowed, b"t7 NO [NOPERM] why\r\n"),
        (NotFound, b"t7 NO [NONEXISTENT] why\r\n"),
        (LimitReached, b"t7 NO [LIMIT] why\r\n"),
        (TooLarge, b"t7 NO [TOOBIG] why\r\n"),
        (Conflict, b"t7 NO [ALREADYEXISTS] why\r\n"),
        (Unavailable, b"t7 NO [UNAVAILABLE] why\r\n"),
        (ValidationFailed, b"t7 BAD why\r\n"),
    ],
)
def test_the_response_is_the_errors_own_line_after_the_untagged(cls, line):
    error = cls("why")
    response = DomainErrorResponse(b"t7", error)
    response.add_untagged(UntaggedResponse(b"still here", condition=b"OK"))
    assert error.imap_response("t7") == line
    assert bytes(response) == b"* OK still here\r\n" + line
    assert response.is_bad == (cls is ValidationFailed)


def test_suspended_since_login_selects_nothing(imap_server, make_mailbox):
    mailbox = make_mailbox()
    with imap_server.client() as imap:
        imap.login(mailbox.address, PASSWORD)
        assert imap.select("INBOX")[0] == "OK"
        mailbox_update(mailbox=mailbox, status=MailboxStatus.SUSPENDED)
        error = _raised(mailbox_access_check, address=mailbox.address)
        assert isinstance(error, NotAllowed)
        for readonly in (False, True):  # SELECT and EXAMINE
            typ, data = imap.select("INBOX", readonly=readonly)
            assert (typ, data) == ("NO", [b"[NOPERM] Mailbox is suspended"])
        assert imap.noop()[0] == "OK"  # the connection carries on
        mailbox_update(mailbox=mailbox, status=MailboxStatus.ACTIVE)
        assert imap.select("INBOX")[0] == "OK"


def test_the_wire_line_is_the_rendering_and_nothing_stays_selected(imap_server, make_mailbox):
    """RFC 9051 §6.3.2: a failed SELECT leaves the session with no mailbox selected."""
    mailbox = make_mailbox()
    client = HostileClient(imap_server.host, imap_server.tls_port)
    try:
        client.login(mailbox.address, PASSWORD)
        client.ok(b"SELECT INBOX")
        Mailbox.objects.filter(pk=mailbox.pk).update(status=MailboxStatus.SUSPENDED)
        status, lines = client.command(b"EXAMINE INBOX")
        error = _raised(mailbox_access_check, address=mailbox.address)
        assert (status, lines[-1]) == (b"NO", error.imap_response("h3"))
        status, lines = client.command(b"FETCH 1:* (FLAGS)")
        assert status == b"BAD" and b"select" in lines[-1].lower()
        assert client.command(b"NOOP")[0] == b"OK"
    finally:
        client.close()


def test_deleted_since_login_is_nonexistent(imap_server, make_mailbox):
    mailbox = make_mailbox()
    address = mailbox.address
    with imap_server.client() as imap:
        imap.login(address, PASSWORD)
        mailbox_delete(mailbox=mailbox)
        error = _raised(mailbox_access_check, address=address)
        assert isinstance(error, NotFound)
        typ, data = imap.select("INBOX")
        assert (typ, data) == ("NO", [b"[NONEXISTENT] Mailbox no longer exists"])
        with pytest.raises(imaplib.IMAP4.error):
            imap.fetch("1", "(FLAGS)")  # imaplib knows too: nothing is selected
        assert imap.logout()[0] == "BYE"


def test_another_mailboxs_suspension_changes_nothing(imap_server, make_mailbox):
    mine, theirs = make_mailbox(), make_mailbox()
    with imap_server.client() as imap:
        imap.login(mine.address, PASSWORD)
        mailbox_update(mailbox=theirs, status=MailboxStatus.SUSPENDED)
        assert imap.select("INBOX")[0] == "OK"
        assert imap.select("INBOX", readonly=True)[0] == "OK"
