"""`mailplane dns-provider add|list|test|remove` and `mailplane domain publish-dns`."""

from __future__ import annotations

import io
import json

from mailplane.cli import main
from mailplane.dnsproviders.models import DnsProviderConnection
from mailplane.domains.services import domain_create
from tests.support.dns_providers import CF_TOKEN


def _add(monkeypatch, account, stdin):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(
        [
            "dns-provider",
            "add",
            "--org",
            account.org.slug,
            "--provider",
            "cloudflare",
            "--name",
            "cf",
        ]
    )


def test_add_reads_secrets_from_stdin_and_list_masks_them(account, monkeypatch, capsys):
    assert _add(monkeypatch, account, json.dumps({"api_token": CF_TOKEN})) == 0
    assert "stored" in capsys.readouterr().out
    assert main(["dns-provider", "list", "--org", account.org.slug]) == 0
    out = capsys.readouterr().out
    assert f"api_token=****{CF_TOKEN[-4:]}" in out and CF_TOKEN not in out


def test_add_refuses_bad_input_without_a_traceback(account, monkeypatch, capsys):
    assert _add(monkeypatch, account, "{not json") == 2
    assert "invalid JSON" in capsys.readouterr().err
    assert _add(monkeypatch, account, json.dumps({"api_token": "short"})) == 2
    err = capsys.readouterr().err
    assert "credentials.api_token" in err and "Traceback" not in err
    assert not DnsProviderConnection.objects.exists()


def test_test_publish_and_remove(account, monkeypatch, capsys, fake_cloudflare):
    fake_cloudflare.add_zone("acme.test")
    _add(monkeypatch, account, json.dumps({"api_token": CF_TOKEN}))
    capsys.readouterr()
    connection = DnsProviderConnection.objects.get()
    assert main(["dns-provider", "test", "--id", str(connection.pk)]) == 0
    assert capsys.readouterr().out.startswith("valid: Cloudflare API token active")

    domain = domain_create(organization=account.org, name="acme.test", relay_server=account.relay)
    argv = ["domain", "publish-dns", "--id", str(domain.pk), "--dns-provider", str(connection.pk)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("\n  created ") == 5 and out.rstrip().endswith("acme.test: verified")
    assert main(["domain", "publish-dns", "--id", str(domain.pk)]) == 0  # its connection
    assert capsys.readouterr().out.count("\n  unchanged ") == 5

    assert main(["dns-provider", "remove", "--id", str(connection.pk)]) == 0
    assert main(["dns-provider", "test", "--id", str(connection.pk)]) == 2
    assert f"no DNS-provider connection {connection.pk}" in capsys.readouterr().err


def test_publish_of_an_unknown_domain_or_another_accounts_connection(
    account, other_account, monkeypatch, capsys
):
    assert main(["domain", "publish-dns", "--id", "424242"]) == 2
    assert "no domain 424242" in capsys.readouterr().err
    _add(monkeypatch, other_account, json.dumps({"api_token": CF_TOKEN}))
    capsys.readouterr()
    theirs = DnsProviderConnection.objects.get()
    domain = domain_create(organization=account.org, name="acme.test", relay_server=account.relay)
    argv = ["domain", "publish-dns", "--id", str(domain.pk), "--dns-provider", str(theirs.pk)]
    assert main(argv) == 2
    assert "for that account" in capsys.readouterr().err
