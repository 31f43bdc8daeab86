from django.apps import AppConfig


class ServersConfig(AppConfig):
    name = "mailplane.servers"
    label = "servers"
    default_auto_field = "django.db.models.BigAutoField"
