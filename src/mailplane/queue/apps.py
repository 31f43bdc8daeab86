from django.apps import AppConfig


class QueueConfig(AppConfig):
    name = "mailplane.queue"
    label = "mailqueue"
    default_auto_field = "django.db.models.BigAutoField"
