"""Tenants: organizations, their plans and limits, and the API keys that act for them."""
