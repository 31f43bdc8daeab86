"""Failed-login limits shared through Redis by every SMTP submission and IMAP process.

Against a real Redis (the broker's database when that is Redis, else db 14). Each test
keys its counters under its own prefix and deletes only those keys. Windows are a few
hundred milliseconds, so sliding is seen with short sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import imaplib
import logging
import secrets
import smtplib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from mailplane import tls
from mailplane.imap.backend import MailplaneConfig
from mailplane.imap.server import imap_listen
from mailplane.mailboxes.logins import LoginGuard, SharedLoginGuard, login_guard
from mailplane.mailboxes.models import Mailbox
from mailplane.mailboxes.passwords import password_hash
from mailplane.smtp import server
from mailplane.smtp.logins import CredentialCache
from mailplane.smtp.submission import SubmissionHandler
from tests.support.fixtures import Account, verified_domain

pytestmark = pytest.mark.timeout(60)

PASSWORD = "Correct-Horse-42!"
WRONG = "Wrong-Horse-42!"


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """This test's key prefix; its keys (and only those) are deleted before and after."""
    name = f"mailplane:test:logins:{secrets.token_hex(4)}"
    client = redis.Redis.from_url(redis_url)

    def flush() -> None:
        keys = list(client.scan_iter(match=f"{name}:*"))
        if keys:
            client.delete(*keys)

    flush()
    yield name
    flush()
    client.close()


@pytest.fixture
def shared(redis_url: str, prefix: str) -> Iterator[Callable[..., SharedLoginGuard]]:
    """Guards on this test's prefix, one per simulated process."""
    made: list[SharedLoginGuard] = []

    def make(**limits: Any) -> SharedLoginGuard:
        guard = SharedLoginGuard(redis_url, prefix=prefix, **limits)
        made.append(guard)
        return guard

    yield make
    for guard in made:
        guard.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the guard against Redis -------------------------------------------------------------


def _fail(guard: SharedLoginGuard | LoginGuard, address: str, ip: str) -> float:
    """One attempt that turns out wrong; its delay."""
    attempt = guard.attempt(address=address, ip=ip)
    assert not attempt.refused
    guard.failed(attempt)
    return attempt.delay


def _refused(guard: SharedLoginGuard | LoginGuard, address: str, ip: str) -> bool:
    return guard.attempt(address=address, ip=ip).refused


def test_failures_in_one_process_refuse_that_client_in_another(shared):
    smtp_process, imap_process = shared(per_pair=3, per_ip=100), shared(per_pair=3)
    for _ in range(3):
        assert not _refused(imap_process, "alice@x.test", "10.0.0.1")
        _fail(smtp_process, "Alice@X.test", "10.0.0.1")
    assert _refused(imap_process, "ALICE@x.test", "10.0.0.1")  # any case, any process
    assert _refused(smtp_process, "alice@x.test", "10.0.0.1")
    # Not the mailbox: its owner elsewhere is neither refused nor slowed.
    owner = imap_process.attempt(address="alice@x.test", ip="10.9.9.9")
    assert (owner.refused, owner.delay) == (False, 0.0)


def test_delays_grow_across_processes(shared):
    one, two = shared(per_pair=5, delay_base=2, delay_cap=15), shared(per_pair=5)
    delays = [_fail(guard, "a@x.test", "10.0.0.1") for guard in (one, two, one, two, one)]
    assert delays == [0, 2, 4, 8, 15]
    assert two.attempt(address="a@x.test", ip="10.0.0.1").refused


def test_per_ip_limit_is_shared(shared):
    one, two = shared(per_pair=100, per_ip=3), shared(per_pair=100, per_ip=3)
    _fail(one, "a@x.test", "192.0.2.7")
    _fail(two, "b@x.test", "192.0.2.7")
    assert not _refused(one, "fresh@x.test", "192.0.2.7")
    _fail(one, "c@x.test", "192.0.2.7")
    assert _refused(two, "fresh@x.test", "192.0.2.7")
    assert not _refused(two, "fresh@x.test", "192.0.2.8")


def test_success_forgives_that_clients_typos_everywhere(shared):
    one, two = shared(per_pair=3, per_ip=3), shared(per_pair=3, per_ip=3)
    _fail(one, "a@x.test", "192.0.2.7")
    _fail(one, "b@x.test", "192.0.2.7")
    right = two.attempt(address="a@x.test", ip="192.0.2.7")
    assert right.delay > 0  # one failure on this address: slowed
    two.succeeded(right)
    # a's typo is forgiven, in the IP's count too: of the two failures only b's is left.
    _fail(one, "c@x.test", "192.0.2.7")
    assert not _refused(one, "d@x.test", "192.0.2.7")


def test_keys_are_namespaced_expire_and_hold_no_password(shared, redis_url, prefix):
    guard = shared(window=0.5)
    _fail(guard, " Alice@X.test", "2001:db8::1")
    client = redis.Redis.from_url(redis_url)
    keys = sorted(k.decode() for k in client.scan_iter(match=f"{prefix}:*"))
    assert keys == [f"{prefix}:i:2001:db8::/64", f"{prefix}:p:2001:db8::/64|alice@x.test"]
    for key in keys:
        assert 0 < client.pttl(key) <= 500  # gone one window after the newest failure
        ((member, _score),) = client.zrange(key, 0, -1, withscores=True)
        assert len(member) == 16  # a random token: nothing about the login is stored
    # A login name no mailbox can have is keyed by digest, not stored as sent.
    _fail(guard, "x" * 5000, "2001:db8::1")
    assert max(len(k) for k in client.scan_iter(match=f"{prefix}:*")) < len(prefix) + 100
    guard.reset()
    assert not list(client.scan_iter(match=f"{prefix}:*"))
    client.close()


def test_window_slides_on_the_redis_clock(shared):
    window = 0.4
    one, two = shared(per_pair=2, window=window), shared(per_pair=2, window=window)
    _fail(one, "a@x.test", "ip")  # t=0
    time.sleep(0.2)
    _fail(two, "a@x.test", "ip")  # t=0.2
    assert _refused(one, "a@x.test", "ip")
    time.sleep(0.25)  # t=0.45: the first failure has left the window, the second has not
    _fail(one, "a@x.test", "ip")  # t=0.45
    assert _refused(two, "a@x.test", "ip")
    time.sleep(window + 0.05)  # both remaining failures have expired
    assert not _refused(one, "a@x.test", "ip")


def test_factory_returns_the_shared_guard_only_with_redis(settings, redis_url, prefix):
    settings.MAILPLANE = {**settings.MAILPLANE, "REDIS_URL": ""}
    assert isinstance(login_guard(), LoginGuard)
    settings.MAILPLANE = {**settings.MAILPLANE, "REDIS_URL": redis_url}
    guard = login_guard(per_pair=2, prefix=prefix)
    assert isinstance(guard, SharedLoginGuard) and guard.per_pair == 2
    guard.close()


def test_submission_and_imap_build_their_guard_through_the_factory(settings, redis_url, tmp_path):
    """The servers as `mailplane serve` builds them: no guard given, the factory's is used."""
    settings.MAILPLANE = {**settings.MAILPLANE, "REDIS_URL": redis_url}
    handler = SubmissionHandler(hostname="smtp.mailplane.test")
    config = MailplaneConfig.build(storage_root=str(tmp_path))
    try:
        assert isinstance(handler.guard, SharedLoginGuard)
        assert isinstance(config.login_guard, SharedLoginGuard)
        assert handler.guard.prefix == config.login_guard.prefix  # the same counters
    finally:
        config.auth_executor.shutdown(wait=False)
    settings.MAILPLANE = {**settings.MAILPLANE, "REDIS_URL": ""}
    assert isinstance(SubmissionHandler(hostname="smtp.mailplane.test").guard, LoginGuard)


# --- Redis unreachable ------------------------------------------------------------------


def test_unreachable_redis_falls_back_to_this_process_and_warns_once(caplog):
    guard = SharedLoginGuard(
        f"redis://127.0.0.1:{_closed_port()}/0", per_pair=2, per_ip=100, window=60
    )
    with caplog.at_level(logging.WARNING, logger="mailplane.logins"):
        _fail(guard, "a@x.test", "ip")
        _fail(guard, "a@x.test", "ip")
        assert _refused(guard, "a@x.test", "ip")  # the local counters still limit
        assert not _refused(guard, "a@x.test", "other-ip")
    warnings = [r for r in caplog.records if r.name == "mailplane.logins"]
    assert len(warnings) == 1 and "Redis unavailable" in warnings[0].getMessage()
    guard.close()


def test_hung_redis_costs_one_timeout_per_retry_interval_not_per_login():
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        guard = SharedLoginGuard(url, per_pair=3, timeout=0.2, retry_after=30)
        started = time.monotonic()
        _fail(guard, "a@x.test", "ip")
        assert 0.15 < time.monotonic() - started < 1.0  # one short timeout, no retries
        started = time.monotonic()
        for _ in range(2):
            _fail(guard, "a@x.test", "ip")
        assert _refused(guard, "a@x.test", "ip")
        assert time.monotonic() - started < 0.05  # Redis not asked again for a while
        guard.close()


class _Proxy:
    """A TCP relay to Redis that the test can take down and bring back on the same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = _closed_port()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        assert self._listener is not None
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        self._listener.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass


def test_limits_are_shared_again_when_redis_comes_back(redis_url, prefix, caplog):
    parsed = redis.connection.parse_url(redis_url)
    proxy = _Proxy((parsed.get("host", "127.0.0.1"), int(parsed.get("port", 6379))))
    proxy.start()
    db = parsed.get("db", 0)
    via_proxy = SharedLoginGuard(
        f"redis://127.0.0.1:{proxy.port}/{db}", per_pair=2, prefix=prefix, retry_after=0
    )
    direct = SharedLoginGuard(redis_url, per_pair=2, prefix=prefix)
    try:
        with caplog.at_level(logging.INFO, logger="mailplane.logins"):
            _fail(via_proxy, "a@x.test", "ip")
            proxy.stop()
            _fail(via_proxy, "b@x.test", "ip")  # counted locally
            _fail(via_proxy, "b@x.test", "ip")
            assert _refused(via_proxy, "b@x.test", "ip")  # logins still limited
            assert not _refused(direct, "b@x.test", "ip")  # ...by this process only
            proxy.start()
            _fail(via_proxy, "a@x.test", "ip")  # in Redis again
        assert _refused(direct, "a@x.test", "ip")
        messages = [r.getMessage() for r in caplog.records if r.name == "mailplane.logins"]
        assert len(messages) == 2, messages  # one warning for the outage, one recovery note
        assert "unavailable" in messages[0] and "again" in messages[1]
    finally:
        via_proxy.close()
        direct.close()
        proxy.stop()


def test_a_dropped_connection_is_retried_not_an_outage(shared, redis_url, caplog):
    guard = shared(per_pair=2)
    _fail(guard, "a@x.test", "ip")
    admin = redis.Redis.from_url(redis_url)
    mine = guard._client.client_id()  # the guard's one pooled connection
    _fail(guard, "a@x.test", "ip")
    admin.client_kill_filter(_id=mine)  # as a Redis restart would
    with caplog.at_level(logging.WARNING, logger="mailplane.logins"):
        assert _refused(guard, "a@x.test", "ip")
    assert not [r for r in caplog.records if r.name == "mailplane.logins"]
    admin.close()


# --- the real servers -------------------------------------------------------------------


@dataclass
class Servers:
    smtps: int
    imaps: int

    def smtp_login(self, address: str, password: str, source: str = "127.0.0.1") -> int:
        """The reply code to one AUTH PLAIN (smtplib's login() would try each mechanism)."""
        context = tls.client_context_insecure()
        with smtplib.SMTP_SSL(
            "127.0.0.1", self.smtps, context=context, timeout=10, source_address=(source, 0)
        ) as client:
            client.ehlo("client.test")
            plain = base64.b64encode(f"\0{address}\0{password}".encode()).decode()
            return int(client.docmd("AUTH", f"PLAIN {plain}")[0])

    def imap_login(self, address: str, password: str, source: str = "127.0.0.1") -> str:
        """'OK', or the NO response text (with its response code)."""
        sock = socket.create_connection(("127.0.0.1", self.imaps), 10, (source, 0))
        context = tls.client_context_insecure()

        class Sourced(imaplib.IMAP4_SSL):
            def _create_socket(self, timeout: float | None) -> socket.socket:
                return context.wrap_socket(sock, server_hostname="127.0.0.1")

        with Sourced("127.0.0.1", self.imaps, ssl_context=context, timeout=10) as imap:
            try:
                return str(imap.login(address, password)[0])
            except imaplib.IMAP4.error as exc:
                return str(exc)


@pytest.fixture
def servers(
    transactional_db: Any, settings: Any, tmp_path: Path, redis_url: str, prefix: str
) -> Iterator[Servers]:
    """Submission and IMAP on one loop, each with its own guard from the factory (two
    processes in production): all they share is Redis."""
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "STORAGE_ROOT": str(tmp_path / "storage"),
        "REDIS_URL": redis_url,
    }
    cert, key = tls.self_signed_ensure(directory=tmp_path / "tls")
    context = tls.server_context(cert=cert, key=key)
    # Delays are the tests' own concern (tests/smtp, tests/imap); here only the counts.
    smtp_guard = login_guard(per_pair=3, per_ip=5, delay_base=0, prefix=prefix)
    imap_guard = login_guard(per_pair=3, per_ip=5, delay_base=0, prefix=prefix)
    assert isinstance(smtp_guard, SharedLoginGuard) and smtp_guard is not imap_guard
    handler = SubmissionHandler(
        hostname="smtp.mailplane.test", guard=smtp_guard, cache=CredentialCache(), failure_delay=0
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="logins-test-loop", daemon=True)
    thread.start()
    stop = asyncio.Event()
    ready: dict[str, Servers] = {}
    started = threading.Event()

    async def run() -> None:
        smtp = await server.submission_start(
            host="127.0.0.1",
            implicit_port=0,
            starttls_port=0,
            tls_context=context,
            handler=handler,
            limits=server.Limits(),
        )
        async with imap_listen(
            host="127.0.0.1",
            tls_port=0,
            starttls_port=None,
            ssl_context=context,
            storage_root=str(tmp_path / "storage"),
            invalid_user_sleep=0.0,
            login_guard=imap_guard,
        ) as listening:
            assert listening.tls_address is not None
            ready["servers"] = Servers(server.bound_port(smtp[0]), listening.tls_address[1])
            started.set()
            await stop.wait()
        for s in smtp:
            s.close()
            await s.wait_closed()
        await handler.aclose()

    task = asyncio.run_coroutine_threadsafe(run(), loop)
    task.add_done_callback(lambda _: started.set())  # a start-up error: stop waiting
    assert started.wait(15), "servers did not start"
    if "servers" not in ready:
        task.result()  # raises the start-up error
    yield ready["servers"]
    loop.call_soon_threadsafe(stop.set)
    task.result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
    for guard in (smtp_guard, imap_guard):
        assert isinstance(guard, SharedLoginGuard)
        guard.close()


@pytest.fixture
def make_mailbox(make_account: Callable[..., Account]) -> Callable[[], Mailbox]:
    counter = iter(range(1, 1000))

    def make() -> Mailbox:
        n = next(counter)
        account = make_account()
        domain = verified_domain(account, f"d{n}-{account.org.pk}.test")
        return Mailbox.objects.create(
            organization=account.org,
            domain=domain,
            relay_server=account.relay,
            local_part=f"user{n}",
            address=f"user{n}@{domain.name}",
            password=PASSWORD,
            password_hash=password_hash(PASSWORD),
        )

    return make


def test_smtp_failures_refuse_that_client_on_imap_not_the_owner(servers, make_mailbox):
    mailbox, other = make_mailbox(), make_mailbox()
    attacker = "127.0.0.2"
    assert servers.imap_login(mailbox.address, PASSWORD) == "OK"
    codes = [servers.smtp_login(mailbox.address, WRONG, source=attacker) for _ in range(3)]
    assert codes == [535, 535, 535]
    # The IMAP process never saw a failure, yet refuses that client before any check...
    assert "[UNAVAILABLE]" in servers.imap_login(mailbox.address, PASSWORD, source=attacker)
    assert servers.smtp_login(mailbox.address, PASSWORD, source=attacker) == 454
    # ...while the owner, from another address, logs in to both.
    assert servers.imap_login(mailbox.address, PASSWORD) == "OK"
    assert servers.smtp_login(mailbox.address, PASSWORD) == 235
    assert servers.imap_login(other.address, PASSWORD, source=attacker) == "OK"


def test_imap_failures_refuse_smtp_logins_from_the_ip(servers, make_mailbox):
    mailboxes = [make_mailbox() for _ in range(6)]
    for mailbox in mailboxes[:5]:
        result = servers.imap_login(mailbox.address, WRONG, source="127.0.0.2")
        assert "AUTHENTICATIONFAILED" in result
    # That IP is refused by SMTP for an address it never tried; other clients are served.
    assert servers.smtp_login(mailboxes[5].address, PASSWORD, source="127.0.0.2") == 454
    assert servers.smtp_login(mailboxes[5].address, PASSWORD) == 235
