"""GET /api/tasks/{task_id}/: status of an asynchronous job, scoped to the account."""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.core.errors import NotFound
from mailplane.jobs.models import JobStatus
from mailplane.jobs.services import job_get
from mailplane.mailboxes.bulk import mailbox_bulk_passwords_take
from mailplane.mailboxes.services import mailbox_task_password_take


class TaskMailboxSerializer(serializers.Serializer[Any]):
    """The mailbox a successful `mailbox.create` task made."""

    id = serializers.IntegerField()
    email = serializers.EmailField(help_text="The full address: the SMTP and IMAP username.")
    domain = serializers.IntegerField()
    relay_server = serializers.IntegerField()
    project = serializers.IntegerField(allow_null=True)
    reply_to = serializers.EmailField(allow_null=True)
    password = serializers.CharField(
        allow_null=True,
        help_text="A generated password, on the first read of the finished task only; "
        "null when you chose it or it was shown already (PATCH the mailbox to set another).",
    )


class TaskSerializer(serializers.Serializer[Any]):
    task_id = serializers.UUIDField()
    kind = serializers.CharField(
        help_text="mailbox.create, mailbox.bulk_create, domain.dns_publish, …"
    )
    status = serializers.ChoiceField(
        choices=JobStatus.choices, help_text="`pending`, then `success` or `failure`."
    )
    progress = serializers.IntegerField(min_value=0, max_value=100)
    result = serializers.JSONField(
        allow_null=True,
        help_text="The job's outcome: `{mailbox}` for mailbox.create, `{rows, counts}` for "
        "mailbox.bulk_create (a created row whose password the CSV left blank carries the "
        "generated `password`, on the first read of the finished task only), `{errors}` for "
        "a failure with per-field reasons.",
    )
    error = serializers.CharField(allow_null=True, help_text="Why it failed.")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    mailbox = TaskMailboxSerializer(
        required=False, help_text="mailbox.create, once successful: as in `result`."
    )


class TaskDetailView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("task_id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
        responses=TaskSerializer,
    )
    def get(self, request: Request, task_id: str) -> Response:
        try:
            uuid.UUID(task_id)
        except ValueError as exc:
            raise NotFound("task not found") from exc
        job = job_get(organization=organization_of(request), job_id=task_id)
        body: dict[str, Any] = {
            "task_id": str(job.pk),
            "kind": job.kind,
            "status": job.status,
            "progress": job.progress,
            "result": job.result,
            "error": job.error or None,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
        }
        if job.result and "mailbox" in job.result:
            mailbox = {
                **job.result["mailbox"],
                "password": mailbox_task_password_take(job=job),
            }
            # Tasks finished before reply_to was made null-when-unset kept "".
            mailbox["reply_to"] = mailbox.get("reply_to") or None
            body["mailbox"] = mailbox
            body["result"] = {**job.result, "mailbox": mailbox}
        if job.result and "rows" in job.result:
            generated = mailbox_bulk_passwords_take(job=job)
            if generated:
                rows = [
                    {**entry, "password": generated[entry["row"]]}
                    if entry.get("row") in generated
                    else entry
                    for entry in job.result["rows"]
                ]
                body["result"] = {**job.result, "rows": rows}
        return Response(body, headers={"Cache-Control": "no-store"})
