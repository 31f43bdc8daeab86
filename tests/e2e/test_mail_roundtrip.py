"""Acceptance for real mailboxes: A writes to B, B sees it at once over IMAP IDLE, B
replies with a client nobody here wrote (swaks), A finds the reply in its INBOX.

All of `mailplane serve` runs as real processes (web, Celery worker, submission, MX,
IMAP, delivery) on the embedded defaults; mailboxes are made through the API.
"""

from __future__ import annotations

import imaplib
import smtplib
import subprocess
import time
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path

import pytest

from mailplane.tls import client_context_insecure
from tests.support.dns_server import DnsServer
from tests.support.live_service import LiveService, live_service
from tests.support.tools import requires_tool

pytestmark = pytest.mark.timeout(240)
PASSWORDS = {"alice": "Lunch-Secret-pass-1", "bob": "Dinner-Secret-pass-22"}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[LiveService, DnsServer]]:
    with live_service(tmp_path, "web,worker,submission,mx,imap,delivery") as running:
        yield running


def _create_mailboxes(svc: LiveService, dns: DnsServer) -> tuple[str, dict[str, str]]:
    key = svc.cli("org", "create", "--name", "Round Trip", "--email", "ops@rt.test").split()[-1]
    relay = svc.request("GET", "/api/relay-servers/", key)["results"][0]
    domain = svc.verified_domain(key, dns, "roundtrip.test", relay["id"])
    addresses = {}
    for local, password in PASSWORDS.items():
        task = svc.request(
            "POST",
            "/api/mailboxes/",
            key,
            {
                "email": local,
                "domain": domain["id"],
                "relay_server": relay["id"],
                "password": password,
            },
        )
        deadline = time.monotonic() + 30
        while (status := svc.request("GET", f"/api/tasks/{task['task_id']}/", key))[
            "status"
        ] == "pending":
            assert time.monotonic() < deadline, "mailbox task never finished"
            time.sleep(0.1)
        assert status["status"] == "success", status
        addresses[local] = status["mailbox"]["email"]
    return key, addresses


def _imap(svc: LiveService, address: str, password: str) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL(
        "127.0.0.1", svc.ports["IMAP"], ssl_context=client_context_insecure(), timeout=20
    )
    client.login(address, password)
    return client


def _idle_until_exists(client: imaplib.IMAP4_SSL, *, timeout: float) -> bytes:
    """RFC 2177 IDLE by hand (imaplib gained it only in 3.14): wait for `* n EXISTS`."""
    tag = client._new_tag()  # type: ignore[attr-defined]
    client.send(tag + b" IDLE\r\n")
    assert client.readline().startswith(b"+"), "server refused IDLE"
    client.sock.settimeout(timeout)
    try:
        while b"EXISTS" not in (line := client.readline()):
            assert line, "connection closed during IDLE"
    except TimeoutError:
        raise AssertionError(f"no EXISTS within {timeout}s of IDLE") from None
    client.send(b"DONE\r\n")
    while not client.readline().startswith(tag):
        pass
    return line


def _fetch_all(client: imaplib.IMAP4_SSL, folder: str = "INBOX") -> list:
    client.select(folder)
    _, data = client.search(None, "ALL")
    messages = []
    for num in data[0].split():
        _, parts = client.fetch(num, "(RFC822)")
        messages.append(message_from_bytes(parts[0][1]))
    return messages


@requires_tool("swaks")
def test_alice_writes_bob_sees_it_in_idle_and_his_swaks_reply_reaches_alice(service):
    svc, dns = service
    key, address = _create_mailboxes(svc, dns)
    userinfo = svc.request("GET", "/api/userinfo/", key)
    assert userinfo["smtp_port"] == svc.ports["SMTP"]
    assert userinfo["imap_port"] == svc.ports["IMAP"]

    bob = _imap(svc, address["bob"], PASSWORDS["bob"])
    bob.select("INBOX")
    with smtplib.SMTP_SSL(
        "127.0.0.1", svc.ports["SMTP"], context=client_context_insecure(), timeout=20
    ) as smtp:
        smtp.login(address["alice"], PASSWORDS["alice"])
        smtp.sendmail(
            address["alice"],
            [address["bob"]],
            f"From: Alice <{address['alice']}>\r\nTo: {address['bob']}\r\n"
            f"Subject: Lunch on Friday?\r\n\r\nShall we?\r\n".encode(),
        )
    _idle_until_exists(bob, timeout=30)
    [received] = _fetch_all(bob)
    assert received["Subject"] == "Lunch on Friday?"
    assert received.get_payload().strip() == "Shall we?"
    assert received["Message-ID"] and received["Date"]
    bob.logout()

    reply = subprocess.run(
        [
            "swaks",
            "--server",
            "127.0.0.1",
            "--port",
            str(svc.ports["SUBMISSION"]),
            "--tls",
            "--auth",
            "LOGIN",
            "--auth-user",
            address["bob"],
            "--auth-password",
            PASSWORDS["bob"],
            "--from",
            address["bob"],
            "--to",
            address["alice"],
            "--header",
            "Subject: Re: Lunch on Friday?",
            "--header",
            f"In-Reply-To: {received['Message-ID']}",
            "--body",
            "Yes, noon.",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reply.returncode == 0, reply.stdout + reply.stderr
    assert "250 2.0.0" in reply.stdout

    alice = _imap(svc, address["alice"], PASSWORDS["alice"])
    deadline = time.monotonic() + 30
    while not (inbox := _fetch_all(alice)):
        assert time.monotonic() < deadline, "reply never reached Alice's INBOX"
        time.sleep(0.2)
    assert inbox[0]["Subject"] == "Re: Lunch on Friday?"
    assert inbox[0]["In-Reply-To"] == received["Message-ID"]
    assert [m["Subject"] for m in _fetch_all(alice, "Sent")] == ["Lunch on Friday?"]
    alice.logout()

    mailbox_id = svc.request("GET", "/api/mailboxes/", key)["results"][0]["id"]
    sent = svc.request("GET", f"/api/messages/?mailbox={mailbox_id}", key)["results"]
    assert [m["subject"] for m in sent] == ["Lunch on Friday?"]
