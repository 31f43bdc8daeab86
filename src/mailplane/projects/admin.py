from django.contrib import admin

from mailplane.projects.models import Project


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin[Project]):
    list_display = ("id", "name", "organization", "created_at")
