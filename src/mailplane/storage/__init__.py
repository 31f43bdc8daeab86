"""Mail storage: one Maildir++ tree per mailbox, under its account's storage root.

    <STORAGE_ROOT>/org-<organization id>/<address>/   INBOX (cur/ new/ tmp/)
                                                      .Sent/ .Drafts/ .Trash/ .Junk/

A tenant's mail is one directory, so it can be moved as a unit (single-tenant migration).
The layout is the one pymap's maildir backend reads (Maildir++ "." folders), so the IMAP
server and the MX/submission side share files, not a protocol.
"""

from mailplane.storage.maildir import (
    SPECIAL_FOLDERS,
    mailbox_storage_path,
    maildir_deliver,
    maildir_ensure,
    organization_storage_path,
)

__all__ = [
    "SPECIAL_FOLDERS",
    "mailbox_storage_path",
    "maildir_deliver",
    "maildir_ensure",
    "organization_storage_path",
]
