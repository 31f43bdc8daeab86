from django.apps import AppConfig


class RelaysConfig(AppConfig):
    name = "mailplane.relays"
    label = "relays"
    default_auto_field = "django.db.models.BigAutoField"
