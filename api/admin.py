from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from api.models import ApiToken, Author, Blog


@admin.register(Author)
class AuthorAdmin(UserAdmin):
    fieldsets = (*UserAdmin.fieldsets, ("Profile", {"fields": ("bio",)}))  # type: ignore[misc]
    list_display = ("username", "email", "is_staff", "date_joined")


@admin.register(Blog)
class BlogAdmin(admin.ModelAdmin):
    list_display = ("title", "author", "published_at")
    list_select_related = ("author",)
    search_fields = ("title", "author__username")
    autocomplete_fields = ("author",)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "author", "created_at", "revoked")
    list_filter = ("revoked",)
    readonly_fields = ("prefix", "digest", "created_at", "last_used_at")
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tokens are made by createToken, which is the only place the raw token is shown

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        queryset.update(revoked=True)
