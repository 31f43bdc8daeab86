"""The outbox (queue/transitions.py): a state change and its event commit together or not
at all, and events are numbered without gaps, in commit order, under concurrent writers.

Failures are real database failures: a trigger refuses the row mid-transaction, as a
constraint violation or a crash before commit would leave it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from contextlib import AbstractContextManager

import pytest
from django.db import DatabaseError, connection, connections, transaction
from django.utils import timezone

from mailplane.queue.events import events_after, events_last_seq
from mailplane.queue.models import (
    DeliveryEvent,
    EventType,
    QueuedRecipient,
    RecipientStatus,
    Suppression,
    SuppressionReason,
)
from mailplane.queue.services import message_enqueue
from mailplane.queue.transitions import Transition, transitions_apply
from tests.queue.dbfail import database_trigger, refused_by_database
from tests.support.tools import skip_for_mode

RAW = b"From: <john@acme.test>\r\nSubject: Hi\r\n\r\nBody\r\n"


def _enqueued(account, *recipients: str) -> list[QueuedRecipient]:
    message = message_enqueue(
        organization=account.org,
        mail_from="john@acme.test",
        recipients=list(recipients),
        raw=RAW,
        relay_server=account.relay,
    )
    return list(QueuedRecipient.objects.filter(message=message).select_related("message"))


def _bounce(row: QueuedRecipient) -> Transition:
    return Transition(
        row=row,
        event=EventType.BOUNCED,
        status=RecipientStatus.BOUNCED,
        reply="550 5.1.1 no such user",
        suppress=SuppressionReason.HARD_BOUNCE,
    )


def test_a_refused_event_leaves_no_state_change(account):
    [row] = _enqueued(account, "a@one.test")
    last = events_last_seq()
    table = DeliveryEvent._meta.db_table
    refused = refused_by_database(table, "INSERT", "NEW.type = 'bounced'")
    with refused, pytest.raises(DatabaseError):
        transitions_apply([_bounce(row)], now=timezone.now())
    row.refresh_from_db()
    assert row.status == RecipientStatus.QUEUED  # no state without its event
    assert not Suppression.objects.exists()
    assert events_last_seq() == last  # and the numbers were given back
    # Without the refusal the same transition goes through, numbered next.
    transitions_apply([_bounce(row)], now=timezone.now())
    row.refresh_from_db()
    assert row.status == RecipientStatus.BOUNCED
    assert [e.seq for e in events_after(cursor=last)] == [last + 1]


def test_a_refused_state_change_leaves_no_event(account):
    [row] = _enqueued(account, "a@one.test")
    last = events_last_seq()
    table = QueuedRecipient._meta.db_table
    refused = refused_by_database(table, "UPDATE", "NEW.status = 'bounced'")
    with refused, pytest.raises(DatabaseError):
        transitions_apply([_bounce(row)], now=timezone.now())
    assert events_after(cursor=last) == []  # no event without its state
    assert not Suppression.objects.exists()


def test_a_rolled_back_transaction_leaves_no_gap(account):
    _enqueued(account, "a@one.test")
    last = events_last_seq()
    with pytest.raises(RuntimeError), transaction.atomic():
        _enqueued(account, "b@two.test", "c@three.test")
        assert events_last_seq() == last + 2  # taken inside the transaction...
        raise RuntimeError("the caller fails before commit")
    assert events_last_seq() == last  # ...and given back by the rollback
    _enqueued(account, "d@four.test")
    assert [e.seq for e in events_after(cursor=0)] == list(range(1, last + 2))


def test_a_row_another_worker_holds_is_left_alone(account):
    mine, theirs = _enqueued(account, "a@one.test", "b@two.test")
    QueuedRecipient.objects.filter(pk=mine.pk).update(claimed_by="me")
    QueuedRecipient.objects.filter(pk=theirs.pk).update(claimed_by="them")
    last = events_last_seq()
    applied = transitions_apply(
        [_bounce(mine), _bounce(theirs)], now=timezone.now(), claimed_by="me"
    )
    assert [t.row.pk for t in applied] == [mine.pk]
    assert [(e.recipient_id, e.type) for e in events_after(cursor=last)] == [(mine.pk, "bounced")]
    assert QueuedRecipient.objects.get(pk=theirs.pk).status == RecipientStatus.QUEUED
    assert list(Suppression.objects.values_list("address", flat=True)) == ["a@one.test"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_number_events_gap_free_in_commit_order(account):
    if connection.vendor == "sqlite":
        skip_for_mode("SQLite has one writer at a time: nothing runs concurrently to order")
    writers, per_writer = 4, 15
    stop = threading.Event()
    problems: list[str] = []
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(per_writer):
                _enqueued(account, "a@one.test", "b@two.test")
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connections.close_all()

    def read() -> None:
        # Whatever a reader sees at any moment is a prefix 1..N: a visible number never has a
        # smaller one still to come (a consumer at cursor N would skip it for good).
        try:
            while not stop.is_set():
                seqs = list(DeliveryEvent.objects.order_by("seq").values_list("seq", flat=True))
                if seqs != list(range(1, len(seqs) + 1)):
                    problems.append(f"saw {seqs[-5:]} of {len(seqs)}")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write) for _ in range(writers)]
    reader = threading.Thread(target=read)
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.set()
    reader.join(timeout=30)
    assert errors == []
    assert problems == []
    total = writers * per_writer * 2
    assert list(DeliveryEvent.objects.order_by("seq").values_list("seq", flat=True)) == list(
        range(1, total + 1)
    )


# The child for the kill test: a real process that applies one transition and is killed
# by the database trigger's signal (SQLite: a function the trigger calls; PostgreSQL: a
# NOTICE the trigger raises), i.e. inside the transaction, after the statement named.
_KILLED_CHILD = """
import os, signal, sys
import django
django.setup()
from django.db import connection
from django.utils import timezone
from mailplane.queue.models import EventType, QueuedRecipient, RecipientStatus, SuppressionReason
from mailplane.queue.transitions import Transition, transitions_apply

def die(*_):
    os.kill(os.getpid(), signal.SIGKILL)

connection.ensure_connection()
if connection.vendor == "sqlite":
    connection.connection.create_function("mailplane_test_die", 0, die)
else:
    connection.connection.add_notice_handler(
        lambda diag: die() if diag.message_primary == "mailplane_test_die" else None
    )
row = QueuedRecipient.objects.select_related("message").get(pk=int(sys.argv[1]))
step = Transition(row=row, event=EventType.BOUNCED, status=RecipientStatus.BOUNCED,
                  reply="550 5.1.1 no such user", suppress=SuppressionReason.HARD_BOUNCE)
transitions_apply([step], now=timezone.now())
sys.exit(3)  # not reached: the process dies inside the transaction
"""


def kills_the_writer(table: str, verb: str) -> AbstractContextManager[None]:
    """While active, the process whose `verb` on `table` fires the trigger is killed
    (SIGKILL) right after that statement, before anything after it in its transaction."""
    return database_trigger(
        "mailplane_test_die",
        table,
        f"AFTER {verb}",
        sqlite="SELECT mailplane_test_die()",
        plpgsql="RAISE NOTICE 'mailplane_test_die'",
    )


def _database_url() -> str:
    """The test database, for a child process."""
    conf = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{conf['NAME']}"
    auth = conf["USER"] + (f":{conf['PASSWORD']}" if conf["PASSWORD"] else "")
    return f"postgres://{auth}@{conf['HOST']}:{conf['PORT'] or 5432}/{conf['NAME']}"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("model", "verb"),
    [(QueuedRecipient, "UPDATE"), (Suppression, "INSERT"), (DeliveryEvent, "INSERT")],
    ids=["after-the-state-write", "after-the-suppression", "after-the-event-insert"],
)
def test_a_process_killed_mid_transition_leaves_neither_state_nor_event(account, model, verb):
    """The issue's check: kill the process between the state write and anything after
    it. No state without its event, no event (nor suppression) without its state, and
    the sequence number is not used up."""
    [row] = _enqueued(account, "a@one.test")
    last = events_last_seq()
    env = {**os.environ, "DATABASE_URL": _database_url()}
    with kills_the_writer(model._meta.db_table, verb):
        child = subprocess.run(
            [sys.executable, "-c", _KILLED_CHILD, str(row.pk)],
            env=env,
            capture_output=True,
            timeout=60,
        )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    row.refresh_from_db()
    assert row.status == RecipientStatus.QUEUED
    assert events_after(cursor=last) == [] and events_last_seq() == last
    assert not Suppression.objects.exists()
    # The same transition from a process that lives commits all of it, numbered next.
    transitions_apply([_bounce(row)], now=timezone.now())
    row.refresh_from_db()
    assert row.status == RecipientStatus.BOUNCED and Suppression.objects.count() == 1
    assert [e.seq for e in events_after(cursor=last)] == [last + 1]
