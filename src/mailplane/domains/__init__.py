"""Sending domains: DKIM keys, the DNS records customers publish, and their verification."""
