from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from api import services
from api.models import ApiToken, Author, Blog


@admin.register(Author)
class AuthorAdmin(UserAdmin):
    fieldsets = (*UserAdmin.fieldsets, ("Profile", {"fields": ("bio",)}))  # type: ignore[misc]
    list_display = ("username", "email", "is_active", "is_staff", "date_joined")
    actions = ["end_access"]

    @admin.action(description="End access: revoke all their tokens and close their sockets everywhere")
    def end_access(self, request: HttpRequest, queryset: QuerySet[Author]) -> None:
        revoked = services.authors_access_end(author_ids=queryset.values_list("pk", flat=True))
        self.message_user(
            request,
            f"Revoked {revoked} token(s); every socket of these authors is being closed on every instance.",
            messages.SUCCESS,
        )


@admin.register(Blog)
class BlogAdmin(admin.ModelAdmin):
    list_display = ("title", "author", "published_at")
    list_select_related = ("author",)
    search_fields = ("title", "author__username")
    autocomplete_fields = ("author",)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "author", "created_at", "expires_at", "revoked")
    list_filter = ("revoked",)
    readonly_fields = ("prefix", "digest", "created_at", "last_used_at", "expires_at")
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tokens are made by createToken, which is the only place the raw token is shown

    @admin.action(description="Revoke selected tokens (their sockets close on every instance)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        revoked = services.tokens_revoke(token_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"Revoked {revoked} token(s).", messages.SUCCESS)
