"""Mailbox credential checks for IMAP logins: the shared `mailplane.mailboxes.logins`;
and the check that a logged-in mailbox may still open its folders.

scrypt and the ORM block, so `mailbox_authenticate` runs on the backend's auth pool; the
verification cache and the brute-force guard are the same classes SMTP AUTH uses, and with
Redis configured the guard's counters are the ones SMTP AUTH writes.
"""

from __future__ import annotations

from django.db import close_old_connections

from mailplane.mailboxes.logins import (
    CredentialCache,
    LoginGate,
    LoginGuard,
    LoginLimits,
    Principal,
    login_check,
    login_guard,
)
from mailplane.mailboxes.services import mailbox_access_check

__all__ = [
    "CredentialCache",
    "LoginGate",
    "LoginGuard",
    "LoginLimits",
    "MailboxLogin",
    "login_guard",
    "mailbox_access_verify",
    "mailbox_authenticate",
]

# Who logged in (mailbox id, organization id, canonical address).
MailboxLogin = Principal


def mailbox_authenticate(
    *, address: str, password: str, cache: CredentialCache
) -> MailboxLogin | None:
    """Blocking: the active mailbox whose full address and password match, else None."""
    close_old_connections()
    return login_check(address=address, password=password, cache=cache)


def mailbox_access_verify(*, address: str) -> None:
    """Blocking: mailbox_access_check (NotAllowed if suspended since login, NotFound if
    deleted), on a thread of the backend's auth pool."""
    close_old_connections()
    mailbox_access_check(address=address)
