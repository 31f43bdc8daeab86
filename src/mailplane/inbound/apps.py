from django.apps import AppConfig


class InboundConfig(AppConfig):
    name = "mailplane.inbound"
    label = "inbound"
    default_auto_field = "django.db.models.BigAutoField"
