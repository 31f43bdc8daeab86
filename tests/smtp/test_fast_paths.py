"""The shortcuts the ingest path takes for speed (issue 15) answer as the long way does:
paths parsed without the email tokenizer, DNS answers cached for their TTL, mailbox
directories made once per process, several listener processes on one port."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP

from mailplane.smtp.protocol import MailplaneSMTP
from mailplane.storage.maildir import mailbox_storage_path
from tests.smtp.conftest import maildir_files, make_mailbox, message
from tests.support.fixtures import verified_domain

pytestmark = pytest.mark.timeout(60)

PATHS = [
    "<a@b.c>",
    "<a@b.c> SIZE=10",
    "<a.b+c@x-y.example.org> BODY=8BITMIME SMTPUTF8",
    " <a@b>",
    "<a@b.c>  ",
    "<a@b.c>\tX",
    "<a@b.c> \t SIZE=1 ",
    "<A@B.C>",
    "<a@b.c> <d@e>",
    "<a@b.c> (comment) SIZE=1",  # CFWS: the tokenizer eats the comment
    "<a@b.c>(x)",
    "<a@b.c>\x0bX",
    "<a@b.c>\u00a0X",
    "<a@b.c>x",
    "<a..b@c>",
    "<.a@c>",
    "<a@-b.c>",
    "<a@b.c.>",
    "<a@b..c>",
    '<"q"@b>',
    "<a@[1.2.3.4]>",
    "<@r:a@b>",
    "a@b.c",
    "<a@b.c",
    "<>",
    "<ü@b.c>",
    "<" + "a" * 64 + "@b.c>",
    "<" + "a" * 65 + "@b.c>",  # over RFC 5321's 64-octet local part: refused
]


class _Handler:
    pass


@pytest.mark.parametrize("arg", PATHS)
def test_paths_parse_as_aiosmtpds_parser_does(arg: str) -> None:
    loop = asyncio.new_event_loop()
    try:
        ours = MailplaneSMTP(_Handler(), loop=loop)
        theirs = SMTP(_Handler(), loop=loop)
        assert ours._getaddr(arg) == theirs._getaddr(arg)
    finally:
        loop.close()


@pytest.fixture
def carol(account):
    return make_mailbox(account, verified_domain(account, "acme.test"), "carol")


def _send(listeners, sender: str, rcpt: str, times: int = 1) -> None:
    with smtplib.SMTP(listeners.host, listeners.mx, timeout=10) as client:
        for _ in range(times):
            assert client.sendmail(sender, [rcpt], message(sender, rcpt)) == {}


def test_mx_asks_the_dns_once_per_ttl_for_spf_and_dmarc(listeners, carol, dns_server):
    dns_server.txt("sender.test", "v=spf1 ip4:127.0.0.1 -all")
    dns_server.txt("_dmarc.sender.test", "v=DMARC1; p=reject")
    dns_server.soa("quiet.test")  # no SPF, no DMARC: negative answers with an SOA
    _send(listeners, "news@sender.test", carol.address, times=3)
    _send(listeners, "a@quiet.test", carol.address, times=3)
    files = maildir_files(carol)
    assert len(files) == 6
    assert sum(b"spf=pass" in f.read_bytes() for f in files) == 3  # the cached answer too
    assert len(dns_server.queried("sender.test", "TXT")) == 1
    assert len(dns_server.queried("_dmarc.sender.test", "TXT")) == 1
    # RFC 2308 §5: a negative answer is cached for its SOA's TTL too.
    assert len(dns_server.queried("quiet.test", "TXT")) == 1
    assert len(dns_server.queried("_dmarc.quiet.test", "TXT")) == 1


def test_a_new_dns_configuration_starts_an_empty_cache(listeners, carol, dns_server, settings):
    dns_server.txt("sender.test", "v=spf1 ip4:127.0.0.1 -all")
    _send(listeners, "news@sender.test", carol.address)
    dns_server.remove("sender.test")
    dns_server.txt("sender.test", "v=spf1 -all")
    settings.MAILPLANE = {**settings.MAILPLANE}  # what the dns_server fixture does per test
    _send(listeners, "news@sender.test", carol.address)
    results = sorted(b"spf=pass" in f.read_bytes() for f in maildir_files(carol))
    assert results == [False, True]  # the second message saw the new record


def test_a_mailbox_directory_removed_after_a_delivery_is_made_again(listeners, carol, dns_server):
    _send(listeners, "a@plain.test", carol.address)
    root = mailbox_storage_path(organization_id=carol.organization_id, address=carol.address)
    shutil.rmtree(root)
    _send(listeners, "a@plain.test", carol.address)
    assert len(maildir_files(carol)) == 1
    assert (root / ".Sent" / "new").is_dir()  # the whole mailbox, special folders too


# -- several listener processes (MAILPLANE_SMTP_PROCESSES) ----------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening_pids(port: int, pids: list[int]) -> set[int]:
    """Which of `pids` hold a socket listening on 127.0.0.1:`port` (/proc/net/tcp)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            inodes.add(f"socket:[{inode}]")
    holders = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in inodes:
                    holders.add(pid)
            except OSError:
                continue
    return holders


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.fixture
def two_mx_processes(tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "MAILPLANE_DATA_DIR": str(tmp_path / "data"),
        "MAILPLANE_SMTP_BIND": "127.0.0.1",
        "MAILPLANE_MX_PORT": str(port),
        "MAILPLANE_SMTP_PROCESSES": "2",
        "MAILPLANE_LOG_LEVEL": "WARNING",
    }
    env.pop("PYTEST_VERSION", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailplane.smtp", "mx"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        # Process 1 prints its banner last, once every process listens.
        lines = [proc.stdout.readline().decode() for _ in range(2)]
        assert f"inbound MX on 127.0.0.1:{port} (process 1 of 2)" in lines[1], lines
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and SO_REUSEPORT")
def test_listener_processes_share_the_port_and_stop_together(two_mx_processes):
    proc, port = two_mx_processes
    [child] = _children(proc.pid)
    assert _listening_pids(port, [proc.pid, child]) == {proc.pid, child}
    for _ in range(4):  # every connection is answered, whichever process takes it
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            assert client.noop()[0] == 250
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and SO_REUSEPORT")
def test_a_listener_process_dying_stops_the_service_with_status_1(two_mx_processes):
    proc, _port = two_mx_processes
    [child] = _children(proc.pid)
    os.kill(child, signal.SIGKILL)
    assert proc.wait(timeout=20) == 1  # the supervisor (mailplane serve) restarts it whole
