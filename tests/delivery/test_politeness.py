"""Destination politeness (delivery/politeness.py): a receiver's throttle reply slows that MX
group for that source address, by itself, and the limits come back after quiet periods.

Measured at the sink (messages in flight at once and messages per pass, per source address)
with the worker's clock injected (run_once(now=...)): no sleeping for the hold or the quiet
period. Both state backends: Redis (shared by workers) and the process's own.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from mailplane.delivery.mx import MxHost
from mailplane.delivery.politeness import (
    LocalPoliteSlots,
    PoliteKey,
    SharedPoliteSlots,
    host_group,
    mx_group,
    politeness_reset,
    throttle_details,
    throttle_reply,
    throttle_state,
    throttle_stops_connection,
)
from mailplane.delivery.results import SendResult
from mailplane.delivery.worker import DeliveryWorker
from mailplane.queue.models import DeliveryEvent, QueuedRecipient, Suppression
from mailplane.relays.models import RelayServer
from mailplane.relays.services import relay_server_create

pytestmark = pytest.mark.timeout(120)

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
# Source addresses of their own (each relay binds one), away from the sinks' 127.80+ nets.
_NET = f"127.{40 + os.getpid() % 30}.{os.getpid() % 250}"
SOURCE_A, SOURCE_B = f"{_NET}.201", f"{_NET}.202"
GMAIL_421 = (
    "421 4.7.28 Our system has detected an unusual rate of unsolicited mail originating "
    "from your IP address. To protect our users from spam, mail sent from your IP address "
    "has been temporarily rate limited."
)
KNOBS = {
    "DELIVERY_POLITENESS_MAX_CONNECTIONS": 4,
    "DELIVERY_POLITENESS_MAX_RATE": 240.0,  # per minute: a 10 s bucket holds 40
    "DELIVERY_POLITENESS_BURST_SECONDS": 10.0,
    "DELIVERY_THROTTLE_HOLD_SECONDS": 60.0,
    "DELIVERY_POLITENESS_QUIET_SECONDS": 3600.0,
    "DELIVERY_POLITENESS_RATE_STEP": 0.5,
    "DELIVERY_MAX_CONNECTIONS_PER_DOMAIN": 5,
    "DELIVERY_RETRY_MIN_SECONDS": 60,
}


@pytest.fixture(params=["redis", "local"])
def backend(request: Any, settings: Any) -> str:
    """Politeness state in Redis (cleared first) or in this process."""
    politeness_reset()
    url = ""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        client = redis.Redis.from_url(url)
        for key in client.scan_iter("mailplane:delivery:polite:*"):
            client.delete(key)
        for key in client.scan_iter("mailplane:delivery:slots:*"):
            client.delete(key)
    settings.MAILPLANE = {**settings.MAILPLANE, **KNOBS, "REDIS_URL": url}
    return str(request.param)


# --- groups and replies ------------------------------------------------------------------


def test_domains_are_grouped_by_their_mx() -> None:
    assert host_group("aspmx.l.google.com") == "google"
    assert host_group("ALT1.ASPMX.L.GOOGLE.COM.") == "google"
    assert host_group("gmail-smtp-in.l.google.com") == "google"
    assert host_group("acme-test.mail.protection.outlook.com") == "microsoft"
    assert host_group("mta7.am0.yahoodns.net") == "yahoo"
    assert host_group("mx01.mail.icloud.com") == "apple"
    assert host_group("mx2.mail.example.co.uk") == "example.co.uk"
    assert host_group("mx.other.test") == "other.test"
    assert host_group("notgoogle.com") == "notgoogle.com"  # a suffix is a whole label
    assert host_group("127.0.0.9") == "127.0.0.9"
    assert len(host_group("x" * 5000 + ".test")) <= 253  # bounded, never raises
    assert host_group("") == "-"
    hosts = [MxHost(20, "mx.backup.test"), MxHost(5, "aspmx.l.google.com")]
    assert mx_group(hosts) == "google"
    assert mx_group([]) is None


def test_operators_can_add_groups(settings: Any) -> None:
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "DELIVERY_POLITENESS_GROUPS": {"pphosted.com": "proofpoint"},
    }
    assert host_group("mx0a-001.pphosted.com") == "proofpoint"


@pytest.mark.parametrize(
    "reply",
    [
        GMAIL_421,
        "450 4.2.1 The user you are trying to contact is receiving mail at a rate that "
        "prevents additional messages from being delivered.",
        "451 4.7.500 Server busy. Please try again later from [1.2.3.4]. (S77714)",
        "451 4.7.650 The mail server [1.2.3.4] has been temporarily rate limited",
        "421 4.7.0 [TSS04] Messages from 1.2.3.4 temporarily deferred due to unexpected volume",
        "550 5.7.1 rate limit exceeded",
    ],
)
def test_throttle_replies_are_recognised(reply: str) -> None:
    code = int(reply[:3])
    assert throttle_reply(SendResult.from_smtp(code, reply[4:], "mx"))


@pytest.mark.parametrize(
    "reply",
    [
        "451 4.7.1 greylisted, try again later",
        "550 5.1.1 no such user",
        "550 5.7.606 Access denied, banned sending IP [1.2.3.4]",  # a block, not a throttle
        "\x00\xff\ufffd garbage that is not SMTP at all",
        "",
    ],
)
def test_other_replies_are_not_throttles(reply: str) -> None:
    assert not throttle_reply(SendResult.temporary(reply, "mx"))
    assert not throttle_reply(SendResult.delivered("250 2.0.0 rate limit ok", "mx"))


def test_one_recipients_rate_does_not_stop_the_connection() -> None:
    per_user = SendResult.from_smtp(450, "4.2.1 The user is receiving mail at a rate ...", "mx")
    assert throttle_reply(per_user) and not throttle_stops_connection(per_user)
    assert throttle_stops_connection(SendResult.from_smtp(421, GMAIL_421[4:], "mx"))


def test_a_huge_reply_costs_no_more_than_its_start() -> None:
    assert throttle_reply(SendResult.temporary(GMAIL_421 + " x" * 500_000, "mx"))
    # Past the scanned start, a phrase says nothing: no regex over a megabyte per message.
    assert not throttle_reply(SendResult.temporary("451 " + "x" * 1_000_000 + " 4.7.28", "mx"))


# --- the control law, on each backend ----------------------------------------------------


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def test_aimd_halves_on_a_throttle_and_steps_back_after_quiet_periods(
    backend: str, settings: Any
) -> None:
    async def run() -> list[Any]:
        url = str(settings.MAILPLANE["REDIS_URL"])
        slots: Any = (
            SharedPoliteSlots(url, owner="t", lease_seconds=30) if url else LocalPoliteSlots()
        )
        key = PoliteKey("google", "192.0.2.1")
        dest = (1, "g.test")
        seen: list[Any] = []

        async def take(at: datetime, want: int, *, throttle: bool = False) -> Any:
            async with slots.polite(dest, 5, key, want=want, now=_ms(at)) as grant:
                grant.throttled = throttle
            seen.append((grant.granted, grant.until, grant.limit))
            return grant

        await take(T0, 10)  # 40 tokens, 4 connections
        g = await take(T0, 10, throttle=True)
        assert g.until == _ms(T0 + timedelta(seconds=60))
        await take(T0 + timedelta(seconds=30), 10)  # held: no connection during the hold
        after = await take(T0 + timedelta(seconds=61), 100)  # 120/min: a 20-message bucket
        one_period = await take(T0 + timedelta(seconds=61 + 3600), 100)
        two_periods = await take(T0 + timedelta(seconds=61 + 7200), 100)
        await slots.close()
        return [seen, after, one_period, two_periods]

    seen, after, one_period, two_periods = asyncio.run(run())
    assert seen[0][:1] == (10,) and seen[0][2] == 4
    assert seen[2][0] == 0 and seen[2][1] == _ms(T0 + timedelta(seconds=60))
    assert (after.granted, after.limit) == (20, 2)  # halved: 2 connections, 120/min
    assert (one_period.granted, one_period.limit) == (40, 3)  # +1 connection, rate back
    assert (two_periods.granted, two_periods.limit) == (40, 4)  # at the ceilings again


def test_one_halving_per_hold_however_many_connections_hear_it(backend: str, settings: Any) -> None:
    async def run() -> tuple[int, float | None]:
        url = str(settings.MAILPLANE["REDIS_URL"])
        slots: Any = (
            SharedPoliteSlots(url, owner="t", lease_seconds=30) if url else LocalPoliteSlots()
        )
        key = PoliteKey("microsoft", "192.0.2.2")
        grants = []
        for n in range(4):  # four connections open at once, all told 451 4.7.500
            cm = slots.polite((1, f"m{n}.test"), 5, key, want=5, now=_ms(T0))
            grants.append((cm, await cm.__aenter__()))
        for cm, grant in grants:
            grant.throttled = True
            await cm.__aexit__(None, None, None)
        await slots.close()
        details = throttle_details("microsoft", "192.0.2.2", now=T0)
        return details.connections, details.rate

    assert asyncio.run(run()) == (2, 120.0)


def test_an_unlimited_rate_is_halved_from_what_was_sent(backend: str, settings: Any) -> None:
    settings.MAILPLANE = {**settings.MAILPLANE, "DELIVERY_POLITENESS_MAX_RATE": 0.0}

    async def run() -> None:
        url = str(settings.MAILPLANE["REDIS_URL"])
        slots: Any = (
            SharedPoliteSlots(url, owner="t", lease_seconds=30) if url else LocalPoliteSlots()
        )
        key = PoliteKey("yahoo", "192.0.2.3")
        for _ in range(3):
            async with slots.polite((1, "y.test"), 5, key, want=100, now=_ms(T0)) as grant:
                assert grant.granted == 100  # no rate ceiling: the whole chunk
        async with slots.polite((1, "y.test"), 5, key, want=100, now=_ms(T0)) as grant:
            grant.throttled = True
        await slots.close()

    asyncio.run(run())
    assert throttle_details("yahoo", "192.0.2.3", now=T0).rate == 200.0  # 400 sent, halved
    # Recovered to the rate it had when throttled: the limit is lifted again.
    later = T0 + timedelta(hours=3)
    assert throttle_details("yahoo", "192.0.2.3", now=later).rate is None


# --- end to end: the worker, the sinks, the queue ------------------------------------------


class ThrottlingSink:
    """Per source address at the sink: messages in DATA at once (peak) and messages taken;
    answers GMAIL_421 at RCPT to `throttled` once it has taken `after` from it."""

    def __init__(self, sink: Any, *, hold: float = 0.05) -> None:
        self.sink = sink
        self.in_flight: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.taken: Counter[str] = Counter()
        self.throttled: str | None = None
        self.after = 0
        self.reply = GMAIL_421
        handler = sink.handler
        original_rcpt, original_data = handler.handle_RCPT, handler.handle_DATA

        async def handle_RCPT(
            server: Any, session: Any, envelope: Any, address: str, o: Any
        ) -> str:
            peer = session.peer[0]
            if peer == self.throttled and self.taken[peer] >= self.after:
                return self.reply
            return str(await original_rcpt(server, session, envelope, address, o))

        async def handle_DATA(server: Any, session: Any, envelope: Any) -> str:
            peer = session.peer[0]
            self.in_flight[peer] += 1
            self.peak[peer] = max(self.peak[peer], self.in_flight[peer])
            try:
                await asyncio.sleep(hold)
                self.taken[peer] += 1
                return str(await original_data(server, session, envelope))
            finally:
                self.in_flight[peer] -= 1

        handler.handle_RCPT = handle_RCPT
        handler.handle_DATA = handle_DATA

    def new_pass(self) -> None:
        self.peak.clear()
        self.taken.clear()


def _relay(sender: Any, name: str, source: str) -> RelayServer:
    base = sender.relay
    return relay_server_create(
        organization=sender.account.org,
        name=name,
        provider=base.provider,
        configuration={**(base.configuration or {}), "source_address": source},
        credentials=dict(base.credentials or {}),
    )


@pytest.fixture
def scene(backend: str, sender: Any, dns_server: Any, mx_sinks: Any) -> dict[str, Any]:
    google, other = mx_sinks("accept"), mx_sinks("accept")
    for n in range(4):  # four Google-hosted domains: one group
        dns_server.mx(f"g{n}.test", "aspmx.l.google.com", preference=1)
        dns_server.mx(f"g{n}.test", "alt1.aspmx.l.google.com", preference=5)
    dns_server.a("aspmx.l.google.com", google.address)
    dns_server.a("alt1.aspmx.l.google.com", google.address)
    dns_server.mx("other.test", "mx.other.test")
    dns_server.a("mx.other.test", other.address)
    return {
        "google": ThrottlingSink(google),
        "other": ThrottlingSink(other),
        "a": _relay(sender, "source-a", SOURCE_A),
        "b": _relay(sender, "source-b", SOURCE_B),
    }


def _queue(sender: Any, relay: RelayServer, domains: list[str], per_domain: int, tag: str) -> None:
    for domain in domains:
        for n in range(per_domain):
            sender.send(f"{tag}{n}@{domain}", relay=relay, subject=f"{tag}-{domain}-{n}")


def _pass(at: datetime) -> None:
    DeliveryWorker(batch_size=500).run_once(now=at)


GOOGLE = [f"g{n}.test" for n in range(4)]


def _clock() -> datetime:
    """The injected clock's start: just ahead of the real one, which made the rows due."""
    return datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)


def test_a_throttle_slows_that_group_for_that_source_and_recovers(
    scene: dict[str, Any], sender: Any
) -> None:
    google, other = scene["google"], scene["other"]
    t0 = _clock()
    google.throttled, google.after = SOURCE_A, 8
    _queue(sender, scene["a"], GOOGLE, 10, "a")  # 40 from A to Google, 4 connections
    _queue(sender, scene["a"], ["other.test"], 10, "o")
    _pass(t0)
    assert 8 <= google.taken[SOURCE_A] < 40
    hold_end = t0 + timedelta(seconds=60)
    assert throttle_state("google", SOURCE_A, now=t0) == hold_end
    assert throttle_state("google", SOURCE_B, now=t0) is None
    assert throttle_state("other.test", SOURCE_A, now=t0) is None
    assert other.taken[SOURCE_A] == 10  # another group, same address: untouched
    held = QueuedRecipient.objects.filter(last_reply__contains="destination throttle: google")
    assert held.exists()
    assert all(r.attempts == 0 and r.next_attempt_at == hold_end for r in held)
    assert set(held.values_list("wait_reason", flat=True)) == {"throttled"}  # queue view

    # After the hold: half the connections, half the rate (a 20-message bucket); B, from
    # another address to the same receiver, goes at full speed.
    google.throttled = None
    google.new_pass()
    _queue(sender, scene["b"], GOOGLE, 10, "b")
    t1 = t0 + timedelta(minutes=5)
    _pass(t1)
    assert 1 <= google.peak[SOURCE_A] <= 2
    assert 0 < google.taken[SOURCE_A] <= 20
    assert google.taken[SOURCE_B] == 40
    assert google.peak[SOURCE_B] > 2
    assert throttle_state("google", SOURCE_A, now=t1) is None  # no hold now, but limited
    # What the rate did not admit waits for the bucket, recorded (not left claimed).
    waiting = QueuedRecipient.objects.exclude(status="delivered")
    assert waiting.exists()
    assert all(r.next_attempt_at > t1 and r.attempts <= 1 for r in waiting)
    assert waiting.filter(last_reply__contains="destination throttle: google").exists()
    assert throttle_details("google", SOURCE_A, now=t1).connections == 2

    # Two quiet periods later: back to 4 connections and the 40-message bucket.
    google.new_pass()
    _queue(sender, scene["a"], GOOGLE, 10, "c")
    t2 = t0 + timedelta(hours=2, minutes=1)
    _pass(t2)
    assert google.peak[SOURCE_A] > 2
    assert 20 < google.taken[SOURCE_A] <= 40
    assert throttle_details("google", SOURCE_A, now=t2).connections == 4

    # Nothing bounced or suppressed; the throttled attempts are rate-limit deferrals.
    assert not Suppression.objects.exists()
    assert not QueuedRecipient.objects.filter(status__in=["bounced", "failed"]).exists()
    assert not DeliveryEvent.objects.filter(type__in=["bounced", "failed"]).exists()
    deferred = DeliveryEvent.objects.filter(type="deferred", remote_reply__startswith="421 4.7.28")
    assert deferred.exists()
    assert set(deferred.values_list("bounce_class", flat=True)) == {"rate_limit"}
    _pass(t0 + timedelta(hours=3))  # everything left goes
    assert set(QueuedRecipient.objects.values_list("status", flat=True)) == {"delivered"}


@pytest.mark.parametrize(
    "reply",
    [
        GMAIL_421 + " " + "padding " * 20_000,  # a huge reply (aiosmtpd sends it as given)
        "421 \x01\x7f not a reply anyone documented",
    ],
)
def test_hostile_replies_neither_crash_nor_bounce(
    scene: dict[str, Any], sender: Any, reply: str
) -> None:
    google = scene["google"]
    t0 = _clock()
    google.throttled, google.after, google.reply = SOURCE_A, 2, reply
    _queue(sender, scene["a"], GOOGLE[:2], 5, "h")
    _pass(t0)
    assert google.taken[SOURCE_A] >= 2
    assert not Suppression.objects.exists()
    assert not QueuedRecipient.objects.filter(status__in=["bounced", "failed"]).exists()
    assert QueuedRecipient.objects.filter(status="deferred").count() == 10 - google.taken[SOURCE_A]
    google.throttled = None
    _pass(t0 + timedelta(hours=1))
    assert set(QueuedRecipient.objects.values_list("status", flat=True)) == {"delivered"}
