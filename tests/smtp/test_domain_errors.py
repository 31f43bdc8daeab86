"""A domain error raised in a service reaches a real SMTP client as its own reply.

smtplib over real sockets against the test listeners (tests/smtp/conftest.py). The reply
each test expects is the error's `smtp_reply()`, so the class's SMTP status (RFC 3463
enhanced code included) is what decides the wire, not a string in the handler.
"""

from __future__ import annotations

import smtplib

import pytest
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from mailplane.core.errors import NotAllowed, NotFound
from mailplane.mailboxes.models import Mailbox
from mailplane.mailboxes.services import mailbox_sending_check
from mailplane.queue.models import OutboundMessage
from tests.smtp.conftest import PASSWORD, make_mailbox, message, smtps
from tests.support.fixtures import verified_domain

pytestmark = pytest.mark.timeout(60)


def _sending_refusal(mailbox: Mailbox) -> NotAllowed:
    with pytest.raises(NotAllowed) as caught:
        mailbox_sending_check(mailbox=mailbox)
    return caught.value


def test_a_mailbox_suspended_after_login_is_refused_at_data_with_the_services_error(
    listeners, alice, quiet_logs
):
    """mailbox_sending_check raises NotAllowed; submission answers its 550 5.7.1."""
    with smtps(listeners) as client:
        client.login(alice.address, PASSWORD)
        assert client.mail(alice.address)[0] == 250
        assert client.rcpt("friend@example.org")[0] == 250
        Mailbox.objects.filter(pk=alice.pk).update(status="suspended")
        code, text = client.data(message(alice.address, "friend@example.org"))
    alice.refresh_from_db()
    expected = _sending_refusal(alice).smtp_reply()
    assert expected == "550 5.7.1 Mailbox is suspended"
    assert f"{code} {text.decode()}" == expected
    assert not OutboundMessage.objects.filter(mailbox=alice).exists()  # nothing queued


def test_the_same_services_error_is_a_403_on_http(account, alice):
    """What the send API will answer when it calls the same check: the API's exception
    handler renders the error itself (403 not_allowed, the one error shape)."""

    class Send(APIView):  # stands for a view of the send API (none is routed yet)
        authentication_classes: list[type] = []
        permission_classes: list[type] = []

        def post(self, request: Request) -> Response:
            mailbox_sending_check(mailbox=Mailbox.objects.get(pk=alice.pk))
            return Response(status=202)

    Mailbox.objects.filter(pk=alice.pk).update(status="suspended")
    response = Send.as_view()(APIRequestFactory().post("/send/", {}, format="json"))
    alice.refresh_from_db()
    error = _sending_refusal(alice)
    assert response.status_code == 403 == error.http_status
    assert response.data == error.http_body()
    assert response.data["error"]["code"] == "not_allowed"


def mx_client(listeners) -> smtplib.SMTP:
    client = smtplib.SMTP(listeners.host, listeners.mx, timeout=10, local_hostname="mx.test")
    client.ehlo()
    return client


@pytest.mark.parametrize(
    ("recipient", "reply"),
    [
        ("nobody@acme.test", NotFound("No such mailbox here").smtp_reply()),
        ("carol@acme.test", "550 5.2.1 Mailbox disabled"),  # NotAllowed, with RFC 3463's 5.2.1
        ("someone@elsewhere.example", NotAllowed("Relay access denied").smtp_reply()),
        ("x@bounces.acme.test", NotFound("No such bounce address here").smtp_reply()),
    ],
)
def test_mx_routing_refusals_are_the_routers_domain_errors(listeners, account, recipient, reply):
    """recipient_route raises; the MX's RCPT answers the error's own reply."""
    domain = verified_domain(account, "acme.test")
    carol = make_mailbox(account, domain, "carol")
    Mailbox.objects.filter(pk=carol.pk).update(status="suspended")
    with mx_client(listeners) as client:
        assert client.mail("someone@sender.test")[0] == 250
        code, text = client.rcpt(recipient)
    assert f"{code} {text.decode()}".startswith(reply)
