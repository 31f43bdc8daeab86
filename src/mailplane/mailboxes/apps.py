from django.apps import AppConfig


class MailboxesConfig(AppConfig):
    name = "mailplane.mailboxes"
    label = "mailboxes"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the mailbox job handlers.
        from mailplane.mailboxes import bulk, services  # noqa: F401
