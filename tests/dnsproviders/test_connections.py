"""DNS-provider connections: credentials validated, encrypted at rest, never shown or
logged; the test records the provider's verdict."""

from __future__ import annotations

import logging

import pytest
from django.db import connection as db

from mailplane.core.errors import LimitReached, ValidationFailed
from mailplane.dnsproviders.models import ConnectionStatus, DnsProviderConnection
from mailplane.dnsproviders.services import (
    MAX_CONNECTIONS,
    dns_provider_create,
    dns_provider_get,
    dns_provider_test,
    dns_provider_update,
    domain_dns_publish,
    domain_dns_publish_start,
)
from mailplane.domains.services import domain_create
from tests.support.dns_providers import CF_TOKEN, GD_KEY, GD_SECRET


def _create(account, provider="cloudflare", credentials=None, name="cf"):
    return dns_provider_create(
        organization=account.org,
        name=name,
        provider=provider,
        credentials=credentials if credentials is not None else {"api_token": CF_TOKEN},
    )


def test_credentials_are_stored_encrypted(account):
    made = _create(account)
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT credentials FROM dnsproviders_dnsproviderconnection WHERE id = %s", [made.pk]
        )
        (stored,) = cursor.fetchone()
    assert CF_TOKEN not in stored and "api_token" not in stored
    assert DnsProviderConnection.objects.get(pk=made.pk).credentials == {"api_token": CF_TOKEN}
    assert CF_TOKEN not in str(made) and CF_TOKEN not in repr(made)


@pytest.mark.parametrize(
    ("provider", "credentials", "field"),
    [
        ("cloudflare", {}, "credentials.api_token"),
        ("cloudflare", {"api_token": ""}, "credentials.api_token"),
        ("cloudflare", {"api_token": "short"}, "credentials.api_token"),
        ("cloudflare", {"api_token": "x" * 201}, "credentials.api_token"),
        ("cloudflare", {"api_token": "token with spaces 0123456789"}, "credentials.api_token"),
        ("cloudflare", {"api_token": "tok\r\nX-Injected: 1-0123456789"}, "credentials.api_token"),
        ("cloudflare", {"api_token": 12345678901234567890123}, "credentials.api_token"),
        ("cloudflare", {"api_token": ["x" * 30]}, "credentials.api_token"),
        ("cloudflare", {"api_token": CF_TOKEN, "extra": "1"}, "credentials.extra"),
        ("godaddy", {"api_key": GD_KEY}, "credentials.api_secret"),
        ("godaddy", {"api_key": "key:with:colons", "api_secret": GD_SECRET}, "credentials.api_key"),
        ("godaddy", ["not", "an", "object"], "credentials"),
        ("route53", {"api_token": CF_TOKEN}, "provider"),
    ],
)
def test_bad_credentials_are_refused_naming_the_field_not_the_value(
    account, provider, credentials, field
):
    with pytest.raises(ValidationFailed) as caught:
        _create(account, provider, credentials)
    assert field in caught.value.details, caught.value.details
    text = caught.value.message + repr(caught.value.details)
    for value in credentials.values() if isinstance(credentials, dict) else []:
        if isinstance(value, str) and len(value) > 8:
            assert value not in text
    assert not DnsProviderConnection.objects.exists()


def test_names_are_required_and_bounded(account):
    with pytest.raises(ValidationFailed, match="name"):
        _create(account, name="   ")
    with pytest.raises(ValidationFailed, match="name"):
        _create(account, name="n" * 201)


def test_an_account_holds_a_bounded_number_of_connections(account):
    for i in range(MAX_CONNECTIONS):
        _create(account, name=f"cf {i}")
    with pytest.raises(LimitReached):
        _create(account, name="one too many")


def test_other_accounts_connections_are_not_found(account, other_account):
    from mailplane.core.errors import NotFound

    made = _create(account)
    for wrong in (made.pk, "abc", -1, 0, 10**30, None, True):
        with pytest.raises(NotFound):
            dns_provider_get(organization=other_account.org, connection_id=wrong)
    assert dns_provider_get(organization=account.org, connection_id=str(made.pk)) == made


def test_the_test_records_valid_invalid_and_unreachable(account, fake_cloudflare, settings):
    good = dns_provider_test(connection=_create(account))
    assert (good.status, good.status_detail) == (
        ConnectionStatus.VALID,
        "Cloudflare API token active; it can see 0 zone(s)",
    )
    assert good.tested_at is not None

    bad = dns_provider_test(
        connection=_create(account, credentials={"api_token": "r" * 40}, name="bad")
    )
    assert bad.status == ConnectionStatus.INVALID and "Invalid API Token" in bad.status_detail

    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "CLOUDFLARE_API_URL": "http://127.0.0.1:9/client/v4",
    }
    down = dns_provider_test(connection=good)
    assert down.status == ConnectionStatus.ERROR and "could not be reached" in down.status_detail


def test_godaddy_test(account, fake_godaddy):
    made = _create(account, "godaddy", {"api_key": GD_KEY, "api_secret": GD_SECRET}, name="gd")
    assert dns_provider_test(connection=made).status == ConnectionStatus.VALID
    fake_godaddy.accounts[GD_KEY]["denied"] = True
    tested = dns_provider_test(connection=made)
    assert tested.status == ConnectionStatus.INVALID and "ACCESS_DENIED" in tested.status_detail


def test_new_credentials_make_the_connection_untested_again(account, fake_cloudflare):
    made = dns_provider_test(connection=_create(account))
    assert made.status == ConnectionStatus.VALID
    renamed = dns_provider_update(connection=made, name="renamed")
    assert (renamed.name, renamed.status) == ("renamed", ConnectionStatus.VALID)
    rekeyed = dns_provider_update(connection=made, credentials={"api_token": "n" * 40})
    assert rekeyed.status == ConnectionStatus.UNTESTED and rekeyed.tested_at is None
    assert DnsProviderConnection.objects.get(pk=made.pk).credentials == {"api_token": "n" * 40}


def test_secrets_never_reach_the_logs(account, fake_cloudflare, fake_godaddy, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    cf = _create(account)
    gd = _create(account, "godaddy", {"api_key": GD_KEY, "api_secret": GD_SECRET}, name="gd")
    fake_cloudflare.add_zone("acme.test")
    fake_godaddy.add_domain("other.test")
    fake_cloudflare.force(429, {"success": False, "errors": []}, {"Retry-After": "0"})
    dns_provider_test(connection=cf)
    dns_provider_test(connection=gd)
    for name, conn in (("acme.test", cf), ("other.test", gd)):
        domain = domain_create(organization=account.org, name=name, relay_server=account.relay)
        domain_dns_publish_start(organization=account.org, domain=domain, connection=conn)
        domain_dns_publish(domain=domain)
    assert len(caplog.records) > 20  # the requests were logged, at DEBUG at least
    for secret in (CF_TOKEN, GD_KEY, GD_SECRET):
        assert secret not in caplog.text
