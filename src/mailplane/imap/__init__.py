"""IMAP for Mailplane mailboxes: pymap's protocol engine and Maildir++ storage, with logins
checked against the database and listeners for implicit TLS (993) and STARTTLS (143).

- `auth`: credential checks (scrypt off the event loop, short cache keyed by the hash).
- `backend`: the pymap backend (login, identity, session, special-use folders, IDLE).
- `server`: the listeners and the per-connection rules pymap leaves to us (timeouts,
  literal limits, implicit TLS).
"""
