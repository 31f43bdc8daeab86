"""Native (direct-to-MX) delivery against local DNS and aiosmtpd sinks, real sockets."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import dkim
import pytest
from django.utils import timezone

from mailplane.delivery.bounces import verp_recipient_id
from mailplane.delivery.mx import RouteError, Routes, host_addresses, mx_hosts
from mailplane.delivery.results import SendResult, Status
from mailplane.delivery.worker import DeliveryWorker
from mailplane.dns import caching_async_resolver_from_settings
from mailplane.queue.models import DeliveryEvent, QueuedRecipient, Suppression
from mailplane.storage.maildir import mailbox_storage_path

pytestmark = pytest.mark.timeout(60) if hasattr(pytest.mark, "timeout") else []


def worker(**kwargs):
    return DeliveryWorker(rng=lambda: 0.5, **kwargs)


def events(message):
    return [(e.type, e.remote_host) for e in DeliveryEvent.objects.filter(message=message)]


def inbox(mailbox):
    new = mailbox_storage_path(organization_id=mailbox.organization_id, address=mailbox.address)
    return sorted((new / "new").glob("*")) if (new / "new").exists() else []


def test_mx_delivery_is_dkim_signed_verp_addressed_and_recorded(sender, dns_server, mx_sinks):
    sink = mx_sinks("accept")
    dns_server.mx("dest.test", "mx1.dest.test", preference=10)
    dns_server.a("mx1.dest.test", sink.address)
    message = sender.send("Carol@dest.test", subject="Signed hello")

    assert worker().run_once() == 1

    [got] = sink.received
    row = QueuedRecipient.objects.get(message=message)
    assert got.rcpt_tos == ["Carol@dest.test"]
    # VERP return path on the domain's bounce host, naming this very queue row.
    assert got.mail_from.endswith("@" + sender.domain.return_path_host)
    assert verp_recipient_id(got.mail_from) == row.pk
    # The DKIM signature verifies against the domain's published key.
    asked = []

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        asked.append(name)
        return f"v=DKIM1; k=rsa; p={sender.domain.dkim_public_key}".encode()

    assert got.data.startswith(b"DKIM-Signature:")
    assert dkim.verify(got.data, dnsfunc=dnsfunc)
    assert asked == [f"{sender.domain.dkim_selector}._domainkey.acme.test.".encode()]
    assert b"c=relaxed/relaxed" in got.data.replace(b"\r\n ", b" ")
    # Tampering breaks it (the test is not vacuous).
    assert not dkim.verify(got.data.replace(b"Signed hello", b"Signed hellO"), dnsfunc=dnsfunc)
    assert (row.status, row.attempts) == ("delivered", 1)
    assert events(message) == [("queued", ""), ("delivered", "mx1.dest.test")]
    assert "250" in DeliveryEvent.objects.get(message=message, type="delivered").remote_reply


def test_falls_back_to_next_mx_in_preference_order(sender, dns_server, mx_sinks):
    dead = mx_sinks("accept")
    dead.stop()  # nothing listens there any more: connection refused
    dropper = mx_sinks("drop")
    good = mx_sinks("accept")
    dns_server.mx("dest.test", "mx3.dest.test", preference=30)
    dns_server.mx("dest.test", "mx1.dest.test", preference=10)
    dns_server.mx("dest.test", "mx2.dest.test", preference=20)
    dns_server.a("mx1.dest.test", dead.address)
    dns_server.a("mx2.dest.test", dropper.address)
    dns_server.a("mx3.dest.test", good.address)
    message = sender.send("carol@dest.test")

    worker().run_once()

    assert len(good.received) == 1 and dropper.received == []
    assert events(message)[-1] == ("delivered", "mx3.dest.test")


def test_implicit_mx_is_the_domain_address(sender, dns_server, mx_sinks):
    sink = mx_sinks("accept")
    dns_server.a("nomx.test", sink.address)  # RFC 5321 §5.1: no MX → the A record
    message = sender.send("dave@nomx.test")
    worker().run_once()
    assert len(sink.received) == 1
    assert events(message)[-1] == ("delivered", "nomx.test")


def test_nxdomain_bounces(sender, dns_server):
    message = sender.send("x@missing.test")
    worker().run_once()
    row = QueuedRecipient.objects.get(message=message)
    assert row.status == "bounced" and "5.1.2" in row.last_reply


def test_temporary_failure_retries_on_a_bounded_backoff(sender, dns_server, mx_sinks):
    sink = mx_sinks("tempfail")
    dns_server.mx("dest.test", "mx1.dest.test")
    dns_server.a("mx1.dest.test", sink.address)
    message = sender.send("carol@dest.test")
    t0 = timezone.now()
    w = worker()

    w.run_once(now=t0)
    row = QueuedRecipient.objects.get(message=message)
    assert (row.status, row.attempts) == ("deferred", 1)
    # At the floor the jitter only goes up (60-72 s): the centre of the random source is
    # the centre of that range.
    assert row.next_attempt_at == t0 + timedelta(seconds=66)
    deferred = DeliveryEvent.objects.get(message=message, type="deferred")
    assert deferred.remote_reply.startswith("451 4.7.1 greylisted")
    assert deferred.remote_host == "mx1.dest.test"

    assert w.run_once(now=t0 + timedelta(seconds=30)) == 0  # not due yet
    w.run_once(now=t0 + timedelta(seconds=67))
    row.refresh_from_db()
    assert row.attempts == 2
    assert row.next_attempt_at == t0 + timedelta(seconds=67 + 120)  # doubled

    delays = []
    # 240, 480, ... then capped at the maximum (1 h), where the jitter only goes down
    # (2880-3600 s, centre 3240 s).
    for _ in range(3, 12):
        now = row.next_attempt_at
        w.run_once(now=now)
        row.refresh_from_db()
        delays.append((row.next_attempt_at - now).total_seconds())
    assert delays == [240, 480, 960, 1920, 3240, 3240, 3240, 3240, 3240]
    assert row.attempts == 11
    assert DeliveryEvent.objects.filter(message=message, type="deferred").count() == 11
    sink.set_mode("accept")
    w.run_once(now=row.next_attempt_at)
    row.refresh_from_db()
    assert row.status == "delivered" and len(sink.received) == 1


def test_expired_retries_bounce_to_the_senders_inbox(sender, dns_server, mx_sinks):
    sink = mx_sinks("tempfail")
    dns_server.mx("dest.test", "mx1.dest.test")
    dns_server.a("mx1.dest.test", sink.address)
    message = sender.send("carol@dest.test")
    QueuedRecipient.objects.filter(message=message).update(
        expires_at=timezone.now() + timedelta(seconds=30)
    )
    worker().run_once()
    row = QueuedRecipient.objects.get(message=message)
    assert row.status == "bounced" and "deadline" in row.last_reply
    [dsn] = inbox(sender.alice)
    assert b"Status: 5.4.7" in dsn.read_bytes()
    assert not Suppression.objects.exists()  # expiry is not a hard bounce


def test_5xx_bounces_with_a_dsn_and_suppresses_the_recipient(sender, dns_server, mx_sinks):
    sink = mx_sinks("reject")
    dns_server.mx("dest.test", "mx1.dest.test")
    dns_server.a("mx1.dest.test", sink.address)
    message = sender.send("ghost@dest.test", subject="To a ghost")

    worker().run_once()

    row = QueuedRecipient.objects.get(message=message)
    assert row.status == "bounced" and row.last_reply.startswith("550 5.1.1")
    assert events(message)[-1] == ("bounced", "mx1.dest.test")
    [dsn_path] = inbox(sender.alice)
    dsn = dsn_path.read_bytes()
    assert b"multipart/report; report-type=delivery-status" in dsn
    assert b"Final-Recipient: rfc822; ghost@dest.test" in dsn
    assert b"Action: failed" in dsn and b"Status: 5.1.1" in dsn
    assert b"Remote-MTA: dns; mx1.dest.test" in dsn
    assert b"Subject: To a ghost" in dsn  # original headers returned
    from mailplane.delivery.bounces import dsn_parse

    [reported] = dsn_parse(dsn)
    assert (reported.action, reported.status) == ("failed", "5.1.1")
    supp = Suppression.objects.get()
    assert (supp.organization_id, supp.address) == (sender.account.org.pk, "ghost@dest.test")

    # The next message to that address is held, not sent.
    sink.set_mode("accept")
    again = sender.send("Ghost@dest.test", subject="Again")
    worker().run_once()
    assert sink.received == []
    assert QueuedRecipient.objects.get(message=again).status == "suppressed"
    assert events(again)[-1] == ("suppressed", "")


def test_local_mailbox_to_local_mailbox_needs_no_dns(sender, settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "DNS_RESOLVER": "127.0.0.1:9"}  # nobody
    message = sender.send(sender.bob.address, subject="Local hop")
    worker().run_once()
    [path] = inbox(sender.bob)
    data = path.read_bytes()
    assert data.startswith(b"Return-Path: <alice@acme.test>\r\nDelivered-To: bob@acme.test\r\n")
    assert b"Subject: Local hop" in data
    assert inbox(sender.alice) == []
    assert events(message)[-1] == ("delivered", "local")


def test_a_dead_workers_claim_is_finished_by_another_after_the_lease(sender, dns_server, mx_sinks):
    sink = mx_sinks("accept")
    dns_server.mx("dest.test", "mx1.dest.test")
    dns_server.a("mx1.dest.test", sink.address)
    message = sender.send("carol@dest.test", "dan@dest.test")
    t0 = timezone.now()
    crashed = worker(worker_id="crashed", lease=timedelta(seconds=60))
    assert len(crashed.claim(now=t0)) == 2  # ...and then it dies without recording

    survivor = worker(worker_id="survivor", lease=timedelta(seconds=60))
    assert survivor.run_once(now=t0 + timedelta(seconds=59)) == 0  # lease still held
    assert survivor.run_once(now=t0 + timedelta(seconds=61)) == 2
    assert sorted(r.rcpt_tos[0] for r in sink.received) == ["carol@dest.test", "dan@dest.test"]
    assert set(
        QueuedRecipient.objects.filter(message=message).values_list("status", flat=True)
    ) == {"delivered"}
    # A late record from the crashed worker changes nothing (its claim was taken over).
    assert QueuedRecipient.objects.filter(claimed_by="crashed").count() == 0


def test_hung_mx_times_out_and_defers(sender, dns_server, mx_sinks, settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "DELIVERY_SMTP_TIMEOUT": 0.5}
    sink = mx_sinks("hang")
    dns_server.mx("dest.test", "mx1.dest.test")
    dns_server.a("mx1.dest.test", sink.address)
    message = sender.send("carol@dest.test")
    worker().run_once()
    row = QueuedRecipient.objects.get(message=message)
    assert row.status == "deferred" and "4.4.2" in row.last_reply


def test_connections_per_destination_are_bounded_and_reused(sender, dns_server, mx_sinks):
    relay = sender.relay
    relay.configuration = {"max_connections_per_domain": 2}
    relay.save()
    sink = mx_sinks("accept")
    dns_server.mx("dest.test", "mx1.dest.test")
    dns_server.a("mx1.dest.test", sink.address)
    for n in range(20):
        sender.send(f"user{n}@dest.test", subject=f"n{n}")
    worker().run_once()
    assert len(sink.received) == 20
    assert len({r.peer for r in sink.received}) == 2  # two connections, ten messages each


# -- MX resolution through mailplane.dns (RFC 5321 §5.1, RFC 7505, RFC 2308) -------------


def _route(domain: str):
    """mx_hosts + host_addresses as the provider runs them, with a caching resolver."""
    resolver = caching_async_resolver_from_settings()

    async def run():
        hosts = await mx_hosts(resolver, domain)
        return [
            (h.preference, h.name, h.implicit, await host_addresses(resolver, h.name))
            for h in hosts
        ]

    return asyncio.run(run())


def _route_error(domain: str) -> SendResult:
    with pytest.raises(RouteError) as caught:
        _route(domain)
    return caught.value.result


def test_mx_route_outcomes_by_dns_answer(dns_server, settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "DNS_TIMEOUT": 0.3}
    dns_server.mx("dest.test", "mx2.dest.test", preference=20)
    dns_server.mx("dest.test", "mx1.dest.test", preference=10)
    dns_server.a("mx1.dest.test", "192.0.2.1")
    dns_server.aaaa("mx1.dest.test", "2001:db8::1")
    dns_server.a("mx2.dest.test", "192.0.2.2")
    assert _route("dest.test") == [
        (10, "mx1.dest.test", False, ["192.0.2.1", "2001:db8::1"]),  # IPv4 first
        (20, "mx2.dest.test", False, ["192.0.2.2"]),
    ]
    # NODATA for MX with an address: the implicit MX (RFC 5321 §5.1).
    dns_server.a("nomx.test", "192.0.2.3")
    assert _route("nomx.test") == [(0, "nomx.test", True, ["192.0.2.3"])]
    # NODATA and no address either: an implicit MX with nowhere to go (the provider bounces).
    dns_server.txt("bare.test", "v=spf1 -all")
    assert _route("bare.test") == [(0, "bare.test", True, [])]
    # NXDOMAIN: the domain does not exist, permanently.
    missing = _route_error("missing.test")
    assert missing.status is Status.PERMANENT and missing.reply.startswith("550 5.1.2")
    # RFC 7505: null MX.
    dns_server.mx("nomail.test", ".", preference=0)
    null = _route_error("nomail.test")
    assert null.status is Status.PERMANENT and null.reply.startswith("556 5.1.10")
    # No answer (timeout) or SERVFAIL for the MX or for the host's addresses: try later.
    dns_server.fail("slow.test", "timeout", rdtype="MX")
    dns_server.fail("broken.test", "servfail")
    dns_server.mx("hostfail.test", "mx.hostfail.test")
    dns_server.fail("mx.hostfail.test", "servfail")
    for domain, why in [
        ("slow.test", "timeout"),
        ("broken.test", "SERVFAIL"),
        ("hostfail.test", "SERVFAIL"),
    ]:
        failed = _route_error(domain)
        assert failed.status is Status.TEMPORARY, domain
        assert failed.reply.startswith("451 4.4.3") and why in failed.reply, failed.reply


def test_equal_preferences_are_shuffled_lower_first(dns_server):
    for name, preference in [("a", 10), ("b", 10), ("c", 20)]:
        dns_server.mx("dest.test", f"{name}.dest.test", preference=preference)
    resolver = caching_async_resolver_from_settings()

    async def run():
        return [tuple(h.name for h in await mx_hosts(resolver, "dest.test")) for _ in range(40)]

    orders = set(asyncio.run(run()))
    assert orders == {
        ("a.dest.test", "b.dest.test", "c.dest.test"),
        ("b.dest.test", "a.dest.test", "c.dest.test"),
    }
    assert len(dns_server.queried("dest.test", "MX")) == 1  # cached for its TTL


def test_routes_ask_each_question_once_however_many_chunks_ask_together(dns_server):
    """A batch's first pass: every chunk for a domain needs its MX and addresses at the
    same moment. One query goes out per question; the rest wait for its answer."""
    dns_server.mx("dest.test", "a.dest.test", preference=10)
    dns_server.mx("dest.test", "b.dest.test", preference=10)
    dns_server.a("a.dest.test", "192.0.2.1")
    routes = Routes(caching_async_resolver_from_settings(), memo_seconds=60)

    async def run():
        hosts = await asyncio.gather(*(routes.hosts("dest.test") for _ in range(50)))
        addresses = await asyncio.gather(*(routes.addresses("a.dest.test") for _ in range(50)))
        return hosts, addresses

    hosts, addresses = asyncio.run(run())
    assert len(dns_server.queried("dest.test", "MX")) == 1
    assert len(dns_server.queried("a.dest.test", "A")) == 1
    assert len(dns_server.queried("a.dest.test", "AAAA")) == 1
    assert all(a == ["192.0.2.1"] for a in addresses)
    # Shared answers, still drawn afresh among equal preferences for each caller.
    assert {tuple(h.name for h in found) for found in hosts} == {
        ("a.dest.test", "b.dest.test"),
        ("b.dest.test", "a.dest.test"),
    }


def test_routes_keep_answers_not_failures(dns_server):
    dns_server.fail("flaky.test", "servfail", rdtype="MX")
    routes = Routes(caching_async_resolver_from_settings(), memo_seconds=60)

    async def ask():
        try:
            return [h.name for h in await routes.hosts("flaky.test")]
        except RouteError as exc:
            return exc.result.reply

    assert asyncio.run(ask()).startswith("451 4.4.3")
    dns_server.heal("flaky.test")
    dns_server.mx("flaky.test", "mx.flaky.test")
    assert asyncio.run(ask()) == ["mx.flaky.test"]  # asked again, not the memoised failure


def test_null_mx_bounces_and_mx_without_address_defers(sender, dns_server):
    dns_server.mx("nomail.test", ".", preference=0)
    dns_server.txt("bare.test", "v=spf1 -all")  # exists, no MX, no address
    dns_server.mx("dest.test", "mx1.dest.test")  # ...which has no address
    nomail = sender.send("x@nomail.test")
    bare = sender.send("x@bare.test")
    dest = sender.send("x@dest.test")
    worker().run_once()
    by_message = {r.message_id: r for r in QueuedRecipient.objects.all()}
    assert by_message[nomail.pk].status == "bounced"
    assert by_message[nomail.pk].last_reply.startswith("556 5.1.10")
    assert by_message[bare.pk].status == "bounced"
    assert by_message[bare.pk].last_reply == "550 5.1.2 bare.test has no MX and no address"
    assert by_message[dest.pk].status == "deferred"
    assert "4.4.3 MX mx1.dest.test has no address" in by_message[dest.pk].last_reply


# -- a 4xx tries the next MX host in the same attempt (Postfix's soft-error fallback) -------


def _two_mx(dns_server, primary, backup) -> None:
    dns_server.mx("dest.test", "mx1.dest.test", preference=10)
    dns_server.mx("dest.test", "mx2.dest.test", preference=20)
    dns_server.a("mx1.dest.test", primary.address)
    dns_server.a("mx2.dest.test", backup.address)


def test_greylisting_primary_hands_over_to_an_accepting_backup(sender, dns_server, mx_sinks):
    primary, backup = mx_sinks("tempfail"), mx_sinks("accept")
    _two_mx(dns_server, primary, backup)
    message = sender.send("carol@dest.test")

    worker().run_once()

    row = QueuedRecipient.objects.get(message=message)
    assert (row.status, row.attempts) == ("delivered", 1)
    assert primary.received == [] and len(backup.received) == 1
    assert events(message) == [("queued", ""), ("delivered", "mx2.dest.test")]


def test_only_the_refused_envelopes_go_to_the_backup(sender, dns_server, mx_sinks):
    primary, backup = mx_sinks("accept"), mx_sinks("accept")
    primary.handler.rcpt_replies["bob@dest.test"] = "450 4.2.1 mailbox busy"
    primary.handler.rcpt_replies["dan@dest.test"] = "550 5.1.1 no such user"
    _two_mx(dns_server, primary, backup)
    for to in ("carol@dest.test", "bob@dest.test", "dan@dest.test", "erin@dest.test"):
        sender.send(to, subject=to)

    worker().run_once()

    status = dict(QueuedRecipient.objects.values_list("rcpt_to", "status"))
    assert status == {
        "carol@dest.test": "delivered",
        "bob@dest.test": "delivered",
        "dan@dest.test": "bounced",  # 5xx is final: the backup never hears of dan
        "erin@dest.test": "delivered",
    }
    assert sorted(r.rcpt_tos[0] for r in primary.received) == ["carol@dest.test", "erin@dest.test"]
    assert [r.rcpt_tos[0] for r in backup.received] == ["bob@dest.test"]


def test_4xx_everywhere_defers_with_the_last_servers_reply(sender, dns_server, mx_sinks):
    primary, backup = mx_sinks("tempfail"), mx_sinks("tempfail")
    backup.handler.tempfail_reply = "452 4.3.1 insufficient system storage"
    _two_mx(dns_server, primary, backup)
    message = sender.send("carol@dest.test")

    worker().run_once()

    row = QueuedRecipient.objects.get(message=message)
    assert (row.status, row.attempts) == ("deferred", 1)
    assert row.last_reply == "452 4.3.1 insufficient system storage"
    assert events(message)[-1] == ("deferred", "mx2.dest.test")
    assert primary.connections == 1 and backup.connections == 1


def test_a_servers_4xx_outranks_a_later_connection_failure(sender, dns_server, mx_sinks):
    primary, backup = mx_sinks("tempfail"), mx_sinks("accept")
    backup.stop()  # connection refused
    _two_mx(dns_server, primary, backup)
    message = sender.send("carol@dest.test")

    worker().run_once()

    row = QueuedRecipient.objects.get(message=message)
    assert row.status == "deferred"
    assert row.last_reply == "451 4.7.1 greylisted, try again later"
    assert events(message)[-1] == ("deferred", "mx1.dest.test")


def test_5xx_at_the_primary_bounces_without_trying_the_backup(sender, dns_server, mx_sinks):
    primary, backup = mx_sinks("reject"), mx_sinks("accept")
    _two_mx(dns_server, primary, backup)
    message = sender.send("ghost@dest.test")

    worker().run_once()

    row = QueuedRecipient.objects.get(message=message)
    assert row.status == "bounced" and row.last_reply.startswith("550 5.1.1")
    assert backup.connections == 0 and backup.received == []


def test_an_address_that_needs_smtputf8_bounces_at_a_server_without_it(
    sender, dns_server, mx_sinks
):
    sink = mx_sinks("accept")  # aiosmtpd without enable_SMTPUTF8: no SMTPUTF8 in EHLO
    dns_server.mx("dest.test", "mx1.dest.test")
    dns_server.a("mx1.dest.test", sink.address)
    message = sender.send("josé@dest.test", "carol@dest.test")
    worker().run_once()
    rows = {r.rcpt_to: r for r in QueuedRecipient.objects.filter(message=message)}
    assert rows["josé@dest.test"].status == "bounced"
    assert "5.6.7" in rows["josé@dest.test"].last_reply
    assert "SMTPUTF8" in rows["josé@dest.test"].last_reply
    # The refusal is the client's, before MAIL: the session stays usable for the next one.
    assert rows["carol@dest.test"].status == "delivered"
    assert [r.rcpt_tos for r in sink.received] == [["carol@dest.test"]]


def test_an_address_that_needs_smtputf8_is_delivered_where_it_is_offered(
    sender, dns_server, mx_sinks
):
    sink = mx_sinks("accept", smtputf8=True)
    dns_server.mx("dest.test", "mx1.dest.test")
    dns_server.a("mx1.dest.test", sink.address)
    message = sender.send("josé@dest.test")
    worker().run_once()
    assert QueuedRecipient.objects.get(message=message).status == "delivered"
    assert [r.rcpt_tos for r in sink.received] == [["josé@dest.test"]]
