from django.apps import AppConfig


class DnsProvidersConfig(AppConfig):
    name = "mailplane.dnsproviders"
    label = "dnsproviders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the publish job handler.
        from mailplane.dnsproviders import services  # noqa: F401
