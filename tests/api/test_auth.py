"""Api-Key authentication: every failure is a 401 with the error shape, never a 500."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from rest_framework.test import APIClient

from mailplane.tenancy.models import ApiKey
from mailplane.tenancy.services import api_key_revoke

PROTECTED = [
    "/api/userinfo/",
    "/api/relay-servers/",
    "/api/projects/",
    "/api/domains/",
    "/api/mailboxes/",
    "/api/api-keys/",
    "/api/tasks/00000000-0000-0000-0000-000000000000/",
]


@pytest.mark.parametrize("path", PROTECTED)
@pytest.mark.parametrize(
    "header",
    [
        None,
        "Api-Key",
        "Api-Key ",
        "Api-Key mp_not_a_real_key",
        "Api-Key a b",
        "Bearer xyz",
        "Api-Key \u00e9\u00e9",
    ],
)
def test_missing_or_invalid_key_is_401(db, path, header):
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get(path)
    assert response.status_code == 401, (path, header, response.content)
    assert response.json()["error"]["code"] in {"not_authenticated", "authentication_failed"}
    assert response["WWW-Authenticate"] == "Api-Key"


def test_revoked_key_stops_working_and_last_used_is_recorded(account):
    key = ApiKey.objects.get(organization=account.org)
    assert key.last_used_at is None
    assert account.client.get("/api/userinfo/").status_code == 200
    key.refresh_from_db()
    assert key.last_used_at is not None
    api_key_revoke(organization=account.org, key_id=key.pk)
    assert account.client.get("/api/userinfo/").status_code == 401


def test_keys_are_stored_as_digests_only(account):
    key = ApiKey.objects.get(organization=account.org)
    assert account.key not in (key.key_digest, key.prefix)
    assert account.key.startswith(key.prefix)


def test_key_management_endpoints(account):
    created = account.client.post("/api/api-keys/", {"name": "ci"}, format="json")
    assert created.status_code == 201
    new_key = created.json()["key"]
    listing = account.client.get("/api/api-keys/").json()["results"]
    assert {k["name"] for k in listing} == {"test", "ci"}
    assert all("key" not in k for k in listing)  # shown once, at creation only
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {new_key}")
    assert other.get("/api/userinfo/").status_code == 200
    assert account.client.delete(f"/api/api-keys/{created.json()['id']}/").status_code == 204
    assert other.get("/api/userinfo/").status_code == 401
    assert account.client.post("/api/api-keys/", {}, format="json").status_code == 400


def test_inactive_organization_is_locked_out(account):
    account.org.is_active = False
    account.org.save()
    assert account.client.get("/api/userinfo/").status_code == 401


def test_unknown_api_path_is_json_404(account):
    response = account.client.get("/api/nothing-here/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# --- secret-key rotation -------------------------------------------------------------

OLD_KEY = "old-key-" + "o" * 40
NEW_KEY = "new-key-" + "n" * 40
OTHER_KEY = "other-key-" + "x" * 40


def _status(secret: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    return client.get("/api/userinfo/").status_code


def test_api_keys_survive_rotating_and_retiring_every_secret_key(make_account, secret_keys):
    secret_keys(OLD_KEY)
    account = make_account()
    assert _status(account.key) == 200
    secret_keys(NEW_KEY, OLD_KEY)  # rotated
    assert _status(account.key) == 200
    secret_keys(NEW_KEY)  # the old key retired: the digest never depended on it
    assert _status(account.key) == 200
    secret_keys(OTHER_KEY)  # and again
    assert _status(account.key) == 200
    assert _status(account.key + "x") == 401
    stored = ApiKey.objects.get(organization=account.org).key_digest
    assert stored.startswith("sha256:") and account.key not in stored


@pytest.mark.parametrize("made_under", [OLD_KEY, NEW_KEY])
def test_digests_of_the_keyed_scheme_match_under_any_key_and_are_upgraded_on_use(
    make_account, secret_keys, made_under
):
    """Keys stored before the unkeyed digest: HMAC-SHA256 under whichever secret key was
    the oldest then. They still work after a rotation, whichever key that was, and their
    first use rewrites them, so retiring that key later breaks nothing."""
    secret_keys(NEW_KEY, OLD_KEY)
    account = make_account()
    key = ApiKey.objects.get(organization=account.org)
    legacy = hmac.new(made_under.encode(), account.key.encode(), hashlib.sha256).hexdigest()
    ApiKey.objects.filter(pk=key.pk).update(key_digest=legacy)

    assert _status(account.key + "x") == 401
    assert ApiKey.objects.get(pk=key.pk).key_digest == legacy  # a wrong key upgrades nothing
    assert _status(account.key) == 200
    upgraded = ApiKey.objects.get(pk=key.pk).key_digest
    assert upgraded != legacy and upgraded.startswith("sha256:")
    secret_keys(OTHER_KEY)  # every key the digest was ever made under is gone
    assert _status(account.key) == 200


def test_keyed_digests_under_a_key_no_longer_configured_do_not_match(make_account, secret_keys):
    secret_keys(NEW_KEY)
    account = make_account()
    legacy = hmac.new(OLD_KEY.encode(), account.key.encode(), hashlib.sha256).hexdigest()
    ApiKey.objects.filter(organization=account.org).update(key_digest=legacy)
    assert _status(account.key) == 401
