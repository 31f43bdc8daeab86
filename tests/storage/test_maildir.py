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


def test_deliver_many_writes_every_file_in_order_across_folders(settings, tmp_path):
    from mailplane.storage.maildir import MaildirItem, maildir_deliver_many

    settings.MAILPLANE = {**settings.MAILPLANE, "STORAGE_ROOT": str(tmp_path)}
    items = [
        MaildirItem(1, "a@b.test", b"Subject: one\r\n\r\n1\r\n", "Sent"),
        MaildirItem(1, "a@b.test", b"Subject: two\r\n\r\n2\r\n", "Sent"),
        MaildirItem(1, "c@b.test", b"Subject: three\r\n\r\n3\r\n"),
        MaildirItem(2, "a@b.test", b"Subject: four\r\n\r\n4\r\n", "Junk"),
    ]
    paths = maildir_deliver_many(items)
    assert [p.read_bytes() for p in paths] == [i.raw for i in items]
    assert len(set(paths)) == 4 and all(p.parent.name == "new" for p in paths)
    assert paths[0].parent == tmp_path / "org-1" / "a@b.test" / ".Sent" / "new"
    assert paths[2].parent == tmp_path / "org-1" / "c@b.test" / "new"
    assert paths[3].parent == tmp_path / "org-2" / "a@b.test" / ".Junk" / "new"
    for path in paths:
        assert list((path.parent.parent / "tmp").iterdir()) == []
    assert maildir_deliver_many([]) == []


def test_deliver_many_leaves_nothing_behind_when_one_item_fails(settings, tmp_path):
    from mailplane.storage.maildir import MaildirItem, maildir_deliver_many

    settings.MAILPLANE = {**settings.MAILPLANE, "STORAGE_ROOT": str(tmp_path)}
    root = maildir_ensure(organization_id=1, address="a@b.test")
    items = [
        MaildirItem(1, "a@b.test", b"first", "Sent"),
        MaildirItem(1, "a@b.test", b"second", "NoSuchFolder"),  # its tmp/ does not exist
    ]
    with pytest.raises(FileNotFoundError):
        maildir_deliver_many(items)
    for sub in ("new", "tmp", "cur"):
        assert list((root / ".Sent" / sub).iterdir()) == []
