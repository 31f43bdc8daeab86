"""SMTP AUTH throttles the client that fails, never the mailbox (issue 8, defect 6).

Real smtplib clients and raw TLS sockets from different 127.x.y.z source addresses: an
attacker guessing a mailbox's password is slowed (Dovecot-style doubling delay) and then
refused, while the owner, from another address, logs in at once, even mid-attack. On main
the owner got 454 4.7.0 after five failures from anywhere.
"""

from __future__ import annotations

import base64
import select
import smtplib
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mailplane.smtp.logins import LoginGuard
from tests.smtp.conftest import PASSWORD, Listeners, client_tls, smtps

pytestmark = pytest.mark.timeout(60)

WRONG = "Wrong-passw0rd!"
ATTACKER = "127.0.0.2"


def _plain(address: str, password: str) -> str:
    return base64.b64encode(f"\0{address}\0{password}".encode()).decode()


def _guard(listeners: Listeners, **limits: float) -> LoginGuard:
    guard = LoginGuard(**limits)  # type: ignore[arg-type]
    listeners.submission_handler.guard = guard
    return guard


def _auth(listeners: Listeners, address: str, password: str, source: str) -> int:
    with smtps(listeners, source=source) as client:
        client.ehlo("client.test")
        return int(client.docmd("AUTH", f"PLAIN {_plain(address, password)}")[0])


class RawSMTPS:
    """A TLS client that sends a command and lets the test look for the answer later."""

    def __init__(self, listeners: Listeners, source: str) -> None:
        raw = socket.create_connection((listeners.host, listeners.smtps), 10, (source, 0))
        self.sock: ssl.SSLSocket = client_tls().wrap_socket(raw, server_hostname=listeners.host)
        self.buffer = b""
        assert self.reply().startswith(b"220")
        self.send("EHLO attacker.test")
        while not self.reply().startswith(b"250 "):
            pass

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def reply(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def answered(self) -> bool:
        if self.buffer or self.sock.pending():
            return True
        return bool(select.select([self.sock], [], [], 0)[0])

    def close(self) -> None:
        self.sock.close()


def test_owner_logs_in_while_the_attacker_waits_its_penalty(listeners, alice):
    _guard(listeners, per_pair=5, per_ip=100, window=60, delay_base=30, delay_cap=30)
    attacker = RawSMTPS(listeners, ATTACKER)
    try:
        attacker.send(f"AUTH PLAIN {_plain(alice.address, WRONG)}")
        assert attacker.reply().startswith(b"535 5.7.8")
        attacker.send(f"AUTH PLAIN {_plain(alice.address, WRONG)}")  # waits 30 s
        # Meanwhile the owner, from two other addresses, gets straight in: the delay costs
        # the attacker's connection only, never the event loop or the mailbox.
        assert _auth(listeners, alice.address, PASSWORD, "127.0.0.1") == 235
        with smtps(listeners, source="127.0.0.3") as client:
            assert client.login(alice.address, PASSWORD)[0] == 235
        assert not attacker.answered()
    finally:
        attacker.close()


def test_attacker_is_slowed_then_refused_and_the_owner_is_not(listeners, alice):
    _guard(listeners, per_pair=4, per_ip=100, window=60, delay_base=0.2, delay_cap=0.4)
    took = []
    codes = []
    for _ in range(5):
        started = time.monotonic()
        codes.append(_auth(listeners, alice.address, WRONG, ATTACKER))
        took.append(time.monotonic() - started)
    assert codes == [535, 535, 535, 535, 454]
    # Each guess after a failure waited its penalty first: 0.2 s, 0.4 s, 0.4 s (capped).
    assert took[1] >= 0.19 and took[2] >= 0.39 and took[3] >= 0.39
    assert _auth(listeners, alice.address, PASSWORD, ATTACKER) == 454  # right, but refused
    assert _auth(listeners, alice.address, PASSWORD, "127.0.0.1") == 235  # the owner


def test_parallel_guesses_get_no_more_checks_than_the_limit(listeners, alice):
    guard = _guard(listeners, per_pair=3, per_ip=100, window=60, delay_base=0)

    def guess(_: int) -> int:
        try:
            return _auth(listeners, alice.address, WRONG, ATTACKER)
        except smtplib.SMTPServerDisconnected:
            return 0  # waited in line past the test listeners' idle timeout

    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(guess, range(10)))
    # Checked one after another: never more than the limit, however many arrive at once.
    assert 1 <= codes.count(535) <= 3, codes
    assert set(codes) <= {0, 454, 535}
    assert guard.failures(address=alice.address, ip=ATTACKER)[0] == codes.count(535)
    assert _auth(listeners, alice.address, PASSWORD, "127.0.0.1") == 235


def test_typos_then_the_right_password_start_the_client_afresh(listeners, alice):
    guard = _guard(listeners, per_pair=3, per_ip=100, window=60, delay_base=0)
    assert _auth(listeners, alice.address, WRONG, "127.0.0.4") == 535
    assert _auth(listeners, alice.address, WRONG, "127.0.0.4") == 535
    assert _auth(listeners, alice.address, PASSWORD, "127.0.0.4") == 235
    assert guard.failures(address=alice.address, ip="127.0.0.4") == (0, 0)
    assert [_auth(listeners, alice.address, WRONG, "127.0.0.4") for _ in range(3)] == [535] * 3


def test_smtplib_login_is_refused_with_454_once_over_the_limit(listeners, alice):
    _guard(listeners, per_pair=1, per_ip=100, window=60, delay_base=0)
    refused = pytest.raises(smtplib.SMTPAuthenticationError)
    with smtps(listeners, source=ATTACKER) as client, refused:
        client.login(alice.address, WRONG)
    with smtps(listeners, source=ATTACKER) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            client.login(alice.address, PASSWORD)
        assert info.value.smtp_code == 454
