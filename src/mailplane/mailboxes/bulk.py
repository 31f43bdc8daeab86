"""Bulk mailbox creation from a CSV upload.

Two stages, as for single creation: the request checks the *file* (encoding, size, header,
CSV syntax, row count) and refuses it whole with a 400 naming the problem; a job then
checks and creates each *row* with the ordinary `mailbox_validate` / `mailbox_create`, so a
bad row is reported in the job's result and never stops the others.

Columns (header row, case-insensitive; spaces and hyphens count as underscores):
  email         required: local part, or full address whose domain matches `domain`
  domain        required: domain id or name (may be blank when `email` is a full address)
  relay_server  optional: relay server id or name (default: the domain's)
  password      optional: generated when blank
  project       optional: project id or name
  reply_to, first_name, last_name   optional
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Model

from mailplane.core.errors import DomainError, LimitReached, TooLarge, ValidationFailed
from mailplane.core.ids import id_or_none, id_parse
from mailplane.domains.models import Domain
from mailplane.jobs.models import Job
from mailplane.jobs.registry import job_handler
from mailplane.jobs.services import job_secret_take, job_set_progress, job_start
from mailplane.mailboxes import passwords
from mailplane.mailboxes.models import Mailbox
from mailplane.mailboxes.services import mailbox_create, mailbox_validate
from mailplane.projects.models import Project
from mailplane.relays.models import RelayServer
from mailplane.tenancy.models import Organization

log = logging.getLogger(__name__)

BULK_CREATE_JOB = "mailbox.bulk_create"
REQUIRED_COLUMNS = ("email", "domain")
OPTIONAL_COLUMNS = ("relay_server", "password", "project", "reply_to", "first_name", "last_name")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
# Progress and lease renewal every this many rows: often enough to watch, rare enough to
# cost nothing next to the scrypt hash each row pays.
_PROGRESS_EVERY = 20


class UploadTooLarge(TooLarge, ValidationFailed):
    """The upload is over BULK_CSV_MAX_BYTES: refused before it is parsed. Bad input
    naming `file`, answered as TooLarge (first in the MRO) on every protocol."""

    code = "file_too_large"


@dataclass(slots=True)
class BulkRow:
    """One data record of the upload: where it started in the file and its cells."""

    line: int
    cells: dict[str, str]


def _file_error(message: str) -> ValidationFailed:
    return ValidationFailed(f"file: {message}", details={"file": [message]})


def max_bytes() -> int:
    return int(settings.MAILPLANE["BULK_CSV_MAX_BYTES"])


def upload_too_large(size: int) -> UploadTooLarge:
    limit = max_bytes()
    message = f"is {size} bytes; the limit is {limit} bytes: split it into smaller files"
    return UploadTooLarge(f"file: {message}", details={"file": [message]})


def _header_name(raw: str) -> str:
    return raw.strip().lower().replace(" ", "_").replace("-", "_")


def mailbox_bulk_parse(*, content: bytes) -> list[BulkRow]:
    """Check the file as a whole; raise ValidationFailed on the first problem that sinks it."""
    if len(content) > max_bytes():
        raise upload_too_large(len(content))
    try:
        # utf-8-sig drops the BOM spreadsheet programs put in front of UTF-8 exports.
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _file_error(
            f"is not UTF-8 text (invalid byte at offset {exc.start}): "
            "save it as 'CSV UTF-8' and upload it again"
        ) from exc
    if "\x00" in text:
        # UTF-16 without a BOM decodes as "UTF-8" full of NULs; so do binary spreadsheets.
        raise _file_error(
            "contains NUL characters (UTF-16 or a spreadsheet file?): save it as 'CSV UTF-8'"
        )
    if not text.strip():
        raise _file_error("is empty: expected a header row and at least one mailbox row")

    # strict: an unterminated quote or stray quote is an error, not a silently merged row.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    max_rows = int(settings.MAILPLANE["BULK_CSV_MAX_ROWS"])
    header: list[str] | None = None
    rows: list[BulkRow] = []
    last_line = 0
    try:
        for record in reader:
            start, last_line = last_line + 1, reader.line_num
            if not any(cell.strip() for cell in record):
                continue  # blank lines, e.g. a trailing newline or ",,,," from a spreadsheet
            if header is None:
                header = _check_header(record)
                continue
            if len(record) > len(header) and any(c.strip() for c in record[len(header) :]):
                raise _file_error(
                    f"line {start} has {len(record)} cells but the header has {len(header)}: "
                    "quote values that contain commas"
                )
            if len(rows) >= max_rows:
                raise _file_error(
                    f"has more than {max_rows} mailbox rows: split it into smaller files"
                )
            cells = {name: (record[i] if i < len(record) else "") for i, name in enumerate(header)}
            rows.append(BulkRow(line=start, cells=cells))
    except csv.Error as exc:
        raise _file_error(f"is not valid CSV near line {reader.line_num}: {exc}") from exc
    if not rows:
        raise _file_error("has a header row but no mailbox rows")
    return rows


def _check_header(record: list[str]) -> list[str]:
    names = [_header_name(cell) for cell in record]
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise _file_error(
            f"header row lacks the required column(s) {', '.join(missing)}; "
            f"the columns are {', '.join(COLUMNS)}"
        )
    unknown = [raw for raw, name in zip(record, names, strict=True) if name not in COLUMNS]
    if unknown:
        raise _file_error(
            f"header row has unknown column(s) {', '.join(unknown)}; "
            f"the columns are {', '.join(COLUMNS)}"
        )
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise _file_error(f"header row repeats the column(s) {', '.join(duplicated)}")
    return names


def mailbox_bulk_start(*, organization: Organization, content: bytes) -> Job:
    """Check the upload, then hand its rows to one job.

    Blank passwords are generated here, not in the job, so that a re-run of the job (after
    a worker died) can recognise the mailboxes it already made by their password.
    """
    rows = mailbox_bulk_parse(content=content)
    generated: set[int] = set()
    for row in rows:
        if not row.cells.get("password", "").strip():
            email = row.cells.get("email", "").strip()
            row.cells["password"] = passwords.password_generate(
                local_part=email.partition("@")[0], address=email if "@" in email else ""
            )
            generated.add(row.line)
    payload = {
        "rows": [
            {"line": row.line, "cells": row.cells, "password_generated": row.line in generated}
            for row in rows
        ]
    }
    # Job.payload is encrypted at rest: the rows carry passwords.
    return job_start(organization=organization, kind=BULK_CREATE_JOB, payload=payload)


class _RowRejected(Exception):
    def __init__(self, details: dict[str, list[str]]) -> None:
        super().__init__(details)
        self.details = details


def _lookup(
    model: type[Model],
    organization: Organization,
    value: str,
    name: str,
    errors: dict[str, list[str]],
    *,
    by: str = "name",
) -> int | None:
    """An id, or the id of the caller's object with that name; None when blank or unknown.

    Unknown names go to `errors` rather than stopping the row, so that one answer names
    every bad cell (mailbox_validate's findings are added to them).
    """
    value = value.strip()
    if not value:
        return None
    label = name.replace("_", " ")
    if value.isdigit():
        try:
            return id_parse(value, name=name)  # mailbox_validate checks ownership
        except ValidationFailed as exc:
            errors[name] = exc.details[name]
            return None
    matches = list(
        model._default_manager.filter(
            organization=organization, **{f"{by}__iexact": value}
        ).values_list("pk", flat=True)[:2]
    )
    if len(matches) == 1:
        return int(matches[0])
    if matches:
        errors[name] = [f"several {label}s are named {value!r}: give the id"]
    else:
        errors[name] = [f"{label} {value!r} not found"]
    return None


def _row_data(
    organization: Organization, cells: dict[str, str], errors: dict[str, list[str]]
) -> dict[str, Any]:
    """Turn a row's cells into the body mailbox_validate takes (ids, local part)."""
    email = cells.get("email", "").strip()
    domain_cell = cells.get("domain", "").strip()
    if "@" in email:
        local_part, _, email_domain = email.rpartition("@")
        if not domain_cell:
            domain_cell = email_domain
        else:
            named = domain_cell.lower()
            if (domain_id := id_or_none(domain_cell)) is not None:
                found = Domain.objects.filter(organization=organization, pk=domain_id)
                named = (found.values_list("name", flat=True).first() or "").lower()
            if named and email_domain.lower() != named:
                raise _RowRejected(
                    {"email": [f"address domain {email_domain} does not match domain {named}"]}
                )
        email = local_part
    return {
        "email": email,
        "domain": _lookup(Domain, organization, domain_cell, "domain", errors),
        "relay_server": _lookup(
            RelayServer, organization, cells.get("relay_server", ""), "relay_server", errors
        ),
        "project": _lookup(Project, organization, cells.get("project", ""), "project", errors),
        "password": cells.get("password", ""),
        "reply_to": cells.get("reply_to", ""),
        "first_name": cells.get("first_name", ""),
        "last_name": cells.get("last_name", ""),
    }


def _made_by_this_job(job: Job, address: str, password: str) -> Mailbox | None:
    """The mailbox an earlier, interrupted run of this job already created, if any."""
    mailbox = Mailbox.objects.filter(
        organization=job.organization, address=address, created_at__gte=job.created_at
    ).first()
    if mailbox is not None and passwords.password_verify(password, mailbox.password_hash):
        return mailbox
    return None


@job_handler(BULK_CREATE_JOB)
def mailbox_bulk_create_job(job: Job) -> dict[str, Any]:
    """Create each row in turn; every outcome, good or bad, becomes one result entry."""
    organization = job.organization
    rows: list[dict[str, Any]] = job.payload["rows"]
    results: list[dict[str, Any]] = []
    seen: dict[str, int] = {}  # address -> line of its first occurrence in the file
    limit_message = ""
    for index, row in enumerate(rows, start=1):
        line, cells = int(row["line"]), row["cells"]
        entry: dict[str, Any] = {"row": line, "email": cells.get("email", "").strip()}
        try:
            if limit_message:
                raise _RowRejected({"non_field_errors": [limit_message]})
            lookup_errors: dict[str, list[str]] = {}
            data = _row_data(organization, cells, lookup_errors)
            if data["domain"] is not None:
                name = Domain.objects.filter(organization=organization, pk=data["domain"])
                domain_name = name.values_list("name", flat=True).first()
                if domain_name and data["email"]:
                    entry["email"] = f"{data['email'].lower()}@{domain_name}"
            address = entry["email"].lower()
            if "@" in address and address in seen:
                raise _RowRejected(
                    {
                        "email": [
                            f"{address} appears twice in the file (first on line {seen[address]})"
                        ]
                    }
                )
            if "@" in address:
                seen[address] = line
            mailbox = _made_by_this_job(job, address, data["password"]) if "@" in address else None
            if mailbox is None:
                try:
                    spec = mailbox_validate(organization=organization, data=data)
                except ValidationFailed as exc:
                    raise _RowRejected({**exc.details, **lookup_errors}) from exc
                except LimitReached:
                    if lookup_errors:  # the row is wrong whatever the limit
                        raise _RowRejected(lookup_errors) from None
                    raise
                if lookup_errors:
                    raise _RowRejected(lookup_errors)
                # mailbox_create writes in its own transaction (a savepoint when nested):
                # a row that fails there leaves nothing behind.
                mailbox = mailbox_create(organization=organization, spec=spec)
            entry.update(status="created", id=mailbox.pk)
        except _RowRejected as exc:
            entry.update(status="error", errors=exc.details)
        except LimitReached as exc:
            limit_message = exc.message
            entry.update(status="error", errors={"non_field_errors": [exc.message]})
        except DomainError as exc:
            field = "email" if exc.code == "conflict" else "non_field_errors"
            entry.update(status="error", errors=exc.details or {field: [exc.message]})
        except Exception:
            # One row tripping a bug must not sink the rows after it; the log has the trace.
            log.exception("bulk job %s: row on line %s crashed", job.pk, line)
            entry.update(status="error", errors={"non_field_errors": ["internal error"]})
        results.append(entry)
        if index % _PROGRESS_EVERY == 0:
            # Also renews the claim: 10,000 scrypt hashes outlive the lease.
            job_set_progress(job=job, progress=int(index * 100 / len(rows)))
    created = sum(1 for entry in results if entry["status"] == "created")
    return {
        "rows": results,
        "counts": {"total": len(results), "created": created, "errors": len(results) - created},
    }


def mailbox_bulk_passwords_take(*, job: Job) -> dict[int, str]:
    """The generated passwords of a finished bulk job's created rows (line -> password),
    the first time they are asked for; then wiped from the job's encrypted payload, as
    mailbox_task_password_take does for a single create. Chosen passwords are never
    returned (the caller has them), nor those of rows that failed."""
    created = {
        int(entry["row"])
        for entry in (job.result or {}).get("rows", [])
        if entry.get("status") == "created"
    }
    taken: dict[int, str] = {}

    def wipe(payload: dict[str, Any]) -> None:
        for row in payload.get("rows", []):
            if row.get("password_generated") and int(row["line"]) in created:
                taken[int(row["line"])] = str(row["cells"].get("password") or "")
            row["cells"] = {**row["cells"], "password": ""}

    if not job_secret_take(job=job, kind=BULK_CREATE_JOB, wipe=wipe):
        return {}
    return {line: password for line, password in taken.items() if password}
