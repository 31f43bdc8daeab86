from django.apps import AppConfig


class PoolsConfig(AppConfig):
    name = "mailplane.pools"
    label = "pools"
    default_auto_field = "django.db.models.BigAutoField"
