"""GET /api/tasks/{id}/ shows every state a client polls for: pending, success, failure.

Issue 8 found that the endpoint could drop `error` and no test would notice: no test saw
`pending` or `failure` through the API. The job runs here in the test (job_run), so each
state is seen at the moment it holds.
"""

from __future__ import annotations

from mailplane.jobs.services import job_run
from mailplane.tenancy.models import Organization
from tests.support.fixtures import verified_domain


def _start(account, email: str) -> str:
    domain = verified_domain(account, name=f"{email}.test")
    response = account.client.post(
        "/api/mailboxes/",
        {"email": email, "domain": domain.pk, "password": "SecurePassword123!"},
        format="json",
    )
    assert response.status_code == 202, response.content
    return str(response.json()["task_id"])


def test_pending_then_success(account):
    task_id = _start(account, "jane")
    pending = account.client.get(f"/api/tasks/{task_id}/").json()
    assert pending["task_id"] == task_id
    assert pending["status"] == "pending"
    assert (pending["result"], pending["error"], pending["finished_at"]) == (None, None, None)
    assert "mailbox" not in pending

    job_run(job_id=task_id)
    done = account.client.get(f"/api/tasks/{task_id}/").json()
    assert done["status"] == "success"
    assert done["error"] is None
    assert done["mailbox"]["email"] == "jane@jane.test"
    assert done["result"]["mailbox"] == done["mailbox"]
    assert done["progress"] == 100
    assert done["finished_at"] is not None


def test_failure_carries_the_reason(account):
    task_id = _start(account, "john")
    # The plan shrinks to nothing between the request and the job: the job must refuse.
    Organization.objects.filter(pk=account.org.pk).update(mailboxes_limit_override=0)
    job_run(job_id=task_id)
    failed = account.client.get(f"/api/tasks/{task_id}/").json()
    assert failed["status"] == "failure"
    assert failed["error"] == (f"mailbox limit reached: plan {account.org.plan} allows 0 mailboxes")
    assert "mailbox" not in failed
    assert failed["finished_at"] is not None


def test_another_accounts_task_is_404(account, other_account):
    task_id = _start(account, "kim")
    response = other_account.client.get(f"/api/tasks/{task_id}/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
