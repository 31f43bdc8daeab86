"""Server keys on the send API: `Authorization: Bearer <key>` (Resend, useSend and most
HTTP clients' built-in scheme) or `X-Server-Token: <key>` (the header Postmark users know
as `X-Postmark-Server-Token`).

A server key acts on its one server; the account endpoints take only `Api-Key` account
keys (api/authentication.py), and these views take only server keys, so neither kind of
key reaches the other's endpoints. Wrong keys count against the client address in the
same throttle as wrong account keys (api/throttling.py).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, permissions
from rest_framework.request import Request
from rest_framework.views import APIView

from mailplane.api.authentication import key_checked, organization_of
from mailplane.cells.routing import route_set, route_using
from mailplane.cells.selectors import data_routes
from mailplane.servers.models import EmailServer, ServerKey, ServerKeyKind
from mailplane.servers.selectors import email_server_get
from mailplane.servers.services import KEY_PREFIX, server_key_authenticate

BEARER = "Bearer"
TOKEN_HEADER = "HTTP_X_SERVER_TOKEN"


class ServerKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, ServerKey] | None:
        secret = request.META.get(TOKEN_HEADER)
        if secret is None:
            header = authentication.get_authorization_header(request).decode("latin-1")
            keyword, _, rest = header.partition(" ")
            if not header or keyword.lower() != BEARER.lower():
                return None
            secret = rest
        key = key_checked(
            request,
            secret,
            _server_key_find,
            malformed="malformed server key",
            unknown="invalid or revoked server key",
        )
        return key.server.organization.owner, key

    def authenticate_header(self, request: Request) -> str:
        return f'{BEARER} realm="server key"'  # a 401, not a 403, without a key


def _server_key_find(*, secret: str) -> ServerKey | None:
    """A server key lives with its server, in the account's cell: look in each cell's
    database (the shared one first) and route the request to the one that has it."""
    if not secret.startswith(KEY_PREFIX):
        return None  # not a server key: no query
    for route in data_routes():
        with route_using(route):
            key = server_key_authenticate(secret=secret)
        if key is not None:
            route_set(route)
            return key
    return None


def server_of(request: Request) -> EmailServer:
    return server_key_of(request).server


def server_key_of(request: Request) -> ServerKey:
    key = request.auth
    assert isinstance(key, ServerKey)
    return key


class HasServerKey(permissions.BasePermission):
    """Authenticated by a server key (not merely by some authenticator)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, ServerKey)


class FullAccessKey(HasServerKey):
    """Seed 004: a send-only key sends and nothing else."""

    message = "this server key is send-only: reading or changing the server needs a full key"

    def has_permission(self, request: Request, view: Any) -> bool:
        key = request.auth
        return isinstance(key, ServerKey) and key.kind == ServerKeyKind.FULL


class ServerKeyScheme(OpenApiAuthenticationExtension):
    target_class = "mailplane.api.server_auth.ServerKeyAuthentication"
    name = "ServerKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A server key (`mps_…`, from `POST /api/servers/{id}/keys/`) as "
            "`Authorization: Bearer <key>`, or in `X-Server-Token: <key>`.",
        }


class ServerDoor(APIView):
    """A server's operations written once, reached by two doors that find the server each
    their own way: an account key and the server's id in the path, or the server's own
    full key (`/api/server/…`, Postmark's server-token endpoints)."""

    def server(self, request: Request, pk: int | None) -> EmailServer:
        raise NotImplementedError


class AccountServerDoor(ServerDoor):
    def server(self, request: Request, pk: int | None) -> EmailServer:
        assert pk is not None
        return email_server_get(organization=organization_of(request), server_id=pk)


class KeyServerDoor(ServerDoor):
    authentication_classes = [ServerKeyAuthentication]
    permission_classes = [FullAccessKey]

    def server(self, request: Request, pk: int | None) -> EmailServer:
        return server_of(request)
