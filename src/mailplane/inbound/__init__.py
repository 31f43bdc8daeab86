"""Inbound streams: mail the MX accepts for a server's inbound address (or its inbound
domain) is stored, parsed and posted to the server's `inbound` webhooks."""
