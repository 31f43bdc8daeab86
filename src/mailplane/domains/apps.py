from django.apps import AppConfig


class DomainsConfig(AppConfig):
    name = "mailplane.domains"
    label = "domains"
    default_auto_field = "django.db.models.BigAutoField"
