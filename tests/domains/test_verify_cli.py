"""`mailplane domain verify --id N`."""

from __future__ import annotations

from mailplane.cli import main
from tests.domains.conftest import publish


def test_cli_verify_prints_records_and_exit_status(new_domain, dns_server, capsys):
    domain = new_domain()
    assert main(["domain", "verify", "--id", str(domain.pk)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("acme.test: dns_pending")
    assert "missing  MX    acme.test: no MX record found" in out
    assert "(optional)" in out

    publish(dns_server, domain)
    assert main(["domain", "verify", "--id", str(domain.pk)]) == 0
    assert capsys.readouterr().out.startswith("acme.test: verified")


def test_cli_unknown_domain(db, capsys):
    assert main(["domain", "verify", "--id", "424242"]) == 2
    assert "no domain 424242" in capsys.readouterr().err
