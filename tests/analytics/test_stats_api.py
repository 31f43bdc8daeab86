"""The stats endpoints: both doors (account key, a server's full key), series, totals and
rates, latency percentiles and bounce domains; hostile parameters are a 400 naming the
parameter; each request is a handful of queries whatever the history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from mailplane.analytics.consumer import events_count
from mailplane.analytics.metrics import LATENCY_BOUNDS, latency_bucket
from mailplane.analytics.selectors import counter_sums, stats_window
from mailplane.queue.models import EventType, OutboundMessage, RecipientStatus
from tests.analytics.conftest import Live, send, step
from tests.support.servers import server_client
from tests.support.tools import skip_for_mode

pytestmark = pytest.mark.django_db


def _history(live: Live) -> None:
    carol, dave, erin = send(
        live, to=["carol@dest.test", "dave@bad.test", "erin@bad.test"], tags=["receipt"]
    )
    (news,) = send(live, to="fred@dest.test", stream="broadcast")
    OutboundMessage.objects.filter(pk=carol.message_id).update(
        created_at=carol.message.created_at - timedelta(seconds=30)
    )
    step(carol, EventType.DELIVERED, RecipientStatus.DELIVERED, "250 ok")
    step(dave, EventType.BOUNCED, RecipientStatus.BOUNCED, "550 5.1.1", bounce_class="hard")
    step(erin, EventType.BOUNCED, RecipientStatus.BOUNCED, "554 5.7.1", bounce_class="spam")
    step(news, EventType.DELIVERED, RecipientStatus.DELIVERED, "250 ok")
    step(news, EventType.COMPLAINED, None, "abuse")
    events_count()


def test_series_totals_and_rates(live: Live):
    _history(live)
    client = live.account.client
    reply = client.get(f"/api/servers/{live.server.pk}/stats/")
    assert reply.status_code == 200, reply.content
    body = reply.json()
    assert body["group_by"] == "day" and len(body["series"]) == 30  # every day, zeros too
    totals = body["totals"]
    assert (totals["sent"], totals["delivered"], totals["bounced"]) == (4, 2, 2)
    assert totals["complained"] == 1
    assert totals["bounced_by_class"]["hard"] == 1
    assert totals["bounced_by_class"]["spam"] == 1
    assert totals["bounced_by_class"]["soft"] == 0
    assert body["rates"] == {"delivery_rate": 0.5, "bounce_rate": 0.5, "complaint_rate": 0.5}
    today = body["series"][-1]
    assert today["start"].startswith(timezone.now().astimezone(UTC).strftime("%Y-%m-%dT00:00"))
    assert today["sent"] == 4
    assert sum(p["sent"] for p in body["series"][:-1]) == 0

    by_tag = client.get(f"/api/servers/{live.server.pk}/stats/?tag=receipt").json()
    assert (by_tag["totals"]["sent"], by_tag["tag"]) == (3, "receipt")
    broadcast = client.get(f"/api/servers/{live.server.pk}/stats/?stream=broadcast").json()
    assert broadcast["totals"]["sent"] == 1 and broadcast["totals"]["complained"] == 1
    assert broadcast["rates"]["complaint_rate"] == 1.0
    hourly = client.get(f"/api/servers/{live.server.pk}/stats/?group_by=hour").json()
    assert len(hourly["series"]) == 24
    assert hourly["series"][-1]["sent"] == 4

    past = "/stats/?from=2020-01-01&to=2020-01-31T00:00:01Z"
    old = client.get(f"/api/servers/{live.server.pk}{past}").json()
    assert (old["from"], old["to"]) == ("2020-01-01T00:00:00Z", "2020-02-01T00:00:00Z")
    assert old["totals"]["sent"] == 0 and old["rates"]["delivery_rate"] is None


def test_latency_and_bounce_domains(live: Live):
    _history(live)
    client = live.account.client
    latency = client.get(f"/api/servers/{live.server.pk}/stats/latency/").json()
    assert latency["count"] == 2
    assert latency["p99"] == round(LATENCY_BOUNDS[latency_bucket(30)], 3)
    assert latency["p50"] < 30
    assert latency["days"][-1]["count"] == 2
    assert sum(b["count"] for b in latency["buckets"]) == 2
    domains = client.get(f"/api/servers/{live.server.pk}/stats/bounce-domains/").json()
    assert domains["domains"] == [{"domain": "bad.test", "bounced": 2}]
    top = client.get(f"/api/servers/{live.server.pk}/stats/bounce-domains/?limit=1").json()
    assert len(top["domains"]) == 1


def test_the_servers_full_key_reads_its_own_stats_and_a_send_only_key_does_not(live: Live):
    _history(live)
    full, send_only = live.access.full_client, live.access.client
    for path in ("/api/server/stats/", "/api/server/stats/latency/"):
        assert send_only.get(path).status_code == 403
    assert full.get("/api/server/stats/").json()["totals"]["sent"] == 4
    assert full.get("/api/server/stats/latency/").json()["count"] == 2
    domains = full.get("/api/server/stats/bounce-domains/").json()["domains"]
    assert domains == [{"domain": "bad.test", "bounced": 2}]
    assert send_only.get("/api/server/stats/bounce-domains/").status_code == 403


def test_another_accounts_server_is_not_found(live: Live, other_account):
    _history(live)
    for path in ("stats/", "stats/latency/", "stats/bounce-domains/"):
        reply = other_account.client.get(f"/api/servers/{live.server.pk}/{path}")
        assert reply.status_code == 404, reply.content
    # And an account key is no server key, nor the reverse.
    assert live.account.client.get("/api/server/stats/").status_code == 401
    own = server_client(live.access.full_key)
    assert own.get(f"/api/servers/{live.server.pk}/stats/").status_code == 401


HOSTILE = [
    ("group_by=week", "group_by"),
    ("group_by=day&group_by=hour", "group_by"),
    ("from=yesterday", "from"),
    ("from=2026-13-01", "from"),
    ("from=2026-02-30", "from"),
    ("to=2026-12-04T25:00:00Z", "to"),
    ("from=" + "9" * 5000, "from"),
    ("from=2026-12-04T10:00:00%2B99:00", "from"),
    ("to=9999-12-31T23:30:00Z", "to"),
    ("from=0001-01-01T00:00:00%2B14:00", "from"),
    ("from=2026-12-05&to=2026-12-01", "to"),
    ("from=2025-01-01&to=2026-12-01", "to"),
    ("group_by=hour&from=2026-10-01&to=2026-12-01", "to"),
    ("stream=nope", "stream"),
    ("stream=" + "s" * 51, "stream"),
    ("tag=" + "t" * 101, "tag"),
    ("tag=%00", None),
    ("to=%00", "to"),
]


@pytest.mark.parametrize(("query", "field"), HOSTILE)
def test_hostile_parameters_are_a_400_naming_the_parameter(live: Live, query, field):
    reply = live.account.client.get(f"/api/servers/{live.server.pk}/stats/?{query}")
    if field is None:  # harmless: a tag nothing carries
        assert reply.status_code in (200, 400), reply.content
        return
    assert reply.status_code == 400, reply.content
    assert field in reply.json()["error"]["details"], reply.json()


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        ("stats/latency/", "from=2020-01-01&to=2022-01-01", "to"),
        ("stats/latency/", "from=%20", "from"),
        ("stats/bounce-domains/", "limit=0", "limit"),
        ("stats/bounce-domains/", "limit=101", "limit"),
        ("stats/bounce-domains/", "limit=1e3", "limit"),
        ("stats/bounce-domains/", "limit=1&limit=2", "limit"),
    ],
)
def test_hostile_parameters_of_latency_and_domains(live: Live, path, query, field):
    reply = live.account.client.get(f"/api/servers/{live.server.pk}/{path}?{query}")
    assert reply.status_code == 400, reply.content
    assert field in reply.json()["error"]["details"]


def test_a_request_is_a_few_queries_whatever_the_history(live: Live, django_assert_max_num_queries):
    for _ in range(3):
        _history(live)
    client = live.account.client
    server = live.server.pk
    # Authentication, the server, the counters (and the stream, when named).
    for path in (
        f"/api/servers/{server}/stats/?group_by=hour&stream=outbound&tag=receipt",
        f"/api/servers/{server}/stats/?from=2025-12-05&to=2026-12-04",
        f"/api/servers/{server}/stats/latency/?from=2025-12-05",
        f"/api/servers/{server}/stats/bounce-domains/",
    ):
        with django_assert_max_num_queries(8):
            assert client.get(path).status_code == 200


def test_to_is_excluded_and_the_window_rounded_out_to_whole_buckets(live: Live):
    """As the messages list reads `to`: excluded, a date meaning its midnight."""
    client, server = live.account.client, live.server.pk
    day = client.get(f"/api/servers/{server}/stats/?from=2026-03-01&to=2026-03-02").json()
    assert [p["start"] for p in day["series"]] == ["2026-03-01T00:00:00Z"]
    same = client.get(f"/api/servers/{server}/stats/?from=2026-03-01&to=2026-03-01")
    assert same.status_code == 400 and "to" in same.json()["error"]["details"]
    hours = client.get(
        f"/api/servers/{server}/stats/?group_by=hour"
        "&from=2026-03-01T10:30:00%2B02:00&to=2026-03-01T12:00:00Z"
    ).json()
    assert [p["start"][11:13] for p in hours["series"]] == ["08", "09", "10", "11"]
    assert datetime.fromisoformat(hours["to"]) == datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_the_counter_read_is_an_index_range_on_postgresql(live: Live):
    """EXPLAIN: the stats read is served by the `one_stat_counter` index (server, tag,
    hour first), not a scan of the table. Sequential scans are switched off so that the
    planner shows whether an index can serve the query at all (on a small table it would
    rightly prefer a scan)."""
    if connection.vendor != "postgresql":
        skip_for_mode("EXPLAIN of PostgreSQL's planner")
    _history(live)
    window = stats_window(start=None, end=None, group_by="hour", now=timezone.now())
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = counter_sums(server=live.server, window=window).explain()
        assert "Index Scan using one_stat_counter" in plan, plan
        # With a stream named, the stream's own index may serve too: no scan either way.
        plan = counter_sums(server=live.server, window=window, stream="outbound", tag="x").explain()
        assert "Index Scan using" in plan, plan
        assert "Seq Scan" not in plan, plan
