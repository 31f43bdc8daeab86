from django.contrib import admin

from mailplane.mailboxes.models import Mailbox


@admin.register(Mailbox)
class MailboxAdmin(admin.ModelAdmin[Mailbox]):
    list_display = ("id", "address", "organization", "status", "created_at")
    list_filter = ("status",)
    search_fields = ("address",)
    # Passwords are never shown or edited here: the API's PATCH re-hashes them.
    exclude = ("password", "password_hash")
