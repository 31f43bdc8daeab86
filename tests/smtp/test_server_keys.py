"""A server key as SMTP credentials (issue 11): real smtplib and swaks over TLS; the
message is checked, streamed and logged as an API message of that server."""

from __future__ import annotations

import smtplib
import subprocess

import pytest

from mailplane.queue.models import MessageBody, MessageSource, OutboundMessage, QueuedRecipient
from mailplane.queue.transitions import SuppressionEntry, suppressions_add
from mailplane.servers.models import ServerMessage
from mailplane.servers.services import server_key_revoke
from tests.smtp.conftest import smtps, starttls
from tests.support.fixtures import verified_domain
from tests.support.servers import server_make
from tests.support.tools import requires_tool

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def live(account):
    verified_domain(account, "acme.test")
    return server_make(account)


def _message(sender="Alice <alice@acme.test>", to="carol@dest.test", extra=""):
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: Over SMTP\r\n{extra}\r\nHello over SMTP.\r\n"
    ).encode()


def _refusal(client, sender, recipients, raw):
    with pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail(sender, recipients, raw)
    return refused.value.smtp_code, refused.value.smtp_error.decode()


def test_the_key_as_user_and_password_sends_on_the_named_stream(listeners, live, quiet_logs):
    raw = _message(extra="X-PM-Message-Stream: broadcast\r\nX-Keep: yes\r\n")
    with smtps(listeners) as client:
        client.login(live.key, live.key)  # Postmark: both are the server token
        # One recipient: a broadcast message carries that recipient's unsubscribe link.
        assert client.sendmail("alice@acme.test", ["carol@dest.test"], raw) == {}
        code, text = _refusal(client, "alice@acme.test", ["c@dest.test", "d@dest.test"], raw)
        assert (code, text[:5]) == (554, "5.0.0") or code == 550, text
    message = OutboundMessage.objects.get()
    assert (message.source, message.mailbox, message.mail_from) == (
        MessageSource.SMTP,
        None,
        "alice@acme.test",
    )
    assert message.domain is not None and message.domain.name == "acme.test"
    link = ServerMessage.objects.get(message=message)
    assert (link.server, link.stream.stream_id) == (live.server, "broadcast")
    assert link.server_key == live.server.keys.get(name="send")  # for its IP pool
    stored = bytes(MessageBody.objects.get(message=message).raw)
    assert b"X-PM-Message-Stream" not in stored and b"X-Keep: yes" in stored
    assert b"with ESMTPSA" in stored and b"Message-ID: <" in stored
    assert b"List-Unsubscribe: <" in stored and b"List-Unsubscribe-Post: " in stored
    # Logged under the server, like API mail.
    listed = live.client.get("/api/server/messages/?stream=broadcast").json()
    assert [m["id"] for m in listed["results"]] == [message.pk]
    assert list(QueuedRecipient.objects.values_list("rcpt_to", flat=True)) == ["carol@dest.test"]


def test_the_fixed_user_name_and_our_own_header_over_starttls(listeners, live):
    raw = _message(extra="X-Mailplane-Stream:\r\n broadcast\r\n")  # folded: still read
    with starttls(listeners) as client:
        client.login("apikey", live.key)
        client.sendmail("alice@acme.test", ["carol@dest.test"], raw)
    link = ServerMessage.objects.get()
    assert link.stream.stream_id == "broadcast"
    assert b"X-Mailplane-Stream" not in bytes(MessageBody.objects.get().raw)
    with starttls(listeners) as client:
        client.login("APIKEY", live.key)
        client.sendmail("alice@acme.test", ["carol@dest.test"], _message())
    assert ServerMessage.objects.order_by("-pk")[0].stream.stream_id == "outbound"  # default


@pytest.mark.parametrize(
    ("user", "password"),
    [
        ("someone", "KEY"),  # the right key under another name
        ("KEY", "KEY-typo"),
        ("mps_x", "mps_x"),
        ("mps_" + "A" * 43, "mps_" + "A" * 43),
    ],
)
def test_wrong_credentials_are_535(listeners, live, user, password):
    user, password = user.replace("KEY", live.key), password.replace("KEY", live.key)
    with smtps(listeners) as client, pytest.raises(smtplib.SMTPAuthenticationError) as failed:
        client.login(user, password)
    assert failed.value.smtp_code == 535
    assert not OutboundMessage.objects.exists()


@pytest.mark.parametrize("password", [b"mps_\xff\xfe", "mps_é".encode(), b"mps_" + b"A" * 300])
def test_undecodable_and_huge_keys_are_535(listeners, live, password):
    import base64

    with smtps(listeners) as client:
        client.ehlo("client.test")
        code, _ = client.docmd(
            "AUTH", "PLAIN " + base64.b64encode(b"\0apikey\0" + password).decode()
        )
    assert code == 535


def test_a_revoked_key_no_longer_logs_in_nor_sends(listeners, live):
    key_id = live.server.keys.get(name="send").pk
    with smtps(listeners) as client:
        client.login(live.key, live.key)
        server_key_revoke(organization=live.account.org, key_id=key_id)  # mid-session
        code, text = _refusal(client, "alice@acme.test", ["carol@dest.test"], _message())
        assert (code, text[:5]) == (550, "5.7.1")
    with smtps(listeners) as client, pytest.raises(smtplib.SMTPAuthenticationError):
        client.login(live.key, live.key)
    assert not OutboundMessage.objects.exists()


def test_refusals_are_5xx_and_queue_nothing(listeners, live, other_account, quiet_logs):
    verified_domain(other_account, "other.test")
    with smtps(listeners) as client:
        client.login(live.key, live.key)
        for sender, raw, code, text in [
            ("x@unknown.test", _message("x@unknown.test"), 550, "5.7.1"),
            ("ceo@other.test", _message("ceo@other.test"), 550, "5.7.1"),  # another account's
            ("alice@acme.test", _message("a@acme.test, b@acme.test"), 550, "5.7.1"),
            ("x@evil.test", _message(), 550, "5.7.1"),  # the envelope sender too
            (
                "alice@acme.test",
                _message(extra="X-Mailplane-Stream: nope\r\n"),
                550,
                "5.7.1",
            ),
            (
                "alice@acme.test",
                _message(
                    extra="X-Mailplane-Stream: outbound\r\nX-PM-Message-Stream: broadcast\r\n"
                ),
                550,
                "5.6.0",
            ),
            ("alice@acme.test", b"Subject: no from\r\n\r\nx\r\n", 550, "5.6.0"),
        ]:
            got_code, got_text = _refusal(client, sender, ["carol@dest.test"], raw)
            assert (got_code, got_text[:5]) == (code, text), (sender, got_text)
    assert not OutboundMessage.objects.exists()


def test_an_unconfirmed_identity_is_refused_naming_it(listeners, live):
    live.account.client.post("/api/sender-identities/", {"address": "me@gmail.com"}, format="json")
    confirmations = OutboundMessage.objects.count()
    with smtps(listeners) as client:
        client.login(live.key, live.key)
        code, text = _refusal(client, "me@gmail.com", ["carol@dest.test"], _message("me@gmail.com"))
    assert code == 550 and text.startswith("5.7.1") and "me@gmail.com" in text
    assert OutboundMessage.objects.count() == confirmations


def test_the_streams_suppressions_apply(listeners, live):
    broadcast = live.server.streams.get(stream_id="broadcast")
    suppressions_add(
        [SuppressionEntry(live.account.org.pk, "gone@dest.test", "manual", broadcast.pk)]
    )
    raw = _message(extra="X-PM-Message-Stream: broadcast\r\n")
    with smtps(listeners) as client:
        client.login(live.key, live.key)
        client.sendmail("alice@acme.test", ["gone@dest.test"], raw)
        client.sendmail("alice@acme.test", ["carol@dest.test"], raw)
        client.sendmail("alice@acme.test", ["gone@dest.test"], _message())  # outbound
    rows = QueuedRecipient.objects.order_by("pk").values_list("rcpt_to", "status")
    assert list(rows) == [
        ("gone@dest.test", "suppressed"),
        ("carol@dest.test", "queued"),
        ("gone@dest.test", "queued"),
    ]


def test_a_sandbox_server_records_and_sends_nothing(listeners, account):
    verified_domain(account, "acme.test")
    sandbox = server_make(account, name="sandbox", sandbox=True)
    with smtps(listeners) as client:
        client.login(sandbox.key, sandbox.key)
        client.sendmail("alice@acme.test", ["carol@dest.test"], _message())
    assert QueuedRecipient.objects.get().status == "delivered"


@requires_tool("swaks")
@pytest.mark.parametrize("mode", ["--tls-on-connect", "--tls"])
def test_swaks_sends_with_a_server_key(listeners, live, mode, caplog):
    port = listeners.smtps if mode == "--tls-on-connect" else listeners.submission
    result = subprocess.run(
        [
            "swaks", "--server", listeners.host, "--port", str(port), mode,
            "--auth", "LOGIN", "--auth-user", live.key, "--auth-password", live.key,
            "--from", "alice@acme.test", "--to", "friend@example.org",
            "--header", "From: alice@acme.test", "--header", "X-PM-Message-Stream: broadcast",
            "--header", "Subject: via swaks", "--body", "sent by swaks",
        ],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "queued as" in result.stdout
    link = ServerMessage.objects.select_related("message", "stream").get()
    assert (link.message.subject, link.stream.stream_id) == ("via swaks", "broadcast")
    assert live.key not in caplog.text  # the key is never logged, only its prefix


def test_a_servers_message_keeps_the_send_api_limits(listeners, live, monkeypatch):
    from mailplane.sending import services

    with smtps(listeners) as client:
        client.login(live.key, live.key)
        client.mail("alice@acme.test")
        # The test listener allows 5 recipients; a server's cap (50) applies beneath it.
        monkeypatch.setattr("mailplane.smtp.submission.MAX_RECIPIENTS", 2)
        assert client.rcpt("a@dest.test")[0] == 250
        assert client.rcpt("b@dest.test")[0] == 250
        assert client.rcpt("c@dest.test")[0] == 452
        client.rset()
        monkeypatch.setattr(services, "MESSAGE_MAX_BYTES", 1000)
        big = _message(extra="X-Pad: " + "x" * 990 + "\r\n")
        code, text = _refusal(client, "alice@acme.test", ["a@dest.test"], big)
        assert (code, text[:5]) == (552, "5.3.4")
        monkeypatch.setattr(services, "MESSAGE_MAX_BYTES", 10 * 1024 * 1024)
        huge_stream = _message(extra="X-Mailplane-Stream: " + "s" * 900 + "\r\n")
        code, text = _refusal(client, "alice@acme.test", ["a@dest.test"], huge_stream)
        assert code == 550 and len(text) < 200, text
    assert not OutboundMessage.objects.exists()


def test_the_servers_content_filter_applies(listeners, live):
    from email.message import EmailMessage
    from email.policy import SMTP

    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "alice@acme.test", "c@dest.test", "x"
    message.set_content("Run the attachment.")
    message.add_attachment(b"MZ", maintype="application", subtype="octet-stream",
                           filename="setup.exe")  # fmt: skip
    with smtps(listeners) as client:
        client.login(live.key, live.key)
        raw = message.as_bytes(policy=SMTP)
        code, text = _refusal(client, "alice@acme.test", ["c@dest.test"], raw)
    assert (code, text[:5]) == (550, "5.7.1") and "content filter" in text, text
    assert not OutboundMessage.objects.exists()
