from django.contrib import admin

from notifications.models import Publication


@admin.register(Publication)
class PublicationAdmin(admin.ModelAdmin):
    list_display = ("seq", "blog", "author_username", "created_at")
    readonly_fields = ("seq", "blog", "author_username", "created_at")
