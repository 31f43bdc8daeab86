from django.apps import AppConfig


class ReputationConfig(AppConfig):
    name = "mailplane.reputation"
    label = "reputation"
    default_auto_field = "django.db.models.BigAutoField"
