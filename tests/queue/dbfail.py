"""Real database failures for tests: row triggers that refuse some queue rows (or, in
tests/queue/test_transitions.py, kill the writing process).

No mock of our own code: the INSERT fails inside the database (SQLite RAISE(ABORT) or a
PL/pgSQL exception), exactly like a constraint violation would, mid-transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from django.db import connection

from mailplane.queue.models import QueuedRecipient

POISON_DOMAIN = "poison.invalid"


@contextmanager
def database_trigger(
    name: str, table: str, when: str, *, sqlite: str, plpgsql: str
) -> Iterator[None]:
    """While active, a row trigger `name` on `table` (`when`: "BEFORE INSERT", "AFTER
    UPDATE"…): SQLite runs the statement `sqlite`, PostgreSQL the PL/pgSQL `plpgsql`
    (both may read NEW)."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"CREATE TRIGGER {name} {when} ON {table} BEGIN {sqlite}; END")
        else:
            cursor.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN {plpgsql}; RETURN NEW; END $$"
            )
            cursor.execute(
                f"CREATE TRIGGER {name} {when} ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()"
            )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")
            else:
                cursor.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
                cursor.execute(f"DROP FUNCTION IF EXISTS {name}()")


def refused_by_database(
    table: str, verb: str, condition: str, *, why: str = "refused by test trigger"
) -> AbstractContextManager[None]:
    """While active, an INSERT or UPDATE (`verb`) on `table` whose NEW row matches
    `condition` (SQL on NEW) fails inside the database."""
    return database_trigger(
        "mailplane_test_refuse",
        table,
        f"BEFORE {verb}",
        sqlite=f"SELECT RAISE(ABORT, '{why}') WHERE {condition}",
        plpgsql=f"IF {condition} THEN RAISE EXCEPTION '{why}'; END IF",
    )


def recipients_refused_by_database(domain: str = POISON_DOMAIN) -> AbstractContextManager[None]:
    """While active, inserting a QueuedRecipient whose rcpt_domain is `domain` fails."""
    table = QueuedRecipient._meta.db_table
    condition = f"NEW.rcpt_domain = '{domain}'"
    return refused_by_database(table, "INSERT", condition, why="recipient refused by test trigger")
