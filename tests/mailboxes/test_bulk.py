"""Bulk creation, service level: the file checks, and the job run in-process row by row."""

from __future__ import annotations

import pytest
from django.db import connection

from mailplane.core.errors import ValidationFailed
from mailplane.jobs.models import Job
from mailplane.jobs.services import job_run
from mailplane.mailboxes.bulk import (
    BULK_CREATE_JOB,
    mailbox_bulk_create_job,
    mailbox_bulk_parse,
    mailbox_bulk_start,
)
from mailplane.mailboxes.models import Mailbox
from mailplane.mailboxes.passwords import password_verify
from tests.exports.support import add_mailboxes
from tests.support.fixtures import verified_domain

GOOD = "Good-Pass-1234!"


def _csv(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _problem(content: bytes) -> str:
    with pytest.raises(ValidationFailed) as err:
        mailbox_bulk_parse(content=content)
    return err.value.details["file"][0]


def test_parse_header_is_case_insensitive_and_lines_are_counted():
    rows = mailbox_bulk_parse(
        content=_csv(
            "EMAIL, Domain ,First Name,last-name",
            'a,acme.test,"Multi',
            'line",Doe',
            "",
            "b,acme.test,,",
        )
    )
    assert [r.line for r in rows] == [2, 5]
    assert rows[0].cells == {
        "email": "a",
        "domain": "acme.test",
        "first_name": "Multi\r\nline",  # line breaks inside quotes are kept as written
        "last_name": "Doe",
    }


def test_parse_accepts_a_bom_and_short_rows():
    rows = mailbox_bulk_parse(
        content=b"\xef\xbb\xbf" + _csv("email,domain,password", "a,acme.test")
    )
    assert rows[0].cells == {"email": "a", "domain": "acme.test", "password": ""}


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "empty"),
        (b"\r\n  \r\n", "empty"),
        (_csv("email,domain"), "no mailbox rows"),
        (_csv("email,password", "a,b"), "required column(s) domain"),
        (_csv("email,domain,pasword", "a,b,c"), "unknown column(s) pasword"),
        (_csv("email,domain,Email", "a,b,c"), "repeats"),
        (_csv("email,domain", 'a,"acme.test'), "not valid CSV"),
        (_csv("email,domain", 'a,"acme"x'), "not valid CSV"),
        (b"email,domain\r\na,b\x00c\r\n", "NUL"),
        ("email,domain\r\na,b\r\n".encode("utf-16-le"), "NUL"),
        (_csv("email,domain", "a,b,c"), "line 2 has 3 cells"),
        ("email,domain\r\né,b\r\n".encode("latin-1"), "not UTF-8"),
    ],
)
def test_parse_refuses_bad_files(content, words):
    assert words in _problem(content)


def test_parse_limits(settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "BULK_CSV_MAX_ROWS": 2, "BULK_CSV_MAX_BYTES": 64}
    assert "more than 2 mailbox rows" in _problem(_csv("email,domain", "a,d", "b,d", "c,d"))
    assert len(mailbox_bulk_parse(content=_csv("email,domain", "a,d", "", "b,d"))) == 2
    with pytest.raises(ValidationFailed) as err:
        mailbox_bulk_parse(content=_csv("email,domain", "a" * 80 + ",d"))
    assert err.value.http_status == 413


def _run(account, content: bytes) -> dict:
    job = mailbox_bulk_start(organization=account.org, content=content)
    job_run(job_id=str(job.pk))
    job.refresh_from_db()
    assert (job.kind, job.status, job.progress) == (BULK_CREATE_JOB, "success", 100)
    return job.result


def test_mixed_rows_each_get_their_outcome(account):
    domain = verified_domain(account)
    beta = verified_domain(account, "beta.test")
    from mailplane.domains.services import domain_create

    domain_create(organization=account.org, name="pending.test", relay_server=account.relay)
    project = account.org.projects.create(name="Cold Outreach")
    add_mailboxes(account, domain, 1, prefix="taken")
    result = _run(
        account,
        _csv(
            "email,domain,password,project,first_name,last_name,reply_to,relay_server",
            f'alice,acme.test,{GOOD},cold outreach,Alice,"Smith, Jr",r@acme.test,',
            f"bob@beta.test,,{GOOD},,,,,{account.relay.pk}",
            f"carol,{domain.pk},,{project.pk},,,,{account.relay.name}",
            "dave,acme.test,weak,,,,,",
            "erin,nowhere.test,,,,,,",
            "frank@beta.test,acme.test,,,,,,",
            f"ALICE,acme.test,{GOOD},,,,,",
            "taken0000,acme.test,,,,,,",
            "gina,pending.test,,,,,,",
            "hank,acme.test,,no such project,,,not-an-email,",
            "bad..dots,acme.test,,,,,,",
        ),
    )
    by_row = {entry["row"]: entry for entry in result["rows"]}
    assert [by_row[n]["status"] for n in (2, 3, 4)] == ["created"] * 3
    assert result["counts"] == {"total": 11, "created": 3, "errors": 8}
    alice = Mailbox.objects.get(pk=by_row[2]["id"])
    assert (alice.address, alice.project_id, alice.last_name) == (
        "alice@acme.test",
        project.pk,
        "Smith, Jr",
    )
    assert password_verify(GOOD, alice.password_hash)
    assert Mailbox.objects.get(pk=by_row[3]["id"]).domain_id == beta.pk
    carol = Mailbox.objects.get(pk=by_row[4]["id"])
    assert by_row[4]["email"] == "carol@acme.test"
    assert len(carol.password) >= 12 and password_verify(carol.password, carol.password_hash)

    def errors(row: int) -> dict:
        assert by_row[row]["status"] == "error"
        assert "id" not in by_row[row]
        return by_row[row]["errors"]

    assert "password" in errors(5)
    assert "not found" in errors(6)["domain"][0]
    assert "does not match" in errors(7)["email"][0]
    assert "first on line 2" in errors(8)["email"][0]
    assert "already exists" in errors(9)["email"][0]
    assert "not verified" in errors(10)["domain"][0]
    assert set(errors(11)) == {"project", "reply_to"}  # every bad cell, not just the first
    assert "email" in errors(12)
    # Exactly the created rows exist: no half-made mailbox from the bad ones.
    assert set(Mailbox.objects.values_list("address", flat=True)) == {
        "taken0000@acme.test",
        "alice@acme.test",
        "bob@beta.test",
        "carol@acme.test",
    }


def test_plan_limit_stops_the_remaining_rows_with_the_reason(account):
    account.org.mailboxes_limit_override = 2
    account.org.save()
    verified_domain(account)
    result = _run(
        account,
        _csv("email,domain", "a1,acme.test", "a2,acme.test", "a3,acme.test", "a4,acme.test"),
    )
    assert [e["status"] for e in result["rows"]] == ["created", "created", "error", "error"]
    for entry in result["rows"][2:]:
        assert "mailbox limit reached" in entry["errors"]["non_field_errors"][0]
    assert Mailbox.objects.count() == 2


def test_rerun_after_a_crash_recognises_its_own_mailboxes(account):
    verified_domain(account)
    add_mailboxes(account, verified_domain(account, "beta.test"), 1, prefix="x")
    job = mailbox_bulk_start(
        organization=account.org, content=_csv("email,domain", "one,acme.test", "x0000,beta.test")
    )
    job = Job.objects.select_related("organization").get(pk=job.pk)
    first = mailbox_bulk_create_job(job)
    again = mailbox_bulk_create_job(job)
    assert first == again
    assert [e["status"] for e in again["rows"]] == ["created", "error"]
    assert Mailbox.objects.filter(address="one@acme.test").count() == 1


def test_payload_with_passwords_is_encrypted_at_rest(account):
    verified_domain(account)
    job = mailbox_bulk_start(
        organization=account.org, content=_csv("email,domain,password", f"a,acme.test,{GOOD}")
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT payload FROM jobs_job WHERE id = %s", [job.pk.hex])
        row = cursor.fetchone()
        if row is None:  # PostgreSQL stores the uuid natively
            cursor.execute("SELECT payload FROM jobs_job WHERE id = %s", [job.pk])
            row = cursor.fetchone()
    assert GOOD not in row[0] and "acme.test" not in row[0]
    assert Job.objects.get(pk=job.pk).payload["rows"][0]["cells"]["password"] == GOOD
