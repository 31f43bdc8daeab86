"""A real database failure for tests: a trigger that refuses some queue rows.

No mock of our own code: the INSERT fails inside the database (SQLite RAISE(ABORT) or a
PL/pgSQL exception), exactly like a constraint violation would, mid-transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

from mailplane.queue.models import QueuedRecipient

POISON_DOMAIN = "poison.invalid"


@contextmanager
def recipients_refused_by_database(domain: str = POISON_DOMAIN) -> Iterator[None]:
    """While active, inserting a QueuedRecipient whose rcpt_domain is `domain` fails."""
    table = QueuedRecipient._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                f"CREATE TRIGGER mailplane_test_poison BEFORE INSERT ON {table} "
                f"WHEN NEW.rcpt_domain = '{domain}' "
                "BEGIN SELECT RAISE(ABORT, 'recipient refused by test trigger'); END"
            )
        else:
            cursor.execute(
                "CREATE FUNCTION mailplane_test_poison() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF NEW.rcpt_domain = '{domain}' THEN "
                "RAISE EXCEPTION 'recipient refused by test trigger'; END IF; "
                "RETURN NEW; END $$"
            )
            cursor.execute(
                f"CREATE TRIGGER mailplane_test_poison BEFORE INSERT ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION mailplane_test_poison()"
            )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                cursor.execute("DROP TRIGGER IF EXISTS mailplane_test_poison")
            else:
                cursor.execute(f"DROP TRIGGER IF EXISTS mailplane_test_poison ON {table}")
                cursor.execute("DROP FUNCTION IF EXISTS mailplane_test_poison()")
