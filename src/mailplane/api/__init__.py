"""The HTTP API: thin views over services and selectors; one error shape for everything."""
