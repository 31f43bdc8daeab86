"""Mailboxes: addresses on verified domains with SMTP/IMAP credentials."""
