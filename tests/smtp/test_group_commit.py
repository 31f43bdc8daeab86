"""Group commit on submission: many sessions, one writer, one transaction per batch.

The batch tests call the real handler from one event loop: N sessions that reach DATA
together are in the writer's queue before it first runs (asyncio runs ready tasks in
order), so they form one batch, and the tests check that they did (committer.stats).
"""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import pytest
from aiosmtpd.smtp import Envelope

from mailplane.queue.models import DeliveryEvent, MessageBody, OutboundMessage, QueuedRecipient
from mailplane.smtp.logins import CredentialCache, LoginGuard, Principal
from mailplane.smtp.submission import SubmissionHandler
from mailplane.storage.maildir import mailbox_storage_path
from tests.queue.dbfail import POISON_DOMAIN, recipients_refused_by_database
from tests.smtp.conftest import PASSWORD, maildir_files, make_mailbox, message, smtps
from tests.support.fixtures import verified_domain

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def alice(account, transactional_db, settings, tmp_path):
    settings.MAILPLANE = {**settings.MAILPLANE, "STORAGE_ROOT": str(tmp_path / "storage")}
    domain = verified_domain(account, "acme.test")
    return make_mailbox(account, domain, "alice")


def _handler() -> SubmissionHandler:
    return SubmissionHandler(
        hostname="smtp.mailplane.test", guard=LoginGuard(), cache=CredentialCache()
    )


def _data(handler: SubmissionHandler, alice, subject: str, rcpts: list[str]):
    principal = Principal(alice.pk, alice.address, alice.organization_id)
    envelope = Envelope()
    envelope.mail_from = alice.address
    envelope.rcpt_tos = rcpts
    envelope.original_content = message(alice.address, rcpts[0], subject=subject)
    session = SimpleNamespace(id=f"test-{subject}", auth_data=principal)
    return handler.handle_DATA(None, session, envelope)  # type: ignore[arg-type]


def _together(handler: SubmissionHandler, calls) -> list[str]:
    async def run() -> list[str]:
        try:
            return list(await asyncio.gather(*calls()))
        finally:
            await handler.aclose()

    return asyncio.run(run())


def test_sessions_arriving_together_are_one_batch_and_all_get_250(alice):
    handler = _handler()
    replies = _together(
        handler, lambda: [_data(handler, alice, f"m{i}", ["x@example.org"]) for i in range(8)]
    )
    assert all(r.startswith("250 2.0.0 OK queued as ") for r in replies), replies
    assert handler.committer.stats.sizes == [8]
    ids = {int(r.rsplit(" ", 1)[1]) for r in replies}
    assert set(OutboundMessage.objects.values_list("pk", flat=True)) == ids
    assert sorted(OutboundMessage.objects.values_list("subject", flat=True)) == sorted(
        f"m{i}" for i in range(8)
    )
    assert QueuedRecipient.objects.count() == DeliveryEvent.objects.count() == 8
    assert len(maildir_files(alice, "Sent")) == 8


def test_a_failed_batch_is_retried_one_by_one_so_only_the_poison_message_gets_451(alice):
    handler = _handler()
    with recipients_refused_by_database():
        replies = _together(
            handler,
            lambda: [
                _data(handler, alice, "a", ["x@example.org"]),
                _data(handler, alice, "b", ["y@example.org", f"z@{POISON_DOMAIN}"]),
                *[_data(handler, alice, f"c{i}", ["w@example.org"]) for i in range(4)],
            ],
        )
    stats = handler.committer.stats
    # One batch of 6 failed as a whole, then each message was committed on its own.
    assert stats.sizes == [6]
    assert (stats.failed_batches, stats.retried_alone) == (1, 6)
    assert replies[1].startswith("451 4.3.0 "), replies
    assert all(r.startswith("250 2.0.0 OK queued as ") for i, r in enumerate(replies) if i != 1)
    stored = sorted(OutboundMessage.objects.values_list("subject", flat=True))
    assert stored == ["a", "c0", "c1", "c2", "c3"]
    # Nothing of the refused message half-stored: no rows, no Sent copy, nothing in tmp/.
    assert MessageBody.objects.count() == 5
    assert QueuedRecipient.objects.count() == DeliveryEvent.objects.count() == 5
    assert not QueuedRecipient.objects.filter(rcpt_to__endswith=POISON_DOMAIN).exists()
    assert len(maildir_files(alice, "Sent")) == 5
    root = mailbox_storage_path(organization_id=alice.organization_id, address=alice.address)
    assert list((root / ".Sent" / "tmp").iterdir()) == []
    # The writer goes on: the next batch (the trigger gone) is stored.
    handler = _handler()
    replies = _together(handler, lambda: [_data(handler, alice, "again", ["x@example.org"])])
    assert replies[0].startswith("250 "), replies


def test_suspended_mailbox_refused_alone_while_the_rest_of_the_batch_is_stored(account, alice):
    bob = make_mailbox(account, alice.domain, "bob")
    bob.status = "suspended"
    bob.save(update_fields=["status"])
    handler = _handler()
    replies = _together(
        handler,
        lambda: [
            _data(handler, alice, "kept", ["x@example.org"]),
            _data(handler, bob, "refused", ["x@example.org"]),
        ],
    )
    assert handler.committer.stats.sizes == [2]
    assert replies[0].startswith("250 ") and replies[1].startswith("550 5.7.1 "), replies
    assert list(OutboundMessage.objects.values_list("subject", flat=True)) == ["kept"]


def test_many_concurrent_tls_sessions_each_message_stored_exactly_once(listeners, alice):
    sessions, per_session = 12, 5
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            with smtps(listeners) as smtp:
                # No barrier after login: the test listeners close a session idle for 5 s.
                smtp.login(alice.address, PASSWORD)
                for i in range(per_session):
                    subject = f"s{n}-m{i}"
                    refused = smtp.sendmail(
                        alice.address, ["x@example.org"], message(alice.address, "x", subject)
                    )
                    assert refused == {}
        except BaseException as error:  # reported by the test thread
            errors.append(error)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=50)
    assert errors == []
    subjects = list(OutboundMessage.objects.values_list("subject", flat=True))
    expected = [f"s{n}-m{i}" for n in range(sessions) for i in range(per_session)]
    assert sorted(subjects) == sorted(expected)  # every message once, none twice
    assert MessageBody.objects.count() == QueuedRecipient.objects.count() == len(expected)
    assert len(maildir_files(alice, "Sent")) == len(expected)
    stats = listeners.submission_handler.committer.stats
    assert stats.items == len(expected) and stats.failed_batches == 0
