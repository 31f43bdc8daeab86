from django.contrib import admin

from mailplane.relays.models import RelayServer
from mailplane.relays.schemas import mask_credentials


@admin.register(RelayServer)
class RelayServerAdmin(admin.ModelAdmin[RelayServer]):
    """Operators assign servers here; credentials are set through the API or CLI only."""

    list_display = ("id", "name", "provider", "organization", "status")
    list_filter = ("provider", "status")
    exclude = ("credentials",)
    readonly_fields = ("masked_credentials",)

    @admin.display(description="credentials")
    def masked_credentials(self, server: RelayServer) -> str:
        return ", ".join(f"{k}: {v}" for k, v in mask_credentials(server.credentials).items())
