"""GET /api/tasks/{task_id}/: status of an asynchronous job, scoped to the account."""

from __future__ import annotations

import uuid

from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.core.errors import NotFound
from mailplane.jobs.services import job_get


class TaskDetailView(APIView):
    def get(self, request: Request, task_id: str) -> Response:
        try:
            uuid.UUID(task_id)
        except ValueError as exc:
            raise NotFound("task not found") from exc
        job = job_get(organization=organization_of(request), job_id=task_id)
        body = {
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
            body["mailbox"] = job.result["mailbox"]
        return Response(body)
