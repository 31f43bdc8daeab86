"""Projects: a customer's own grouping of domains and mailboxes (campaign, client, purpose)."""
