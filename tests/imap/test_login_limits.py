"""Brute-force limits on IMAP logins: per address, per client IP, sliding window.

Over the limit the server answers NO [UNAVAILABLE] (RFC 5530) without checking the password.
The guard's clock is replaced by a counter the test advances, so the window is exact.
"""

from __future__ import annotations

import imaplib

import pytest

from mailplane.mailboxes.logins import LoginGuard
from tests.imap.conftest import PASSWORD

pytestmark = pytest.mark.timeout(60)

WRONG = "Wrong-Horse-42!"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limits(guard: LoginGuard, *, per_address: int, per_ip: int, window: float) -> Clock:
    clock = Clock()
    guard.per_address, guard.per_ip, guard.window, guard.clock = (
        per_address,
        per_ip,
        window,
        clock,
    )
    guard.reset()
    return clock


def _login(imap_server, address: str, password: str, source_ip: str | None = None) -> str:
    """'OK', or the NO response text (with its response code)."""
    with imap_server.client(source_ip) as imap:
        try:
            return imap.login(address, password)[0]
        except imaplib.IMAP4.error as exc:
            return str(exc)


def test_limit_per_address_refuses_even_the_right_password(imap_server, make_mailbox):
    _limits(imap_server.guard, per_address=3, per_ip=100, window=60)
    mailbox, other = make_mailbox(), make_mailbox()
    for _ in range(3):
        assert "AUTHENTICATIONFAILED" in _login(imap_server, mailbox.address, WRONG)
    # Over the limit: refused before the password is looked at, correct or not.
    assert "[UNAVAILABLE]" in _login(imap_server, mailbox.address, PASSWORD)
    assert "[UNAVAILABLE]" in _login(imap_server, mailbox.address.upper(), WRONG)
    # Another mailbox from the same IP is still served.
    assert _login(imap_server, other.address, PASSWORD) == "OK"


def test_limit_per_ip_spares_other_clients(imap_server, make_mailbox):
    _limits(imap_server.guard, per_address=100, per_ip=3, window=60)
    mailboxes = [make_mailbox() for _ in range(4)]
    for mailbox in mailboxes[:3]:
        assert "AUTHENTICATIONFAILED" in _login(imap_server, mailbox.address, WRONG)
    # This IP is blocked for every address, including a correct login it never tried.
    assert "[UNAVAILABLE]" in _login(imap_server, mailboxes[3].address, PASSWORD)
    # A client from another address is unaffected.
    assert _login(imap_server, mailboxes[3].address, PASSWORD, source_ip="127.0.0.2") == "OK"


def test_blocked_attempts_are_not_checked_and_connection_stays_usable(imap_server, make_mailbox):
    _limits(imap_server.guard, per_address=1, per_ip=100, window=60)
    mailbox = make_mailbox()
    with imap_server.client() as imap:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap.login(mailbox.address, WRONG)
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            imap.login(mailbox.address, PASSWORD)
        assert imap.noop()[0] == "OK"
    # Refusals are not failures: the counter did not grow past the one real failure.
    assert imap_server.guard._recent(f"a:{mailbox.address}", imap_server.guard.clock()) == 1


def test_counter_window_slides(imap_server, make_mailbox):
    clock = _limits(imap_server.guard, per_address=2, per_ip=100, window=60)
    mailbox = make_mailbox()
    assert "AUTHENTICATIONFAILED" in _login(imap_server, mailbox.address, WRONG)  # t=0
    clock.now += 30
    assert "AUTHENTICATIONFAILED" in _login(imap_server, mailbox.address, WRONG)  # t=30
    assert "[UNAVAILABLE]" in _login(imap_server, mailbox.address, PASSWORD)
    clock.now += 30  # t=60: the first failure leaves the window, one remains
    assert _login(imap_server, mailbox.address, PASSWORD) == "OK"
    assert "AUTHENTICATIONFAILED" in _login(imap_server, mailbox.address, WRONG)  # t=60
    assert "[UNAVAILABLE]" in _login(imap_server, mailbox.address, PASSWORD)
    clock.now += 60  # t=120: both remaining failures have expired
    assert _login(imap_server, mailbox.address, PASSWORD) == "OK"
