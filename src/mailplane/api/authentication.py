"""`Authorization: Api-Key <key>`, the scheme the seeds use."""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from mailplane.tenancy.models import ApiKey, Organization
from mailplane.tenancy.services import api_key_authenticate

KEYWORD = "Api-Key"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        keyword, _, secret = header.partition(" ")
        if keyword.lower() != KEYWORD.lower():
            return None
        secret = secret.strip()
        if not secret or " " in secret:
            raise exceptions.AuthenticationFailed("malformed Api-Key header")
        key = api_key_authenticate(secret=secret)
        if key is None:
            raise exceptions.AuthenticationFailed("invalid or revoked API key")
        return key.organization.owner, key

    def authenticate_header(self, request: Request) -> str:
        return KEYWORD


def organization_of(request: Request) -> Organization:
    key = request.auth
    assert isinstance(key, ApiKey)
    return key.organization
