"""Email servers (seed 004): the logical containers an account sends through by API.

A server groups message streams, server-scoped keys and (next) sender identities,
suppressions and logs. models.py holds them, services.py writes them, selectors.py reads
them; the send path itself is mailplane.sending (ingress → message → queue).
"""
