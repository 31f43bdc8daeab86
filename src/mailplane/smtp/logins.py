"""Mailbox logins for SMTP AUTH: moved to `mailplane.mailboxes.logins` (shared with IMAP)."""

from mailplane.mailboxes.logins import (
    CredentialCache,
    LoginAttempt,
    LoginGate,
    LoginGuard,
    LoginLimits,
    Principal,
    login_check,
    login_guard,
    mask,
)

__all__ = [
    "CredentialCache",
    "LoginAttempt",
    "LoginGate",
    "LoginGuard",
    "LoginLimits",
    "Principal",
    "login_check",
    "login_guard",
    "mask",
]
