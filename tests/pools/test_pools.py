"""IP pools: the most specific assignment wins (key > stream > server > account), a
dedicated pool serves one key, and at the sink every message arrives from an address of
its own pool with that address's EHLO name (each address its own 127.x.y.z)."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest

from mailplane.core.errors import Conflict, NotFound, ValidationFailed
from mailplane.delivery.worker import DeliveryWorker
from mailplane.pools.models import IpPool
from mailplane.pools.selectors import pool_choices
from mailplane.pools.services import (
    pool_address_add,
    pool_address_enable,
    pool_assign,
    pool_create,
)
from mailplane.queue.models import QueuedRecipient
from mailplane.sending.requests import send_request_parse
from mailplane.sending.services import SendContext, message_prepare, messages_send
from mailplane.servers.models import ServerKey
from mailplane.servers.services import server_key_create
from tests.support.fixtures import Account, verified_domain
from tests.support.servers import ServerAccess, send_body, server_make
from tests.support.smtp_sink import mx_port, mx_sinks  # noqa: F401

# Source addresses of their own, away from the sinks' 127.80+ networks.
_NET = f"127.{40 + os.getpid() % 30}.{os.getpid() % 250}"


def _pool(name: str, *hosts: int, dedicated: bool = False) -> IpPool:
    pool = pool_create(name=name, dedicated=dedicated)
    for host in hosts:
        pool_address_add(pool=pool, address=f"{_NET}.{host}", helo_name=f"{name}-{host}.mail.test")
    return pool


def _send(access: ServerAccess, key: ServerKey, to: str, stream: str = "outbound") -> int:
    prepared = message_prepare(
        ctx=SendContext.load(access.server),
        request=send_request_parse(send_body(to=to, stream=stream, subject=to)),
    )
    [sent] = messages_send(server=access.server, prepared=[prepared], server_key=key)
    return sent.message.pk


@pytest.fixture
def scene(account: Account) -> dict[str, Any]:
    """One account, one server with a send-only key and a second key; pools on each scope."""
    verified_domain(account, "acme.test")
    access = server_make(account)
    send_key = ServerKey.objects.get(server=access.server, name="send")
    vip_key = server_key_create(server=access.server, name="vip", kind="send_only").server_key
    pools = {
        "account": _pool("account-pool", 10, 11),
        "server": _pool("server-pool", 20),
        "stream": _pool("broadcast-pool", 30),
        "vip": _pool("vip-dedicated", 40, 41, dedicated=True),
    }
    broadcast = access.server.streams.get(stream_id="broadcast")
    pool_assign(pool=pools["account"], organization=account.org)
    pool_assign(pool=pools["stream"], organization=account.org, stream=broadcast)
    pool_assign(pool=pools["vip"], organization=account.org, server_key=vip_key)
    return {"access": access, "send": send_key, "vip": vip_key, "pools": pools}


def test_the_most_specific_assignment_wins(scene: dict[str, Any], account: Account) -> None:
    access = scene["access"]
    plain = _send(access, scene["send"], "a@dest.test")
    broadcast = _send(access, scene["send"], "b@dest.test", stream="broadcast")
    vip = _send(access, scene["vip"], "c@dest.test")
    vip_broadcast = _send(access, scene["vip"], "d@dest.test", stream="broadcast")
    org = account.org.pk
    choices = pool_choices([(m, org) for m in (plain, broadcast, vip, vip_broadcast)])
    assert {m: c.pool for m, c in choices.items()} == {
        plain: "account-pool",
        broadcast: "broadcast-pool",
        vip: "vip-dedicated",
        vip_broadcast: "vip-dedicated",  # the key is narrower than the stream
    }
    # A server-wide pool sits between the stream's and the account's.
    pool_assign(pool=scene["pools"]["server"], organization=account.org, server=access.server)
    again = pool_choices([(plain, org), (broadcast, org)])
    assert (again[plain].pool, again[broadcast].pool) == ("server-pool", "broadcast-pool")


def test_an_account_without_pools_has_no_choice(make_account: Any) -> None:
    other = make_account(name="No pools")
    assert pool_choices([(1, other.org.pk)]) == {}


def test_a_dedicated_pool_serves_one_key_only(scene: dict[str, Any], account: Account) -> None:
    vip = scene["pools"]["vip"]
    with pytest.raises(ValidationFailed):
        pool_assign(pool=vip, organization=account.org)  # not a key scope
    with pytest.raises(Conflict):
        pool_assign(pool=vip, organization=account.org, server_key=scene["send"])
    with pytest.raises(Conflict):
        pool_address_add(pool=vip, address=f"{_NET}.10", helo_name="x.mail.test")  # in use
    with pytest.raises(ValidationFailed):
        pool_address_add(pool=vip, address="not-an-ip", helo_name="x.mail.test")
    with pytest.raises(ValidationFailed):
        pool_address_add(pool=vip, address=f"{_NET}.99", helo_name="bad name!")


def test_another_accounts_server_cannot_be_assigned(
    scene: dict[str, Any], make_account: Any
) -> None:
    intruder = make_account(name="Intruder")

    with pytest.raises(NotFound):
        pool_assign(
            pool=scene["pools"]["server"],
            organization=intruder.org,
            server=scene["access"].server,
        )


def test_every_message_leaves_from_its_pool_at_the_sink(
    scene: dict[str, Any],
    dns_server: Any,
    mx_sinks: Any,  # noqa: F811
    settings: Any,
    tmp_path: Any,
) -> None:
    settings.MAILPLANE = {**settings.MAILPLANE, "STORAGE_ROOT": str(tmp_path / "storage")}
    sink = mx_sinks("accept")
    dns_server.mx("dest.test", "mx1.dest.test", preference=10)
    dns_server.a("mx1.dest.test", sink.address)
    access = scene["access"]
    expected: dict[str, set[str]] = {}
    plan = [
        (scene["send"], "outbound", "account"),
        (scene["send"], "broadcast", "stream"),
        (scene["vip"], "outbound", "vip"),
    ]
    for n in range(120):
        key, stream, pool = plan[n % 3]
        to = f"r{n}@dest.test"
        _send(access, key, to, stream=stream)
        expected[to] = {a.address for a in scene["pools"][pool].addresses.all()}

    worker = DeliveryWorker()
    while QueuedRecipient.objects.filter(status="queued").exists():
        assert worker.run_once() > 0

    assert len(sink.received) == 120
    used: Counter[str] = Counter()
    for got in sink.received:
        [to] = got.rcpt_tos
        source = got.peer[0]
        assert source in expected[to], (to, source)
        host = source.rsplit(".", 1)[1]
        assert got.helo.endswith(f"-{host}.mail.test"), got.helo
        used[source] += 1
    # Each pool's addresses all carry mail (spread by message), and the dedicated key's
    # addresses carry nobody else's.
    assert {f"{_NET}.{h}" for h in (10, 11, 30, 40, 41)} == set(used)
    vip_sources = {f"{_NET}.40", f"{_NET}.41"}
    for got in sink.received:
        if got.peer[0] in vip_sources:
            assert int(got.rcpt_tos[0][1:].split("@")[0]) % 3 == 2


def test_a_pool_with_no_enabled_address_holds_its_mail(
    scene: dict[str, Any],
    dns_server: Any,
    mx_sinks: Any,  # noqa: F811
    settings: Any,
    tmp_path: Any,
) -> None:
    settings.MAILPLANE = {**settings.MAILPLANE, "STORAGE_ROOT": str(tmp_path / "storage")}
    sink = mx_sinks("accept")
    dns_server.mx("dest.test", "mx1.dest.test", preference=10)
    dns_server.a("mx1.dest.test", sink.address)
    for host in (40, 41):
        pool_address_enable(address=f"{_NET}.{host}", enabled=False)
    message = _send(scene["access"], scene["vip"], "held@dest.test")

    DeliveryWorker().run_once()

    row = QueuedRecipient.objects.get(message_id=message)
    assert row.status == "deferred"
    assert row.last_reply == "451 4.3.2 IP pool vip-dedicated has no enabled address"
    assert sink.received == []  # never from a shared address instead


def test_the_operator_cli(tmp_path: Any, account: Account, transactional_db: Any) -> None:
    """`mailplane pool …` against the test database's settings (same process env)."""
    from mailplane.cli import main

    assert main(["pool", "create", "--name", "cli-pool"]) == 0
    assert main(["pool", "add-address", "--pool", "cli-pool", "--address", f"{_NET}.77",
                 "--helo", "out77.mail.test"]) == 0  # fmt: skip
    assert main(["pool", "assign", "--pool", "cli-pool", "--org", account.org.slug]) == 0
    assert main(["pool", "assign", "--pool", "nope", "--org", account.org.slug]) == 2
    assert main(["pool", "add-address", "--pool", "cli-pool", "--address", "300.1.1.1",
                 "--helo", "x.test"]) == 2  # fmt: skip
    assert main(["pool", "list"]) == 0
    [choice] = pool_choices([(1, account.org.pk)]).values()
    assert choice.pool == "cli-pool" and choice.sources[0].address == f"{_NET}.77"
