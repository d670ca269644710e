"""Serializer pieces shared by every app's API, and the users endpoint's serializer."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from qbsite.filters import parse_aware_datetime
from qbsite.roles import Role, role_of


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 date-time that must carry its timezone.

    DRF's DateTimeField would quietly read "2024-05-02T09:00" in the server's zone (Seoul);
    a candle stamped an hour or nine off is worse than a 400.
    """

    default_error_messages = {"naive": "Add a timezone (Z or an offset such as +09:00)."}

    def to_internal_value(self, value):
        if isinstance(value, str):
            try:
                parse_aware_datetime(value)
            except DjangoValidationError as exc:
                raise serializers.ValidationError(exc.messages) from None
        elif getattr(value, "tzinfo", True) is None:
            self.fail("naive")
        return super().to_internal_value(value)


class RejectUnknownFieldsMixin:
    """Answer a field the client may not write with a 400 naming it, instead of ignoring it.

    A client that sends {"is_staff": true} and gets 200 would believe it worked.
    `refused_messages` may give a field a more helpful message.
    """

    refused_messages: dict[str, str] = {}

    def to_internal_value(self, data):
        if isinstance(data, dict):
            refused = sorted(name for name in data if self._refuses(name, data[name]))
            if refused:
                default = "This field cannot be written here."
                raise serializers.ValidationError(
                    {name: [self.refused_messages.get(name, default)] for name in refused}
                )
        return super().to_internal_value(data)

    def _refuses(self, name, value) -> bool:
        field = self.fields.get(name)
        if field is None:
            return True
        if not field.read_only:
            return False
        # A read-only field sent back unchanged (GET, edit, PUT) is no attempt to write it.
        if self.instance is None:
            return True
        if not hasattr(self, "_current"):
            self._current = self.to_representation(self.instance)
        return self._current.get(name) != value


def user_role(user: User) -> Role | None:
    """role_of(user) reading the groups prefetched by the list query (no query per row)."""
    if not hasattr(user, "_qb_group_names") and not (user.is_staff or user.is_superuser):
        user._qb_group_names = {group.name for group in user.groups.all()}
    return role_of(user)


@extend_schema_field(
    {
        "type": "string",
        "enum": [*(role.value for role in Role), None],
        "nullable": True,
        "description": "operator, trader or client; null = no role (no access). Only an"
        " operator may change it.",
    }
)
class RoleField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=[role.value for role in Role], allow_null=True, **kwargs)

    def get_attribute(self, instance):
        return instance

    def to_representation(self, value):
        role = user_role(value)
        return role.value if role else None


class UserSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer):
    """A user and its role. Only an operator may write `role`; nobody writes staff flags or
    groups here (the role is the API's one word for them)."""

    role = RoleField(required=False)
    refused_messages = {
        "role": "Only an operator may change a role.",
        "is_staff": "Staff status follows the role; an operator sets `role`.",
        "is_superuser": "Superusers are made in the admin, not through the API.",
        "groups": "Groups follow the role; an operator sets `role`.",
    }

    class Meta:
        model = User
        fields = [
            "id",
            "username",
            "first_name",
            "last_name",
            "email",
            "role",
            "is_active",
            "date_joined",
            "last_login",
        ]
        read_only_fields = ["id", "username", "is_active", "date_joined", "last_login"]

    def get_fields(self):
        fields = super().get_fields()
        view = self.context.get("view")
        if getattr(view, "swagger_fake_view", False):
            return fields  # the schema shows the operator's view (role writable)
        request = self.context.get("request")
        if request is None or role_of(request.user) is not Role.OPERATOR:
            fields["role"].read_only = True
        return fields


class AuthTokenResponseSerializer(serializers.Serializer):
    token = serializers.CharField(read_only=True)
