"""Volume caps and the automatic pause (reputation/) over SMTP submission with a server
key: the same checks as the send API, answered with their SMTP replies."""

from __future__ import annotations

import smtplib
from typing import Any

import pytest
from django.utils import timezone

from mailplane.queue.models import OutboundMessage
from mailplane.reputation.pause import owner_pause
from mailplane.servers.services import server_key_create
from tests.smtp.conftest import smtps
from tests.support.fixtures import verified_domain
from tests.support.servers import server_make

pytestmark = pytest.mark.timeout(60)


def test_smtp_submission_with_a_key_keeps_its_caps_and_pause(
    listeners: Any, account: Any, quiet_logs: Any
) -> None:
    """A server key as SMTP credentials: a refuse-mode cap answers 452 4.3.1 (try later),
    a paused server 550 5.7.1, each with the reason."""
    verified_domain(account, "acme.test")
    live = server_make(account)
    key = server_key_create(server=live.server, name="strict", hourly_cap=1, cap_mode="refuse")
    raw = b"From: alice@acme.test\r\nTo: c@dest.test\r\nSubject: s\r\n\r\nHi.\r\n"
    with smtps(listeners) as client:
        client.login(key.secret, key.secret)
        assert client.sendmail("alice@acme.test", ["c@dest.test"], raw) == {}
        with pytest.raises(smtplib.SMTPDataError) as over:
            client.sendmail("alice@acme.test", ["c@dest.test"], raw)
    assert over.value.smtp_code == 452
    assert over.value.smtp_error.decode().startswith("4.3.1 over the volume cap of server key")
    owner_pause(owner=live.server, reason="hard bounces", now=timezone.now())
    with smtps(listeners) as client:
        client.login(live.key, live.key)
        with pytest.raises(smtplib.SMTPDataError) as paused:
            client.sendmail("alice@acme.test", ["c@dest.test"], raw)
    assert paused.value.smtp_code == 550
    assert "5.7.1 sending is paused for this server" in paused.value.smtp_error.decode()
    assert OutboundMessage.objects.count() == 1
