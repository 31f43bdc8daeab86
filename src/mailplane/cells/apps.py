from django.apps import AppConfig


class CellsConfig(AppConfig):
    name = "mailplane.cells"
    label = "cells"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from mailplane.cells.services import organization_mirror_saved
        from mailplane.tenancy.models import Organization

        # The registry's row is the truth; every save of it refreshes the cell's copy.
        post_save.connect(
            organization_mirror_saved, sender=Organization, dispatch_uid="cells-mirror"
        )
