"""Secrets are ciphertext in the database: read the raw columns, not the model.

The model reads back what was written whether or not the field encrypts, so each test here
fetches the column with plain SQL and checks that it holds no trace of the secret yet
decrypts to it. The rotation tests set MAILPLANE_SECRET_KEY the way an operator does
(newest key first, comma-separated) and rebuild the settings from it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, models

from mailplane import config
from mailplane.core import crypto
from mailplane.domains.models import Domain
from mailplane.jobs.models import Job
from mailplane.mailboxes.models import Mailbox
from mailplane.mailboxes.services import (
    mailbox_create,
    mailbox_create_start,
    mailbox_update,
    mailbox_validate,
)
from mailplane.relays.models import RelayServer
from mailplane.relays.services import relay_server_create, relay_server_update
from mailplane.tenancy.services import api_key_authenticate, api_key_create
from tests.support.fixtures import Account, verified_domain

MAILBOX_PASSWORD = "Sunny-Harbour-42!x"
NEW_PASSWORD = "Quiet-Meadow-77?y"
RELAY_PASSWORD = "smarthost-Pa55word!"
OLD_KEY = "old-key-" + "o" * 40
NEW_KEY = "new-key-" + "n" * 40


def raw_column(model: type[models.Model], field_name: str, pk: Any) -> str:
    """The stored value of one field, bypassing the field's from_db_value."""
    meta = model._meta
    quote = connection.ops.quote_name
    column = quote(meta.get_field(field_name).column)  # type: ignore[union-attr]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {column} FROM {quote(meta.db_table)} WHERE {quote(meta.pk.column)} = %s",  # type: ignore[union-attr]
            [meta.pk.get_db_prep_value(pk, connection)],  # type: ignore[union-attr]
        )
        row = cursor.fetchone()
    assert row is not None, f"no {meta.label} row {pk}"
    return str(row[0])


def assert_ciphertext_of(raw: str, *secrets: str) -> None:
    """`raw` is a Fernet token (version byte 0x80, so base64url 'gAAAAA') that shows none
    of `secrets`."""
    assert raw.startswith("gAAAAA"), raw[:40]
    for secret in secrets:
        assert secret not in raw


@pytest.fixture
def mailbox(account: Account) -> Mailbox:
    domain = verified_domain(account)
    spec = mailbox_validate(
        organization=account.org,
        data={"email": "alice", "domain": domain.pk, "password": MAILBOX_PASSWORD},
    )
    return mailbox_create(organization=account.org, spec=spec)


def smtp_relay(account: Account, password: str = RELAY_PASSWORD) -> RelayServer:
    return relay_server_create(
        organization=account.org,
        name="smarthost",
        provider="smtp",
        configuration={"host": "smtp.relay.test", "port": 587},
        credentials={"username": "relay-user", "password": password},
    )


# --- the raw columns ------------------------------------------------------------------


def test_mailbox_password_column_is_ciphertext(mailbox: Mailbox) -> None:
    raw = raw_column(Mailbox, "password", mailbox.pk)
    assert_ciphertext_of(raw, MAILBOX_PASSWORD)
    assert crypto.decrypt(raw) == MAILBOX_PASSWORD
    assert Mailbox.objects.get(pk=mailbox.pk).password == MAILBOX_PASSWORD


def test_changed_mailbox_password_is_stored_encrypted(mailbox: Mailbox) -> None:
    mailbox_update(mailbox=mailbox, password=NEW_PASSWORD)
    raw = raw_column(Mailbox, "password", mailbox.pk)
    assert_ciphertext_of(raw, NEW_PASSWORD, MAILBOX_PASSWORD)
    assert crypto.decrypt(raw) == NEW_PASSWORD


def test_relay_credentials_column_is_ciphertext(account: Account) -> None:
    relay = smtp_relay(account)
    raw = raw_column(RelayServer, "credentials", relay.pk)
    # Neither the secret nor even the names of the credentials show.
    assert_ciphertext_of(raw, RELAY_PASSWORD, "relay-user", "password")
    assert json.loads(crypto.decrypt(raw)) == {"username": "relay-user", "password": RELAY_PASSWORD}
    assert RelayServer.objects.get(pk=relay.pk).credentials["password"] == RELAY_PASSWORD

    relay_server_update(server=relay, credentials={"password": "rotated-Pa55word!"})
    raw = raw_column(RelayServer, "credentials", relay.pk)
    assert_ciphertext_of(raw, "rotated-Pa55word!", "relay-user")
    assert json.loads(crypto.decrypt(raw))["password"] == "rotated-Pa55word!"


def test_dkim_private_key_column_is_ciphertext(account: Account) -> None:
    domain = verified_domain(account)
    pem = Domain.objects.get(pk=domain.pk).dkim_private_key
    assert pem.startswith("-----BEGIN") and "PRIVATE KEY" in pem
    raw = raw_column(Domain, "dkim_private_key", domain.pk)
    body_lines = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    assert_ciphertext_of(raw, "PRIVATE KEY", *body_lines)
    assert crypto.decrypt(raw) == pem


def test_mailbox_creation_job_payload_is_ciphertext(account: Account) -> None:
    """The API creates mailboxes through a job whose payload carries the password."""
    domain = verified_domain(account)
    spec = mailbox_validate(
        organization=account.org,
        data={"email": "bob", "domain": domain.pk, "password": MAILBOX_PASSWORD},
    )
    job = mailbox_create_start(organization=account.org, spec=spec)
    raw = raw_column(Job, "payload", job.pk)
    assert_ciphertext_of(raw, MAILBOX_PASSWORD, "bob")
    assert json.loads(crypto.decrypt(raw))["password"] == MAILBOX_PASSWORD


# --- key rotation ---------------------------------------------------------------------


def test_rotation_reads_old_rows_and_writes_with_the_new_key(
    make_account: Callable[..., Account], secret_keys: Callable[..., None]
) -> None:
    secret_keys(OLD_KEY)
    account = make_account()  # its native relay server's credentials, too, under OLD_KEY
    domain = verified_domain(account)
    spec = mailbox_validate(
        organization=account.org,
        data={"email": "alice", "domain": domain.pk, "password": MAILBOX_PASSWORD},
    )
    old_mailbox = mailbox_create(organization=account.org, spec=spec)
    old_relay = smtp_relay(account)
    pem = Domain.objects.get(pk=domain.pk).dkim_private_key
    stored_before = raw_column(Mailbox, "password", old_mailbox.pk)

    secret_keys(NEW_KEY, OLD_KEY)
    assert config.secret_keys() == [NEW_KEY, OLD_KEY]
    # Rows written under the old key still read.
    assert Mailbox.objects.get(pk=old_mailbox.pk).password == MAILBOX_PASSWORD
    assert RelayServer.objects.get(pk=old_relay.pk).credentials["password"] == RELAY_PASSWORD
    assert Domain.objects.get(pk=domain.pk).dkim_private_key == pem
    assert raw_column(Mailbox, "password", old_mailbox.pk) == stored_before  # reads do not rewrite
    # New writes: a changed password and a new relay server.
    mailbox_update(mailbox=Mailbox.objects.get(pk=old_mailbox.pk), password=NEW_PASSWORD)
    new_relay = smtp_relay(account, password="second-Pa55word!")
    assert_ciphertext_of(raw_column(Mailbox, "password", old_mailbox.pk), NEW_PASSWORD)

    # They were written with the new key: the old key alone cannot open them ...
    secret_keys(OLD_KEY)
    with pytest.raises(crypto.SecretUnreadable):
        Mailbox.objects.get(pk=old_mailbox.pk)
    with pytest.raises(crypto.SecretUnreadable):
        RelayServer.objects.get(pk=new_relay.pk)
    # ... the new key alone can.
    secret_keys(NEW_KEY)
    assert Mailbox.objects.get(pk=old_mailbox.pk).password == NEW_PASSWORD
    assert RelayServer.objects.get(pk=new_relay.pk).credentials["password"] == "second-Pa55word!"
    # No re-encryption path exists yet: rows never rewritten since the rotation still need
    # the old key, so retiring it now would lose them.
    with pytest.raises(crypto.SecretUnreadable):
        RelayServer.objects.get(pk=old_relay.pk)
    with pytest.raises(crypto.SecretUnreadable):
        Domain.objects.get(pk=domain.pk)


def test_api_keys_issued_before_a_rotation_still_authenticate(
    make_account: Callable[..., Account], secret_keys: Callable[..., None]
) -> None:
    secret_keys(OLD_KEY)
    account = make_account()
    issued = api_key_create(organization=account.org, name="before rotation")
    secret_keys(NEW_KEY, OLD_KEY)
    found = api_key_authenticate(secret=issued.secret)
    assert found is not None and found.organization_id == account.org.pk
    assert api_key_authenticate(secret=issued.secret + "x") is None
