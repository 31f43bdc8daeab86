from django.contrib import admin

from mailplane.tenancy.models import ApiKey, Organization


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin[Organization]):
    list_display = ("slug", "name", "plan", "is_active", "created_at")
    search_fields = ("slug", "name")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    list_display = ("prefix", "name", "organization", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "key_digest", "last_used_at")
