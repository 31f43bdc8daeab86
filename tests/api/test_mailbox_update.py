"""PATCH /api/mailboxes/{id}/ as serializer -> service: what the body may hold.

MailboxUpdateSerializer validates (the schema is generated from it), mailbox_update
writes. Every bad field is in the one 400, a fetched mailbox can be sent back as it is,
and another account's ids read as "not found".
"""

from __future__ import annotations

from mailplane.mailboxes.models import Mailbox
from mailplane.projects.services import project_create
from tests.api.test_mailboxes import _create
from tests.support.fixtures import verified_domain


def _url(mailbox: Mailbox) -> str:
    return f"/api/mailboxes/{mailbox.pk}/"


def test_a_fetched_mailbox_sent_back_is_accepted(account):
    mailbox = _create(account, verified_domain(account), "jane")
    shown = account.client.get(_url(mailbox)).json()
    body = {k: shown[k] for k in ("id", "email", "domain", "domain_name", "first_name")}
    response = account.client.patch(_url(mailbox), {**body, "first_name": "Jane"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["first_name"] == "Jane"


def test_every_bad_field_is_named_in_one_400_and_nothing_changes(account):
    mailbox = _create(account, verified_domain(account), "jane")
    response = account.client.patch(
        _url(mailbox),
        {
            "nickname": "x",  # unknown
            "domain": mailbox.domain_id + 1,  # fixed
            "daily_limit": 100_001,
            "first_name": "x" * 101,
            "warmup_enabled": "perhaps",
            "relay_server": None,
            "signature": "ok",
        },
        format="json",
    )
    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert set(details) == {
        "nickname", "domain", "daily_limit", "first_name", "warmup_enabled", "relay_server"
    }  # fmt: skip
    assert details["nickname"] == ["unknown field"]
    assert details["domain"] == ["cannot be changed: create a new mailbox instead"]
    mailbox.refresh_from_db()
    assert mailbox.signature == ""


def test_another_accounts_project_or_relay_server_is_not_found(account, other_account):
    mailbox = _create(account, verified_domain(account), "jane")
    theirs = project_create(organization=other_account.org, name="theirs")
    response = account.client.patch(_url(mailbox), {"project": theirs.pk}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"project": [f"project {theirs.pk} not found"]}
    relay = other_account.relay.pk
    response = account.client.patch(_url(mailbox), {"relay_server": relay}, format="json")
    assert response.json()["error"]["details"] == {
        "relay_server": [f"relay server {relay} not found"]
    }
    mailbox.refresh_from_db()
    assert mailbox.project_id is None and mailbox.relay_server_id == account.relay.pk


def test_project_null_detaches_and_reply_to_null_clears(account):
    project = project_create(organization=account.org, name="p")
    mailbox = _create(account, verified_domain(account), "jane", project=project.pk)
    assert Mailbox.objects.get(pk=mailbox.pk).reply_to  # the seed payload sets one
    response = account.client.patch(
        _url(mailbox), {"project": None, "reply_to": None}, format="json"
    )
    assert response.status_code == 200
    assert (response.json()["project"], response.json()["reply_to"]) == (None, None)
    mailbox.refresh_from_db()
    assert (mailbox.project_id, mailbox.reply_to) == (None, "")


def test_a_body_that_is_not_an_object_is_a_400(account):
    mailbox = _create(account, verified_domain(account), "jane")
    response = account.client.patch(_url(mailbox), [1, 2], format="json")
    assert response.status_code == 400
    assert "non_field_errors" in response.json()["error"]["details"]


def test_the_serializer_takes_what_the_service_changes():
    from mailplane.api.mailboxes import MailboxUpdateSerializer
    from mailplane.mailboxes.services import UPDATABLE

    assert set(MailboxUpdateSerializer().fields) == UPDATABLE
