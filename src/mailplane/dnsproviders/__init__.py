"""DNS provider integrations: an account's Cloudflare or GoDaddy connection, through which
Mailplane publishes a domain's records (MX, SPF, DKIM, DMARC, return-path) itself.

    models.py       connections (credentials encrypted at rest), the domain -> connection
                    binding, and the ledger of records Mailplane wrote into a zone
    interface.py    the plug-in point: `DnsProviderClient`, a typing.Protocol
    cloudflare.py   Cloudflare API v4 client     godaddy.py   GoDaddy Domains API v1 client
    http.py         httpx session: timeouts, retries on 429/5xx honouring Retry-After
    registry.py     provider kinds: credential schema and client factory
    publishing.py   make a zone hold the domain's records, touching only Mailplane's own
    services.py     connection CRUD and test, the publish job (then real-DNS verification)
    errors.py       what can go wrong, temporary kept apart from permanent
"""
