"""GET /mailbox/download/{layout}/ end to end: each file parsed back with the csv module."""

from __future__ import annotations

import csv
import io
import zipfile

import pytest

from mailplane.mailboxes.models import Mailbox
from tests.exports.support import PASSWORD, add_mailboxes
from tests.support.fixtures import verified_domain

HEADERS = {
    "smartlead": "from_name,from_email,user_name,password,smtp_host,smtp_port,imap_host,"
    "imap_port,max_email_per_day,custom_tracking_url,warmup_enabled,total_warmup_per_day,"
    "daily_rampup,reply_rate_percentage,bcc,signature,different_reply_to_address,"
    "imap_user_name,imap_password",
    "instantly": "Email,First Name,Last Name,IMAP Username,IMAP Password,IMAP Host,IMAP Port,"
    "SMTP Username,SMTP Password,SMTP Host,SMTP Port,Daily Limit,Warmup Enabled,Warmup Limit,"
    "Warmup Increment",
    "reply.io": "Email,Daily Limit,Sender Name,SMTP Host,SMTP Port,SMTP Password,"
    "SMTP SSL (Optional),IMAP Host,IMAP Port,IMAP Password",
    "woodpecker": "SMTP email,SMTP login,SMTP password,SMTP server,SMTP port,SMTP from name,"
    "IMAP email,IMAP password,IMAP server,IMAP port,Footer,BCC,Open tracking domain,"
    "Click tracking domain,Unsubscribe tracking domain,Sending wait time from,"
    "Sending wait time to,Daily sending limit",
    "emailbison": "Name,Email,Password,IMAP Server,IMAP Port,SMTP Server,SMTP Port,"
    "Daily Limit,SMTP Secure,IMAP Secure",
    "salesforge": "address,firstName,lastName,imapHost,imapUsername,imapPassword,imapPort,"
    "smtpHost,smtpUsername,smtpPassword,smtpPort,Signature,trackingDomain",
}

TRICKY_FIRST = 'Jean, "JJ"'
TRICKY_LAST = "Doe\nJr."


def _rows(response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.content
    text = response.content.decode("utf-8")
    return list(csv.DictReader(io.StringIO(text, newline="")))


def _header(response) -> str:
    return response.content.decode("utf-8").split("\r\n", 1)[0]


@pytest.fixture
def mailbox(account) -> Mailbox:
    account.org.dedicated_smtp_host = "smtp.tenant.test"
    account.org.dedicated_imap_host = "imap.tenant.test"
    account.org.save()
    (mailbox,) = add_mailboxes(
        account,
        verified_domain(account),
        1,
        prefix="jean",
        first_name=TRICKY_FIRST,
        last_name=TRICKY_LAST,
        signature='=HYPERLINK("http://evil.test")',
        reply_to="replies@acme.test",
        daily_limit=40,
        warmup_enabled=True,
        warmup_per_day=15,
        warmup_daily_rampup=3,
    )
    return mailbox


@pytest.mark.parametrize("layout", sorted(HEADERS))
def test_exact_header_and_attachment(account, mailbox, layout):
    response = account.client.get(f"/mailbox/download/{layout}/")
    assert _header(response) == HEADERS[layout]
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    disposition = response["Content-Disposition"]
    assert disposition.startswith('attachment; filename="mailplane-')
    assert disposition.endswith('.csv"')
    assert response["X-Mailplane-Parts"] == "1"
    assert len(_rows(response)) == 1


def test_smartlead_values(account, mailbox, settings):
    (row,) = _rows(account.client.get("/mailbox/download/smartlead/"))
    assert row["from_name"] == f"{TRICKY_FIRST} {TRICKY_LAST}"
    assert row["from_email"] == row["user_name"] == "jean0000@acme.test"
    assert row["password"] == PASSWORD
    conf = settings.MAILPLANE
    assert (row["smtp_host"], row["smtp_port"]) == ("smtp.tenant.test", str(conf["SMTP_PORT"]))
    assert (row["imap_host"], row["imap_port"]) == ("imap.tenant.test", str(conf["IMAP_PORT"]))
    assert row["max_email_per_day"] == "40"
    assert row["warmup_enabled"] == "TRUE"
    assert (row["total_warmup_per_day"], row["daily_rampup"]) == ("15", "3")
    assert row["signature"] == '\'=HYPERLINK("http://evil.test")'
    assert row["different_reply_to_address"] == "replies@acme.test"
    for blank in ("custom_tracking_url", "reply_rate_percentage", "bcc", "imap_user_name"):
        assert row[blank] == ""


def test_instantly_values(account, mailbox):
    (row,) = _rows(account.client.get("/mailbox/download/instantly/"))
    assert (row["First Name"], row["Last Name"]) == (TRICKY_FIRST, TRICKY_LAST)
    assert row["IMAP Username"] == row["SMTP Username"] == row["Email"] == "jean0000@acme.test"
    assert row["IMAP Password"] == row["SMTP Password"] == PASSWORD
    assert (row["Daily Limit"], row["Warmup Enabled"]) == ("40", "TRUE")
    assert (row["Warmup Limit"], row["Warmup Increment"]) == ("15", "3")


def test_reply_io_emailbison_woodpecker_salesforge_values(account, mailbox, settings):
    (reply,) = _rows(account.client.get("/mailbox/download/reply.io/"))
    assert reply["SMTP SSL (Optional)"] == "TRUE"
    assert reply["Sender Name"] == f"{TRICKY_FIRST} {TRICKY_LAST}"
    (bison,) = _rows(account.client.get("/mailbox/download/emailbison/"))
    assert (bison["SMTP Secure"], bison["IMAP Secure"]) == ("TRUE", "TRUE")
    imap_port = str(settings.MAILPLANE["IMAP_PORT"])
    assert (bison["SMTP Server"], bison["IMAP Port"]) == ("smtp.tenant.test", imap_port)
    (wood,) = _rows(account.client.get("/mailbox/download/woodpecker/"))
    assert wood["SMTP login"] == wood["IMAP email"] == "jean0000@acme.test"
    assert wood["Footer"].startswith("'=")
    assert (wood["Daily sending limit"], wood["BCC"]) == ("40", "")
    (forge,) = _rows(account.client.get("/mailbox/download/salesforge/"))
    assert (forge["imapUsername"], forge["smtpPassword"]) == ("jean0000@acme.test", PASSWORD)


def test_custom_has_every_field(account, mailbox):
    (row,) = _rows(account.client.get("/mailbox/download/custom/"))
    assert row["id"] == str(mailbox.pk)
    assert (row["email"], row["domain"], row["local_part"]) == (
        "jean0000@acme.test",
        "acme.test",
        "jean0000",
    )
    assert (row["warmup_enabled"], row["smtp_ssl"], row["project"]) == ("TRUE", "TRUE", "")


def test_project_filter_and_unknown_project(account):
    domain = verified_domain(account)
    project = account.client.post("/api/projects/", {"name": "Cold"}, format="json").json()
    add_mailboxes(account, domain, 2, prefix="in", project_id=project["id"])
    add_mailboxes(account, domain, 3, prefix="out")
    rows = _rows(account.client.get(f"/mailbox/download/instantly/?project={project['id']}"))
    assert [r["Email"] for r in rows] == ["in0000@acme.test", "in0001@acme.test"]
    assert len(_rows(account.client.get("/mailbox/download/instantly/"))) == 5
    missing = account.client.get("/mailbox/download/instantly/?project=999999")
    assert missing.status_code == 404
    assert account.client.get("/mailbox/download/instantly/?project=x").status_code == 400


def test_other_account_sees_none_of_them(account, other_account, mailbox):
    response = other_account.client.get("/mailbox/download/smartlead/")
    assert _header(response) == HEADERS["smartlead"]
    assert _rows(response) == []
    assert b"jean0000" not in response.content
    # Nor through a project filter naming the first account's project.
    project = account.client.post("/api/projects/", {"name": "Mine"}, format="json").json()
    Mailbox.objects.filter(pk=mailbox.pk).update(project_id=project["id"])
    leak = other_account.client.get(f"/mailbox/download/smartlead/?project={project['id']}")
    assert leak.status_code == 404


def test_unknown_layout_and_no_key(account, client):
    response = account.client.get("/mailbox/download/lemlist/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert "smartlead" in response.json()["error"]["message"]
    assert client.get("/mailbox/download/smartlead/").status_code in (401, 403)


def test_json_errors_even_when_csv_is_asked_for(account):
    response = account.client.get("/mailbox/download/nope/", HTTP_ACCEPT="text/csv")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_woodpecker_splits_at_200(account):
    add_mailboxes(account, verified_domain(account), 201)
    whole = account.client.get("/mailbox/download/woodpecker/")
    assert whole.status_code == 200
    assert whole["Content-Type"] == "application/zip"
    assert whole["X-Mailplane-Parts"] == "2"
    assert whole["Content-Disposition"].endswith('.zip"')
    archive = zipfile.ZipFile(io.BytesIO(whole.content))
    names = archive.namelist()
    assert len(names) == 2
    counts = []
    for name in names:
        text = archive.read(name).decode("utf-8")
        assert text.split("\r\n", 1)[0] == HEADERS["woodpecker"]
        counts.append(len(list(csv.DictReader(io.StringIO(text, newline="")))))
    assert counts == [200, 1]

    second = account.client.get("/mailbox/download/woodpecker/?page=2")
    assert (second["X-Mailplane-Parts"], second["X-Mailplane-Part"]) == ("2", "2")
    assert [r["SMTP email"] for r in _rows(second)] == ["user0200@acme.test"]
    assert len(_rows(account.client.get("/mailbox/download/woodpecker/?page=1"))) == 200
    assert account.client.get("/mailbox/download/woodpecker/?page=3").status_code == 404
    assert account.client.get("/mailbox/download/woodpecker/?page=0").status_code == 400
    # Other layouts have no such limit: one file with all 201.
    assert len(_rows(account.client.get("/mailbox/download/smartlead/"))) == 201


def test_woodpecker_at_exactly_200_is_one_csv(account):
    add_mailboxes(account, verified_domain(account), 200)
    response = account.client.get("/mailbox/download/woodpecker/")
    assert response["X-Mailplane-Parts"] == "1"
    assert len(_rows(response)) == 200
