"""Mailboxes made straight in the database: the API path hashes with scrypt (~50 ms each),
which would make the 201-mailbox Woodpecker tests slow for nothing."""

from __future__ import annotations

from typing import Any

from mailplane.domains.models import Domain
from mailplane.mailboxes.models import Mailbox
from mailplane.mailboxes.passwords import password_hash
from tests.support.fixtures import Account

PASSWORD = "Precomputed-Pass-42"
_HASH = password_hash(PASSWORD)


def add_mailboxes(
    account: Account,
    domain: Domain,
    count: int,
    *,
    prefix: str = "user",
    password: str = PASSWORD,
    **fields: Any,
) -> list[Mailbox]:
    """`count` mailboxes <prefix>0000@domain...; `fields` apply to all of them."""
    return Mailbox.objects.bulk_create(
        Mailbox(
            organization=account.org,
            domain=domain,
            relay_server=account.relay,
            local_part=f"{prefix}{i:04d}",
            address=f"{prefix}{i:04d}@{domain.name}",
            password=password,
            password_hash=_HASH,
            **fields,
        )
        for i in range(count)
    )
