"""POST /api/server/messages/{id}/cancel/: cancel a scheduled message before it leaves
(Resend's and useSend's `POST /emails/{id}/cancel`); moving it is a PATCH of the message
(api/server_messages.py). Any key of the message's server, send-only included: the key
that scheduled a message can take it back. Another server's message is not found.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.schema import error
from mailplane.api.server_auth import HasServerKey, ServerKeyAuthentication, server_of
from mailplane.api.server_messages import ServerMessageDetailSerializer, message_detail
from mailplane.sending.schedule import server_message_cancel


class ServerMessageCancelView(APIView):
    authentication_classes = [ServerKeyAuthentication]
    permission_classes = [HasServerKey]

    @extend_schema(
        operation_id="server_messages_cancel",
        request=None,
        responses={
            200: ServerMessageDetailSerializer,
            409: error("The message is no longer scheduled (sent, being sent, cancelled)."),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        message = server_message_cancel(server=server_of(request), message_id=pk)
        return Response(message_detail(message))
