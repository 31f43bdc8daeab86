"""A second account's key walks every endpoint and sees or touches nothing of the first's.

The walk is driven by the URL table: a route added without an isolation case here fails
`test_every_route_is_walked`, so new endpoints cannot skip this check.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.urls import URLPattern
from django.utils import timezone
from rest_framework.test import APIClient

from mailplane.analytics.consumer import events_count
from mailplane.analytics.models import BounceDomainCount
from mailplane.api import urls as api_urls
from mailplane.dnsproviders.models import DomainDnsPublication
from mailplane.dnsproviders.services import dns_provider_create
from mailplane.inbound.models import InboundMessage, ServerInbound
from mailplane.inbound.services import InboundRoute, inbound_accept, server_inbound_update
from mailplane.jobs.models import Job
from mailplane.jobs.services import job_run
from mailplane.mailboxes.models import Mailbox
from mailplane.mailboxes.services import mailbox_create, mailbox_validate
from mailplane.projects.models import Project
from mailplane.queue.models import (
    DeliveryEvent,
    EventType,
    OutboundMessage,
    QueuedRecipient,
    RecipientStatus,
    Suppression,
)
from mailplane.queue.services import message_enqueue
from mailplane.queue.transitions import (
    SuppressionEntry,
    Transition,
    suppressions_add,
    transitions_apply,
)
from mailplane.relays.services import relay_server_create
from mailplane.reputation.pause import owner_pause
from mailplane.sending.requests import send_request_parse
from mailplane.sending.services import message_send
from mailplane.servers.identities import sender_identity_create
from mailplane.servers.models import (
    BounceRule,
    EmailServer,
    SenderIdentity,
    ServerKey,
    ServerMessage,
)
from mailplane.servers.services import bounce_rule_create, email_server_create, server_key_create
from mailplane.smtp.authres import AuthOutcome
from mailplane.tenancy.models import ApiKey
from mailplane.tracking.models import ServerTracking
from mailplane.tracking.services import server_tracking_update
from mailplane.webhooks.consumer import events_consume
from mailplane.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from mailplane.webhooks.services import webhook_endpoint_create
from tests.support.fixtures import verified_domain
from tests.support.servers import send_body, server_client


@pytest.fixture
def victim(account):
    """Account A with one of everything."""
    project = Project.objects.create(organization=account.org, name="secret-project")
    domain = verified_domain(account, "victim.test")
    relay = relay_server_create(
        organization=account.org,
        name="mg",
        provider="mailgun",
        configuration={"domain": "mg.victim.test"},
        credentials={"api_key": "key-victim-secret-0001"},
    )
    spec = mailbox_validate(
        organization=account.org,
        data={
            "email": "ceo",
            "domain": domain.pk,
            "relay_server": relay.pk,
            "project": project.pk,
            "password": "Victim-Password-42",
        },
    )
    mailbox = mailbox_create(organization=account.org, spec=spec)
    job = Job.objects.create(organization=account.org, kind="mailbox.create", payload={})
    dns_provider = dns_provider_create(
        organization=account.org,
        name="victim cloudflare",
        provider="cloudflare",
        credentials={"api_token": "cf-victim-secret-token-0001"},
    )
    key = ApiKey.objects.get(organization=account.org)
    message = message_enqueue(
        organization=account.org,
        mail_from="ceo@victim.test",
        recipients=["x@elsewhere.test"],
        mailbox=mailbox,
        raw=b"Subject: Victim secret subject\r\n\r\nhello\r\n",
    )
    server = email_server_create(organization=account.org, name="victim-prod-secret")
    server_key = server_key_create(server=server, name="victim-key-secret", kind="full")
    server_tracking_update(
        server=server, domain="track.victim.test", track_opens=True, track_links=True
    )
    bounce_rule = bounce_rule_create(
        server=server, contains="victim-rule-secret", bounce_class="policy"
    )
    sent = message_send(
        server=server,
        request=send_request_parse(
            send_body(**{"from": "ceo@victim.test"}, subject="Victim secret subject")
        ),
    )
    identity, _ = sender_identity_create(organization=account.org, address="press@gmail.test")
    stream = server.streams.get(stream_id="outbound")
    suppressions_add([SuppressionEntry(account.org.pk, "gone@elsewhere.test", "manual", stream.pk)])
    later = (timezone.now() + timedelta(hours=2)).isoformat()
    scheduled = message_send(
        server=server,
        request=send_request_parse(send_body(**{"from": "ceo@victim.test"}, send_at=later)),
    )
    broadcast = message_send(
        server=server,
        request=send_request_parse(
            send_body(**{"from": "ceo@victim.test"}, stream="broadcast", to="reader@x.test")
        ),
    )
    webhook = webhook_endpoint_create(
        server=server, url="https://hooks.victim.test/secret-hook", event_types=["queued"]
    ).endpoint
    sent_again = message_send(
        server=server,
        request=send_request_parse(
            send_body(
                **{"from": "ceo@victim.test"},
                subject="again",
                to="x@secret-bounce.test",
                tags=["secret"],
            )
        ),
    )
    assert sent_again.message is not None
    transitions_apply(
        [
            Transition(
                row=QueuedRecipient.objects.select_related("message").get(
                    message=sent_again.message
                ),
                event=EventType.BOUNCED,
                status=RecipientStatus.BOUNCED,
                reply="550 5.1.1 unknown",
                bounce_class="hard",
            )
        ],
        now=timezone.now(),
    )
    events_consume()
    owner_pause(owner=server, reason="victim-paused-secret", now=timezone.now())
    events_count()  # the victim's stats: sent 2, bounced at secret-bounce.test
    assert BounceDomainCount.objects.filter(server=server, domain="secret-bounce.test").exists()
    delivery = WebhookDelivery.objects.get(endpoint=webhook)
    WebhookAttempt.objects.create(
        delivery=delivery,
        endpoint=webhook,
        started_at=delivery.created_at,
        status_code=500,
        latency_ms=3,
        response_excerpt="victim-receiver-secret",
    )
    server_inbound_update(server=server, domain="reply.victim.test")
    [inbound] = inbound_accept(
        routes=[InboundRoute(server.pk, account.org.pk, "ceo@reply.victim.test")],
        raw=b"From: ceo@victim.test\r\nSubject: Victim secret subject\r\n\r\nhi\r\n",
        mail_from="ceo@victim.test",
        outcome=AuthOutcome(),
        authserv_id="mx.test",
    )
    return {
        "inbound": inbound,
        "identity": identity,
        "suppression": Suppression.objects.get(stream__server=server),
        "webhook": webhook,
        "delivery": delivery,
        "message": message,
        "server": server,
        "server_key": server_key.server_key,
        "bounce_rule": bounce_rule,
        "server_secret": server_key.secret,
        "sent": sent.message,
        "scheduled": scheduled.message,
        "broadcast": broadcast.message,
        "project": project,
        "domain": domain,
        "relay": relay,
        "mailbox": mailbox,
        "job": job,
        "dns_provider": dns_provider,
        "key": key,
        "account": account,
    }


# route name -> list of (method, path template, body) the intruder tries.
WALK = {
    "api-index": [("get", "/api/", None)],  # public: paths only, no account data
    "userinfo": [("get", "/api/userinfo/", None)],
    "status": [("get", "/api/status/", None)],  # the intruder's own queue, the cell's services
    "api-key-list": [("get", "/api/api-keys/", None)],
    "api-key-detail": [("delete", "/api/api-keys/{key}/", None)],
    "relay-server-list": [("get", "/api/relay-servers/", None)],
    "relay-server-detail": [
        ("get", "/api/relay-servers/{relay}/", None),
        ("patch", "/api/relay-servers/{relay}/", {"name": "pwned"}),
        ("put", "/api/relay-servers/{relay}/", {"credentials": {"api_key": "mine-000000000"}}),
    ],
    "project-list": [("get", "/api/projects/", None)],
    "project-detail": [
        ("get", "/api/projects/{project}/", None),
        ("patch", "/api/projects/{project}/", {"name": "pwned"}),
        ("delete", "/api/projects/{project}/", None),
    ],
    "domain-list": [
        ("get", "/api/domains/", None),
        ("post", "/api/domains/", {"name": "steal.test", "relay_server": "{relay}"}),
    ],
    "domain-verify": [("post", "/api/domains/{domain}/verify/", None)],
    "domain-publish-dns": [
        ("post", "/api/domains/{domain}/publish-dns/", None),
        ("post", "/api/domains/{domain}/publish-dns/", {"dns_provider": "{dns_provider}"}),
    ],
    "dns-provider-list": [("get", "/api/dns-providers/", None)],
    "dns-provider-detail": [
        ("get", "/api/dns-providers/{dns_provider}/", None),
        ("patch", "/api/dns-providers/{dns_provider}/", {"name": "pwned"}),
        ("patch", "/api/dns-providers/{dns_provider}/", {"credentials": {"api_token": "x" * 40}}),
        ("delete", "/api/dns-providers/{dns_provider}/", None),
    ],
    "dns-provider-test": [("post", "/api/dns-providers/{dns_provider}/test/", None)],
    "domain-detail": [
        ("get", "/api/domains/{domain}/", None),
        ("patch", "/api/domains/{domain}/", {"redirect": "https://evil.test/"}),
        ("delete", "/api/domains/{domain}/", None),
    ],
    "mailbox-list": [
        ("get", "/api/mailboxes/", None),
        ("get", "/api/mailboxes/?project={project}", None),
        ("get", "/api/mailboxes/?domain={domain}", None),
        (
            "post",
            "/api/mailboxes/",
            {"email": "x", "domain": "{domain}", "relay_server": "{relay}", "project": "{project}"},
        ),
    ],
    "mailbox-bulk-create": [
        ("post", "/api/mailboxes/bulk/", "email,domain,project\nx,{domain},{project}\n"),
        ("post", "/api/mailboxes/bulk/", "email,domain\nx2,victim.test\n"),
    ],
    "mailbox-export": [
        ("get", "/mailbox/download/smartlead/", None),
        ("get", "/mailbox/download/custom/", None),
        ("get", "/mailbox/download/woodpecker/?project={project}", None),
    ],
    "message-list": [
        ("get", "/api/messages/", None),
        ("get", "/api/messages/?mailbox={mailbox}", None),
    ],
    "message-detail": [("get", "/api/messages/{message}/", None)],
    "mailbox-create-alias": [
        ("post", "/mailbox/", {"email": "x", "domain": "{domain}", "relay_server": "{relay}"}),
    ],
    "mailbox-detail": [
        ("get", "/api/mailboxes/{mailbox}/", None),
        ("patch", "/api/mailboxes/{mailbox}/", {"password": "Intruder-Pass-99"}),
        ("delete", "/api/mailboxes/{mailbox}/", None),
    ],
    "task-detail": [("get", "/api/tasks/{job}/", None)],
    # A server's create body names nothing of another account's (its names are per
    # account: tests/servers/test_servers_api.py), so the list is what there is to see.
    "server-list": [("get", "/api/servers/", None)],
    "server-detail": [
        ("get", "/api/servers/{server}/", None),
        ("patch", "/api/servers/{server}/", {"name": "pwned", "sandbox": True}),
        ("patch", "/api/servers/{server}/", {"hourly_cap": 1, "daily_cap": 1}),
        ("delete", "/api/servers/{server}/", None),
    ],
    "server-key-list": [
        ("get", "/api/servers/{server}/keys/", None),
        ("post", "/api/servers/{server}/keys/", {"name": "mine", "kind": "full"}),
    ],
    "server-key-detail": [
        ("patch", "/api/server-keys/{server_key}/", {"hourly_cap": 1, "cap_mode": "refuse"}),
        ("delete", "/api/server-keys/{server_key}/", None),
    ],
    "reputation-notice-list": [("get", "/api/reputation-notices/", None)],
    "sender-identity-list": [
        ("get", "/api/sender-identities/", None),
        # An identity for another account's server: that server is not found.
        ("post", "/api/sender-identities/", {"address": "x@gmail.test", "server": "{server}"}),
    ],
    "sender-identity-detail": [
        ("get", "/api/sender-identities/{identity}/", None),
        ("delete", "/api/sender-identities/{identity}/", None),
    ],
    "sender-identity-resend": [("post", "/api/sender-identities/{identity}/resend/", None)],
    # Public (the token authenticates): a crafted token confirms nothing of anyone's.
    "sender-identity-confirm": [
        ("get", "/api/sender-identities/confirm/?token=mpi_" + "A" * 43, None),
        ("post", "/api/sender-identities/confirm/", {"token": "mpi_" + "A" * 43}),
    ],
    "server-webhook-list": [
        ("get", "/api/servers/{server}/webhooks/", None),
        (
            "post",
            "/api/servers/{server}/webhooks/",
            {"url": "https://evil.test/", "event_types": ["delivered"]},
        ),
    ],
    "webhook-detail": [
        ("get", "/api/webhooks/{webhook}/", None),
        ("patch", "/api/webhooks/{webhook}/", {"url": "https://evil.test/"}),
        ("delete", "/api/webhooks/{webhook}/", None),
    ],
    "webhook-rotate-secret": [("post", "/api/webhooks/{webhook}/rotate-secret/", None)],
    "webhook-attempt-list": [("get", "/api/webhooks/{webhook}/attempts/", None)],
    "webhook-replay": [
        ("post", "/api/webhooks/{webhook}/replay/", {"delivery": "{delivery}"}),
    ],
    "webhook-notice-list": [("get", "/api/webhook-notices/", None)],
    "bounce-rule-list": [
        ("get", "/api/servers/{server}/bounce-rules/", None),
        ("post", "/api/servers/{server}/bounce-rules/", {"status": "550", "bounce_class": "soft"}),
    ],
    "bounce-rule-detail": [("delete", "/api/bounce-rules/{bounce_rule}/", None)],
    "server-stats": [
        ("get", "/api/servers/{server}/stats/", None),
        ("get", "/api/servers/{server}/stats/?stream=outbound&group_by=hour", None),
    ],
    "server-stats-latency": [("get", "/api/servers/{server}/stats/latency/", None)],
    "server-stats-bounce-domains": [("get", "/api/servers/{server}/stats/bounce-domains/", None)],
    "server-queue": [
        ("get", "/api/servers/{server}/queue/", None),
        ("get", "/api/servers/{server}/queue/?reason=scheduled&stream=outbound", None),
    ],
    "server-queue-release": [("post", "/api/servers/{server}/queue/release/", {"all": True})],
    "server-queue-retry": [("post", "/api/servers/{server}/queue/retry/", {"all": True})],
    "server-queue-cancel": [
        ("post", "/api/servers/{server}/queue/cancel/", {"all": True}),
        ("post", "/api/servers/{server}/queue/cancel/", {"server_key": "{server_key}"}),
    ],
    "server-resume": [("post", "/api/servers/{server}/resume/", None)],
    "server-key-resume": [("post", "/api/server-keys/{server_key}/resume/", None)],
    "server-tracking": [
        ("get", "/api/servers/{server}/tracking/", None),
        (
            "patch",
            "/api/servers/{server}/tracking/",
            {"domain": "t.evil.test", "track_opens": False},
        ),
    ],
    "server-tracking-verify": [("post", "/api/servers/{server}/tracking/verify/", None)],
    "server-inbound": [
        ("get", "/api/servers/{server}/inbound/", None),
        ("patch", "/api/servers/{server}/inbound/", {"domain": "in.evil.test"}),
    ],
    "server-inbound-verify": [("post", "/api/servers/{server}/inbound/verify/", None)],
    "server-inbound-message-list": [("get", "/api/servers/{server}/inbound/messages/", None)],
    "inbound-message-detail": [("get", "/api/inbound-messages/{inbound}/", None)],
    "inbound-message-raw": [("get", "/api/inbound-messages/{inbound}/raw/", None)],
    # No key: the token is the right (tests/tracking/test_tracking_hits.py). The victim's
    # ids in its place name nothing.
    "tracking-open": [("get", "/o/{sent}", None), ("get", "/o/{message}", None)],
    "tracking-click": [("get", "/c/{sent}", None), ("get", "/c/{server}", None)],
    # Provider webhooks take no API key: the relay server's webhook secret authenticates
    # them. The victim's server has none set, so for anyone it has no receiver at all
    # (signed calls across tenants: tests/delivery/test_provider_webhooks.py).
    "webhook-mailgun": [
        (
            "post",
            "/webhooks/mailgun/{relay}/",
            {"event-data": {"event": "failed", "severity": "permanent"}},
        ),
    ],
    "webhook-sendgrid": [("post", "/webhooks/sendgrid/{relay}/", None)],
}


def _ids(victim):
    ids = {k: v.pk for k, v in victim.items() if k not in ("account", "server_secret")}
    ids["domain_name"] = victim["domain"].name
    return ids


def _fill(template, victim):
    return template.format(**_ids(victim))


def _fill_body(body, victim):
    """Replace "{name}" values in a body with the victim's ids (as JSON numbers)."""
    if body is None:
        return None
    ids = _ids(victim)
    filled = {}
    for key, value in body.items():
        if isinstance(value, str) and value.startswith("{") and value.strip("{}") in ids:
            filled[key] = ids[value.strip("{}")]
        else:
            filled[key] = value
    return filled


_SOON = (timezone.now() + timedelta(hours=1)).isoformat()

# Routes that take a server key (api/send.py): the intruder walks them with a key of its
# own server (test_intruder_server_key_reaches_only_its_server).
SERVER_KEY_WALK = {
    "email-send": [
        # Sending as the victim's verified domain: it is no identity of the intruder's.
        ("post", "/api/email/", send_body(**{"from": "ceo@victim.test"})),
        ("post", "/api/email/", send_body(**{"from": "x@intruder.test"}, stream="broadcast")),
    ],
    "email-batch": [("post", "/api/email/batch/", [send_body(**{"from": "ceo@victim.test"})])],
    "server-message-list": [
        ("get", "/api/server/messages/", None),
        ("get", "/api/server/messages/?recipient=x@elsewhere.test", None),
        ("get", "/api/server/messages/?tag=secret", None),
    ],
    "server-message-detail": [
        ("get", "/api/server/messages/{sent}/", None),
        ("get", "/api/server/messages/{message}/", None),
        ("patch", "/api/server/messages/{scheduled}/", {"send_at": _SOON}),
    ],
    "server-message-cancel": [
        ("post", "/api/server/messages/{scheduled}/cancel/", None),
        ("post", "/api/server/messages/{message}/cancel/", None),
    ],
    "server-suppression-list": [
        ("get", "/api/server/suppressions/", None),
        ("get", "/api/server/suppressions/?address=gone@elsewhere.test", None),
    ],
    "server-suppression-export": [
        ("get", "/api/server/suppressions/export/", None),
        ("get", "/api/server/suppressions/export/?stream=outbound", None),
    ],
    "server-suppression-detail": [("delete", "/api/server/suppressions/{suppression}/", None)],
    "server-self-webhook-list": [("get", "/api/server/webhooks/", None)],
    "server-self-webhook-detail": [
        ("get", "/api/server/webhooks/{webhook}/", None),
        ("patch", "/api/server/webhooks/{webhook}/", {"enabled": False}),
        ("delete", "/api/server/webhooks/{webhook}/", None),
    ],
    "server-self-webhook-rotate-secret": [
        ("post", "/api/server/webhooks/{webhook}/rotate-secret/", None)
    ],
    "server-self-webhook-attempt-list": [("get", "/api/server/webhooks/{webhook}/attempts/", None)],
    "server-self-webhook-replay": [
        ("post", "/api/server/webhooks/{webhook}/replay/", {"delivery": 1}),
    ],
    "server-self-stats": [
        ("get", "/api/server/stats/", None),
        ("get", "/api/server/stats/?tag=secret", None),
    ],
    "server-self-stats-latency": [("get", "/api/server/stats/latency/", None)],
    "server-self-inbound-message-list": [("get", "/api/server/inbound-messages/", None)],
    "server-self-inbound-message-detail": [
        ("get", "/api/server/inbound-messages/{inbound}/", None)
    ],
    "server-self-inbound-message-raw": [
        ("get", "/api/server/inbound-messages/{inbound}/raw/", None)
    ],
    "server-self-stats-bounce-domains": [("get", "/api/server/stats/bounce-domains/", None)],
    "server-self-queue": [
        ("get", "/api/server/queue/", None),
        ("get", "/api/server/queue/?reason=scheduled", None),
    ],
    "server-self-queue-release": [("post", "/api/server/queue/release/", {"all": True})],
    "server-self-queue-retry": [("post", "/api/server/queue/retry/", {"all": True})],
    "server-self-queue-cancel": [
        ("post", "/api/server/queue/cancel/", {"all": True}),
        ("post", "/api/server/queue/cancel/", {"recipient_domain": "elsewhere.test"}),
    ],
    "server-self": [
        ("get", "/api/server/", None),
        ("patch", "/api/server/", {"name": "pwned", "default_stream": "broadcast"}),
    ],
}


# Routes whose path token is the only credential (test_unsubscribe_link_reaches_only_its_own).
PUBLIC_WALK = {"unsubscribe"}


def test_every_route_is_walked():
    names = {p.name for p in api_urls.urlpatterns if isinstance(p, URLPattern)}
    walked = set(WALK) | set(SERVER_KEY_WALK) | PUBLIC_WALK
    assert names - walked == set(), "add isolation cases for these routes"


@pytest.mark.parametrize("route", sorted(WALK))
def test_intruder_sees_and_changes_nothing(victim, other_account, route):
    secrets = [
        "victim.test",
        "secret-project",
        "key-victim-secret",
        "Victim-Password-42",
        "ceo@",
        str(victim["job"].pk),
        "Victim secret subject",
        "cf-victim-secret-token",
        "victim cloudflare",
        "victim-prod-secret",
        "victim-key-secret",
        "victim-rule-secret",
        "victim-paused-secret",
        victim["server_key"].prefix,
        "press@gmail.test",
        "secret-hook",
        "victim-receiver-secret",
        victim["delivery"].webhook_id,
        "secret-bounce.test",
    ]
    for method, template, body in WALK[route]:
        path = _fill(template, victim)
        if isinstance(body, str):  # a CSV upload
            response = other_account.client.generic(
                method.upper(), path, _fill(body, victim), content_type="text/csv"
            )
        else:
            response = getattr(other_account.client, method)(
                path, _fill_body(body, victim), format="json"
            )
        text = response.content.decode()
        assert response.status_code in {200, 201, 202, 400, 404}, (method, path, text)
        for secret in secrets:
            assert secret not in text, (method, path, secret, text)
        if "{" in template.partition("?")[0]:
            # Another account's id in the path: as if it did not exist.
            assert response.status_code == 404, (method, path, text)
        elif method == "post" and response.status_code != 202:
            assert response.status_code == 400, (method, path, text)

    # Jobs the intruder started (bulk uploads) run to completion and make nothing of A's.
    for job in Job.objects.filter(organization=other_account.org):
        job_run(job_id=str(job.pk))
        job.refresh_from_db()
        rows = (job.result or {}).get("rows", [])
        assert "created" not in {row.get("status") for row in rows}, job.result

    # Nothing of A's changed.
    victim["project"].refresh_from_db()
    victim["relay"].refresh_from_db()
    victim["domain"].refresh_from_db()
    victim["key"].refresh_from_db()
    victim["dns_provider"].refresh_from_db()
    assert victim["dns_provider"].name == "victim cloudflare"
    assert victim["dns_provider"].credentials == {"api_token": "cf-victim-secret-token-0001"}
    assert victim["dns_provider"].status == "untested"  # never tested on the intruder's behalf
    assert not DomainDnsPublication.objects.exists()
    assert victim["project"].name == "secret-project"
    assert victim["relay"].name == "mg"
    assert victim["relay"].credentials == {"api_key": "key-victim-secret-0001"}
    assert victim["domain"].redirect == ""
    assert victim["key"].revoked_at is None
    server = EmailServer.objects.get(pk=victim["server"].pk)
    assert (server.name, server.sandbox) == ("victim-prod-secret", False)
    assert (server.hourly_cap, server.daily_cap) == (None, None)
    assert server.paused_reason == "victim-paused-secret"  # not resumed
    _queue_untouched(victim)
    victim_key = ServerKey.objects.get(pk=victim["server_key"].pk)
    assert (victim_key.revoked_at, victim_key.hourly_cap, victim_key.cap_mode) == (
        None,
        None,
        "hold",
    )
    assert ServerKey.objects.filter(server=server).count() == 1
    assert list(BounceRule.objects.values_list("server_id", "contains")) == [
        (server.pk, "victim-rule-secret")
    ]
    assert OutboundMessage.objects.filter(pk=victim["sent"].pk).exists()
    inbound = ServerInbound.objects.get(server=server)
    assert (inbound.domain, InboundMessage.objects.filter(server=server).count()) == (
        "reply.victim.test",
        1,
    )
    tracking = ServerTracking.objects.get(server=server)
    assert (tracking.domain, tracking.track_opens) == ("track.victim.test", True)
    identity = SenderIdentity.objects.get(pk=victim["identity"].pk)
    assert (identity.status, identity.confirmation_sent_at) == (
        "pending",
        victim["identity"].confirmation_sent_at,
    )
    _webhook_untouched(victim)
    mailbox = Mailbox.objects.get(pk=victim["mailbox"].pk)
    assert mailbox.password == "Victim-Password-42"
    assert not Mailbox.objects.filter(organization=other_account.org).exists()


def test_unknown_task_id_shapes_are_404(other_account):
    for task_id in ("not-a-uuid", str(uuid.uuid4()), "' OR 1=1 --"):
        assert other_account.client.get(f"/api/tasks/{task_id}/").status_code == 404


@pytest.mark.parametrize("route", sorted(SERVER_KEY_WALK))
def test_intruder_server_key_reaches_only_its_server(victim, other_account, route):
    """A server key of another account's server: it sends from no identity of the
    victim's, and sees, changes or queues nothing of the victim's."""
    verified_domain(other_account, "intruder.test")
    own = email_server_create(organization=other_account.org, name="intruder-server")
    key = server_key_create(server=own, kind="full").secret
    before = OutboundMessage.objects.filter(organization=victim["account"].org).count()
    for method, template, body in SERVER_KEY_WALK[route]:
        path = _fill(template, victim)
        # An account key (the victim's own, even) is no server key: 401.
        reply = getattr(victim["account"].client, method)(path, body, format="json")
        assert reply.status_code == 401, (method, path, reply.content)
        reply = getattr(server_client(key), method)(path, body, format="json")
        text = reply.content.decode()
        if "{" in template:
            assert reply.status_code == 404, (method, path, text)
        else:
            assert reply.status_code in {200, 422}, (method, path, text)
        for secret in (
            "victim-prod-secret",
            "Victim secret subject",
            victim["server_secret"],
            "secret-hook",
            "victim-receiver-secret",
            "secret-bounce.test",
            "gone@elsewhere.test",
        ):
            assert secret not in text, (path, secret, text)
        if route == "server-self":
            assert reply.json()["id"] == own.pk
        if route in (
            "server-message-list",
            "server-self-webhook-list",
            "server-suppression-list",
            "server-self-inbound-message-list",
        ):
            assert reply.json()["count"] == 0
        if route == "server-self-stats":
            assert reply.json()["totals"]["sent"] == 0  # the victim's two are not its own
        if route == "server-self-stats-bounce-domains":
            assert reply.json()["domains"] == []
    after = OutboundMessage.objects.filter(organization=victim["account"].org).count()
    assert after == before  # nothing queued in the victim's account
    sent = OutboundMessage.objects.filter(organization=other_account.org)
    assert not sent.filter(mail_from="ceo@victim.test").exists()
    server = EmailServer.objects.get(pk=victim["server"].pk)
    assert (server.name, server.default_stream.stream_id) == ("victim-prod-secret", "outbound")
    assert Suppression.objects.filter(pk=victim["suppression"].pk).exists()
    row = QueuedRecipient.objects.get(message=victim["scheduled"])
    assert row.status == "scheduled"  # neither cancelled nor moved
    assert not DeliveryEvent.objects.filter(message=victim["scheduled"], detail__startswith="moved")
    if route == "server-self-queue":
        assert reply.json()["count"] == 0
    _queue_untouched(victim)
    _webhook_untouched(victim)


def test_unsubscribe_link_reaches_only_its_own(victim, other_account):
    """No key, no cookie: only the token in the victim's message unsubscribes, and only
    its recipient from its stream. Guesses, another message's id, the stored digest,
    another account's key: 404, nothing suppressed."""
    link = ServerMessage.objects.get(message=victim["broadcast"])
    guesses = [
        "a" * 26,
        str(victim["broadcast"].pk),
        link.unsubscribe_digest,
        str(victim["sent"].pk),
    ]
    for client in (APIClient(), other_account.client):
        for token in guesses:
            for reply in (
                client.get(f"/unsubscribe/{token}/"),
                client.post(
                    f"/unsubscribe/{token}/",
                    "List-Unsubscribe=One-Click",
                    content_type="application/x-www-form-urlencoded",
                ),
            ):
                assert reply.status_code == 404, (token, reply.content)
                for secret in ("victim", "reader@x.test"):
                    assert secret not in reply.content.decode()
    # Only the victim fixture's own manual entry: nothing unsubscribed.
    assert not Suppression.objects.exclude(pk=victim["suppression"].pk).exists()
    assert not DeliveryEvent.objects.filter(type="unsubscribed").exists()


def _queue_untouched(victim):
    """No release, retry or cancel reached the victim's queue (queue/transitions.py)."""
    assert not DeliveryEvent.objects.filter(
        organization=victim["account"].org, type__in=["released", "cancelled"]
    ).exists()
    statuses = set(
        QueuedRecipient.objects.filter(message__organization=victim["account"].org).values_list(
            "status", flat=True
        )
    )
    assert "cancelled" not in statuses


def _webhook_untouched(victim):
    webhook = WebhookEndpoint.objects.get(pk=victim["webhook"].pk)
    assert (webhook.url, webhook.enabled) == ("https://hooks.victim.test/secret-hook", True)
    assert webhook.secret == victim["webhook"].secret  # not rotated
    assert webhook.previous_secret == ""
    delivery = WebhookDelivery.objects.get(pk=victim["delivery"].pk)
    assert (delivery.state, delivery.next_attempt_at) == (
        victim["delivery"].state,
        victim["delivery"].next_attempt_at,
    )  # not replayed
    assert WebhookEndpoint.objects.filter(server=victim["server"]).count() == 1
