"""The users endpoint (the object-level example of the permission scheme) and the token login."""

from __future__ import annotations

from django.contrib.auth.models import User
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, viewsets
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.decorators import action
from rest_framework.response import Response

from qbsite.filters import UserFilter
from qbsite.permissions import ALL_ROLES
from qbsite.roles import Role, role_of
from qbsite.serializers import AuthTokenResponseSerializer, UserSerializer
from qbsite.services import user_update
from qbsite.throttling import AnonThrottle


@extend_schema_view(
    list=extend_schema(summary="Users: all for an operator, only oneself for the others"),
    retrieve=extend_schema(summary="One user (others' are 404 for a trader or client)"),
    update=extend_schema(summary="Change a user (own profile; an operator also the role)"),
    partial_update=extend_schema(summary="Change some fields of a user"),
)
class UserViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Users and their role.

    Operators see and change everyone, including `role`. Traders and clients see only
    themselves and may change only their own first_name, last_name and email. Users are made
    and removed in the admin, not here.
    """

    serializer_class = UserSerializer
    read_roles = ALL_ROLES
    write_roles = ALL_ROLES  # narrowed per object by owner_field, and by the serializer
    owner_field = "self"
    ordering_fields = ["id", "username", "date_joined"]
    ordering = ["id"]
    filterset_class = UserFilter

    def get_queryset(self):
        users = User.objects.prefetch_related("groups").order_by("id")
        if role_of(self.request.user) is Role.OPERATOR:
            return users
        return users.filter(pk=self.request.user.pk)

    def update(self, request, *args, **kwargs):
        return self._update(request, self.get_object(), partial=kwargs.get("partial", False))

    @extend_schema(summary="The signed-in user", responses=UserSerializer)
    @action(detail=False, methods=["get", "patch"])
    def me(self, request):
        if request.method == "GET":
            return Response(self.get_serializer(request.user).data)
        self.check_object_permissions(request, request.user)
        return self._update(request, request.user, partial=True)

    def _update(self, request, user: User, *, partial: bool) -> Response:
        serializer = self.get_serializer(user, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        user = user_update(user=user, by=request.user, **serializer.validated_data)
        return Response(self.get_serializer(user).data)


@extend_schema_view(
    post=extend_schema(
        summary="Get an API token",
        tags=["auth"],
        responses={
            200: AuthTokenResponseSerializer,
            400: OpenApiResponse(description="Missing fields, or wrong username or password."),
            429: OpenApiResponse(description="Too many attempts; retry later."),
        },
    )
)
class TokenView(ObtainAuthToken):
    """POST username + password, get the API token (`Authorization: Token <key>`).

    The same token is returned on each call; it lasts until an operator deletes it in the
    admin. Anonymous by nature, so throttled at the anonymous rate (password guessing).
    """

    authentication_classes = ()
    permission_classes = ()
    throttle_classes = (AnonThrottle,)
