"""Logins over real sockets with imaplib: implicit TLS and STARTTLS, refusals, folders."""

from __future__ import annotations

import imaplib
import re

import pytest

from mailplane.mailboxes.models import Mailbox, MailboxStatus
from mailplane.mailboxes.passwords import password_hash
from tests.imap.conftest import PASSWORD

pytestmark = pytest.mark.timeout(60)


def test_login_over_implicit_tls_and_case_insensitive_address(imap_server, make_mailbox):
    mailbox = make_mailbox()
    with imap_server.client() as imap:
        assert "STARTTLS" not in imap.capabilities and "AUTH=PLAIN" in imap.capabilities
        typ, _ = imap.login(mailbox.address.upper(), PASSWORD)
        assert typ == "OK"
        typ, caps = imap.capability()
        assert b"IDLE" in caps[0] and b"SPECIAL-USE" in caps[0] and b"MOVE" in caps[0]


def test_login_over_starttls_and_not_before(imap_server, make_mailbox):
    mailbox = make_mailbox()
    with imap_server.starttls_client() as imap:
        assert "LOGINDISABLED" in imap.capabilities and "STARTTLS" in imap.capabilities
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(mailbox.address, PASSWORD)  # RFC 9051 §6.2.3: no plaintext password
        from mailplane.tls import client_context_insecure

        imap.starttls(ssl_context=client_context_insecure())
        assert imap.login(mailbox.address, PASSWORD)[0] == "OK"


@pytest.mark.parametrize("case", ["bad_password", "unknown_user", "suspended", "cross_tenant"])
def test_login_refused(imap_server, make_mailbox, make_account, case):
    mailbox = make_mailbox()
    address, password = mailbox.address, PASSWORD
    if case == "bad_password":
        password = "Wrong-Horse-42!"
    elif case == "unknown_user":
        address = "nobody@" + mailbox.domain.name
    elif case == "suspended":
        Mailbox.objects.filter(pk=mailbox.pk).update(status=MailboxStatus.SUSPENDED)
    elif case == "cross_tenant":
        # Account B's mailbox, tried with account A's mailbox password.
        other = make_mailbox(make_account(name="Tenant B"))
        Mailbox.objects.filter(pk=other.pk).update(password_hash=password_hash("B-Secret-pass-99!"))
        address = other.address
    with imap_server.client() as imap:
        with pytest.raises(imaplib.IMAP4.error, match=r"(?i)invalid|authentication"):
            imap.login(address, password)
        # The connection stays usable for another attempt.
        assert imap.noop()[0] == "OK"


def test_password_change_and_suspension_take_effect_despite_cache(imap_server, make_mailbox):
    mailbox = make_mailbox()
    with imap_server.client() as imap:
        assert imap.login(mailbox.address, PASSWORD)[0] == "OK"
    Mailbox.objects.filter(pk=mailbox.pk).update(password_hash=password_hash("New-Password-77!"))
    with imap_server.client() as imap, pytest.raises(imaplib.IMAP4.error):
        imap.login(mailbox.address, PASSWORD)
    with imap_server.client() as imap:
        assert imap.login(mailbox.address, "New-Password-77!")[0] == "OK"
    Mailbox.objects.filter(pk=mailbox.pk).update(status=MailboxStatus.SUSPENDED)
    with imap_server.client() as imap, pytest.raises(imaplib.IMAP4.error):
        imap.login(mailbox.address, "New-Password-77!")


def test_list_shows_special_use_folders(imap_server, make_mailbox):
    mailbox = make_mailbox()
    with imap_server.client() as imap:
        imap.login(mailbox.address, PASSWORD)
        typ, lines = imap.list()
        assert typ == "OK"
        folders = {}
        for line in lines:
            match = re.match(rb'\((?P<attrs>[^)]*)\) "/" "?(?P<name>[^"]+)"?', line)
            assert match, line
            folders[match["name"].decode()] = set(match["attrs"].decode().split())
        assert set(folders) == {"INBOX", "Sent", "Drafts", "Trash", "Junk"}
        for name in ("Sent", "Drafts", "Trash", "Junk"):
            assert f"\\{name}" in folders[name]
        assert not any(a in folders["INBOX"] for a in ("\\Sent", "\\Trash"))
        typ, lines = imap.lsub()
        assert typ == "OK" and len(lines) == 5
