"""Relay servers: the sending back ends (native, Mailgun, SendGrid, SMTP smarthost)."""
