from mailplane.tenancy.plans import PLANS, PlanName


def test_userinfo_reports_shared_hosts_and_limits(account, settings):
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "SHARED_SMTP_HOST": "smtp.shared.test",
        "SHARED_IMAP_HOST": "imap.shared.test",
    }
    body = account.client.get("/api/userinfo/").json()
    assert (body["ibx_smtp"], body["ibx_imap"]) == ("smtp.shared.test", "imap.shared.test")
    assert body["plan"] == "pro"
    assert body["mailboxes_limit"] == PLANS[PlanName.PRO].mailboxes_included
    assert body["api_sending"] is True
    assert body["single_tenant"] is False
    assert body["relay_servers"] == 1
    assert body["smtp_port"] == settings.MAILPLANE["SMTP_PORT"]


def test_userinfo_switches_to_dedicated_hosts_after_migration(account):
    account.org.dedicated_smtp_host = "acme.outboxment.test"
    account.org.dedicated_imap_host = "acme.outboxment.test"
    account.org.save()
    body = account.client.get("/api/userinfo/").json()
    assert body["ibx_smtp"] == body["ibx_imap"] == "acme.outboxment.test"
    assert body["single_tenant"] is True


def test_starter_plan_has_no_api_sending(make_account):
    body = make_account(plan="starter").client.get("/api/userinfo/").json()
    assert (body["plan"], body["api_sending"], body["mailboxes_limit"]) == ("starter", False, 30)
