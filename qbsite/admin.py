"""Users, groups and API tokens in the QB admin.

Operators manage the people who use QB: they add traders and clients (groups "trader" and
"client", qbsite.roles), reset passwords and issue or revoke API tokens. What would let an
operator raise itself above that stays with superusers: the superuser flag, Django's
per-user permissions, editing a superuser, and editing the groups themselves (their names are
the roles).
"""

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from qbsite.admin_utils import is_operator

SUPERUSER_ONLY_USER_FIELDS = ("is_superuser", "user_permissions")


def _is_superuser(request) -> bool:
    return is_operator(request) and request.user.is_superuser


admin.site.unregister(User)
admin.site.unregister(Group)
admin.site.unregister(TokenProxy)


@admin.register(User)
class QBUserAdmin(UserAdmin):
    list_display = ("username", "email", "group_names", "is_staff", "is_active", "last_login")
    list_filter = ("is_staff", "is_superuser", "is_active", "groups")

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("groups")

    @admin.display(description="groups")
    def group_names(self, obj):
        return ", ".join(sorted(group.name for group in obj.groups.all()))

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        if _is_superuser(request):
            return fields
        return (*fields, *SUPERUSER_ONLY_USER_FIELDS, "last_login", "date_joined")

    def has_module_permission(self, request):
        return is_operator(request)

    def has_view_permission(self, request, obj=None):
        return is_operator(request)

    def has_add_permission(self, request):
        return is_operator(request)

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.is_superuser:
            return _is_superuser(request)
        return is_operator(request)

    def has_delete_permission(self, request, obj=None):
        return self.has_change_permission(request, obj)


@admin.register(Group)
class QBGroupAdmin(GroupAdmin):
    def has_module_permission(self, request):
        return is_operator(request)

    def has_view_permission(self, request, obj=None):
        return is_operator(request)

    def has_add_permission(self, request):
        return _is_superuser(request)

    def has_change_permission(self, request, obj=None):
        return _is_superuser(request)

    def has_delete_permission(self, request, obj=None):
        return _is_superuser(request)


@admin.register(TokenProxy)
class QBTokenAdmin(TokenAdmin):
    """Issue (add) and revoke (delete) tokens. The key is shown on the token's own page only."""

    list_display = ("user", "masked_key", "created")
    fields = ("user", "key", "created")
    readonly_fields = ("key", "created")
    autocomplete_fields = ("user",)

    @admin.display(description="key")
    def masked_key(self, obj):
        return f"{obj.key[:4]}…"

    def has_module_permission(self, request):
        return is_operator(request)

    def has_view_permission(self, request, obj=None):
        return is_operator(request)

    def has_add_permission(self, request):
        return is_operator(request)

    def has_change_permission(self, request, obj=None):
        # A token belongs to one user for life: revoke it and issue another.
        return False

    def has_delete_permission(self, request, obj=None):
        return is_operator(request)
