"""PATCH /api/domains/{id}/: what the owner may change, and nothing they may not.

Issue 8 defect 9: `{"relay_server": 1}` answered 200 and was ignored. It now moves the
domain to another relay server of the account (the default for its new mailboxes);
another account's relay server, or none, is a 400 naming the field.
"""

from __future__ import annotations

import pytest

from mailplane.domains.models import Domain
from mailplane.mailboxes.services import mailbox_validate
from mailplane.relays.services import relay_server_create
from tests.support.fixtures import verified_domain


@pytest.fixture
def second_relay(account):
    return relay_server_create(
        organization=account.org,
        name="mg",
        provider="mailgun",
        configuration={"domain": "mg.acme.test"},
        credentials={"api_key": "key-0000000000000001"},
    )


def test_relay_server_of_the_account_is_applied_and_used_for_new_mailboxes(account, second_relay):
    domain = verified_domain(account)
    assert domain.relay_server_id == account.relay.pk
    response = account.client.patch(
        f"/api/domains/{domain.pk}/", {"relay_server": second_relay.pk}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["relay_server"] == second_relay.pk
    assert Domain.objects.get(pk=domain.pk).relay_server_id == second_relay.pk
    assert account.client.get(f"/api/domains/{domain.pk}/").json()["relay_server"] == (
        second_relay.pk
    )
    spec = mailbox_validate(organization=account.org, data={"email": "new", "domain": domain.pk})
    assert spec.relay_server_id == second_relay.pk


def test_another_accounts_relay_server_is_400_naming_the_field(account, other_account):
    domain = verified_domain(account)
    response = account.client.patch(
        f"/api/domains/{domain.pk}/", {"relay_server": other_account.relay.pk}, format="json"
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["details"] == {
        "relay_server": [f"relay server {other_account.relay.pk} not found"]
    }
    assert Domain.objects.get(pk=domain.pk).relay_server_id == account.relay.pk


@pytest.mark.parametrize("value", [None, 424242, "", "mg", 2**63])
def test_missing_or_invalid_relay_server_is_400_and_changes_nothing(account, value):
    domain = verified_domain(account)
    response = account.client.patch(
        f"/api/domains/{domain.pk}/", {"relay_server": value}, format="json"
    )
    assert response.status_code == 400, response.content
    assert list(response.json()["error"]["details"]) == ["relay_server"]
    assert Domain.objects.get(pk=domain.pk).relay_server_id == account.relay.pk


def test_patch_keeps_what_it_does_not_name(account, second_relay):
    domain = verified_domain(account)
    account.client.patch(
        f"/api/domains/{domain.pk}/", {"redirect": "https://acme.test/"}, format="json"
    )
    domain.refresh_from_db()
    assert (domain.redirect, domain.relay_server_id) == ("https://acme.test/", account.relay.pk)
