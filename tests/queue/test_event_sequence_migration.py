"""Migrations 0004/0005 number the events a database already has, in id order, and start
the sequence after them (PostgreSQL and SQLite alike)."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("mailqueue", "0003_complaints")]
AFTER = [("mailqueue", "0005_event_seq_required")]


@pytest.mark.django_db(transaction=True)
def test_existing_events_are_numbered_in_id_order():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        old = executor.loader.project_state(BEFORE).apps
        owner = old.get_model(settings.AUTH_USER_MODEL).objects.create(username="old@x.test")
        org = old.get_model("tenancy", "Organization").objects.create(
            name="Old", slug="old", owner=owner
        )
        message = old.get_model("mailqueue", "OutboundMessage").objects.create(
            organization=org, source="smtp", size=1
        )
        event_model = old.get_model("mailqueue", "DeliveryEvent")
        ids = [
            event_model.objects.create(organization=org, message=message, type=kind).pk
            for kind in ("queued", "deferred", "delivered")
        ]
        executor = MigrationExecutor(connection)
        executor.migrate(AFTER)
        new = executor.loader.project_state(AFTER).apps
        numbered = new.get_model("mailqueue", "DeliveryEvent").objects.order_by("id")
        assert list(numbered.values_list("id", "seq")) == list(zip(ids, [1, 2, 3], strict=True))
        sequence = new.get_model("mailqueue", "EventSequence").objects.get()
        assert sequence.last == 3
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
