"""Brute-force limits on IMAP logins: they throttle the failing client, not the mailbox.

Failures are counted per (address, client IP) and per client IP (issue 8, defect 6: five
wrong passwords from anywhere used to lock the owner out). A failing client waits a
doubling delay before each further attempt, then gets NO [UNAVAILABLE] (RFC 5530) without a
check; the owner, from another address, logs in at once. Clients come from different
127.x.y.z source addresses. The guard's clock is a counter the test advances.
"""

from __future__ import annotations

import imaplib
import select
import socket
import ssl

import pytest

from mailplane.mailboxes.logins import LoginGuard
from mailplane.tls import client_context_insecure
from tests.imap.conftest import PASSWORD

pytestmark = pytest.mark.timeout(60)

WRONG = "Wrong-Horse-42!"
ATTACKER = "127.0.0.2"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limits(
    guard: LoginGuard, *, per_pair: int, per_ip: int, window: float, delay_base: float = 0.0
) -> Clock:
    clock = Clock()
    guard.per_pair, guard.per_ip, guard.window, guard.clock = per_pair, per_ip, window, clock
    guard.delay_base, guard.delay_cap = delay_base, max(delay_base, 15.0)
    guard.reset()
    return clock


def _login(imap_server, address: str, password: str, source_ip: str | None = None) -> str:
    """'OK', or the NO response text (with its response code)."""
    with imap_server.client(source_ip) as imap:
        try:
            return imap.login(address, password)[0]
        except imaplib.IMAP4.error as exc:
            return str(exc)


def test_failing_client_is_refused_and_the_owner_is_not(imap_server, make_mailbox):
    _limits(imap_server.guard, per_pair=3, per_ip=100, window=60)
    mailbox, other = make_mailbox(), make_mailbox()
    for _ in range(3):
        assert "AUTHENTICATIONFAILED" in _login(imap_server, mailbox.address, WRONG, ATTACKER)
    # That client is refused before the password is looked at, correct or not...
    assert "[UNAVAILABLE]" in _login(imap_server, mailbox.address, PASSWORD, ATTACKER)
    assert "[UNAVAILABLE]" in _login(imap_server, mailbox.address.upper(), WRONG, ATTACKER)
    # ...the owner, from another address, logs in (on main: NO [UNAVAILABLE])...
    assert _login(imap_server, mailbox.address, PASSWORD, "127.0.0.3") == "OK"
    assert _login(imap_server, mailbox.address, PASSWORD) == "OK"
    # ...and the same client may still open another mailbox (below the per-IP limit).
    assert _login(imap_server, other.address, PASSWORD, ATTACKER) == "OK"


def test_limit_per_ip_spares_other_clients(imap_server, make_mailbox):
    _limits(imap_server.guard, per_pair=100, per_ip=3, window=60)
    mailboxes = [make_mailbox() for _ in range(4)]
    for mailbox in mailboxes[:3]:
        assert "AUTHENTICATIONFAILED" in _login(imap_server, mailbox.address, WRONG, ATTACKER)
    # This IP is refused for every address, including a correct login it never tried.
    assert "[UNAVAILABLE]" in _login(imap_server, mailboxes[3].address, PASSWORD, ATTACKER)
    # A client from another address is unaffected.
    assert _login(imap_server, mailboxes[3].address, PASSWORD, "127.0.0.4") == "OK"


def test_attacker_waits_while_the_owner_gets_in_at_once(imap_server, make_mailbox):
    """The delay runs on the event loop without blocking it: while the attacker's second
    guess waits its 30 s penalty, the owner's login (same mailbox) is answered."""
    _limits(imap_server.guard, per_pair=5, per_ip=100, window=60, delay_base=30.0)
    mailbox = make_mailbox()
    assert "AUTHENTICATIONFAILED" in _login(imap_server, mailbox.address, WRONG, ATTACKER)
    context = client_context_insecure()
    raw = socket.create_connection((imap_server.host, imap_server.tls_port), 10, (ATTACKER, 0))
    with context.wrap_socket(raw, server_hostname=imap_server.host) as attacker:
        assert attacker.recv(4096).startswith(b"* OK")
        attacker.sendall(f'a LOGIN "{mailbox.address}" "{WRONG}"\r\n'.encode())
        assert _login(imap_server, mailbox.address, PASSWORD) == "OK"
        assert _login(imap_server, mailbox.address, PASSWORD, "127.0.0.5") == "OK"
        # The owner was served twice; the attacker still has no answer.
        assert not _readable(attacker)
    assert imap_server.guard.failures(address=mailbox.address, ip=ATTACKER)[0] == 1


def _readable(sock: ssl.SSLSocket) -> bool:
    if sock.pending():
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def test_refusals_are_not_failures_and_connection_stays_usable(imap_server, make_mailbox):
    _limits(imap_server.guard, per_pair=1, per_ip=100, window=60)
    mailbox = make_mailbox()
    with imap_server.client() as imap:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap.login(mailbox.address, WRONG)
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            imap.login(mailbox.address, PASSWORD)
        assert imap.noop()[0] == "OK"
    # Refusals are not failures: the counters did not grow past the one real failure.
    assert imap_server.guard.failures(address=mailbox.address, ip="127.0.0.1") == (1, 1)


def test_success_forgives_typos_and_the_window_slides(imap_server, make_mailbox):
    clock = _limits(imap_server.guard, per_pair=2, per_ip=100, window=60)
    mailbox = make_mailbox()
    assert "AUTHENTICATIONFAILED" in _login(imap_server, mailbox.address, WRONG)  # t=0
    assert _login(imap_server, mailbox.address, PASSWORD) == "OK"  # typo forgiven
    assert imap_server.guard.failures(address=mailbox.address, ip="127.0.0.1") == (0, 0)
    assert "AUTHENTICATIONFAILED" in _login(imap_server, mailbox.address, WRONG, ATTACKER)
    clock.now += 30
    assert "AUTHENTICATIONFAILED" in _login(imap_server, mailbox.address, WRONG, ATTACKER)
    assert "[UNAVAILABLE]" in _login(imap_server, mailbox.address, PASSWORD, ATTACKER)
    clock.now += 30  # t=60: the first failure leaves the window, one remains
    assert "AUTHENTICATIONFAILED" in _login(imap_server, mailbox.address, WRONG, ATTACKER)
    assert "[UNAVAILABLE]" in _login(imap_server, mailbox.address, PASSWORD, ATTACKER)
    clock.now += 60  # t=120: both remaining failures have expired
    assert _login(imap_server, mailbox.address, PASSWORD, ATTACKER) == "OK"
