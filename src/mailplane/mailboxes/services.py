"""Writes for mailboxes: validate at request time, create in a job, update, delete."""

from __future__ import annotations

import inspect
import re
from dataclasses import asdict, dataclass
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import IntegrityError

from mailplane.cells.routing import data_atomic
from mailplane.core.errors import Conflict, LimitReached, NotAllowed, NotFound, ValidationFailed
from mailplane.core.ids import id_parse
from mailplane.domains.models import Domain
from mailplane.jobs.models import Job, JobStatus
from mailplane.jobs.registry import job_handler
from mailplane.jobs.services import job_secret_take, job_start
from mailplane.mailboxes import passwords
from mailplane.mailboxes.models import Mailbox, MailboxStatus
from mailplane.projects.models import Project
from mailplane.relays.models import RelayServer, RelayStatus
from mailplane.storage import maildir_ensure
from mailplane.tenancy.models import Organization

# RFC 5321 §4.1.2 dot-atom, narrowed to what mail clients and outreach tools all accept.
_LOCAL_PART = re.compile(r"^[a-z0-9](?:[a-z0-9_+-]|\.(?!\.))*(?<!\.)$")
CREATE_JOB = "mailbox.create"


@dataclass(slots=True)
class MailboxSpec:
    """A mailbox request whose references and values have been checked."""

    local_part: str
    domain_id: int
    relay_server_id: int
    password: str
    project_id: int | None = None
    reply_to: str = ""
    first_name: str = ""
    last_name: str = ""
    # Generated here rather than chosen by the caller: the task result shows it, once.
    password_generated: bool = False


class _Errors:
    """Collects per-field messages so one response names every bad field."""

    def __init__(self) -> None:
        self.details: dict[str, list[str]] = {}

    def add(self, name: str, message: str) -> None:
        self.details.setdefault(name, []).append(message)

    def raise_if_any(self) -> None:
        if self.details:
            fields = ", ".join(self.details)
            raise ValidationFailed(f"invalid mailbox ({fields})", details=self.details)


def _owned(model: Any, organization: Organization, value: Any, name: str, errors: _Errors) -> Any:
    if value is None or value == "":
        return None
    try:
        pk = id_parse(value, name=name)
    except ValidationFailed as exc:
        errors.add(name, exc.details[name][0])
        return None
    obj = model.objects.filter(organization=organization, pk=pk).first()
    if obj is None:
        errors.add(name, f"{name.replace('_', ' ')} {value} not found")
    return obj


NAME_LIMIT = 100
SIGNATURE_LIMIT = 10_000


def _clean_reply_to(value: Any, errors: _Errors) -> str | None:
    """The stripped address ("" clears it), or None with the error recorded."""
    reply_to = str(value or "").strip()
    if reply_to:
        try:
            validate_email(reply_to)
        except DjangoValidationError:
            errors.add("reply_to", "must be an email address")
            return None
    return reply_to


def _clean_text(name: str, value: Any, limit: int, errors: _Errors) -> str | None:
    """Stripped text of at most `limit` characters, or None with the error recorded."""
    value = value or ""
    if not isinstance(value, str) or len(value) > limit:
        errors.add(name, f"must be text of at most {limit} characters")
        return None
    if "\x00" in value:  # PostgreSQL text cannot hold NUL
        errors.add(name, "must not contain NUL characters")
        return None
    return value.strip()


def local_part_problem(local_part: str) -> str | None:
    if "@" in local_part:
        return "give the part before the @ only (e.g. john.doe)"
    if not 1 <= len(local_part) <= 64:
        return "must be 1 to 64 characters"
    if not _LOCAL_PART.match(local_part):
        return "may contain a-z, 0-9 and . _ + - (no leading, trailing or double dots)"
    return None


def _split_address(
    organization: Organization, data: dict[str, Any], errors: _Errors
) -> tuple[str, Domain | None]:
    """`email` as a local part or a full address, and the domain it names.

    A full address needs no `domain` (it is found by name among the account's domains);
    with both, they must agree. The CSV upload takes the same two forms.
    """
    email = str(data.get("email") or "").strip().lower()
    raw_domain = data.get("domain")
    if "@" not in email:
        if raw_domain in (None, ""):
            errors.add("domain", "this field is required (or give `email` as a full address)")
        return email, _owned(Domain, organization, raw_domain, "domain", errors)
    local_part, _, domain_name = email.rpartition("@")
    if raw_domain in (None, ""):
        domain = Domain.objects.filter(organization=organization, name__iexact=domain_name).first()
        if domain is None:
            errors.add("email", f"domain {domain_name} is not one of this account's domains")
        return local_part, domain
    domain = _owned(Domain, organization, raw_domain, "domain", errors)
    if domain is not None and domain.name.lower() != domain_name:
        errors.add("email", f"address domain {domain_name} does not match domain {domain.name}")
    return local_part, domain


def mailbox_validate(*, organization: Organization, data: dict[str, Any]) -> MailboxSpec:
    """Check a create request completely, so that only a race can fail the job.

    Bad values are one 400 naming every field; an address that exists already is a 409
    (Conflict), checked once everything else is good.
    """
    errors = _Errors()
    local_part, domain = _split_address(organization, data, errors)
    if not local_part:
        errors.add("email", "this field is required")
    elif problem := local_part_problem(local_part):
        errors.add("email", problem)

    if domain is not None and not domain.is_verified:
        errors.add(
            "domain",
            f"domain {domain.name} is not verified yet: publish its DNS records and verify it",
        )

    relay = _owned(RelayServer, organization, data.get("relay_server"), "relay_server", errors)
    if relay is None and domain is not None and "relay_server" not in errors.details:
        relay = domain.relay_server
    if relay is not None and relay.status != RelayStatus.ACTIVE:
        errors.add("relay_server", "relay server is inactive")

    project = _owned(Project, organization, data.get("project"), "project", errors)

    reply_to = _clean_reply_to(data.get("reply_to"), errors) or ""
    names = {
        name: _clean_text(name, data.get(name), NAME_LIMIT, errors) or ""
        for name in ("first_name", "last_name")
    }

    address = f"{local_part}@{domain.name}" if domain is not None else ""
    password = data.get("password")
    generated = password is None or password == ""
    if generated:
        # Only for a request that is otherwise good: the rules need the real address.
        if address and not errors.details:
            password = passwords.password_generate(local_part=local_part, address=address)
    elif not isinstance(password, str):
        errors.add("password", "must be a string")
    else:
        for problem in passwords.password_problems(
            password, local_part=local_part, address=address
        ):
            errors.add("password", problem)

    errors.raise_if_any()
    assert domain is not None and relay is not None
    if Mailbox.objects.filter(address=address).exists():
        raise _exists(address)
    _check_mailbox_limit(organization, pending_jobs=True)
    return MailboxSpec(
        local_part=local_part,
        domain_id=domain.pk,
        relay_server_id=relay.pk,
        password=str(password),
        project_id=project.pk if project else None,
        reply_to=reply_to,
        password_generated=generated,
        **names,
    )


def _exists(address: str) -> Conflict:
    message = f"{address} already exists"
    return Conflict(message, details={"email": [message]})


def _check_mailbox_limit(organization: Organization, *, pending_jobs: bool) -> None:
    limit = organization.mailboxes_limit
    if limit is None:
        return
    used = Mailbox.objects.filter(organization=organization).count()
    if pending_jobs:
        used += Job.objects.filter(
            organization=organization, kind=CREATE_JOB, status=JobStatus.PENDING
        ).count()
    if used >= limit:
        raise LimitReached(
            f"mailbox limit reached: plan {organization.plan} allows {limit} mailboxes"
        )


def mailbox_create_start(*, organization: Organization, spec: MailboxSpec) -> Job:
    return job_start(organization=organization, kind=CREATE_JOB, payload=asdict(spec))


def mailbox_create(*, organization: Organization, spec: MailboxSpec) -> Mailbox:
    """Create the mailbox now (jobs and operators call this; the API goes through a job)."""
    domain = Domain.objects.get(pk=spec.domain_id, organization=organization)
    address = f"{spec.local_part}@{domain.name}"
    hashed = passwords.password_hash(spec.password)  # slow by design: outside the lock
    try:
        with data_atomic():
            Organization.objects.select_for_update().filter(pk=organization.pk).first()
            _check_mailbox_limit(organization, pending_jobs=False)
            mailbox = Mailbox.objects.create(
                organization=organization,
                domain=domain,
                relay_server_id=spec.relay_server_id,
                project_id=spec.project_id,
                local_part=spec.local_part,
                address=address,
                password=spec.password,
                password_hash=hashed,
                reply_to=spec.reply_to,
                first_name=spec.first_name,
                last_name=spec.last_name,
            )
    except IntegrityError as exc:
        raise _exists(address) from exc
    # Storage exists before anyone is told the mailbox does (IMAP login right after).
    maildir_ensure(organization_id=organization.pk, address=address)
    return mailbox


@job_handler(CREATE_JOB)
def _mailbox_create_job(job: Job) -> dict[str, Any]:
    spec = MailboxSpec(**job.payload)
    existing = Mailbox.objects.filter(
        organization=job.organization, local_part=spec.local_part, domain_id=spec.domain_id
    ).first()
    # A re-run after a crash between commit and status update finds its own mailbox.
    if existing is not None and passwords.password_verify(spec.password, existing.password_hash):
        mailbox = existing
    else:
        mailbox = mailbox_create(organization=job.organization, spec=spec)
    from mailplane.mailboxes.selectors import mailbox_summary

    return {"mailbox": mailbox_summary(mailbox=mailbox)}


def mailbox_task_password_take(*, job: Job) -> str | None:
    """The password a finished create job generated, the first time it is asked for.

    The task result is where the caller learns a generated password; it is handed out
    once and then wiped from the job's (encrypted) payload, so the job table keeps no
    copy. None for a chosen password (the caller has it), an unfinished job, or a
    password already shown. The flag flips in one conditional UPDATE: of two concurrent
    reads, one gets it.
    """
    taken: list[str] = []

    def wipe(payload: dict[str, Any]) -> None:
        if payload.get("password_generated"):
            taken.append(str(payload.get("password") or ""))
        payload["password"] = ""

    if not job_secret_take(job=job, kind=CREATE_JOB, wipe=wipe):
        return None
    return (taken[0] if taken else "") or None


def mailbox_update(
    *,
    mailbox: Mailbox,
    password: str | None = None,
    reply_to: str | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
    project: Project | Any | None = ...,
    relay_server: RelayServer | None = None,
    status: str | None = None,
    daily_limit: int | None = None,
    warmup_enabled: bool | None = None,
    warmup_per_day: int | None = None,
    warmup_daily_rampup: int | None = None,
    signature: str | None = None,
) -> Mailbox:
    """Change what a mailbox's owner may change; None (for `project`: leaving it out)
    keeps a value, `reply_to=""` clears it, `project=None` detaches the mailbox.

    The values are checked already (the API's MailboxUpdateSerializer: `project` and
    `relay_server` are the account's own); the password rules are checked again here,
    because a password is the one value no caller may get wrong.
    """
    org_id = mailbox.organization_id
    for name, owned in (("project", project), ("relay_server", relay_server)):
        if owned not in (None, ...) and owned.organization_id != org_id:
            raise ValidationFailed.on(name, f"{name.replace('_', ' ')} {owned.pk} not found")
    if password is not None:
        if problems := passwords.password_problems(
            password, local_part=mailbox.local_part, address=mailbox.address
        ):
            raise ValidationFailed("invalid mailbox (password)", details={"password": problems})
        mailbox.password = password
        mailbox.password_hash = passwords.password_hash(password)
    if project is not ...:
        mailbox.project = project
    if relay_server is not None:
        mailbox.relay_server = relay_server
    if status is not None:
        if status not in MailboxStatus.values:
            raise ValidationFailed.on("status", f"must be one of {', '.join(MailboxStatus.values)}")
        mailbox.status = status
    changes = {
        "reply_to": None if reply_to is None else reply_to.strip(),
        "first_name": None if first_name is None else first_name.strip(),
        "last_name": None if last_name is None else last_name.strip(),
        "signature": None if signature is None else signature.strip(),
        "daily_limit": daily_limit,
        "warmup_enabled": warmup_enabled,
        "warmup_per_day": warmup_per_day,
        "warmup_daily_rampup": warmup_daily_rampup,
    }
    for name, value in changes.items():
        if value is not None:
            setattr(mailbox, name, value)
    mailbox.save()
    return mailbox


# What an owner may change: mailbox_update's keywords (the README's table lists them).
UPDATABLE = frozenset(inspect.signature(mailbox_update).parameters) - {"mailbox"}


def mailbox_delete(*, mailbox: Mailbox) -> None:
    mailbox.delete()


def mailbox_sending_check(*, mailbox: Mailbox | None) -> Mailbox:
    """The mailbox, if it may send now; NotAllowed if it was suspended (or deleted) since
    its login. Every way in checks this at the moment of accepting a message: SMTP
    submission today (550 5.7.1), the send API next (403 not_allowed)."""
    if mailbox is None or mailbox.status != MailboxStatus.ACTIVE:
        raise NotAllowed("Mailbox is suspended")
    return mailbox


def mailbox_access_check(*, address: str) -> None:
    """Blocking. A session opened before the mailbox was suspended or deleted must not go
    on reading it: IMAP checks this when a folder is opened (SELECT, EXAMINE), as login
    does. NotAllowed if suspended (IMAP NO [NOPERM]), NotFound if deleted (NO
    [NONEXISTENT])."""
    status = Mailbox.objects.filter(address=address).values_list("status", flat=True).first()
    if status is None:
        raise NotFound("Mailbox no longer exists")
    if status != MailboxStatus.ACTIVE:
        raise NotAllowed("Mailbox is suspended")
