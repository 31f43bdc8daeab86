"""A client nobody here wrote: the npm `imapflow` package (the seeds' IMAP client)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mailplane.storage import maildir_deliver
from tests.imap.conftest import PASSWORD
from tests.support.tools import require_tool

pytestmark = pytest.mark.timeout(120)
NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="module")
def imapflow() -> Path:
    require_tool("node")
    require_tool("npm")
    if not (NODE_DIR / "node_modules" / "imapflow").exists():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            check=True,
            timeout=100,
            capture_output=True,
        )
    return NODE_DIR / "check.js"


def test_imapflow_logs_in_lists_and_fetches(imap_server, make_mailbox, imapflow):
    mailbox = make_mailbox()
    raw = b"From: a@example.test\r\nTo: %s\r\nSubject: via imapflow\r\n\r\nBody\r\n" % (
        mailbox.address.encode()
    )
    maildir_deliver(organization_id=mailbox.organization_id, address=mailbox.address, raw=raw)
    result = subprocess.run(
        [
            "node",
            str(imapflow),
            imap_server.host,
            str(imap_server.tls_port),
            mailbox.address,
            PASSWORD,
        ],
        capture_output=True,
        timeout=60,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    special = {f["path"]: f["specialUse"] for f in report["folders"]}
    assert special == {
        "INBOX": "\\Inbox",
        "Sent": "\\Sent",
        "Drafts": "\\Drafts",
        "Trash": "\\Trash",
        "Junk": "\\Junk",
    }
    assert report["messages"] == [{"uid": 1, "subject": "via imapflow", "size": len(raw)}]
