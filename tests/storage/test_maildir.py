import mailbox

import pytest

from mailplane.storage import mailbox_storage_path, maildir_deliver, maildir_ensure


def test_deliver_lands_in_new_and_is_readable_by_stdlib_maildir(settings, tmp_path):
    settings.MAILPLANE = {**settings.MAILPLANE, "STORAGE_ROOT": str(tmp_path)}
    path = maildir_deliver(
        organization_id=7, address="Jane@Acme.test", raw=b"Subject: hi\r\n\r\nx\r\n"
    )
    assert path.parent.name == "new"
    assert path.parent.parent == tmp_path / "org-7" / "jane@acme.test"
    box = mailbox.Maildir(str(path.parent.parent), create=False)
    assert [m["Subject"] for m in box] == ["hi"]
    assert list((path.parent.parent / "tmp").iterdir()) == []


def test_special_folders_exist_and_deliver_to_sent(settings, tmp_path):
    settings.MAILPLANE = {**settings.MAILPLANE, "STORAGE_ROOT": str(tmp_path)}
    root = maildir_ensure(organization_id=1, address="a@b.test")
    assert {p.name for p in root.iterdir() if p.name.startswith(".")} == {
        ".Sent",
        ".Drafts",
        ".Trash",
        ".Junk",
    }
    sent = maildir_deliver(organization_id=1, address="a@b.test", raw=b"x", folder="Sent")
    assert sent.parent == root / ".Sent" / "new"


def test_path_traversal_is_refused(settings, tmp_path):
    settings.MAILPLANE = {**settings.MAILPLANE, "STORAGE_ROOT": str(tmp_path)}
    with pytest.raises(ValueError):
        mailbox_storage_path(organization_id=1, address="../../etc")
