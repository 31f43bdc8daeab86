"""Mailbox logins for SMTP AUTH: moved to `mailplane.mailboxes.logins` (shared with IMAP)."""

from mailplane.mailboxes.logins import CredentialCache, LoginGuard, Principal, login_check, mask

__all__ = ["CredentialCache", "LoginGuard", "Principal", "login_check", "mask"]
