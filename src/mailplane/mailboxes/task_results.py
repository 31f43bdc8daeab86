"""What a finished mailbox task shows: its result, with the passwords it generated put in
on the first read (and wiped from the job then: the take functions flip a flag once)."""

from __future__ import annotations

from typing import Any

from mailplane.jobs.models import Job
from mailplane.mailboxes.bulk import mailbox_bulk_passwords_take
from mailplane.mailboxes.services import mailbox_task_password_take


def mailbox_task_result_take(*, job: Job) -> tuple[Any, dict[str, Any] | None]:
    """(the result to show, the created mailbox for a `mailbox.create` task or None).

    A single create's mailbox carries `password`: the generated one the first time, null
    after that or when it was chosen. A bulk create's rows carry theirs the same way."""
    result: Any = job.result
    mailbox = None
    if result and "mailbox" in result:
        mailbox = {**result["mailbox"], "password": mailbox_task_password_take(job=job)}
        # Tasks finished before reply_to was made null-when-unset kept "".
        mailbox["reply_to"] = mailbox.get("reply_to") or None
        result = {**result, "mailbox": mailbox}
    if result and "rows" in result:
        generated = mailbox_bulk_passwords_take(job=job)
        if generated:
            rows = [
                {**entry, "password": generated[entry["row"]]}
                if entry.get("row") in generated
                else entry
                for entry in result["rows"]
            ]
            result = {**result, "rows": rows}
    return result, mailbox
